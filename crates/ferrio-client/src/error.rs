//! Errors, each naming what went wrong.

/// Building a client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server URL cannot be used.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The client was built outside a tokio runtime.
    #[error("ferrio-client needs a tokio runtime")]
    NoRuntime,
}

/// An emit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The event name is one a Socket.IO peer may not send (`connect`, `disconnect`, ...).
    #[error("{0:?} is a reserved event name")]
    ReservedEvent(String),
    /// The offline (or retry) queue is full and its overflow policy is
    /// [`Overflow::Error`](crate::Overflow::Error).
    #[error("the queue is full")]
    QueueFull,
}

/// An acknowledgement did not arrive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout (after every retry, with `retries`).
    #[error("operation has timed out")]
    Timeout,
    /// The connection dropped after the packet was sent; the server may or may not have
    /// handled it.
    #[error("socket has been disconnected")]
    Disconnected,
    /// The packet was dropped from a full queue before it was sent.
    #[error("dropped from a full queue")]
    Dropped,
    /// The client was closed.
    #[error("the client was closed")]
    Closed,
    /// The emit itself was refused.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

impl AckError {
    /// Whether the server may have handled the packet (it was sent, no answer came back).
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, Self::Timeout | Self::Disconnected)
    }
}
