//! `redis_request`: the other messages a node reads from Redis. Classic requests
//! (`<key>-request#<nsp>#`) and responses (`<key>-response#<nsp>#[<uid>#]`) are JSON, or
//! msgpack when they carry binary; sharded (`createShardedAdapter`) cluster messages are the
//! same two encodings of `{uid, nsp, type, data}`. Decoded as `RedisAdapter`'s
//! `on_classic_request`, `on_classic_response` and `on_cluster_message` do, with the adapter's
//! own `Body` (reached through `__fuzz`); every packet found is checked as in `redis_classic`.
//!
//! Input: byte 0 picks the channel (request, response, cluster message); the rest is the
//! message payload.

#![no_main]

#[path = "common/relay.rs"]
mod relay;

use ferrio_redis::__fuzz::{self as codec, Body};
use libfuzzer_sys::fuzz_target;
use rmpv::Value as Mp;
use serde_json::{Value, json};

/// The adapter's own decoding of a message, with the msgpack checks of `redis_classic`.
fn parse(payload: &[u8]) -> Option<Body> {
    let body = Body::parse(payload).ok()?;
    if let Body::Mp(value) = &body {
        relay::check_msgpack(value);
    }
    Some(body)
}

/// The packet of a broadcast; one that wants acknowledgements (it has a request id) gets an
/// ack id from this node.
fn broadcast(body: &Body, request_id: Option<&str>) {
    if let Some(mut packet) = body.member(&["packet"]).and_then(|p| p.packet("/").ok()) {
        if request_id.is_some() {
            packet.id = Some(1 << 52);
        }
        relay::check_packet(packet);
    }
}

/// A server-side emit from another node: `[name, ...args]` (`run_server_event`).
fn server_event(data: &Value) {
    if let Some(items) = data.as_array()
        && let Some(name) = items.first().and_then(Value::as_str)
    {
        let _ = (name.to_owned(), items[1..].to_vec());
    }
}

fn classic_request(body: &Body) {
    let req = body.json();
    let Some(kind) = req.get("type").and_then(Value::as_u64) else {
        return;
    };
    let request_id = req.get("requestId").and_then(Value::as_str);
    match kind {
        // SERVER_SIDE_EMIT
        6 => server_event(req.get("data").unwrap_or(&Value::Null)),
        // BROADCAST (with acknowledgements; ignored without a request id)
        7 if request_id.is_some() => broadcast(body, request_id),
        _ => {}
    }
}

fn classic_response(body: &Body) {
    let resp = body.json();
    if resp.get("requestId").and_then(Value::as_str).is_none() {
        return;
    }
    // BROADCAST_ACK: the acknowledgement's argument, binary back to attachments.
    if resp.get("type").and_then(Value::as_u64) == Some(9) {
        let _ = body.member(&["packet"]).map(|b| b.payload());
    }
}

fn cluster_message(body: &Body) {
    let head = match body {
        Body::Json(v) => v.clone(),
        Body::Mp(m) => json!({
            "type": codec::get(m, "type").and_then(Mp::as_u64),
            "uid": codec::get(m, "uid").and_then(Mp::as_str),
            "nsp": codec::get(m, "nsp").and_then(Mp::as_str),
        }),
    };
    let Some(kind) = head.get("type").and_then(Value::as_u64) else {
        return;
    };
    let Some(data) = body.member(&["data"]) else {
        return;
    };
    let data_json = data.json();
    let request_id = data_json.get("requestId").and_then(Value::as_str);
    match kind {
        // BROADCAST
        3 => broadcast(&data, request_id),
        // FETCH_SOCKETS_RESPONSE: the socket ids, as `socket_from_json` reads them.
        8 => {
            for socket in data_json
                .get("sockets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = socket
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::parse::<ferrio::Sid>);
            }
        }
        // SERVER_SIDE_EMIT
        9 => server_event(data_json.get("packet").unwrap_or(&Value::Null)),
        // BROADCAST_ACK
        12 => {
            let _ = data.member(&["packet"]).map(|b| b.payload());
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [channel, payload @ ..] = data else { return };
    let Some(body) = parse(payload) else { return };
    match channel % 3 {
        0 => classic_request(&body),
        1 => classic_response(&body),
        _ => cluster_message(&body),
    }
});
