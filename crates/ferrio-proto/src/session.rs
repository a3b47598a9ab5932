//! The Engine.IO session state machine, driven with `now` passed in.
//!
//! Two concerns live here, free of IO and clocks so they can be tested with virtual time:
//! the server-driven heartbeat of Engine.IO v4 ([`Heartbeat`]), and the lifecycle of the
//! transport through the polling to WebSocket upgrade ([`TransportState`]).

use std::time::{Duration, Instant};

/// What the heartbeat asks its driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Send a ping (`2`) now.
    SendPing,
    /// No pong arrived within `ping_timeout` of the last ping: close with "ping timeout".
    TimedOut,
}

/// The server side of the Engine.IO v4 heartbeat.
///
/// The server pings `ping_interval` after the handshake and after every pong; a ping left
/// unanswered for `ping_timeout` ends the session. The deadlines are exact: the official
/// conformance suite sleeps precisely `ping_interval + ping_timeout` and then expects the
/// session to be gone.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    ping_interval: Duration,
    ping_timeout: Duration,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting to send the next ping at this instant.
    Idle { ping_at: Instant },
    /// A ping is out; the pong must arrive before this instant.
    AwaitingPong { deadline: Instant },
    /// The session timed out; nothing more to do.
    Expired,
}

impl Heartbeat {
    /// A heartbeat for a session opened at `now`.
    pub fn new(now: Instant, ping_interval: Duration, ping_timeout: Duration) -> Self {
        Self {
            ping_interval,
            ping_timeout,
            phase: Phase::Idle {
                ping_at: now + ping_interval,
            },
        }
    }

    /// When the driver must next call [`Heartbeat::poll`]; `None` once expired.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { ping_at } => Some(ping_at),
            Phase::AwaitingPong { deadline } => Some(deadline),
            Phase::Expired => None,
        }
    }

    /// Advances to `now` and says what to do, if anything.
    pub fn poll(&mut self, now: Instant) -> Option<HeartbeatAction> {
        match self.phase {
            Phase::Idle { ping_at } if now >= ping_at => {
                // Measured from when the ping was due, not from a late wake-up: the deadline
                // must not drift with timer lag.
                self.phase = Phase::AwaitingPong {
                    deadline: ping_at + self.ping_timeout,
                };
                Some(HeartbeatAction::SendPing)
            }
            Phase::AwaitingPong { deadline } if now >= deadline => {
                self.phase = Phase::Expired;
                Some(HeartbeatAction::TimedOut)
            }
            _ => None,
        }
    }

    /// A pong arrived at `now`: the next ping goes out `ping_interval` later.
    ///
    /// A pong nobody asked for is harmless and ignored, as in the reference.
    pub fn on_pong(&mut self, now: Instant) {
        if let Phase::AwaitingPong { .. } = self.phase {
            self.phase = Phase::Idle {
                ping_at: now + self.ping_interval,
            };
        }
    }

    /// Whether the session has timed out.
    pub fn is_expired(&self) -> bool {
        matches!(self.phase, Phase::Expired)
    }
}

/// Where a session's transport is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// HTTP long-polling, no upgrade under way.
    Polling,
    /// A WebSocket opened for this session; the probe (`2probe`) has not arrived yet.
    ProbeOpened { since: Instant },
    /// `2probe` answered with `3probe`; polling is being paused; waiting for `5`.
    Probed { since: Instant },
    /// WebSocket is the transport (from the handshake or after the upgrade).
    WebSocket,
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// A second WebSocket for a session that already has one (or is upgrading).
    #[error("the session already has a WebSocket")]
    AlreadyUpgrading,
    /// A probe step out of order (e.g. `5` before `2probe`).
    #[error("upgrade step out of order")]
    OutOfOrder,
}

impl TransportState {
    /// A WebSocket arrived for this session.
    pub fn on_websocket_opened(self, now: Instant) -> Result<Self, TransitionError> {
        match self {
            Self::Polling => Ok(Self::ProbeOpened { since: now }),
            _ => Err(TransitionError::AlreadyUpgrading),
        }
    }

    /// The WebSocket sent `2probe`.
    pub fn on_probe(self) -> Result<Self, TransitionError> {
        match self {
            Self::ProbeOpened { since } => Ok(Self::Probed { since }),
            _ => Err(TransitionError::OutOfOrder),
        }
    }

    /// The WebSocket sent `5`: the upgrade is complete.
    pub fn on_upgrade(self) -> Result<Self, TransitionError> {
        match self {
            Self::Probed { .. } => Ok(Self::WebSocket),
            _ => Err(TransitionError::OutOfOrder),
        }
    }

