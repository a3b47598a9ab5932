//! `redis_stream`: what a streams-mode node reads back from Redis. Stream entries
//! (`[id, [uid, .., nsp, .., type, .., data, ..]]`, `data` JSON or base64 msgpack) as the
//! stream reader and a session restore decode them, and kept sessions
//! (`sio:session:<pid>`: base64 msgpack `{sid, pid, rooms, data, changed}`).
//!
//! Input: byte 0 picks entry or session. An entry's bytes are split at 0xff into its id and
//! its field names and values.

#![no_main]

use ferrio_redis::__fuzz::{fuzz_entry, fuzz_session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, rest @ ..] = data else { return };
    if kind % 2 == 0 {
        fuzz_session(rest);
        return;
    }
    let mut parts = rest.split(|b| *b == 0xff);
    let Some(id) = parts.next() else { return };
    let fields: Vec<&[u8]> = parts.take(16).collect();
    fuzz_entry(id, &fields);
});
