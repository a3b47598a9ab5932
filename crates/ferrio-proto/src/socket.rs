//! Socket.IO v5 packets: `<type>[<#attachments>-][<nsp>,][<ack id>][<JSON>]`, binary
//! attachments with `{"_placeholder":true,"num":N}` placeholders, and the decoder that
//! reassembles a binary packet from its attachments.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::ProtocolError;

/// Attachments a decoder accepts per packet unless told otherwise (the reference's default).
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

/// The largest ack id accepted: JavaScript's `Number.MAX_SAFE_INTEGER`, since every client
/// stores ids as JS numbers.
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// Event names a peer may not send (they are local events in the reference).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The default namespace, which the text form leaves out.
pub const DEFAULT_NAMESPACE: &str = "/";

/// Socket.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketType {
    /// The ASCII digit that starts a packet of this type.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// Parses a wire digit.
    pub fn from_digit(c: u8) -> Result<Self, ProtocolError> {
        Ok(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return Err(ProtocolError::InvalidSocketPacketType),
        })
    }

    /// Whether packets of this type carry an attachment count and attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A complete Socket.IO packet.
///
/// `data` holds the JSON payload as it is on the wire: in a binary packet, each attachment is
/// still a `{"_placeholder":true,"num":N}` object and `attachments[N]` is its bytes.
/// Placeholders mean something only in `BinaryEvent`/`BinaryAck` packets; elsewhere such an
/// object is plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketType,
    /// The namespace, `/` when absent on the wire.
    pub nsp: String,
    /// The ack id, if any.
    pub id: Option<u64>,
    /// The JSON payload, if any.
    pub data: Option<Value>,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
}

impl Packet {
    fn new(kind: PacketType, nsp: impl Into<String>) -> Self {
        let mut nsp = nsp.into();
        if nsp.is_empty() {
            nsp.push_str(DEFAULT_NAMESPACE);
        }
        Self {
            kind,
            nsp,
            id: None,
            data: None,
            attachments: Vec::new(),
        }
    }

    /// A CONNECT packet (client: with an optional auth object; server: with `{"sid":...}`).
    pub fn connect(nsp: impl Into<String>, data: Option<Value>) -> Self {
        Self {
            data,
            ..Self::new(PacketType::Connect, nsp)
        }
    }

    /// A DISCONNECT packet.
    pub fn disconnect(nsp: impl Into<String>) -> Self {
        Self::new(PacketType::Disconnect, nsp)
    }

    /// A CONNECT_ERROR packet with `data` (usually `{"message":...,"data"?:...}`).
    pub fn connect_error(nsp: impl Into<String>, data: Value) -> Self {
        Self {
            data: Some(data),
            ..Self::new(PacketType::ConnectError, nsp)
        }
    }

    /// An EVENT (or BINARY_EVENT when `attachments` is not empty). `data` is the whole array,
    /// event name first.
    pub fn event(nsp: impl Into<String>, data: Value, attachments: Vec<Bytes>, id: Option<u64>) -> Self {
        let kind = if attachments.is_empty() {
            PacketType::Event
        } else {
            PacketType::BinaryEvent
        };
        Self {
            id,
            data: Some(data),
            attachments,
            ..Self::new(kind, nsp)
        }
    }

    /// An ACK (or BINARY_ACK when `attachments` is not empty). `data` is the argument array.
    pub fn ack(nsp: impl Into<String>, id: u64, data: Value, attachments: Vec<Bytes>) -> Self {
        let kind = if attachments.is_empty() {
            PacketType::Ack
        } else {
            PacketType::BinaryAck
        };
        Self {
            id: Some(id),
            data: Some(data),
            attachments,
            ..Self::new(kind, nsp)
        }
    }

    /// For an EVENT/BINARY_EVENT, the event name (a string, or a number rendered as text).
    ///
    /// A number is rendered the way JavaScript turns it into a property key (`1.0` is `"1"`,
    /// `1e21` is `"1e+21"`), since that is the listener it reaches in the reference.
    pub fn event_name(&self) -> Option<Cow<'_, str>> {
        if !matches!(self.kind, PacketType::Event | PacketType::BinaryEvent) {
            return None;
        }
        match self.data.as_ref()?.as_array()?.first()? {
            Value::String(name) => Some(Cow::Borrowed(name)),
            Value::Number(n) => Some(Cow::Owned(js_number_text(n))),
            _ => None,
        }
    }

    /// The attachment a placeholder in this packet's data stands for.
    pub fn attachment(&self, value: &Value) -> Option<&Bytes> {
        if !self.kind.is_binary() {
            return None;
        }
        self.attachments.get(placeholder_index(value)?)
    }

    /// Appends the text part of the packet to `out` (the attachments follow it on the wire as
    /// separate binary messages).
    pub fn encode_into(&self, out: &mut String) {
        out.push(char::from(self.kind.digit()));
        // Writing to a String cannot fail, and a `Value` always serializes.
        if self.kind.is_binary() {
            let _ = write!(out, "{}-", self.attachments.len());
        }
        if !self.nsp.is_empty() && self.nsp != DEFAULT_NAMESPACE {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        if let Some(data) = &self.data {
            let _ = write!(out, "{data}");
        }
    }

    /// The text part of the packet.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }
}

