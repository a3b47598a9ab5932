//! Connection counts per node and per client address, and the rate of new connections per
//! address. A handshake reserves a place before the session exists; the connection observer
//! turns the reservation into an open connection and gives it back on close.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ferrio::{CloseReason, ConnectionObserver, Handshake, TransportKind};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use super::ProxyList;
use crate::config::LimitSettings;
use crate::stats::{Rejection, Stats};

/// A reservation for a WebSocket whose upgrade never completes is dropped after this.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct PerIp {
    open: usize,
    /// Handshakes admitted whose session has not opened yet.
    pending: VecDeque<Instant>,
}

impl PerIp {
    fn prune(&mut self, now: Instant) -> usize {
        let before = self.pending.len();
        while self
            .pending
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESERVATION_TTL)
        {
            self.pending.pop_front();
        }
        before - self.pending.len()
    }

    fn total(&self) -> usize {
        self.open + self.pending.len()
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, PerIp>,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `max_connections`.
    NodeFull,
    /// This address holds `max_connections_per_ip`.
    TooManyFromIp,
    /// This address opens connections too fast; it may retry after this long.
    Rate(Duration),
}

impl Refusal {
    pub fn rejection(self) -> Rejection {
        match self {
            Refusal::NodeFull => Rejection::NodeFull,
            Refusal::TooManyFromIp => Rejection::TooManyFromIp,
            Refusal::Rate(_) => Rejection::ConnectionRate,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NodeFull => "server at capacity",
            Refusal::TooManyFromIp => "too many connections from this address",
            Refusal::Rate(_) => "too many new connections from this address",
        }
    }
}

/// The limits themselves, replaced as a whole on reload.
struct Policy {
    max_total: usize,
    max_per_ip: usize,
    /// The (per second, burst) the rate limiter was made with.
    quota: (u32, u32),
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Policy {
    fn new(settings: &LimitSettings) -> Self {
        let quota = (
            settings.connection_rate_per_ip.unwrap_or(0),
            settings.connection_burst_per_ip.unwrap_or(0),
        );
        let rate = NonZeroU32::new(quota.0).map(|per_second| {
            let burst = NonZeroU32::new(quota.1).unwrap_or(per_second);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            max_total: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip.unwrap_or(0),
            quota,
            rate,
        }
    }
}

/// Connection limits of one node.
pub struct ConnectionLimits {
    policy: RwLock<Policy>,
    proxies: ProxyList,
    counts: Mutex<Counts>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policy = self.policy.read();
        f.debug_struct("ConnectionLimits")
            .field("max_total", &policy.max_total)
            .field("max_per_ip", &policy.max_per_ip)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    pub fn new(settings: &LimitSettings, stats: Arc<Stats>) -> Self {
        Self {
            policy: RwLock::new(Policy::new(settings)),
            proxies: ProxyList::new(settings.trusted_proxies.iter()),
            counts: Mutex::new(Counts::default()),
            stats,
        }
    }

    /// Takes the node and per-address limits and the connection rate from `settings` (on
    /// SIGHUP). Open connections stay and count against the new limits; a changed rate starts
    /// over.
    /// `trusted_proxies` stays as it started (connections are counted under the address it
    /// gave them).
    pub fn reload(&self, settings: &LimitSettings) {
        let mut policy = self.policy.write();
        policy.max_total = settings.max_connections;
        policy.max_per_ip = settings.max_connections_per_ip.unwrap_or(0);
        let fresh = Policy::new(settings);
        // An unchanged rate keeps what each address has used of it.
        if fresh.quota != policy.quota {
            policy.quota = fresh.quota;
            policy.rate = fresh.rate;
        }
    }

    pub fn proxies(&self) -> &ProxyList {
        &self.proxies
    }

    /// Admits a handshake from `ip` (reserving a place) or refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        let result = self.try_admit(ip);
        if let Err(refusal) = result {
            self.stats.count(refusal.rejection());
        }
        result
    }

    fn try_admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        let now = Instant::now();
        let policy = self.policy.read();
        let mut counts = self.counts.lock();
        let pruned = counts.per_ip.get_mut(&ip).map_or(0, |e| e.prune(now));
        counts.total -= pruned;
        if policy.max_total > 0 && counts.total >= policy.max_total {
            return Err(Refusal::NodeFull);
        }
        let current = counts.per_ip.get(&ip).map_or(0, PerIp::total);
        if policy.max_per_ip > 0 && current >= policy.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        if let Some(rate) = &policy.rate
            && let Err(not_until) = rate.check_key(&ip)
        {
            return Err(Refusal::Rate(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        counts.total += 1;
        counts.per_ip.entry(ip).or_default().pending.push_back(now);
        Ok(())
    }

    /// Gives back a reservation whose handshake did not open a session.
    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let Some(entry) = counts.per_ip.get_mut(&ip) else {
            return;
        };
        if entry.pending.pop_front().is_some() {
            let empty = entry.total() == 0;
            counts.total -= 1;
            if empty {
                counts.per_ip.remove(&ip);
            }
        }
    }

    fn opened(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let entry = counts.per_ip.entry(ip).or_default();
        entry.open += 1;
        // The reservation made at the handshake, unless it expired meanwhile.
        if entry.pending.pop_front().is_none() {
            counts.total += 1;
        }
    }

    fn closed(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let Some(entry) = counts.per_ip.get_mut(&ip) else {
            return;
        };
        if entry.open == 0 {
            return;
        }
        entry.open -= 1;
        let empty = entry.total() == 0;
        counts.total -= 1;
        if empty {
            counts.per_ip.remove(&ip);
        }
    }

    /// Open connections and reservations, on the node and for `ip`.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.counts.lock();
        (counts.total, counts.per_ip.get(&ip).map_or(0, PerIp::total))
    }

    /// Forgets rate-limiter state of addresses not seen lately.
    pub fn housekeeping(&self) {
        if let Some(rate) = &self.policy.read().rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }
}

/// Feeds [`ConnectionLimits`] from the server's connection events.
#[derive(Debug, Clone)]
pub struct LimitsObserver(pub Arc<ConnectionLimits>);

impl ConnectionObserver for LimitsObserver {
    fn on_open(&self, handshake: &Handshake, _transport: TransportKind) {
        let ip = self.0.proxies.client_ip(handshake.address, &handshake.headers);
        self.0.opened(ip);
    }

    fn on_close(&self, handshake: &Handshake, _reason: CloseReason) {
        let ip = self.0.proxies.client_ip(handshake.address, &handshake.headers);
        self.0.closed(ip);
    }
}