    /// The probe WebSocket failed or timed out: back to plain polling.
    pub fn on_probe_failed(self) -> Self {
        match self {
            Self::ProbeOpened { .. } | Self::Probed { .. } => Self::Polling,
            other => other,
        }
    }

    /// When an upgrade started at `since` must be given up, for an `upgrade_timeout`.
    pub fn upgrade_deadline(&self, upgrade_timeout: Duration) -> Option<Instant> {
        match *self {
            Self::ProbeOpened { since } | Self::Probed { since } => Some(since + upgrade_timeout),
            _ => None,
        }
    }

    /// Whether polling requests are still served (they are until the upgrade completes).
    pub fn accepts_polling(&self) -> bool {
        !matches!(self, Self::WebSocket)
    }

    /// Whether a probe was answered, so pending polls must be released with a noop.
    pub fn is_probed(&self) -> bool {
        matches!(self, Self::Probed { .. })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real instant is only the origin of virtual time here
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(300);
    const T: Duration = Duration::from_millis(200);

    #[test]
    fn pings_after_interval_and_times_out_exactly_at_interval_plus_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, I, T);
        assert_eq!(hb.deadline(), Some(t0 + I));
        assert_eq!(hb.poll(t0 + I - Duration::from_millis(1)), None);
        assert_eq!(hb.poll(t0 + I), Some(HeartbeatAction::SendPing));
        assert_eq!(hb.deadline(), Some(t0 + I + T));
        assert_eq!(hb.poll(t0 + I + T - Duration::from_millis(1)), None);
        assert_eq!(hb.poll(t0 + I + T), Some(HeartbeatAction::TimedOut));
        assert!(hb.is_expired());
        assert_eq!(hb.deadline(), None);
        assert_eq!(hb.poll(t0 + I * 10), None);
    }

    #[test]
    fn pong_schedules_next_ping_one_interval_later() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, I, T);
        assert_eq!(hb.poll(t0 + I), Some(HeartbeatAction::SendPing));
        let pong_at = t0 + I + Duration::from_millis(50);
        hb.on_pong(pong_at);
        assert_eq!(hb.deadline(), Some(pong_at + I));
        assert_eq!(hb.poll(t0 + I + T), None, "answered ping must not time out");
        assert_eq!(hb.poll(pong_at + I), Some(HeartbeatAction::SendPing));
    }

    #[test]
    fn a_late_ping_does_not_push_the_timeout_back() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, I, T);
        let late = t0 + I + Duration::from_millis(30);
        assert_eq!(hb.poll(late), Some(HeartbeatAction::SendPing));
        assert_eq!(hb.deadline(), Some(t0 + I + T));
        assert_eq!(hb.poll(t0 + I + T), Some(HeartbeatAction::TimedOut));
    }

    #[test]
    fn unsolicited_pong_does_not_move_the_schedule() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, I, T);
        hb.on_pong(t0 + Duration::from_millis(10));
        assert_eq!(hb.deadline(), Some(t0 + I));
    }

    #[test]
    fn upgrade_happy_path() {
        let t0 = Instant::now();
        let s = TransportState::Polling;
        let s = s.on_websocket_opened(t0).unwrap();
        assert!(s.accepts_polling());
        assert!(!s.is_probed());
        let s = s.on_probe().unwrap();
        assert!(s.is_probed());
        assert_eq!(
            s.upgrade_deadline(Duration::from_secs(10)),
            Some(t0 + Duration::from_secs(10))
        );
        let s = s.on_upgrade().unwrap();
        assert_eq!(s, TransportState::WebSocket);
        assert!(!s.accepts_polling());
        assert_eq!(s.upgrade_deadline(Duration::from_secs(10)), None);
    }

    #[test]
    fn refuses_out_of_order_and_second_websocket() {
        let t0 = Instant::now();
        assert_eq!(
            TransportState::Polling.on_upgrade(),
            Err(TransitionError::OutOfOrder)
        );
        assert_eq!(
            TransportState::Polling.on_probe(),
            Err(TransitionError::OutOfOrder)
        );
        let opened = TransportState::Polling.on_websocket_opened(t0).unwrap();
        assert_eq!(opened.on_upgrade(), Err(TransitionError::OutOfOrder));
        assert_eq!(
            opened.on_websocket_opened(t0),
            Err(TransitionError::AlreadyUpgrading)
        );
        assert_eq!(
            TransportState::WebSocket.on_websocket_opened(t0),
            Err(TransitionError::AlreadyUpgrading)
        );
        assert_eq!(opened.on_probe_failed(), TransportState::Polling);
        assert_eq!(
            TransportState::WebSocket.on_probe_failed(),
            TransportState::WebSocket
        );
    }
}
