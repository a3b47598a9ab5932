//! Engine.IO v4 packets: the text form (`<type digit><payload>`), raw binary messages, and
//! HTTP long-polling payloads (records joined by `\x1e`, binary records as `b<base64>`).

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use crate::ProtocolError;

/// The record separator between packets in a long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The prefix of a binary record in a long-polling payload (a `message` with no type digit).
pub const BINARY_PREFIX: u8 = b'b';

/// Decodes the standard alphabet with or without padding and tolerates non-zero trailing bits:
/// the reference decodes with Node's `Buffer.from(_, "base64")`, which accepts all of these.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Engine.IO packet types, by their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

impl PacketType {
    /// The ASCII digit that starts a text packet of this type.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// Parses a wire digit.
    pub fn from_digit(c: u8) -> Result<Self, ProtocolError> {
        Ok(match c {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return Err(ProtocolError::InvalidPacketType(char::from(c))),
        })
    }
}

/// The payload of a `message` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// A text message (a WebSocket text frame `4...`, or a polling record `4...`).
    Text(&'a str),
    /// A binary message (a raw WebSocket binary frame, or a polling record `b<base64>`).
    Binary(Cow<'a, [u8]>),
}

/// A decoded Engine.IO packet borrowing from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{json}`: the handshake (server to client).
    Open(&'a str),
    /// `1`
    Close,
    /// `2` or `2probe`
    Ping(&'a str),
    /// `3` or `3probe`
    Pong(&'a str),
    /// `4...` or a binary message
    Message(Data<'a>),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

impl Packet<'_> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Open(_) => PacketType::Open,
            Self::Close => PacketType::Close,
            Self::Ping(_) => PacketType::Ping,
            Self::Pong(_) => PacketType::Pong,
            Self::Message(_) => PacketType::Message,
            Self::Upgrade => PacketType::Upgrade,
            Self::Noop => PacketType::Noop,
        }
    }
}

/// Decodes one text packet: a WebSocket text frame, or one record of a polling payload.
///
/// A packet starting with `b` is a base64 binary message, as in the reference (which applies
/// this rule to WebSocket text frames too). Anything after the type digit of `close`,
/// `upgrade` and `noop` is ignored: those packets carry no data.
pub fn decode_text(input: &str) -> Result<Packet<'_>, ProtocolError> {
    let Some(first) = input.chars().next() else {
        return Err(ProtocolError::EmptyPacket);
    };
    if first == char::from(BINARY_PREFIX) {
        let bytes = LENIENT_BASE64
            .decode(&input[1..])
            .map_err(|_| ProtocolError::InvalidBase64)?;
        return Ok(Packet::Message(Data::Binary(Cow::Owned(bytes))));
    }
    if !first.is_ascii() {
        return Err(ProtocolError::InvalidPacketType(first));
    }
    // `first` is ASCII, so byte 1 is a char boundary.
    let rest = &input[1..];
    Ok(match PacketType::from_digit(first as u8)? {
        PacketType::Open => Packet::Open(rest),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(rest),
        PacketType::Pong => Packet::Pong(rest),
        PacketType::Message => Packet::Message(Data::Text(rest)),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a WebSocket binary frame: a `message` whose bytes are the whole frame (no type byte).
pub fn decode_binary(frame: &[u8]) -> Packet<'_> {
    Packet::Message(Data::Binary(Cow::Borrowed(frame)))
}

/// Decodes a long-polling payload: records separated by `\x1e`; a record starting with `b` is a
/// base64 binary message, any other record is a text packet. An empty body is an error, and so
/// is an empty record.
///
/// The whole payload is rejected at the first invalid record. The reference hands the valid
/// records before it to the session and then closes it with "parse error"; use
/// [`payload_records`] to do the same.
pub fn decode_payload(body: &str) -> Result<Vec<Packet<'_>>, ProtocolError> {
    payload_records(body).collect()
}

/// The records of a long-polling payload, decoded one at a time. It ends after the first
/// error, as the reference stops decoding there.
pub fn payload_records(body: &str) -> PayloadRecords<'_> {
    PayloadRecords {
        records: Some(body.split(char::from(RECORD_SEPARATOR))),
    }
}

/// Iterator returned by [`payload_records`].
#[derive(Debug, Clone)]
pub struct PayloadRecords<'a> {
    records: Option<std::str::Split<'a, char>>,
}

