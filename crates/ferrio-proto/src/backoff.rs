//! Exponential backoff with jitter, computed the way `socket.io-client` computes it: the one
//! retry policy of ferrio (the client's reconnections, the Redis adapter's reconnections and
//! stream reader, the webhook sender's retries).
//!
//! Attempt `n` (from 0) waits `base = initial * factor^n`, moved by a random deviation of up
//! to `randomization * base` either way, and then capped at `max`:
//!
//! ```text
//! delay(n) in [base * (1 - r), min(base * (1 + r), max)]      (and never above max)
//! ```
//!
//! Pure arithmetic with the random draw passed in (this crate reads no clock and draws no
//! random number), so the bounds are unit-tested exactly.

use std::time::Duration;

/// A retry policy. Defaults are `socket.io-client`'s reconnection: 1 s initial delay,
/// factor 2, 5 s maximum, randomisation 0.5, unlimited attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first reconnection attempt (`reconnectionDelay`).
    pub initial: Duration,
    /// Growth factor per attempt.
    pub factor: f64,
    /// Longest delay (`reconnectionDelayMax`).
    pub max: Duration,
    /// Jitter, 0 to 1 (`randomizationFactor`).
    pub randomization: f64,
    /// Attempts before giving up; `None` for unlimited (`reconnectionAttempts`).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1000),
            factor: 2.0,
            max: Duration::from_millis(5000),
            randomization: 0.5,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// Doubling from `initial` up to `max`, `randomization` either way, unlimited attempts.
    pub fn doubling(initial: Duration, max: Duration, randomization: f64) -> Self {
        Self {
            initial,
            factor: 2.0,
            max: max.max(initial),
            randomization,
            max_attempts: None,
        }
    }

    /// The delay before attempt `attempt` (0-based), given a uniform draw `rand` in [0, 1).
    ///
    /// As in the reference, one draw decides both the size of the deviation and, through its
    /// first decimal digit, its sign.
    pub fn delay(&self, attempt: u32, rand: f64) -> Duration {
        let initial = self.initial.as_secs_f64() * 1000.0;
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let mut ms = initial * self.factor.powi(exponent);
        if self.randomization > 0.0 {
            let deviation = (rand * self.randomization * ms).floor();
            // `floor(rand * 10)` is below 10 for rand < 1; its parity picks the sign.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let digit = (rand * 10.0).floor() as u64;
            ms = if digit & 1 == 0 {
                ms - deviation
            } else {
                ms + deviation
            };
        }
        let max = self.max.as_secs_f64() * 1000.0;
        millis(ms.min(max), self.max)
    }

    /// The bounds [`Backoff::delay`] stays within for attempt `attempt`.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let initial = self.initial.as_secs_f64() * 1000.0;
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let base = initial * self.factor.powi(exponent);
        let max = self.max.as_secs_f64() * 1000.0;
        let low = (base * (1.0 - self.randomization)).min(max);
        let high = (base * (1.0 + self.randomization)).min(max);
        (millis(low, self.max), millis(high, self.max))
    }
}

/// Whole milliseconds, rounded down; `fallback` for a value that is not finite.
fn millis(ms: f64, fallback: Duration) -> Duration {
    if !ms.is_finite() {
        return fallback;
    }
    // Non-negative and below the cap, so the conversion is exact after `floor`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Duration::from_millis(ms.max(0.0).floor() as u64)
}

/// The attempt counter of one retry cycle; reset when an attempt succeeds.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    done: u32,
}

impl Attempts {
    /// Counts a new attempt and returns its delay (given a uniform draw `rand` in [0, 1)), or
    /// `None` when the policy's attempts are used up.
    pub fn next_delay(&mut self, policy: &Backoff, rand: f64) -> Option<Duration> {
        if policy.max_attempts.is_some_and(|max| self.done >= max) {
            return None;
        }
        let delay = policy.delay(self.done, rand);
        self.done = self.done.saturating_add(1);
        Some(delay)
    }

    /// The number of the attempt last counted, from 1.
    pub fn current(&self) -> u32 {
        self.done
    }

    pub fn reset(&mut self) {
        self.done = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_match_the_reference() {
        let b = Backoff::default();
        assert_eq!(b.initial, ms(1000));
        assert_eq!(b.max, ms(5000));
        assert!((b.factor - 2.0).abs() < f64::EPSILON);
        assert!((b.randomization - 0.5).abs() < f64::EPSILON);
        assert_eq!(b.max_attempts, None);
    }

    #[test]
    fn grows_by_the_factor_without_jitter() {
        let b = Backoff {
            randomization: 0.0,
            ..Backoff::default()
        };
        let delays: Vec<_> = (0..5).map(|n| b.delay(n, 0.3)).collect();
        assert_eq!(delays, vec![ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]);
    }

    #[test]
    fn the_draw_picks_size_and_sign() {
        let b = Backoff::default();
        // 0.25: digit 2 (even) subtracts floor(0.25 * 0.5 * 1000) = 125.
        assert_eq!(b.delay(0, 0.25), ms(875));
        // 0.35: digit 3 (odd) adds 175.
        assert_eq!(b.delay(0, 0.35), ms(1175));
        // 0.0 deviates by nothing.
        assert_eq!(b.delay(0, 0.0), ms(1000));
        // The cap applies after the jitter.
        assert_eq!(b.delay(2, 0.95), ms(5000));
        assert_eq!(b.delay(3, 0.45), ms(5000));
        assert_eq!(b.delay(3, 0.8), ms(4800));
    }

    #[test]
    fn every_draw_stays_within_the_bounds() {
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
            ..Backoff::default()
        };
        for attempt in 0..8 {
            let (low, high) = b.bounds(attempt);
            for i in 0..1000 {
                let d = b.delay(attempt, f64::from(i) / 1000.0);
                assert!(
                    d >= low && d <= high,
                    "attempt {attempt}: {d:?} not in {low:?}..={high:?}"
                );
            }
        }
        assert_eq!(b.bounds(0), (ms(50), ms(150)));
        assert_eq!(b.bounds(1), (ms(100), ms(300)));
        assert_eq!(b.bounds(4), (ms(800), ms(1000)));
        assert_eq!(b.bounds(10), (ms(1000), ms(1000)));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(b.delay(u32::MAX, 0.5), ms(5000));
        assert_eq!(b.bounds(u32::MAX), (ms(5000), ms(5000)));
    }

    #[test]
    fn attempts_stop_at_the_maximum_and_reset() {
        let policy = Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        };
        let mut a = Attempts::default();
        assert!(a.next_delay(&policy, 0.5).is_some());
        assert_eq!(a.current(), 1);
        assert!(a.next_delay(&policy, 0.5).is_some());
        assert_eq!(a.next_delay(&policy, 0.5), None);
        a.reset();
        assert_eq!(a.current(), 0);
        assert!(a.next_delay(&policy, 0.5).is_some());
    }
}
