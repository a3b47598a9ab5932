//! Socket.IO packets and the reassembling decoder.

use bytes::Bytes;
use ferrio_proto::socket::{Decoder, MAX_ACK_ID, Packet, PacketType, RESERVED_EVENTS, placeholder};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// JSON values that survive a text round-trip exactly: floats are short binary fractions,
/// since serde_json's default float parser may be one ULP off otherwise.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{0,6}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    proptest::collection::vec(("\\PC{0,8}", json()), 0..5)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>()))
}

fn event_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,12}"
            .prop_filter("reserved", |s| !RESERVED_EVENTS.contains(&s.as_str()))
            .prop_map(Value::String),
        any::<i32>().prop_map(Value::from),
    ]
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[^,]{1,10}"]
}

fn attachments() -> impl Strategy<Value = Vec<Bytes>> {
    proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
        1..=10,
    )
}

/// Puts one placeholder per attachment at random places in `args`.
fn with_placeholders(mut args: Vec<Value>, count: usize, seed: usize) -> Vec<Value> {
    for num in 0..count {
        let at = if args.is_empty() {
            0
        } else {
            (seed + num * 7) % (args.len() + 1)
        };
        if num % 2 == 0 {
            args.insert(at, placeholder(num));
        } else {
            args.insert(at, Value::Array(vec![placeholder(num)]));
        }
    }
    args
}

fn args() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(json(), 0..5)
}

fn packet() -> impl Strategy<Value = Packet> {
    let id = proptest::option::of(0..=MAX_ACK_ID);
    prop_oneof![
        (namespace(), proptest::option::of(object()), id.clone()).prop_map(|(nsp, data, id)| {
            Packet {
                id,
                ..Packet::connect(nsp, data)
            }
        }),
        (namespace(), id.clone()).prop_map(|(nsp, id)| Packet {
            id,
            ..Packet::disconnect(nsp)
        }),
        (
            namespace(),
            prop_oneof![any::<String>().prop_map(Value::String), object()]
        )
            .prop_map(|(nsp, data)| Packet::connect_error(nsp, data)),
        (namespace(), event_name(), args(), id.clone()).prop_map(|(nsp, name, args, id)| {
            let mut data = vec![name];
            data.extend(args);
            Packet::event(nsp, Value::Array(data), vec![], id)
        }),
        (namespace(), args(), 0..=MAX_ACK_ID).prop_map(|(nsp, args, id)| Packet::ack(
            nsp,
            id,
            Value::Array(args),
            vec![]
        )),
        (
            namespace(),
            event_name(),
            args(),
            id,
            attachments(),
            any::<usize>()
        )
            .prop_map(|(nsp, name, args, id, attachments, seed)| {
                let mut data = vec![name];
                data.extend(with_placeholders(args, attachments.len(), seed));
                Packet::event(nsp, Value::Array(data), attachments, id)
            }),
        (namespace(), args(), 0..=MAX_ACK_ID, attachments(), any::<usize>()).prop_map(
            |(nsp, args, id, attachments, seed)| {
                let data = with_placeholders(args, attachments.len(), seed);
                Packet::ack(nsp, id, Value::Array(data), attachments)
            }
        ),
    ]
}

/// Feeds a packet's text and attachments, as a transport would, and returns what came out.
fn transmit(decoder: &mut Decoder, packet: &Packet) -> Result<Option<Packet>, ferrio_proto::ProtocolError> {
    let mut out = decoder.decode_text(&packet.encode())?;
    for bytes in &packet.attachments {
        assert!(out.is_none(), "packet completed before its attachments");
        out = decoder.decode_binary(bytes.clone())?;
    }
    Ok(out)
}

/// Strings biased towards the bytes the decoder branches on.
fn protocolish() -> impl Strategy<Value = String> {
    "[0-9/,\\-\\[\\]{}\":_a-z.e+ ]{0,64}"
}

#[derive(Debug, Clone)]
enum Message {
    Text(String),
    Binary(Vec<u8>),
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        protocolish().prop_map(Message::Text),
        any::<String>().prop_map(Message::Text),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Message::Binary),
        // Well-formed binary headers, so attachments are awaited often.
        (1usize..4, 0usize..4).prop_map(|(n, num)| Message::Text(format!(
            "5{n}-[\"e\",{{\"_placeholder\":true,\"num\":{num}}}]"
        ))),
    ]
}

proptest! {
    #[test]
    fn packets_round_trip(packet in packet()) {
        let mut decoder = Decoder::default();
        prop_assert_eq!(transmit(&mut decoder, &packet), Ok(Some(packet.clone())));
        prop_assert!(!decoder.is_awaiting_attachments());
        // The decoder carries no state into the next packet.
        prop_assert_eq!(transmit(&mut decoder, &packet), Ok(Some(packet)));
    }

    #[test]
    fn packet_streams_round_trip(packets in proptest::collection::vec(packet(), 1..8)) {
        let mut decoder = Decoder::default();
        for packet in packets {
            prop_assert_eq!(transmit(&mut decoder, &packet), Ok(Some(packet)));
        }
    }

    #[test]
    fn kinds_match_attachments(packet in packet()) {
        let binary = matches!(packet.kind, PacketType::BinaryEvent | PacketType::BinaryAck);
        prop_assert_eq!(binary, !packet.attachments.is_empty());
        prop_assert_eq!(binary, packet.kind.is_binary());
    }

    #[test]
    fn decode_text_never_panics(input in any::<String>()) {
        let _ = Decoder::default().decode_text(&input);
    }

    #[test]
    fn protocolish_text_never_panics(input in protocolish()) {
        for digit in '0'..='6' {
            let _ = Decoder::default().decode_text(&format!("{digit}{input}"));
            let _ = Decoder::default().decode_text(&format!("{digit}1-{input}"));
        }
    }

    #[test]
    fn message_sequences_never_panic(messages in proptest::collection::vec(message(), 0..16)) {
        let mut decoder = Decoder::new(3);
        for message in messages {
            let result = match message {
                Message::Text(text) => decoder.decode_text(&text),
                Message::Binary(bytes) => decoder.decode_binary(Bytes::from(bytes)),
            };
            if let Ok(Some(packet)) = result {
                prop_assert!(!decoder.is_awaiting_attachments());
                prop_assert!(packet.attachments.len() <= 3);
            }
        }
    }

    #[test]
    fn bytes_as_lossy_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Decoder::default().decode_text(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn nesting_bombs_are_refused_without_overflowing_the_stack() {
    for prefix in ["0", "1", "2", "3", "4", "51-", "61-", "2/nsp,", "312"] {
        for bomb in ["[", "{\"a\":", "[{\"a\":"] {
            let text = format!("{prefix}{}", bomb.repeat(100_000));
            assert_eq!(
                Decoder::default().decode_text(&text),
                Err(ferrio_proto::ProtocolError::InvalidJson),
                "{prefix}{bomb}..."
            );
            let closed = format!("{prefix}[\"e\",{}{}]", "[".repeat(50_000), "]".repeat(50_000));
            assert_eq!(
                Decoder::default().decode_text(&closed),
                Err(ferrio_proto::ProtocolError::InvalidJson)
            );
        }
    }
}
