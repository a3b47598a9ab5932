//! `socket_packets`: the Socket.IO decoder (`ferrio_proto::socket::Decoder`) driven with a
//! sequence of Engine.IO messages, text packets and binary attachments, as a connection delivers
//! them. Checks what the decoder promises (no partial packet left after an error, attachments
//! only on binary packets and as many as their placeholders need, namespaces and ack ids in
//! range) and that every decoded packet encodes to text that, with its attachments, decodes
//! to the same packet.
//!
//! Input: byte 0 picks the attachment limit; the rest is split at 0xFF bytes (never in UTF-8)
//! into messages: one starting with 0x00 is a binary attachment (the bytes after it), any
//! other is a text message (skipped unless UTF-8, as the Engine.IO layer refuses it).

#![no_main]

use bytes::Bytes;
use ferrio_proto::socket::{
    DEFAULT_MAX_ATTACHMENTS, Decoder, MAX_ACK_ID, Packet, PacketType, placeholder_index,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const LIMITS: [usize; 6] = [DEFAULT_MAX_ATTACHMENTS, 0, 1, 2, 255, usize::MAX];

enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

fn frames(stream: &[u8]) -> impl Iterator<Item = Frame<'_>> {
    stream.split(|&b| b == 0xFF).filter_map(|frame| match frame {
        [0, bytes @ ..] => Some(Frame::Binary(bytes)),
        text => std::str::from_utf8(text).ok().map(Frame::Text),
    })
}

/// Every object whose `_placeholder` is `true`, anywhere in `value`.
fn placeholders(value: &Value, out: &mut Vec<Option<usize>>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| placeholders(v, out)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                out.push(placeholder_index(value));
            } else {
                map.values().for_each(|v| placeholders(v, out));
            }
        }
        _ => {}
    }
}

fn check_packet(packet: &Packet, max_attachments: usize) {
    assert!(packet.nsp.starts_with('/'), "namespace {:?}", packet.nsp);
    assert!(packet.id.is_none_or(|id| id <= MAX_ACK_ID));
    if packet.kind.is_binary() {
        assert!(packet.attachments.len() <= max_attachments);
        let mut found = Vec::new();
        if let Some(data) = &packet.data {
            placeholders(data, &mut found);
        }
        for index in found {
            assert!(
                index.is_some_and(|i| i < packet.attachments.len()),
                "placeholder {index:?} with {} attachments",
                packet.attachments.len()
            );
        }
    } else {
        assert!(packet.attachments.is_empty());
    }
    if matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent) && packet.data.is_some() {
        assert!(
            packet.event_name().is_some(),
            "an event without a name: {:?}",
            packet.data
        );
    }

    // What the server would send: the text part, then one binary message per attachment.
    let text = packet.encode();
    let mut decoder = Decoder::new(max_attachments);
    let mut again = decoder
        .decode_text(&text)
        .unwrap_or_else(|e| panic!("{packet:?} encodes to {text:?}, which fails: {e}"));
    for (i, attachment) in packet.attachments.iter().enumerate() {
        assert!(again.is_none(), "{text:?} complete before attachment {i}");
        again = decoder.decode_binary(attachment.clone()).expect("attachment");
    }
    assert_eq!(again.as_ref(), Some(packet), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let [limit, stream @ ..] = data else { return };
    let max_attachments = LIMITS[usize::from(*limit) % LIMITS.len()];
    let mut decoder = Decoder::new(max_attachments);
    for frame in frames(stream) {
        let result = match frame {
            Frame::Text(text) => decoder.decode_text(text),
            Frame::Binary(bytes) => decoder.decode_binary(Bytes::copy_from_slice(bytes)),
        };
        match result {
            Ok(Some(packet)) => {
                assert!(!decoder.is_awaiting_attachments());
                check_packet(&packet, max_attachments);
            }
            Ok(None) => assert!(decoder.is_awaiting_attachments()),
            Err(e) => {
                // The connection closes; the decoder must hold nothing. Going on checks
                // that it is still usable.
                assert!(!decoder.is_awaiting_attachments(), "{e:?} left a partial packet");
                assert!(e.is_socket_io(), "{e:?}");
            }
        }
    }
});