/// Whether `value` is a binary placeholder object, and if so its index.
///
/// As in the reference, any object whose `_placeholder` is `true` is a placeholder; this
/// returns `None` for one whose `num` is not a non-negative integer.
pub fn placeholder_index(value: &Value) -> Option<usize> {
    match classify(value) {
        Placeholder::Index(i) => Some(i),
        Placeholder::None | Placeholder::Malformed => None,
    }
}

/// The placeholder object for attachment `num`.
pub fn placeholder(num: usize) -> Value {
    let mut map = Map::new();
    map.insert("_placeholder".to_owned(), Value::Bool(true));
    map.insert("num".to_owned(), Value::from(num));
    Value::Object(map)
}

enum Placeholder {
    None,
    Index(usize),
    Malformed,
}

fn classify(value: &Value) -> Placeholder {
    let Value::Object(map) = value else {
        return Placeholder::None;
    };
    if map.get("_placeholder") != Some(&Value::Bool(true)) {
        return Placeholder::None;
    }
    let Some(Value::Number(num)) = map.get("num") else {
        return Placeholder::Malformed;
    };
    let index = num.as_u64().or_else(|| {
        // `0.0` is the number 0 in JavaScript, so it names attachment 0 there too.
        let f = num.as_f64()?;
        // Exact conversion: a non-negative integer below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53)).then_some(f as u64)
    });
    index
        .and_then(|n| usize::try_from(n).ok())
        .map_or(Placeholder::Malformed, Placeholder::Index)
}

/// Checks that every placeholder in `data` names one of `count` attachments. Iterative, so
/// the depth of `data` cannot exhaust the stack.
fn check_placeholders(data: &Value, count: usize) -> Result<(), ProtocolError> {
    let mut stack = vec![data];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => match classify(value) {
                Placeholder::None => stack.extend(map.values()),
                Placeholder::Index(i) if i < count => {}
                Placeholder::Index(_) | Placeholder::Malformed => {
                    return Err(ProtocolError::InvalidPlaceholder);
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// JavaScript's `Number::toString` (ECMA-262 §6.1.6.1.20): the shortest round-trip digits,
/// positional between 1e-7 and 1e21, exponential outside.
fn js_number_text(n: &serde_json::Number) -> String {
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    if f == 0.0 {
        return "0".to_owned();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .to_owned();
    }
    // Rust's `{:e}` prints the shortest round-trip digits as `d[.ddd]e<exp>`.
    let sci = format!("{:e}", f.abs());
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i64>() else {
        return sci;
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return sci;
    }
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exp + 1;
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    let zeros = |count: i64| "0".repeat(usize::try_from(count).unwrap_or(0));
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&zeros(n - k));
    } else if 0 < n && n <= 21 {
        let split = usize::try_from(n).unwrap_or(0);
        out.push_str(&digits[..split]);
        out.push('.');
        out.push_str(&digits[split..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&zeros(-n));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e >= 0 { '+' } else { '-' }, e.abs());
    }
    out
}

/// Decodes Socket.IO packets from Engine.IO messages, reassembling binary packets.
///
/// Validation follows the reference decoder: namespaces, digit-only ack ids up to
/// [`MAX_ACK_ID`], payload shapes per packet type, reserved event names, the attachment count
/// limit, and placeholders that refer to existing attachments.
///
/// After an error the connection is to be closed; the decoder holds no partial packet then.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    pending: Option<Packet>,
    expected: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ATTACHMENTS)
    }
}

impl Decoder {
    /// A decoder accepting at most `max_attachments` attachments per packet.
    pub fn new(max_attachments: usize) -> Self {
        Self {
            max_attachments,
            pending: None,
            expected: 0,
        }
    }

