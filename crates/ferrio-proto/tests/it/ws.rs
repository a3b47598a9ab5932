//! WebSocket frame reader: no input panics, any split of valid frames reads back, and the
//! server never learns of (and so never echoes) a close code that may not be sent.

use bytes::Bytes;
use ferrio_proto::ws::{FrameReader, Message, WsError, is_valid_close_code};
use proptest::prelude::*;

fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

proptest! {
    #[test]
    fn close_frames_yield_only_codes_that_may_be_sent(
        // Mostly near the boundaries of the valid ranges, where mistakes would be.
        code in prop_oneof![any::<u16>(), 990u16..1020, 2990u16..3010, 4990u16..5010],
        reason in prop::collection::vec(any::<u8>(), 0..=123),
        mask in any::<[u8; 4]>(),
    ) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason);
        let mut got = Vec::new();
        let result = FrameReader::new(1024).feed(&client_frame(true, 8, &payload, mask), |m| got.push(m));
        match result {
            Ok(()) => {
                prop_assert!(is_valid_close_code(code));
                prop_assert_eq!(got, vec![Message::Close(Some(code))]);
            }
            Err(WsError::InvalidCloseCode(c)) => {
                prop_assert_eq!(c, code);
                prop_assert!(!is_valid_close_code(code));
            }
            Err(WsError::InvalidUtf8) => prop_assert!(std::str::from_utf8(&reason).is_err()),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
        // Whatever the reader refused, the server's answer is a code it may send.
        if let Err(e) = result {
            prop_assert!(is_valid_close_code(e.close_code()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut reader = FrameReader::new(1024);
        for chunk in &chunks {
            if reader.feed(chunk, |_| {}).is_err() {
                break;
            }
        }
    }

    #[test]
    fn messages_read_back_whatever_the_splits(
        messages in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..400), 1usize..4), 1..6),
        mask in any::<[u8; 4]>(),
        splits in prop::collection::vec(1usize..64, 1..40),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (text, payload, fragments) in &messages {
            let payload: Vec<u8> = if *text {
                String::from_utf8_lossy(payload).into_owned().into_bytes()
            } else {
                payload.clone()
            };
            let opcode = if *text { 1 } else { 2 };
            let step = payload.len().div_ceil(*fragments).max(1);
            let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(step).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { opcode } else { 0 };
                wire.extend(client_frame(i + 1 == pieces.len(), op, piece, mask));
            }
            let bytes = Bytes::from(payload.clone());
            expected.push(if *text { Message::Text(bytes) } else { Message::Binary(bytes) });
        }
        let mut reader = FrameReader::new(1 << 20);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = splits[i % splits.len()].min(rest.len());
            reader.feed(&rest[..n], |m| got.push(m)).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(got, expected);
        prop_assert!(reader.is_idle());
    }
}
