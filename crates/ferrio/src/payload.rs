//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! placeholders, the received [`Event`], and the [`AckSender`] that answers it.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use ferrio_proto::payload::Payload;

use crate::Socket;

/// An event a client sent.
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

    /// Its JSON arguments (binary ones appear as placeholders).
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

    /// Whether the client asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Takes the acknowledgement handle, if the client asked for one.
    pub fn take_ack(&mut self) -> Option<AckSender> {
        self.ack.take()
    }

    /// Acknowledges with `payload` (nothing happens if no ack was asked for).
    pub fn ack(&mut self, payload: impl Into<Payload>) {
        if let Some(ack) = self.ack.take() {
            ack.send(payload);
        }
    }

    /// Splits the event into its payload and its ack handle.
    pub fn into_parts(self) -> (String, Payload, Option<AckSender>) {
        (self.name, self.payload, self.ack)
    }
}

/// Answers one client event that asked for an acknowledgement. It may be moved to another
/// task and used later; it answers at most once.
#[derive(Debug)]
pub struct AckSender {
    pub(crate) socket: Socket,
    pub(crate) id: u64,
}

impl AckSender {
    /// Sends the acknowledgement.
    pub fn send(self, payload: impl Into<Payload>) {
        self.socket.send_ack(self.id, payload.into());
    }
}