    /// Feeds a text message. Returns the packet, or `None` when it is a binary packet that
    /// now waits for its attachments. A text message while attachments are awaited is an error.
    ///
    /// A binary packet announcing 0 attachments is complete at once, as in the reference.
    /// Placeholders are checked against the announced count here, so a packet that can never
    /// be completed is refused before its attachments are buffered.
    pub fn decode_text(&mut self, text: &str) -> Result<Option<Packet>, ProtocolError> {
        if self.pending.is_some() {
            self.reset();
            return Err(ProtocolError::AttachmentCountMismatch);
        }
        let (mut packet, expected) = parse(text, self.max_attachments)?;
        if !packet.kind.is_binary() {
            return Ok(Some(packet));
        }
        if let Some(data) = &packet.data {
            check_placeholders(data, expected)?;
        }
        if expected == 0 {
            return Ok(Some(packet));
        }
        // Bounded: the limit is configuration, and a huge one must not become an allocation.
        packet
            .attachments
            .reserve_exact(expected.min(DEFAULT_MAX_ATTACHMENTS));
        self.pending = Some(packet);
        self.expected = expected;
        Ok(None)
    }

    /// Feeds a binary message (an attachment). Returns the packet once its last attachment
    /// arrived. A binary message when none is awaited is an error.
    pub fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<Packet>, ProtocolError> {
        let Some(packet) = self.pending.as_mut() else {
            return Err(ProtocolError::UnexpectedAttachment);
        };
        packet.attachments.push(bytes);
        if packet.attachments.len() < self.expected {
            return Ok(None);
        }
        self.expected = 0;
        Ok(self.pending.take())
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_awaiting_attachments(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops a partially received packet.
    pub fn reset(&mut self) {
        self.pending = None;
        self.expected = 0;
    }
}

/// Parses the text form of a packet; returns it with the attachment count it announces.
fn parse(text: &str, max_attachments: usize) -> Result<(Packet, usize), ProtocolError> {
    let Some(&type_digit) = text.as_bytes().first() else {
        return Err(ProtocolError::InvalidSocketPacketType);
    };
    let kind = PacketType::from_digit(type_digit)?;
    // The type digit is ASCII, so byte 1 is a char boundary; every later split is at an ASCII
    // byte found by `find` or a digit count, so slicing cannot panic.
    let mut rest = &text[1..];

    let mut attachments = 0;
    if kind.is_binary() {
        let dash = rest.find('-').ok_or(ProtocolError::InvalidAttachmentCount)?;
        attachments = saturating_decimal(&rest[..dash]).ok_or(ProtocolError::InvalidAttachmentCount)?;
        if attachments > max_attachments {
            return Err(ProtocolError::TooManyAttachments(attachments));
        }
        rest = &rest[dash + 1..];
    }

    let nsp = if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                let nsp = &rest[..comma];
                rest = &rest[comma + 1..];
                nsp
            }
            None => std::mem::take(&mut rest),
        }
    } else {
        DEFAULT_NAMESPACE
    };

    let id_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if id_len == 0 {
        None
    } else {
        let id = rest[..id_len]
            .parse::<u64>()
            .map_err(|_| ProtocolError::InvalidAckId)?;
        if id > MAX_ACK_ID {
            return Err(ProtocolError::InvalidAckId);
        }
        rest = &rest[id_len..];
        Some(id)
    };

    let data = if rest.is_empty() {
        None
    } else {
        // serde_json's recursion limit (128) turns a nesting bomb into an error.
        let value: Value = serde_json::from_str(rest).map_err(|_| ProtocolError::InvalidJson)?;
        check_payload(kind, &value)?;
        Some(value)
    };

    let packet = Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments: Vec::new(),
    };
    Ok((packet, attachments))
}

/// A non-empty run of ASCII digits as a number, saturating (any count that large is refused
/// anyway); `None` for anything else.
fn saturating_decimal(digits: &str) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0usize, |acc, b| {
        b.is_ascii_digit()
            .then(|| acc.saturating_mul(10).saturating_add(usize::from(b - b'0')))
    })
}

