//! Engine.IO text packets and long-polling payloads.

use std::borrow::Cow;

use ferrio_proto::engine::{
    Data, Packet, PayloadEncoder, decode_binary, decode_payload, decode_text, encode_text_into,
    payload_records,
};
use proptest::prelude::*;

/// Text without the record separator: the reference cannot carry it in a polling payload
/// either.
fn record_text() -> impl Strategy<Value = String> {
    "[^\x1e]{0,40}"
}

fn packet() -> impl Strategy<Value = Packet<'static>> {
    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
    prop_oneof![
        record_text().prop_map(|s| Packet::Open(leak(s))),
        Just(Packet::Close),
        record_text().prop_map(|s| Packet::Ping(leak(s))),
        record_text().prop_map(|s| Packet::Pong(leak(s))),
        record_text().prop_map(|s| Packet::Message(Data::Text(leak(s)))),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Packet::Message(Data::Binary(Cow::Owned(b)))),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

/// Strings biased towards the bytes the decoders branch on.
fn protocolish() -> impl Strategy<Value = String> {
    "[0-9b\x1e/,\\-\\[\\]{}\":_a-zA-Z+=é ]{0,64}"
}

proptest! {
    #[test]
    fn text_packets_round_trip(packet in packet()) {
        let mut text = String::new();
        encode_text_into(&packet, &mut text);
        prop_assert_eq!(decode_text(&text), Ok(packet));
    }

    #[test]
    fn polling_payloads_round_trip(packets in proptest::collection::vec(packet(), 1..12)) {
        let mut encoder = PayloadEncoder::default();
        for packet in &packets {
            match packet {
                Packet::Message(Data::Binary(bytes)) => encoder.push_binary(bytes),
                other => {
                    let mut text = String::new();
                    encode_text_into(other, &mut text);
                    encoder.push_text(&text);
                }
            }
        }
        let body = String::from_utf8(encoder.finish()).expect("payloads are UTF-8");
        prop_assert_eq!(decode_payload(&body), Ok(packets.clone()));

        let mut encoder = PayloadEncoder::default();
        for packet in &packets {
            encoder.push_packet(packet);
        }
        let again = String::from_utf8(encoder.finish()).expect("payloads are UTF-8");
        prop_assert_eq!(again, body);
    }

    #[test]
    fn binary_frames_are_messages(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(
            decode_binary(&bytes),
            Packet::Message(Data::Binary(Cow::Borrowed(&bytes)))
        );
    }

    #[test]
    fn decode_text_never_panics(input in any::<String>()) {
        let _ = decode_text(&input);
    }

    #[test]
    fn decode_payload_never_panics(input in any::<String>()) {
        let _ = decode_payload(&input);
        let _ = payload_records(&input).count();
    }

    #[test]
    fn protocolish_input_never_panics(input in protocolish()) {
        let decoded = decode_payload(&input);
        let records: Vec<_> = payload_records(&input).collect();
        // `decode_payload` fails exactly when some record fails, and that record is the last.
        match decoded {
            Ok(packets) => prop_assert_eq!(records, packets.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => prop_assert_eq!(records.last(), Some(&Err(e))),
        }
    }

    #[test]
    fn bytes_as_lossy_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_text(&text);
        let _ = decode_payload(&text);
    }
}

#[test]
fn deep_brackets_are_plain_text_to_engine_io() {
    let body = format!("4{}\x1e4{}", "[".repeat(100_000), "{".repeat(100_000));
    let packets = decode_payload(&body).expect("message text is opaque to Engine.IO");
    assert_eq!(packets.len(), 2);
}