impl<'a> Iterator for PayloadRecords<'a> {
    type Item = Result<Packet<'a>, ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.records.as_mut()?.next()?;
        let packet = decode_text(record);
        if packet.is_err() {
            self.records = None;
        }
        Some(packet)
    }
}

impl std::iter::FusedIterator for PayloadRecords<'_> {}

/// Appends the text form of a packet (`<digit><payload>`) to `out`.
///
/// `Message(Data::Binary)` has no text form with a type digit; it is written as `b<base64>`,
/// the form the reference uses when a transport cannot carry binary, and which
/// [`decode_text`] reads back.
pub fn encode_text_into(packet: &Packet<'_>, out: &mut String) {
    let payload = match packet {
        Packet::Message(Data::Binary(bytes)) => {
            out.push(char::from(BINARY_PREFIX));
            STANDARD.encode_string(bytes, out);
            return;
        }
        Packet::Open(text) | Packet::Ping(text) | Packet::Pong(text) => text,
        Packet::Message(Data::Text(text)) => text,
        Packet::Close | Packet::Upgrade | Packet::Noop => "",
    };
    out.push(char::from(packet.packet_type().digit()));
    out.push_str(payload);
}

/// Builds a long-polling payload: records separated by `\x1e`, binary records as `b<base64>`.
#[derive(Debug, Default)]
pub struct PayloadEncoder {
    buf: String,
}

