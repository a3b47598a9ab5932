//! `engine_packets`: Engine.IO packet decoding (`ferrio_proto::engine::decode_text` for text
//! frames and polling records, `decode_binary` for binary frames). What decodes must encode
//! (`encode_text_into`) to text that decodes to the same packet and encodes to the same text.
//!
//! Input: the whole input is a binary frame; when it is UTF-8 it is also a text frame.

#![no_main]

use std::borrow::Cow;

use ferrio_proto::engine::{Data, Packet, decode_binary, decode_text, encode_text_into};
use libfuzzer_sys::fuzz_target;

/// Encodes `packet`, decodes the text again and checks both agree.
fn round_trip(packet: &Packet<'_>) {
    let mut text = String::new();
    encode_text_into(packet, &mut text);
    let again =
        decode_text(&text).unwrap_or_else(|e| panic!("{packet:?} encodes to {text:?}, which fails: {e}"));
    assert_eq!(&again, packet, "{text:?}");
    let mut text_again = String::new();
    encode_text_into(&again, &mut text_again);
    assert_eq!(text_again, text);
}

fuzz_target!(|data: &[u8]| {
    let binary = decode_binary(data);
    assert_eq!(binary, Packet::Message(Data::Binary(Cow::Borrowed(data))));
    round_trip(&binary);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_text(text) {
        Ok(packet) => {
            // Only `b<base64>` decodes to binary; every other packet keeps its type digit.
            if let Packet::Message(Data::Binary(_)) = packet {
                assert!(text.starts_with('b'));
            } else {
                assert_eq!(text.as_bytes()[0], packet.packet_type().digit());
            }
            round_trip(&packet);
        }
        Err(e) => {
            assert!(
                !e.is_socket_io(),
                "an Engine.IO decode error in the Socket.IO layer: {e:?}"
            );
            let _ = (e.label(), e.close_reason(), e.to_string());
        }
    }
});
