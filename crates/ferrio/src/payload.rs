//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! placeholders, the received [`Event`], and the [`AckSender`] that answers it.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use ferrio_proto::socket::{placeholder, placeholder_index};

use crate::Socket;

/// The arguments of an event or an acknowledgement.
///
/// Binary data rides as attachments: each one is referenced from the arguments by a
/// `{"_placeholder":true,"num":N}` object, which is how every Socket.IO client encodes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// These JSON arguments.
    pub fn args(args: Vec<Value>) -> Self {
        Self {
            args,
            attachments: Vec::new(),
        }
    }

    /// Any serializable value as one argument (`Value::Null` when it cannot be serialized).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        Self::args(vec![serde_json::to_value(value).unwrap_or(Value::Null)])
    }

    /// Appends a JSON argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends a binary argument.
    pub fn binary(mut self, bytes: impl Into<Bytes>) -> Self {
        self.args.push(placeholder(self.attachments.len()));
        self.attachments.push(bytes.into());
        self
    }

    /// The bytes of argument `index`, when it is a binary placeholder.
    pub fn binary_arg(&self, index: usize) -> Option<&Bytes> {
        let num = placeholder_index(self.args.get(index)?)?;
        self.attachments.get(num)
    }

    /// Deserializes argument `index`.
    pub fn arg_as<T: DeserializeOwned>(&self, index: usize) -> Result<T, serde_json::Error> {
        T::deserialize(self.args.get(index).unwrap_or(&Value::Null))
    }
}

impl From<Value> for Payload {
    /// One argument (an array stays one array argument).
    fn from(value: Value) -> Self {
        Self::args(vec![value])
    }
}

impl From<&str> for Payload {
    fn from(value: &str) -> Self {
        Self::args(vec![Value::from(value)])
    }
}

impl From<String> for Payload {
    fn from(value: String) -> Self {
        Self::args(vec![Value::from(value)])
    }
}

impl From<()> for Payload {
    fn from((): ()) -> Self {
        Self::default()
    }
}

impl From<Bytes> for Payload {
    fn from(value: Bytes) -> Self {
        Self::new().binary(value)
    }
}

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
