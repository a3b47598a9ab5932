//! `redis_classic`: a broadcast on the classic channel (`<key>#<nsp>#[<room>#]`), as Node's
//! `@socket.io/redis-adapter` and `@socket.io/redis-emitter` publish it: the msgpack array
//! `[uid, packet, {rooms, except, flags}]`. Decoded as `RedisAdapter::on_classic_broadcast`
//! does, with `ferrio-redis`'s codec (`codec::decode`, `packet_from_msgpack`, `to_json`).
//! Checks that ferrio's re-encoding of the msgpack is stable and that relaying the packet on
//! changes nothing after the first hop.
//!
//! Input: the message payload.

#![no_main]

#[path = "common/relay.rs"]
mod relay;

use ferrio_redis::__fuzz as codec;
use libfuzzer_sys::fuzz_target;
use rmpv::Value as Mp;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = codec::decode(data) else { return };
    relay::check_msgpack(&message);
    let Mp::Array(parts) = &message else { return };
    let Some(packet) = parts.get(1) else { return };
    let Ok(packet) = codec::packet_from_msgpack(packet, "/") else {
        return;
    };
    // The options `{rooms, except, flags}`, read as JSON.
    let _ = parts.get(2).map(codec::to_json);
    relay::check_packet(packet);
});
