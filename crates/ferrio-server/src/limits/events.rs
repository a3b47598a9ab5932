//! Events per socket: a token bucket (rate and burst). An event over the limit is refused
//! (its ack, if it asked for one, says `rate_limited`); a socket refused `strikes` times within
//! one window is flooding, and its connection is closed.

use std::num::NonZeroU32;
use std::sync::Arc;
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
    current: RwLock<Option<Arc<EventQuota>>>,
}

impl EventLimits {
    pub fn new(settings: &LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(EventQuota::new(settings).map(Arc::new)),
        })
    }

    /// Takes `event_rate`, `event_burst`, `event_strikes` and `event_strike_window` from
    /// `settings` (on SIGHUP).
    pub fn reload(&self, settings: &LimitSettings) {
        let fresh = EventQuota::new(settings);
        let mut current = self.current.write();
        // Unchanged limits keep the sockets' buckets and strikes.
        if current.as_deref() != fresh.as_ref() {
            *current = fresh.map(Arc::new);
        }
    }

    fn current(&self) -> Option<Arc<EventQuota>> {
        self.current.read().clone()
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
    /// The quota `bucket` was made for.
    quota: Option<Arc<EventQuota>>,
    bucket: Option<DefaultDirectRateLimiter>,
    /// When the strike window opened, and the strikes in it.
    strikes: (Instant, u32),
}

impl EventLimiter {
    pub fn new(limits: Arc<EventLimits>) -> Self {
        let quota = limits.current();
        Self {
            state: Mutex::new(State {
                bucket: quota.as_ref().map(|q| RateLimiter::direct(q.quota)),
                quota,
                strikes: (Instant::now(), 0),
            }),
            limits,
        }
    }

    pub fn check(&self) -> Verdict {
        let current = self.limits.current();
        let mut state = self.state.lock();
        let same = match (&current, &state.quota) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            state.bucket = current.as_ref().map(|q| RateLimiter::direct(q.quota));
            state.quota = current;
            state.strikes = (Instant::now(), 0);
        }
        let (Some(quota), Some(bucket)) = (state.quota.clone(), &state.bucket) else {
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
