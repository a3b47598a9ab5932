//! Events per socket: a token bucket (rate and burst). An event over the limit is refused
//! (its ack, if it asked for one, says `rate_limited`); a socket refused `strikes` times within
//! one window is flooding, and its connection is closed.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
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
#[derive(Debug, Clone, Copy)]
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

/// The bucket of one socket.
#[derive(Debug)]
pub struct EventLimiter {
    bucket: DefaultDirectRateLimiter,
    strikes: Mutex<(Instant, u32)>,
    max_strikes: u32,
    window: Duration,
}

impl EventLimiter {
    pub fn new(quota: &EventQuota) -> Self {
        Self {
            bucket: RateLimiter::direct(quota.quota),
            strikes: Mutex::new((Instant::now(), 0)),
            max_strikes: quota.strikes,
            window: quota.window,
        }
    }

    pub fn check(&self) -> Verdict {
        if self.bucket.check().is_ok() {
            return Verdict::Allow;
        }
        if self.max_strikes == 0 {
            return Verdict::Refuse;
        }
        let now = Instant::now();
        let mut strikes = self.strikes.lock();
        if now.duration_since(strikes.0) > self.window {
            *strikes = (now, 0);
        }
        strikes.1 += 1;
        if strikes.1 > self.max_strikes {
            Verdict::Flooding
        } else {
            Verdict::Refuse
        }
    }
}
