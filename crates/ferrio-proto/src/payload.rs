//! Event arguments as they travel: JSON values plus binary attachments referenced by
//! `{"_placeholder":true,"num":N}` placeholders. Shared by the server and the client.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::socket::{placeholder, placeholder_index};

/// The arguments of an event or of an acknowledgement.
///
/// Binary data rides as attachments: each is referenced from the arguments by a
/// `{"_placeholder":true,"num":N}` object, which is how every Socket.IO peer encodes it.
///
/// ```
/// use ferrio_proto::payload::Payload;
/// use serde_json::json;
///
/// let p = Payload::new().arg("room-1").arg(json!({"n": 1})).binary(vec![1u8, 2, 3]);
/// assert_eq!(p.args.len(), 3);
/// assert_eq!(p.binary_arg(2).map(|b| b.as_ref()), Some(&[1u8, 2, 3][..]));
/// assert_eq!(p.arg_as::<String>(0).unwrap(), "room-1");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// The JSON arguments; binary ones are placeholders.
    pub args: Vec<Value>,
    /// The binary attachments, in placeholder order.
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

    /// Any serializable value as one argument.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::args(vec![serde_json::to_value(value)?]))
    }

    /// Appends a JSON argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends a binary argument.
    pub fn binary(mut self, bytes: impl Into<Bytes>) -> Self {
        let placeholder = self.attach(bytes);
        self.args.push(placeholder);
        self
    }

    /// Adds an attachment and returns the placeholder that stands for it, to be put anywhere
    /// inside a JSON argument (`{"file": <placeholder>}`).
    pub fn attach(&mut self, bytes: impl Into<Bytes>) -> Value {
        let num = self.attachments.len();
        self.attachments.push(bytes.into());
        placeholder(num)
    }

    /// The bytes of argument `index`, when it is a binary placeholder.
    pub fn binary_arg(&self, index: usize) -> Option<&Bytes> {
        self.attachment(self.args.get(index)?)
    }

    /// The bytes a placeholder found anywhere in the arguments stands for.
    pub fn attachment(&self, value: &Value) -> Option<&Bytes> {
        self.attachments.get(placeholder_index(value)?)
    }

    /// Deserializes argument `index` (a missing argument reads as `null`).
    pub fn arg_as<T: DeserializeOwned>(&self, index: usize) -> Result<T, serde_json::Error> {
        T::deserialize(self.args.get(index).unwrap_or(&Value::Null))
    }

    /// Deserializes the whole argument list, e.g. into a tuple.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(serde_json::value::Value::Array(self.args.clone()))
    }

    /// The packet data of an EVENT: the name followed by the arguments.
    pub fn event_data(&self, event: &str) -> Value {
        let mut data = Vec::with_capacity(self.args.len() + 1);
        data.push(Value::from(event));
        data.extend(self.args.iter().cloned());
        Value::Array(data)
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

macro_rules! one_json_arg {
    ($($t:ty),*) => {$(
        impl From<$t> for Payload {
            fn from(value: $t) -> Self {
                Self::args(vec![Value::from(value)])
            }
        }
    )*};
}

one_json_arg!(bool, i32, i64, u32, u64, usize, f64);

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

impl From<Vec<u8>> for Payload {
    fn from(value: Vec<u8>) -> Self {
        Self::new().binary(value)
    }
}

/// Answers one event that asked for an acknowledgement (the server's and the client's ack
/// handles implement it).
pub trait Ack {
    /// Sends the acknowledgement.
    fn send_payload(self, payload: Payload);
}

/// An event the other side sent, with the handle that acknowledges it when it asked for one.
#[derive(Debug)]
pub struct Event<A> {
    name: String,
    payload: Payload,
    ack: Option<A>,
}

impl<A: Ack> Event<A> {
    /// An event as a peer's packet decoded.
    pub fn new(name: String, payload: Payload, ack: Option<A>) -> Self {
        Self { name, payload, ack }
    }

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

    /// Whether the peer asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Takes the acknowledgement handle, if the peer asked for one.
    pub fn take_ack(&mut self) -> Option<A> {
        self.ack.take()
    }

    /// Acknowledges with `payload` (nothing happens if no ack was asked for).
    pub fn ack(&mut self, payload: impl Into<Payload>) {
        if let Some(ack) = self.ack.take() {
            ack.send_payload(payload.into());
        }
    }

    /// Splits the event into its name, payload and ack handle.
    pub fn into_parts(self) -> (String, Payload, Option<A>) {
        (self.name, self.payload, self.ack)
    }
}
