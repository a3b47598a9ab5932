//! Connection counts per node and per client address, the budget of connections that have
//! not authenticated yet, and the rate of new connections per address.
//!
//! A connection is *pending* from its handshake until its first namespace CONNECT succeeds
//! (the token verified), then *established*. Pending connections have a budget of their own
//! (`max_pending_sessions`, in total and per address) and do not count against
//! `max_connections`, so clients without a token can never take the places of those with one.
//! Per address, `max_connections_per_ip` counts both. A handshake reserves a place before the
//! session exists; the connection observer turns the reservation into a pending connection,
//! promotes it, and gives it back on close.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ferrio::{CloseReason, ConnectionHandle, ConnectionObserver, Handshake, TransportKind};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use super::ProxyList;
use super::namespaces::ConnectionKey;
use crate::config::LimitSettings;
use crate::stats::{Rejection, Stats};

/// A reservation for a WebSocket whose upgrade never completes is dropped after this.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct PerIp {
    established: usize,
    /// Open connections that have not authenticated yet.
    pending: usize,
    /// The same, oldest first (eviction takes the front).
    pending_keys: VecDeque<ConnectionKey>,
    /// Handshakes admitted whose session has not opened yet.
    reserved: VecDeque<Instant>,
}

impl PerIp {
    fn prune(&mut self, now: Instant) -> usize {
        let before = self.reserved.len();
        while self
            .reserved
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESERVATION_TTL)
        {
            self.reserved.pop_front();
        }
        before - self.reserved.len()
    }

    /// Connections (and reservations) not established yet.
    fn unauthenticated(&self) -> usize {
        self.pending + self.reserved.len()
    }

    fn total(&self) -> usize {
        self.established + self.unauthenticated()
    }
}

#[derive(Debug, Default)]
struct Counts {
    established: usize,
    /// Pending connections and reservations, on the node.
    pending: usize,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Each open connection.
    sessions: HashMap<ConnectionKey, Session>,
}

#[derive(Debug)]
struct Session {
    ip: IpAddr,
    established: bool,
    /// To close it when a newer handshake needs its pending place.
    handle: Option<ConnectionHandle>,
}

impl Counts {
    fn forget_if_empty(&mut self, ip: IpAddr) {
        if self.per_ip.get(&ip).is_some_and(|e| e.total() == 0) {
            self.per_ip.remove(&ip);
        }
    }

    /// The connection that gives up its pending place to a new handshake: the oldest pending
    /// connection of the address that holds the most of them. A flood of handshakes without a
    /// token then displaces its own sessions first, and a real client's session, which
    /// authenticates within a round trip, is rarely the oldest. `None` when no open connection
    /// is pending (only reservations).
    fn pick_victim(&self) -> Option<ConnectionKey> {
        let (_, entry) = self
            .per_ip
            .iter()
            .filter(|(_, e)| e.pending > 0)
            .max_by_key(|(_, e)| e.pending)?;
        // Every key in `pending_keys` is a pending session; one without its handle yet (its
        // `on_handle` has not run) cannot be closed and is passed over.
        entry
            .pending_keys
            .iter()
            .copied()
            .find(|key| self.sessions.get(key).is_some_and(|s| s.handle.is_some()))
    }

    /// Takes a pending connection out of the counts; its handle, to close it.
    fn evict(&mut self, key: ConnectionKey) -> Option<ConnectionHandle> {
        let session = self.sessions.remove(&key)?;
        self.pending -= 1;
        if let Some(entry) = self.per_ip.get_mut(&session.ip) {
            entry.pending -= 1;
            entry.pending_keys.retain(|k| *k != key);
        }
        self.forget_if_empty(session.ip);
        session.handle
    }