/// The payload shapes the reference accepts per packet type (`Decoder.isPayloadValid`); only
/// a payload that is present is checked.
fn check_payload(kind: PacketType, payload: &Value) -> Result<(), ProtocolError> {
    let valid = match kind {
        PacketType::Connect => payload.is_object(),
        PacketType::Disconnect => false,
        PacketType::ConnectError => payload.is_string() || payload.is_object(),
        PacketType::Event | PacketType::BinaryEvent => {
            match payload.as_array().and_then(|args| args.first()) {
                Some(Value::Number(_)) => true,
                Some(Value::String(name)) => {
                    if RESERVED_EVENTS.contains(&name.as_str()) {
                        return Err(ProtocolError::ReservedEventName);
                    }
                    true
                }
                _ => false,
            }
        }
        PacketType::Ack | PacketType::BinaryAck => payload.is_array(),
    };
    if valid {
        Ok(())
    } else {
        Err(ProtocolError::InvalidPayload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(text: &str) -> Result<Option<Packet>, ProtocolError> {
        Decoder::default().decode_text(text)
    }

    fn decoded(text: &str) -> Packet {
        match decode(text) {
            Ok(Some(packet)) => packet,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    fn ph(num: usize) -> Value {
        placeholder(num)
    }

    #[test]
    fn type_digits_round_trip() {
        for d in b'0'..=b'6' {
            assert_eq!(PacketType::from_digit(d).unwrap().digit(), d);
        }
        assert_eq!(
            PacketType::from_digit(b'7'),
            Err(ProtocolError::InvalidSocketPacketType)
        );
    }

    // ----- encoding -----

    #[test]
    fn encodes_the_wire_examples() {
        assert_eq!(
            Packet::event("/", json!(["foo"]), vec![], None).encode(),
            r#"2["foo"]"#
        );
        assert_eq!(
            Packet::connect("/admin", Some(json!({"token": "1"}))).encode(),
            r#"0/admin,{"token":"1"}"#
        );
        assert_eq!(
            Packet::event(
                "/",
                json!(["message", ph(0)]),
                vec![Bytes::from_static(&[1])],
                None
            )
            .encode(),
            r#"51-["message",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(
            Packet::ack("/", 456, json!([1, "2", {"3": [false]}]), vec![]).encode(),
            r#"3456[1,"2",{"3":[false]}]"#
        );
        assert_eq!(
            Packet::ack("/", 789, json!([ph(0), ph(1)]), vec![Bytes::new(), Bytes::new()]).encode(),
            r#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
    }

    #[test]
    fn namespace_is_written_only_when_not_default() {
        assert_eq!(Packet::disconnect("/").encode(), "1");
        assert_eq!(Packet::disconnect("").encode(), "1");
        assert_eq!(Packet::disconnect("/admin").encode(), "1/admin,");
        assert_eq!(Packet::connect("/", None).encode(), "0");
        assert_eq!(
            Packet::connect_error("/random", json!({"message": "Invalid namespace"})).encode(),
            r#"4/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(
            Packet::event("/chat", json!(["a"]), vec![], Some(12)).encode(),
            r#"2/chat,12["a"]"#
        );
    }

    #[test]
    fn constructors_pick_binary_types() {
        assert_eq!(
            Packet::event("/", json!(["a"]), vec![], None).kind,
            PacketType::Event
        );
        assert_eq!(
            Packet::event("/", json!(["a"]), vec![Bytes::new()], None).kind,
            PacketType::BinaryEvent
        );
        assert_eq!(Packet::ack("/", 1, json!([]), vec![]).kind, PacketType::Ack);
        assert_eq!(
            Packet::ack("/", 1, json!([]), vec![Bytes::new()]).kind,
            PacketType::BinaryAck
        );
        assert_eq!(Packet::disconnect("").nsp, "/");
    }

    #[test]
    fn placeholder_helpers() {
        assert_eq!(ph(3).to_string(), r#"{"_placeholder":true,"num":3}"#);
        assert_eq!(placeholder_index(&ph(3)), Some(3));
        assert_eq!(
            placeholder_index(&json!({"_placeholder": true, "num": 0.0})),
            Some(0)
        );
        assert_eq!(
            placeholder_index(&json!({"_placeholder": true, "num": 0.5})),
            None
        );
        assert_eq!(placeholder_index(&json!({"_placeholder": true, "num": -1})), None);
        assert_eq!(placeholder_index(&json!({"_placeholder": true})), None);
        assert_eq!(
            placeholder_index(&json!({"_placeholder": "true", "num": 0})),
            None
        );
        assert_eq!(placeholder_index(&json!([true, 0])), None);

        let p = Packet::event("/", json!(["a", ph(0)]), vec![Bytes::from_static(b"x")], None);
        assert_eq!(p.attachment(&ph(0)), Some(&Bytes::from_static(b"x")));
        assert_eq!(p.attachment(&ph(1)), None);
        let plain = Packet::event("/", json!(["a", ph(0)]), vec![], None);
        assert_eq!(plain.attachment(&ph(0)), None);
    }

    #[test]
    fn event_names() {
        assert_eq!(decoded(r#"2["foo",1]"#).event_name().as_deref(), Some("foo"));
        assert_eq!(decoded("2[42]").event_name().as_deref(), Some("42"));
        assert_eq!(decoded("2[1.0]").event_name().as_deref(), Some("1"));
        assert_eq!(decoded("2[-1.5]").event_name().as_deref(), Some("-1.5"));
        assert_eq!(decoded("2[1e21]").event_name().as_deref(), Some("1e+21"));
        assert_eq!(decoded("2[1.5e-7]").event_name().as_deref(), Some("1.5e-7"));
        assert_eq!(decoded("2[0.000001]").event_name().as_deref(), Some("0.000001"));
        assert_eq!(
            decoded("2[123e18]").event_name().as_deref(),
            Some("123000000000000000000")
        );
        assert_eq!(decoded("2[-0]").event_name().as_deref(), Some("0"));
        assert_eq!(
            decoded("2[9007199254740993]").event_name().as_deref(),
            Some("9007199254740992")
        );
        assert_eq!(decoded("2").event_name(), None);
        assert_eq!(decoded("3[\"foo\"]").event_name(), None);
        let mut d = Decoder::default();
        assert_eq!(
            d.decode_text(r#"51-["bin",{"_placeholder":true,"num":0}]"#),
            Ok(None)
        );
        let p = d.decode_binary(Bytes::new()).unwrap().unwrap();
        assert_eq!(p.event_name().as_deref(), Some("bin"));
    }

    #[test]
    fn js_numbers_render_like_javascript() {
        let cases = [
            (json!(0), "0"),
            (json!(100), "100"),
            (json!(0.1), "0.1"),
            (json!(1e-7), "1e-7"),
            (json!(123.456), "123.456"),
            (json!(1e20), "100000000000000000000"),
            (json!(1.5e300), "1.5e+300"),
            (json!(-2.5e-10), "-2.5e-10"),
            (json!(5e-324), "5e-324"),
        ];
        for (value, expected) in cases {
            let Value::Number(n) = value else { unreachable!() };
            assert_eq!(js_number_text(&n), expected);
        }
    }

    // ----- decoding: wire examples -----

    #[test]
    fn decodes_the_wire_examples() {
        let p = decoded(r#"2["foo"]"#);
        assert_eq!(p, Packet::event("/", json!(["foo"]), vec![], None));

        let p = decoded(r#"0/admin,{"token":"1"}"#);
        assert_eq!(p, Packet::connect("/admin", Some(json!({"token": "1"}))));

        let p = decoded(r#"3456[1,"2",{"3":[false]}]"#);
        assert_eq!(p, Packet::ack("/", 456, json!([1, "2", {"3": [false]}]), vec![]));

        let p = decoded(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#);
        assert_eq!(p.id, Some(456));
        assert_eq!(p.event_name().as_deref(), Some("message-with-ack"));

        let p = decoded(r#"4/private,{"message":"not authorized","data":{"reason":"no token"}}"#);
        assert_eq!(p.kind, PacketType::ConnectError);
        assert_eq!(p.nsp, "/private");
    }

    #[test]
    fn decodes_binary_event_with_attachment() {
        let mut d = Decoder::default();
        let text = r#"51-["message",{"_placeholder":true,"num":0}]"#;
        assert_eq!(d.decode_text(text), Ok(None));
        assert!(d.is_awaiting_attachments());
        let p = d.decode_binary(Bytes::from_static(&[1, 2, 3])).unwrap().unwrap();
        assert!(!d.is_awaiting_attachments());
        assert_eq!(
            p,
            Packet::event(
                "/",
                json!(["message", ph(0)]),
                vec![Bytes::from_static(&[1, 2, 3])],
                None
            )
        );
        assert_eq!(p.encode(), text);
    }

    #[test]
    fn decodes_binary_ack_with_two_attachments() {
        let mut d = Decoder::default();
        let text = r#"62-/nsp,789[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#;
        assert_eq!(d.decode_text(text), Ok(None));
        assert_eq!(d.decode_binary(Bytes::from_static(b"a")), Ok(None));
        let p = d.decode_binary(Bytes::from_static(b"b")).unwrap().unwrap();
        assert_eq!(p.kind, PacketType::BinaryAck);
        assert_eq!(p.nsp, "/nsp");
        assert_eq!(p.id, Some(789));
        assert_eq!(
            p.attachments,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        // The decoder is ready for the next packet.
        assert_eq!(
            d.decode_text("2[\"x\"]").unwrap().unwrap().kind,
            PacketType::Event
        );
    }

    #[test]
    fn binary_packet_with_zero_attachments_is_complete_at_once() {
        let mut d = Decoder::default();
        let p = d.decode_text(r#"50-["a"]"#).unwrap().unwrap();
        assert_eq!(p.kind, PacketType::BinaryEvent);
        assert!(p.attachments.is_empty());
        assert!(!d.is_awaiting_attachments());
        assert_eq!(d.decode_text("60-1[]").unwrap().unwrap().id, Some(1));
        assert_eq!(
            d.decode_text(r#"50-["a",{"_placeholder":true,"num":0}]"#),
            Err(ProtocolError::InvalidPlaceholder)
        );
    }

    #[test]
    fn binary_packet_without_data_waits_for_its_attachments() {
        let mut d = Decoder::default();
        assert_eq!(d.decode_text("51-"), Ok(None));
        let p = d.decode_binary(Bytes::new()).unwrap().unwrap();
        assert_eq!(p.data, None);
        assert_eq!(p.attachments.len(), 1);
    }

    // ----- namespaces -----

    #[test]
    fn namespace_ends_at_comma_or_end() {
        assert_eq!(decoded("0/custom").nsp, "/custom");
        assert_eq!(decoded("1/custom,").nsp, "/custom");
        assert_eq!(decoded("0/custom,").data, None);
        assert_eq!(decoded("0/").nsp, "/");
        assert_eq!(decoded("0/,").nsp, "/");
        assert_eq!(decoded("0").nsp, "/");
        assert_eq!(decoded("0/a/b?x=1,{}").nsp, "/a/b?x=1");
        assert_eq!(decoded("2/é,[\"x\"]").nsp, "/é");
        // Without a comma, everything to the end is the namespace.
        assert_eq!(decoded(r#"2/chat["a"]"#).nsp, r#"/chat["a"]"#);
        let p = decoded(r#"2/chat,7["a"]"#);
        assert_eq!((p.nsp.as_str(), p.id), ("/chat", Some(7)));
    }

    #[test]
    fn text_not_starting_with_slash_is_not_a_namespace() {
        assert_eq!(decode(r#"2admin,["a"]"#), Err(ProtocolError::InvalidJson));
    }

    // ----- ack ids -----

    #[test]
    fn ack_ids() {
        assert_eq!(decoded(r#"21["a"]"#).id, Some(1));
        assert_eq!(decoded(r#"20["a"]"#).id, Some(0));
        assert_eq!(decoded(r#"2007["a"]"#).id, Some(7));
        assert_eq!(decoded("3/x,12[]").id, Some(12));
        assert_eq!(decoded("312").data, None);
        assert_eq!(decoded(&format!("3{MAX_ACK_ID}[]")).id, Some(MAX_ACK_ID));
        assert_eq!(
            decode(&format!("3{}[]", MAX_ACK_ID + 1)),
            Err(ProtocolError::InvalidAckId)
        );
        assert_eq!(
            decode("399999999999999999999999999[]"),
            Err(ProtocolError::InvalidAckId)
        );
        assert_eq!(
            decode("3/x,18446744073709551616"),
            Err(ProtocolError::InvalidAckId)
        );
    }

    #[test]
    fn any_type_may_carry_an_ack_id() {
        // The reference reads digits after the namespace whatever the type.
        assert_eq!(decoded("01").id, Some(1));
        assert_eq!(decoded("0/a,5{}").id, Some(5));
        assert_eq!(decoded("17").id, Some(7));
        assert_eq!(decoded("41\"x\"").id, Some(1));
    }

    #[test]
    fn non_digit_ack_id_is_invalid_json() {
        // The suite's `42abc[...]` is Engine.IO `4` + Socket.IO `2abc[...]`.
        assert_eq!(decode(r#"2abc["a"]"#), Err(ProtocolError::InvalidJson));
        assert_eq!(decode(r#"212a["a"]"#), Err(ProtocolError::InvalidJson));
        assert_eq!(decode(r#"2-1["a"]"#), Err(ProtocolError::InvalidJson));
    }

    // ----- attachment counts -----

    #[test]
    fn attachment_count_prefix() {
        assert_eq!(decode(r#"5["a"]"#), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode(r#"5x-["a"]"#), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode(r#"5-["a"]"#), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode(r#"51["a"]"#), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode("5"), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode("6"), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode(r#"5 1-["a"]"#), Err(ProtocolError::InvalidAttachmentCount));
        assert_eq!(decode(r#"5["a-b"]"#), Err(ProtocolError::InvalidAttachmentCount));
    }

    #[test]
    fn attachment_limit() {
        assert_eq!(decode(r#"510-["a"]"#), Ok(None));
        assert_eq!(decode(r#"511-["a"]"#), Err(ProtocolError::TooManyAttachments(11)));
        assert_eq!(
            decode(r#"5999999999999999999999999-["a"]"#),
            Err(ProtocolError::TooManyAttachments(usize::MAX))
        );
        let mut strict = Decoder::new(1);
        assert_eq!(
            strict.decode_text(r#"62-1[]"#),
            Err(ProtocolError::TooManyAttachments(2))
        );
        let mut none = Decoder::new(0);
        assert_eq!(
            none.decode_text(r#"61-1[]"#),
            Err(ProtocolError::TooManyAttachments(1))
        );
        assert!(none.decode_text("60-1[]").unwrap().is_some());
        // An unlimited decoder does not allocate for the announced count up front.
        let mut unlimited = Decoder::new(usize::MAX);
        assert_eq!(unlimited.decode_text("6999999999999999999999-1[]"), Ok(None));
    }

    // ----- JSON -----

    #[test]
    fn json_must_parse_completely() {
        assert_eq!(decode("2[\"a\"]x"), Err(ProtocolError::InvalidJson));
        assert_eq!(decode("2[\"a\"][]"), Err(ProtocolError::InvalidJson));
        assert_eq!(decode("2[\"a\""), Err(ProtocolError::InvalidJson));
        assert_eq!(decode("0{'a':1}"), Err(ProtocolError::InvalidJson));
        assert_eq!(decode("4abc"), Err(ProtocolError::InvalidJson));
        // Whitespace around the value is JSON whitespace, as in `JSON.parse`.
        assert_eq!(decoded("2[\"a\"] \n").data, Some(json!(["a"])));
    }

    #[test]
    fn nesting_bomb_is_invalid_json() {
        let bomb = format!("2{}", "[".repeat(100_000));
        assert_eq!(decode(&bomb), Err(ProtocolError::InvalidJson));
        let closed = format!("2[\"a\",{}{}]", "[".repeat(5_000), "]".repeat(5_000));
        assert_eq!(decode(&closed), Err(ProtocolError::InvalidJson));
        let objects = format!("0{}", "{\"a\":".repeat(100_000));
        assert_eq!(decode(&objects), Err(ProtocolError::InvalidJson));
        // Moderate nesting is fine.
        let ok = format!("2[\"a\",{}{}]", "[".repeat(100), "]".repeat(100));
        assert!(decode(&ok).unwrap().is_some());
    }

    // ----- payload shapes -----

    #[test]
    fn connect_payload_is_an_object_or_absent() {
        assert_eq!(decoded("0").data, None);
        assert_eq!(decoded("0{}").data, Some(json!({})));
        for bad in ["0[]", "0\"x\"", "0-1", "0null", "0true"] {
            assert_eq!(decode(bad), Err(ProtocolError::InvalidPayload), "{bad}");
        }
    }

    #[test]
    fn disconnect_has_no_payload() {
        assert_eq!(decoded("1").kind, PacketType::Disconnect);
        assert_eq!(decoded("1/admin,").nsp, "/admin");
        for bad in ["1{}", "1[]", "1\"x\"", "1null"] {
            assert_eq!(decode(bad), Err(ProtocolError::InvalidPayload), "{bad}");
        }
    }

    #[test]
    fn connect_error_payload_is_a_string_or_object() {
        assert_eq!(decoded("4\"nope\"").data, Some(json!("nope")));
        assert_eq!(
            decoded("4{\"message\":\"x\"}").data,
            Some(json!({"message": "x"}))
        );
        for bad in ["4[]", "4-1", "4null", "4false"] {
            assert_eq!(decode(bad), Err(ProtocolError::InvalidPayload), "{bad}");
        }
    }

    #[test]
    fn event_payload_is_a_named_array() {
        assert!(decoded("2[1]").data.is_some());
        assert!(decoded("2[\"a\",null]").data.is_some());
        for bad in [
            "2{}",
            "2[]",
            "2[null]",
            "2[[\"a\"]]",
            "2[{}]",
            "2[true]",
            "2\"a\"",
            "2null",
        ] {
            assert_eq!(decode(bad), Err(ProtocolError::InvalidPayload), "{bad}");
        }
        assert_eq!(decode("51-{}"), Err(ProtocolError::InvalidPayload));
        assert_eq!(decode("51-[]"), Err(ProtocolError::InvalidPayload));
    }

    #[test]
    fn event_name_must_not_be_reserved() {
        for name in RESERVED_EVENTS {
            assert_eq!(
                decode(&format!("2[\"{name}\"]")),
                Err(ProtocolError::ReservedEventName),
                "{name}"
            );
            assert_eq!(
                decode(&format!("51-[\"{name}\",{{\"_placeholder\":true,\"num\":0}}]")),
                Err(ProtocolError::ReservedEventName)
            );
        }
        // Only exact names are reserved.
        assert!(decoded("2[\"Connect\"]").data.is_some());
        assert!(decoded("2[\"connect \"]").data.is_some());
    }

    #[test]
    fn ack_payload_is_an_array() {
        assert_eq!(decoded("3[]").data, Some(json!([])));
        assert_eq!(decoded("31").data, None);
        for bad in ["3{}", "3\"a\"", "3null", "31{}"] {
            assert_eq!(decode(bad), Err(ProtocolError::InvalidPayload), "{bad}");
        }
        assert_eq!(decode("61-1{}"), Err(ProtocolError::InvalidPayload));
    }

    #[test]
    fn absent_payload_is_not_checked() {
        // The reference validates only a payload that is present.
        assert_eq!(decoded("2").data, None);
        assert_eq!(decoded("3").data, None);
        assert_eq!(decoded("4").data, None);
    }

    // ----- packet types -----

    #[test]
    fn packet_type_must_be_a_digit_from_0_to_6() {
        for bad in ["", "7", "9[\"a\"]", "a", " 0", "é", "-1"] {
            assert_eq!(
                decode(bad),
                Err(ProtocolError::InvalidSocketPacketType),
                "{bad:?}"
            );
        }
    }

    // ----- placeholders and reassembly -----

    #[test]
    fn placeholders_must_name_an_attachment() {
        let cases = [
            r#"51-["a",{"_placeholder":true,"num":1}]"#,
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            r#"51-["a",{"_placeholder":true}]"#,
            r#"51-["a",{"x":[{"y":{"_placeholder":true,"num":3}}]}]"#,
            r#"61-1[{"_placeholder":true,"num":99999999999999999999}]"#,
        ];
        for text in cases {
            assert_eq!(decode(text), Err(ProtocolError::InvalidPlaceholder), "{text}");
        }
        // Not placeholders: `_placeholder` must be `true`.
        assert_eq!(decode(r#"51-["a",{"_placeholder":1,"num":5}]"#), Ok(None));
        assert_eq!(decode(r#"51-["a",{"_placeholder":false}]"#), Ok(None));
        // Nested, and `0.0` is 0.
        assert_eq!(
            decode(r#"52-["a",{"x":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0.0}]"#),
            Ok(None)
        );
        // Plain EVENTs keep such objects as data.
        assert!(decoded(r#"2["a",{"_placeholder":true,"num":7}]"#).data.is_some());
    }

    #[test]
    fn text_while_awaiting_attachments_is_a_mismatch_and_resets() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode_text(r#"52-["a",{"_placeholder":true,"num":0}]"#),
            Ok(None)
        );
        assert_eq!(d.decode_binary(Bytes::new()), Ok(None));
        assert_eq!(
            d.decode_text(r#"2["b"]"#),
            Err(ProtocolError::AttachmentCountMismatch)
        );
        assert!(!d.is_awaiting_attachments());
        assert_eq!(
            d.decode_text(r#"2["b"]"#).unwrap().unwrap().kind,
            PacketType::Event
        );
    }

    #[test]
    fn attachment_without_a_binary_packet_is_unexpected() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode_binary(Bytes::new()),
            Err(ProtocolError::UnexpectedAttachment)
        );
        assert_eq!(d.decode_text(r#"51-["a"]"#), Ok(None));
        assert!(d.decode_binary(Bytes::new()).unwrap().is_some());
        assert_eq!(
            d.decode_binary(Bytes::new()),
            Err(ProtocolError::UnexpectedAttachment)
        );
    }

    #[test]
    fn reset_drops_a_partial_packet() {
        let mut d = Decoder::default();
        assert_eq!(d.decode_text(r#"51-["a"]"#), Ok(None));
        d.reset();
        assert!(!d.is_awaiting_attachments());
        assert_eq!(
            d.decode_binary(Bytes::new()),
            Err(ProtocolError::UnexpectedAttachment)
        );
    }

    #[test]
    fn errors_leave_an_idle_decoder_idle() {
        let mut d = Decoder::default();
        for bad in ["", "9", "2{}", "5x-", "2[\"connect\"]"] {
            assert!(d.decode_text(bad).is_err());
            assert!(!d.is_awaiting_attachments());
        }
    }
}
