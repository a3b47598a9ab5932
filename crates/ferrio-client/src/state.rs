//! The life of a socket as explicit states, observable as the latest value (a `watch`) and
//! as a stream of every transition (a `broadcast`).

use std::fmt;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// Where a socket is in its life.
///
/// ```text
/// Connecting ──▶ Connected ──▶ Disconnected{reason} ──▶ Reconnecting{1} ──▶ Connected ...
///      │                                  ▲                    │
///      └──────────(attempt failed)────────┴──▶ Reconnecting{2} ┘
/// ```
///
/// `Disconnected` is final when [`DisconnectReason::is_final`] says so (an explicit
/// disconnect on either side, a refused namespace connection, reconnection given up).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    /// The first connection is being opened (transport handshake, then the namespace).
    Connecting,
    /// The namespace is connected; emits go out at once.
    Connected,
    /// Not connected, for this reason. Emits are held in the offline queue unless the
    /// disconnection is final.
    Disconnected { reason: DisconnectReason },
    /// Reconnection attempt `attempt` (from 1) is under way; its backoff delay has elapsed.
    Reconnecting { attempt: u32 },
}

impl ConnectionState {
    /// Whether the socket is connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected)
    }

    /// Whether nothing more will happen without a new [`Socket::connect`](crate::Socket::connect).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Disconnected { reason } if reason.is_final())
    }
}

/// Why a socket is not connected. The strings of [`DisconnectReason::as_str`] are the
/// reasons `socket.io-client` reports.
#[derive(Debug, Clone, PartialEq)]
pub enum DisconnectReason {
    /// The server disconnected this namespace (`socket.disconnect()` on the server). Final:
    /// no reconnection, as in the reference client.
    ServerDisconnect,
    /// [`Socket::disconnect`](crate::Socket::disconnect) or [`Client::close`](crate::Client::close)
    /// was called. Final.
    ClientDisconnect,
    /// No ping from the server within `ping_interval + ping_timeout`.
    PingTimeout,
    /// The transport was closed (by the server, a proxy, or the network).
    TransportClose,
    /// The transport failed (connection refused, reset, HTTP error).
    TransportError(String),
    /// The server sent something that does not decode.
    ParseError(String),
    /// The server refused the namespace connection with CONNECT_ERROR (e.g. a middleware
    /// rejected the auth payload). Final until [`Socket::connect`](crate::Socket::connect) is called again.
    ConnectError { message: String, data: Option<Value> },
    /// Reconnection gave up after the configured number of attempts. Final.
    ReconnectFailed,
}

impl DisconnectReason {
    /// The reason as `socket.io-client` names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ServerDisconnect => "io server disconnect",
            Self::ClientDisconnect => "io client disconnect",
            Self::PingTimeout => "ping timeout",
            Self::TransportClose => "transport close",
            Self::TransportError(_) => "transport error",
            Self::ParseError(_) => "parse error",
            Self::ConnectError { .. } => "connect error",
            Self::ReconnectFailed => "reconnect failed",
        }
    }

    /// Whether the client will not reconnect by itself after this.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::ServerDisconnect
                | Self::ClientDisconnect
                | Self::ConnectError { .. }
                | Self::ReconnectFailed
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TransportError(detail) | Self::ParseError(detail) if !detail.is_empty() => {
                write!(f, "{} ({detail})", self.as_str())
            }
            Self::ConnectError { message, .. } => write!(f, "connect error: {message}"),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl std::error::Error for DisconnectReason {}

/// One state transition and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The new state.
    pub state: ConnectionState,
    /// When the socket entered it.
    pub at: Instant,
}

/// Every state transition of a socket from the moment it was subscribed, in order.
///
/// It holds the last 256 transitions a slow reader has not taken yet; past that the oldest
/// are skipped (the current state is always in [`Socket::state`](crate::Socket::state)).
#[derive(Debug)]
pub struct StateChanges {
    pub(crate) rx: broadcast::Receiver<StateChange>,
}

impl StateChanges {
    /// The next transition; `None` once the socket is gone.
    pub async fn next(&mut self) -> Option<StateChange> {
        loop {
            match self.rx.recv().await {
                Ok(change) => return Some(change),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The transitions as a `futures` stream.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = StateChange> + Send + Unpin {
        Box::pin(futures_util::stream::unfold(self, |mut changes| async move {
            let change = changes.next().await?;
            Some((change, changes))
        }))
    }
}

/// The sending side: a watch for the latest state and a broadcast of every change.
#[derive(Debug)]
pub(crate) struct StateCell {
    latest: watch::Sender<ConnectionState>,
    changes: broadcast::Sender<StateChange>,
}

impl StateCell {
    pub(crate) fn new(initial: ConnectionState) -> Self {
        let (latest, _) = watch::channel(initial);
        let (changes, _) = broadcast::channel(256);
        Self { latest, changes }
    }

    pub(crate) fn set(&self, state: ConnectionState) {
        if *self.latest.borrow() == state {
            return;
        }
        self.latest.send_replace(state.clone());
        let _ = self.changes.send(StateChange {
            state,
            at: Instant::now(),
        });
    }

    pub(crate) fn get(&self) -> ConnectionState {
        self.latest.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.latest.subscribe()
    }

    pub(crate) fn changes(&self) -> StateChanges {
        StateChanges {
            rx: self.changes.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_reasons() {
        assert!(DisconnectReason::ServerDisconnect.is_final());
        assert!(DisconnectReason::ClientDisconnect.is_final());
        assert!(DisconnectReason::ReconnectFailed.is_final());
        assert!(!DisconnectReason::PingTimeout.is_final());
        assert!(!DisconnectReason::TransportClose.is_final());
        assert!(!DisconnectReason::TransportError("x".into()).is_final());
        assert_eq!(
            DisconnectReason::ServerDisconnect.as_str(),
            "io server disconnect"
        );
        assert_eq!(
            DisconnectReason::TransportError("refused".into()).to_string(),
            "transport error (refused)"
        );
    }

    #[tokio::test]
    async fn changes_are_broadcast_once_each() {
        let cell = StateCell::new(ConnectionState::Connecting);
        let mut changes = cell.changes();
        let watch = cell.watch();
        cell.set(ConnectionState::Connected);
        cell.set(ConnectionState::Connected);
        cell.set(ConnectionState::Disconnected {
            reason: DisconnectReason::PingTimeout,
        });
        assert_eq!(changes.next().await.unwrap().state, ConnectionState::Connected);
        let last = changes.next().await.unwrap().state;
        assert!(matches!(last, ConnectionState::Disconnected { .. }));
        assert!(!last.is_final());
        assert_eq!(*watch.borrow(), cell.get());
        drop(cell);
        assert_eq!(changes.next().await, None);
    }
}