    /// Drops the reservations of every address whose upgrade never came.
    fn prune_all(&mut self, now: Instant) {
        let mut pruned = 0;
        self.per_ip.retain(|_, e| {
            pruned += e.prune(now);
            e.total() > 0
        });
        self.pending -= pruned;
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `max_connections`.
    NodeFull,
    /// This address holds `max_connections_per_ip`.
    TooManyFromIp,
    /// The node holds `max_pending_sessions` connections that have not authenticated.
    PendingFull,
    /// This address holds `max_pending_sessions_per_ip` connections that have not
    /// authenticated.
    TooManyPendingFromIp,
    /// This address opens connections too fast; it may retry after this long.
    Rate(Duration),
}

impl Refusal {
    pub fn rejection(self) -> Rejection {
        match self {
            Refusal::NodeFull => Rejection::NodeFull,
            Refusal::TooManyFromIp => Rejection::TooManyFromIp,
            Refusal::PendingFull => Rejection::PendingFull,
            Refusal::TooManyPendingFromIp => Rejection::TooManyPendingFromIp,
            Refusal::Rate(_) => Rejection::ConnectionRate,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NodeFull => "server at capacity",
            Refusal::TooManyFromIp => "too many connections from this address",
            Refusal::PendingFull => "too many connections waiting to authenticate",
            Refusal::TooManyPendingFromIp => "too many unauthenticated connections from this address",
            Refusal::Rate(_) => "too many new connections from this address",
        }
    }
}

/// The limits themselves, replaced as a whole on reload.
struct Policy {
    max_total: usize,
    max_per_ip: usize,
    max_pending: usize,
    max_pending_per_ip: usize,
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
            max_pending: settings.max_pending_sessions,
            max_pending_per_ip: settings.max_pending_sessions_per_ip.unwrap_or(0),
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
        policy.max_pending = settings.max_pending_sessions;
        policy.max_pending_per_ip = settings.max_pending_sessions_per_ip.unwrap_or(0);
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
        counts.pending -= pruned;
        // No point in a session that could never be established.
        if policy.max_total > 0 && counts.established >= policy.max_total {
            return Err(Refusal::NodeFull);
        }
        let (total, unauthenticated) = counts
            .per_ip
            .get(&ip)
            .map_or((0, 0), |e| (e.total(), e.unauthenticated()));
        if policy.max_per_ip > 0 && total >= policy.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        if policy.max_pending_per_ip > 0 && unauthenticated >= policy.max_pending_per_ip {
            return Err(Refusal::TooManyPendingFromIp);
        }
        // The node's pending places are full: one is freed for this handshake, if any pending
        // connection can give it up. Decided before the rate is charged, carried out after
        // every check has passed.
        let mut victim = None;
        if policy.max_pending > 0 && counts.pending >= policy.max_pending {
            counts.prune_all(now);
            if counts.pending >= policy.max_pending {
                victim = Some(counts.pick_victim().ok_or(Refusal::PendingFull)?);
            }
        }
        if let Some(rate) = &policy.rate
            && let Err(not_until) = rate.check_key(&ip)
        {
            return Err(Refusal::Rate(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        let evicted = victim.and_then(|key| counts.evict(key));
        counts.pending += 1;
        counts.per_ip.entry(ip).or_default().reserved.push_back(now);
        drop(counts);
        if let Some(evicted) = evicted {
            self.stats.count(Rejection::PendingEvicted);
            evicted.close();
        }
        Ok(())
    }

    /// Gives back a reservation whose handshake did not open a session.
    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let Some(entry) = counts.per_ip.get_mut(&ip) else {
            return;
        };
        if entry.reserved.pop_front().is_some() {
            counts.pending -= 1;
            counts.forget_if_empty(ip);
        }
    }

    fn opened(&self, key: ConnectionKey, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let entry = counts.per_ip.entry(ip).or_default();
        entry.pending += 1;
        entry.pending_keys.push_back(key);
        // The reservation made at the handshake becomes the connection, unless it expired
        // meanwhile.
        if entry.reserved.pop_front().is_none() {
            counts.pending += 1;
        }
        counts.sessions.insert(
            key,
            Session {
                ip,
                established: false,
                handle: None,
            },
        );
    }

    /// Moves a connection from the pending budget to the established ones, within
    /// `max_connections` when `within_limit`. Established already: nothing to do.
    fn establish(&self, key: ConnectionKey, within_limit: bool) -> Result<(), Refusal> {
        let max_total = self.policy.read().max_total;
        let mut counts = self.counts.lock();
        let established = counts.established;
        let Some(session) = counts.sessions.get_mut(&key) else {
            // Evicted meanwhile (its close is on its way): it may not authenticate.
            return if within_limit {
                Err(Refusal::PendingFull)
            } else {
                Ok(())
            };
        };
        if session.established {
            return Ok(());
        }
        if within_limit && max_total > 0 && established >= max_total {
            return Err(Refusal::NodeFull);
        }
        let ip = session.ip;
        session.established = true;
        session.handle = None;
        counts.pending -= 1;
        counts.established += 1;
        let entry = counts.per_ip.entry(ip).or_default();
        entry.pending -= 1;
        entry.pending_keys.retain(|k| *k != key);
        entry.established += 1;
        Ok(())
    }

    /// A connection's first namespace CONNECT passed authentication: it leaves the pending
    /// budget, if `max_connections` has room for it.
    pub fn promote(&self, handshake: &Handshake) -> Result<(), Refusal> {
        let result = self.establish(ConnectionKey::of(handshake), true);
        if let Err(refusal) = result {
            self.stats.count(refusal.rejection());
        }
        result
    }

    fn closed(&self, key: ConnectionKey) {
        let mut counts = self.counts.lock();
        let Some(Session { ip, established, .. }) = counts.sessions.remove(&key) else {
            return;
        };
        let entry = counts.per_ip.entry(ip).or_default();
        if established {
            entry.established -= 1;
            counts.established -= 1;
        } else {
            entry.pending -= 1;
            entry.pending_keys.retain(|k| *k != key);
            counts.pending -= 1;
        }
        counts.forget_if_empty(ip);
    }

    /// Established connections and pending ones (reservations included), on the node.
    pub fn totals(&self) -> (usize, usize) {
        let counts = self.counts.lock();
        (counts.established, counts.pending)
    }

    /// Forgets rate-limiter state of addresses not seen lately.
    pub fn housekeeping(&self) {
        self.counts.lock().prune_all(Instant::now());
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
        self.0.opened(ConnectionKey::of(handshake), ip);
    }

    fn on_handle(&self, handshake: &Handshake, connection: &ConnectionHandle) {
        let mut counts = self.0.counts.lock();
        if let Some(session) = counts.sessions.get_mut(&ConnectionKey::of(handshake)) {
            session.handle = Some(connection.clone());
        }
    }

    /// The WebSocket upgrade of an admitted handshake never completed: its reservation goes.
    fn on_abandoned(&self, handshake: &Handshake) {
        let ip = self.0.proxies.client_ip(handshake.address, &handshake.headers);
        self.0.release(ip);
    }

    /// A CONNECT that no hook of ours checked (a recovered session, the dashboard's own
    /// namespace) establishes the connection too; one [`ConnectionLimits::promote`] admitted
    /// is established already.
    fn on_established(&self, handshake: &Handshake) {
        let _ = self.0.establish(ConnectionKey::of(handshake), false);
    }

    fn on_close(&self, handshake: &Handshake, _reason: CloseReason) {
        self.0.closed(ConnectionKey::of(handshake));
    }
}
