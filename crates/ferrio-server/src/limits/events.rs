//! Events per socket: a token bucket (rate and burst). An event over the limit is refused
//! (its ack, if it asked for one, says `rate_limited`); a socket refused `strikes` times within
//! one window is flooding, and its connection is closed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::config::LimitSettings;

/// What the limiter says about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: refuse this event.
    Refuse,
    /// Over the rate too often: close the connection.
    Flooding,
}

/// The per-socket settings, shared by every socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventQuota {
    quota: Quota,
    strikes: u32,
    window: Duration,
}

impl EventQuota {
    /// `None` when the event rate is not limited.
    pub fn new(settings: &LimitSettings) -> Option<Self> {
        let rate = NonZeroU32::new(settings.event_rate.unwrap_or(0))?;
        let burst = NonZeroU32::new(settings.event_burst.unwrap_or(0)).unwrap_or(rate);
        Some(Self {
            quota: Quota::per_second(rate).allow_burst(burst),
            strikes: settings.event_strikes,
            window: settings.event_strike_window.0,
        })
    }
}

/// The event limits every socket follows; [`EventLimits::reload`] replaces them while the
/// server runs, and each socket adopts them at its next event.
#[derive(Debug, Default)]
pub struct EventLimits {
    current: RwLock<Option<EventQuota>>,
    /// Counts the changes of `current`: a socket's event compares one number with it.
    generation: AtomicU64,
}

impl EventLimits {
    pub fn new(settings: &LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(EventQuota::new(settings)),
            generation: AtomicU64::new(0),
        })
    }

    /// Takes `event_rate`, `event_burst`, `event_strikes` and `event_strike_window` from
    /// `settings` (on SIGHUP).
    pub fn reload(&self, settings: &LimitSettings) {
        let fresh = EventQuota::new(settings);
        let mut current = self.current.write();
        // Unchanged limits keep the sockets' buckets and strikes.
        if *current != fresh {
            *current = fresh;
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// The bucket of one socket.
#[derive(Debug)]
pub struct EventLimiter {
    limits: Arc<EventLimits>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The generation of the limits `quota` and `bucket` follow.
    generation: u64,
    quota: Option<EventQuota>,
    bucket: Option<DefaultDirectRateLimiter>,
    /// When the strike window opened, and the strikes in it.
    strikes: (Instant, u32),
}

impl State {
    fn adopt(&mut self, generation: u64, quota: Option<EventQuota>) {
        self.generation = generation;
        self.quota = quota;
        self.bucket = quota.map(|q| RateLimiter::direct(q.quota));
        self.strikes = (Instant::now(), 0);
    }
}

impl EventLimiter {
    pub fn new(limits: Arc<EventLimits>) -> Self {
        let mut state = State {
            generation: 0,
            quota: None,
            bucket: None,
            strikes: (Instant::now(), 0),
        };
        state.adopt(limits.generation.load(Ordering::Acquire), *limits.current.read());
        Self {
            state: Mutex::new(state),
            limits,
        }
    }

    pub fn check(&self) -> Verdict {
        let generation = self.limits.generation.load(Ordering::Acquire);
        let mut state = self.state.lock();
        if state.generation != generation {
            state.adopt(generation, *self.limits.current.read());
        }
        let (Some(quota), Some(bucket)) = (state.quota, &state.bucket) else {
            return Verdict::Allow;
        };
        if bucket.check().is_ok() {
            return Verdict::Allow;
        }
        if quota.strikes == 0 {
            return Verdict::Refuse;
        }
        let now = Instant::now();
        if now.duration_since(state.strikes.0) > quota.window {
            state.strikes = (now, 0);
        }
        state.strikes.1 += 1;
        if state.strikes.1 > quota.strikes {
            Verdict::Flooding
        } else {
            Verdict::Refuse
        }
    }
}