impl PayloadEncoder {
    /// An empty payload with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: String::with_capacity(capacity),
        }
    }

    /// Appends a text packet given as its complete text form (e.g. `4hello`, `2`, `6`).
    pub fn push_text(&mut self, text: &str) {
        self.separate();
        self.buf.push_str(text);
    }

    /// Appends a binary message as `b<base64>`.
    pub fn push_binary(&mut self, bytes: &[u8]) {
        self.separate();
        self.buf.push(char::from(BINARY_PREFIX));
        STANDARD.encode_string(bytes, &mut self.buf);
    }

    /// Appends any packet in its polling form.
    pub fn push_packet(&mut self, packet: &Packet<'_>) {
        self.separate();
        encode_text_into(packet, &mut self.buf);
    }

    /// Whether nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The payload's length so far, in bytes (to stay under the peer's `maxPayload`).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The payload's bytes (UTF-8).
    pub fn finish(self) -> Vec<u8> {
        self.buf.into_bytes()
    }

    fn separate(&mut self) {
        if !self.buf.is_empty() {
            self.buf.push(char::from(RECORD_SEPARATOR));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        let mut out = String::new();
        encode_text_into(&decode_text(s).unwrap(), &mut out);
        out
    }

    #[test]
    fn type_digits_round_trip() {
        for d in b'0'..=b'6' {
            assert_eq!(PacketType::from_digit(d).unwrap().digit(), d);
        }
        assert_eq!(
            PacketType::from_digit(b'7'),
            Err(ProtocolError::InvalidPacketType('7'))
        );
    }

    #[test]
    fn decodes_every_text_type() {
        let open = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(decode_text(open), Ok(Packet::Open(&open[1..])));
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text("2"), Ok(Packet::Ping("")));
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3probe"), Ok(Packet::Pong("probe")));
        assert_eq!(decode_text("4hello"), Ok(Packet::Message(Data::Text("hello"))));
        assert_eq!(decode_text("4"), Ok(Packet::Message(Data::Text(""))));
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
    }

    #[test]
    fn data_after_dataless_types_is_ignored() {
        assert_eq!(decode_text("1xyz"), Ok(Packet::Close));
        assert_eq!(decode_text("5probe"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6abc"), Ok(Packet::Noop));
    }

    #[test]
    fn message_text_keeps_unicode() {
        assert_eq!(
            decode_text("4héllo €"),
            Ok(Packet::Message(Data::Text("héllo €")))
        );
    }

    #[test]
    fn rejects_empty_and_unknown_types() {
        assert_eq!(decode_text(""), Err(ProtocolError::EmptyPacket));
        assert_eq!(decode_text("abc"), Err(ProtocolError::InvalidPacketType('a')));
        assert_eq!(decode_text("7"), Err(ProtocolError::InvalidPacketType('7')));
        assert_eq!(decode_text("é4"), Err(ProtocolError::InvalidPacketType('é')));
    }

    #[test]
    fn b_prefix_is_base64_binary() {
        let expected = Packet::Message(Data::Binary(Cow::Borrowed(&[1, 2, 3, 4])));
        assert_eq!(decode_text("bAQIDBA=="), Ok(expected.clone()));
        // Node's decoder accepts missing padding.
        assert_eq!(decode_text("bAQIDBA"), Ok(expected));
        assert_eq!(
            decode_text("b"),
            Ok(Packet::Message(Data::Binary(Cow::Borrowed(&[]))))
        );
        assert_eq!(decode_text("b!!!"), Err(ProtocolError::InvalidBase64));
        assert_eq!(decode_text("bAQ-_"), Err(ProtocolError::InvalidBase64));
    }

    #[test]
    fn binary_frame_is_a_message() {
        assert_eq!(
            decode_binary(&[0, 1]),
            Packet::Message(Data::Binary(Cow::Borrowed(&[0, 1])))
        );
    }

    #[test]
    fn decodes_polling_payloads() {
        assert_eq!(
            decode_payload("4hello\x1e2\x1e4world"),
            Ok(vec![
                Packet::Message(Data::Text("hello")),
                Packet::Ping(""),
                Packet::Message(Data::Text("world")),
            ])
        );
        assert_eq!(
            decode_payload("4hello\x1ebAQIDBA=="),
            Ok(vec![
                Packet::Message(Data::Text("hello")),
                Packet::Message(Data::Binary(Cow::Borrowed(&[1, 2, 3, 4]))),
            ])
        );
        assert_eq!(decode_payload("6"), Ok(vec![Packet::Noop]));
    }

    #[test]
    fn rejects_empty_bodies_and_records() {
        assert_eq!(decode_payload(""), Err(ProtocolError::EmptyPacket));
        assert_eq!(decode_payload("4a\x1e\x1e4b"), Err(ProtocolError::EmptyPacket));
        assert_eq!(decode_payload("4a\x1e"), Err(ProtocolError::EmptyPacket));
        assert_eq!(decode_payload("\x1e4a"), Err(ProtocolError::EmptyPacket));
    }

    #[test]
    fn one_bad_record_rejects_the_payload() {
        assert_eq!(
            decode_payload("4a\x1eabc\x1e4b"),
            Err(ProtocolError::InvalidPacketType('a'))
        );
        assert_eq!(decode_payload("4a\x1eb*"), Err(ProtocolError::InvalidBase64));
    }

    #[test]
    fn payload_records_stop_after_the_first_error() {
        let records: Vec<_> = payload_records("4a\x1e9\x1e4b").collect();
        assert_eq!(
            records,
            vec![
                Ok(Packet::Message(Data::Text("a"))),
                Err(ProtocolError::InvalidPacketType('9')),
            ]
        );
    }

    #[test]
    fn encodes_text_packets() {
        for s in [
            "0{\"sid\":\"x\"}",
            "1",
            "2",
            "2probe",
            "3probe",
            "4hello",
            "4",
            "5",
            "6",
        ] {
            assert_eq!(text(s), s);
        }
        let mut out = String::from("prefix:");
        encode_text_into(
            &Packet::Message(Data::Binary(Cow::Borrowed(&[1, 2, 3, 4]))),
            &mut out,
        );
        assert_eq!(out, "prefix:bAQIDBA==");
    }

    #[test]
    fn payload_encoder_separates_records() {
        let mut enc = PayloadEncoder::default();
        assert!(enc.is_empty());
        enc.push_text("4hello");
        enc.push_binary(&[1, 2, 3, 4]);
        enc.push_text("2");
        enc.push_packet(&Packet::Message(Data::Text("world")));
        assert_eq!(enc.len(), 25);
        assert_eq!(enc.finish(), b"4hello\x1ebAQIDBA==\x1e2\x1e4world".to_vec());

        let mut single = PayloadEncoder::with_capacity(8);
        single.push_binary(&[]);
        assert!(!single.is_empty());
        assert_eq!(single.finish(), b"b".to_vec());
    }
}
