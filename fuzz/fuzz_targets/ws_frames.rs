//! `ws_frames`: the WebSocket frame reader (`ferrio_proto::ws::FrameReader`) on bytes a client
//! sent, fed whole and again in chunks cut where the fuzzer says. TCP may cut a stream
//! anywhere, so both must give the same messages, the same error and, without an error, the
//! same idle state. Messages must also respect the size limit, UTF-8 and control frame rules.
//!
//! Input: byte 0 picks the message size limit, byte 1 the number `k` (0..=15) of chunk
//! lengths that follow; the chunk lengths are then used in turn (0 feeds an empty read); the
//! rest is the stream.

#![no_main]

use ferrio_proto::ws::{FrameReader, Message, WsError};
use libfuzzer_sys::fuzz_target;

/// Message size limits worth trying: the control frame bounds, the 16-bit length boundary,
/// and the server's default `max_payload`.
const LIMITS: [usize; 8] = [0, 1, 125, 126, 1000, 65_535, 65_536, 1_000_000];

/// What one run of the reader produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<WsError>,
    /// Whether the reader holds nothing at the end (asked only without an error: after one
    /// the connection closes, whatever the reader holds).
    idle: Option<bool>,
}

fn read(max_message: usize, chunks: &[&[u8]]) -> Outcome {
    let mut reader = FrameReader::new(max_message);
    let mut messages = Vec::new();
    let mut error = None;
    for chunk in chunks {
        // After an error the server closes the connection: nothing more is read.
        if let Err(e) = reader.feed(chunk, |m| messages.push(m)) {
            error = Some(e);
            break;
        }
    }
    Outcome {
        messages,
        error,
        idle: error.is_none().then(|| reader.is_idle()),
    }
}

/// Cuts `stream` into chunks of the given lengths, used in turn.
fn chunks<'a>(stream: &'a [u8], lengths: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    if lengths.iter().all(|&l| l == 0) {
        out.push(&[][..]);
        out.push(rest);
        return out;
    }
    for &len in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [limit, k, rest @ ..] = data else { return };
    let max_message = LIMITS[usize::from(*limit) % LIMITS.len()];
    let k = usize::from(*k % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(k);

    let whole = read(max_message, &[stream]);
    let split = read(max_message, &chunks(stream, lengths));
    assert_eq!(whole, split, "chunk lengths {lengths:?}");

    for message in &whole.messages {
        match message {
            Message::Text(text) => {
                assert!(
                    std::str::from_utf8(text).is_ok(),
                    "text message that is not UTF-8"
                );
                assert!(text.len() <= max_message, "text message over the limit");
            }
            Message::Binary(bytes) => assert!(bytes.len() <= max_message, "binary message over the limit"),
            Message::Ping(bytes) | Message::Pong(bytes) => {
                assert!(bytes.len() <= 125, "control frame over 125")
            }
            Message::Close(_) => {}
        }
    }
    if let Some(e) = whole.error {
        assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
    }
});
