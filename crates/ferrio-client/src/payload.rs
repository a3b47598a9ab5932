//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! placeholders, a received [`Event`], and the [`AckSender`] that answers a server's event.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use ferrio_proto::payload::Payload;

use crate::socket::SocketRef;

/// An event the server sent.
#[derive(Debug)]
pub struct Event {
    pub(crate) name: String,
    pub(crate) payload: Payload,
    pub(crate) ack: Option<AckSender>,
}

impl Event {
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its arguments.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Its JSON arguments (binary ones appear as placeholders). With connection-state
    /// recovery on, the server appends the packet's offset as a last string argument.
    pub fn args(&self) -> &[Value] {
        &self.payload.args
    }

    /// Deserializes argument `index`.
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> Result<T, serde_json::Error> {
        self.payload.arg_as(index)
    }

    /// The bytes of argument `index`, when it is binary.
    pub fn binary(&self, index: usize) -> Option<&Bytes> {
        self.payload.binary_arg(index)
    }

    /// Whether the server asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Takes the acknowledgement handle, to answer later or from another task.
    pub fn take_ack(&mut self) -> Option<AckSender> {
        self.ack.take()
    }

    /// Acknowledges with `payload` (nothing happens if no ack was asked for).
    pub fn ack(&mut self, payload: impl Into<Payload>) {
        if let Some(ack) = self.ack.take() {
            ack.send(payload);
        }
    }

    /// Splits the event into its name, payload and ack handle.
    pub fn into_parts(self) -> (String, Payload, Option<AckSender>) {
        (self.name, self.payload, self.ack)
    }
}

/// Answers one server event that asked for an acknowledgement; at most once.
#[derive(Debug)]
pub struct AckSender {
    pub(crate) socket: SocketRef,
    pub(crate) id: u64,
}

impl AckSender {
    /// Sends the acknowledgement. It is dropped if the connection the event came on is gone
    /// (the server's ack waiter ends with it).
    pub fn send(self, payload: impl Into<Payload>) {
        self.socket.send_ack(self.id, payload.into());
    }
}
