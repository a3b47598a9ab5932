//! MessagePack as `notepack.io` writes it, and the conversions between the reference's
//! in-memory packet objects and ferrio's [`Packet`].
//!
//! The reference puts the socket.io-parser packet object on Redis *before* string encoding:
//! binary arguments are msgpack `bin` values inside `data`, and the type stays `2` (EVENT)
//! even when there are buffers. ferrio keeps binary as attachments behind
//! `{"_placeholder":true,"num":N}` objects, so a packet is converted both ways here.
//!
//! Byte compatibility with notepack: integers (and floats that hold a whole number, since
//! JavaScript does not tell them apart) take the smallest int encoding, other numbers are
//! float 64, strings/bins/arrays/maps take the smallest header, map keys keep their order.
//! notepack writes `undefined` as the fixext 1 of type 0 (`d4 00 00`): inside an array it
//! reads back as `null` (what JSON would show), inside a map the key is dropped.

use bytes::Bytes;
use ferrio::proto::socket::{Packet, PacketType, placeholder, placeholder_index};
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(pub String);

/// Encodes a msgpack value.
pub fn encode(value: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// Decodes one msgpack value (trailing bytes are an error).
pub fn decode(bytes: &[u8]) -> Result<Mp, DecodeError> {
    let mut cursor = bytes;
    let value = rmpv::decode::read_value(&mut cursor).map_err(|e| DecodeError(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(DecodeError("trailing bytes".into()));
    }
    Ok(value)
}

/// A JSON number as notepack encodes a JavaScript number.
fn number(n: &Number) -> Mp {
    if let Some(u) = n.as_u64() {
        return Mp::from(u);
    }
    if let Some(i) = n.as_i64() {
        return Mp::from(i);
    }
    let f = n.as_f64().unwrap_or(0.0);
    // A whole float is an integer to JavaScript, so notepack writes it as one.
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        if f >= 0.0 {
            return Mp::from(f as u64);
        }
        return Mp::from(f as i64);
    }
    Mp::F64(f)
}

/// JSON to msgpack.
pub fn from_json(value: &Value) -> Mp {
    match value {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => number(n),
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(items) => Mp::Array(items.iter().map(from_json).collect()),
        Value::Object(map) => Mp::Map(
            map.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

/// JSON to msgpack, with each attachment placeholder replaced by its bytes.
pub fn from_json_with_attachments(value: &Value, attachments: &[Bytes]) -> Mp {
    if let Some(num) = placeholder_index(value)
        && let Some(bytes) = attachments.get(num)
    {
        return Mp::Binary(bytes.to_vec());
    }
    match value {
        Value::Array(items) => Mp::Array(
            items
                .iter()
                .map(|v| from_json_with_attachments(v, attachments))
                .collect(),
        ),
        Value::Object(map) => Mp::Map(
            map.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), from_json_with_attachments(v, attachments)))
                .collect(),
        ),
        other => from_json(other),
    }
}

fn is_undefined(value: &Mp) -> bool {
    matches!(value, Mp::Ext(0, _))
}

fn key_text(key: &Mp) -> String {
    match key {
        Mp::String(s) => s.as_str().map(str::to_owned).unwrap_or_default(),
        Mp::Integer(i) => i.to_string(),
        Mp::F32(f) => f.to_string(),
        Mp::F64(f) => f.to_string(),
        Mp::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

/// msgpack to JSON. Binary becomes what `JSON.stringify` makes of a Node Buffer
/// (`{"type":"Buffer","data":[...]}`), so nothing is lost silently.
pub fn to_json(value: &Mp) -> Value {
    to_json_inner(
        value,
        &mut |bytes| serde_json::json!({ "type": "Buffer", "data": bytes }),
    )
}

/// msgpack to JSON, moving every binary value into `attachments` behind a placeholder.
pub fn to_json_extracting(value: &Mp, attachments: &mut Vec<Bytes>) -> Value {
    to_json_inner(value, &mut |bytes| {
        let slot = placeholder(attachments.len());
        attachments.push(Bytes::copy_from_slice(bytes));
        slot
    })
}

fn to_json_inner(value: &Mp, bin: &mut dyn FnMut(&[u8]) -> Value) -> Value {
    match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Value::from(u)
            } else if let Some(s) = i.as_i64() {
                Value::from(s)
            } else {
                Value::Null
            }
        }
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Mp::Binary(b) => bin(b),
        Mp::Array(items) => Value::Array(items.iter().map(|v| to_json_inner(v, bin)).collect()),
        Mp::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                if is_undefined(v) {
                    continue;
                }
                map.insert(key_text(k), to_json_inner(v, bin));
            }
            Value::Object(map)
        }
        // `undefined` (and any other extension) reads as null.
        Mp::Ext(_, _) => Value::Null,
    }
}

/// Whether a msgpack value holds binary anywhere.
pub fn has_binary(value: &Mp) -> bool {
    match value {
        Mp::Binary(_) => true,
        Mp::Array(items) => items.iter().any(has_binary),
        Mp::Map(entries) => entries.iter().any(|(_, v)| has_binary(v)),
        _ => false,
    }
}

/// Looks up a string key in a msgpack map.
pub fn get<'a>(value: &'a Mp, key: &str) -> Option<&'a Mp> {
    match value {
        Mp::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| !is_undefined(v)),
        _ => None,
    }
}

/// The reference's wire digit for a packet type, as the packet object carries it before
/// encoding (binary kinds keep their plain number: the parser picks BINARY_* itself).
fn type_number(kind: PacketType) -> u8 {
    match kind {
        PacketType::BinaryEvent => PacketType::Event as u8,
        PacketType::BinaryAck => PacketType::Ack as u8,
        other => other as u8,
    }
}

/// A packet as the reference's packet object: `{type, data, nsp?, id?}`.
pub fn packet_to_msgpack(packet: &Packet, with_nsp: bool) -> Mp {
    let mut entries = vec![(Mp::from("type"), Mp::from(type_number(packet.kind)))];
    if let Some(data) = &packet.data {
        let data = if packet.kind.is_binary() {
            from_json_with_attachments(data, &packet.attachments)
        } else {
            from_json(data)
        };
        entries.push((Mp::from("data"), data));
    }
    if with_nsp {
        entries.push((Mp::from("nsp"), Mp::from(packet.nsp.as_str())));
    }
    if let Some(id) = packet.id {
        entries.push((Mp::from("id"), Mp::from(id)));
    }
    Mp::Map(entries)
}

/// A packet without binary, as the JSON the reference would write.
#[cfg(test)]
pub fn packet_to_json(packet: &Packet, with_nsp: bool) -> Value {
    let mut map = Map::new();
    map.insert("type".into(), Value::from(type_number(packet.kind)));
    if let Some(data) = &packet.data {
        map.insert("data".into(), data.clone());
    }
    if with_nsp {
        map.insert("nsp".into(), Value::from(packet.nsp.as_str()));
    }
    if let Some(id) = packet.id {
        map.insert("id".into(), Value::from(id));
    }
    Value::Object(map)
}

/// A packet object received from another node. `nsp` is used when the object has none.
pub fn packet_from_msgpack(value: &Mp, nsp: &str) -> Result<Packet, DecodeError> {
    let kind = get(value, "type")
        .and_then(Mp::as_u64)
        .ok_or_else(|| DecodeError("packet without type".into()))?;
    let mut attachments = Vec::new();
    let data = get(value, "data").map(|d| to_json_extracting(d, &mut attachments));
    let id = get(value, "id").and_then(Mp::as_u64);
    let nsp = get(value, "nsp").and_then(Mp::as_str).unwrap_or(nsp);
    build_packet(kind, data, attachments, id, nsp)
}

/// A packet object received as JSON.
pub fn packet_from_json(value: &Value, nsp: &str) -> Result<Packet, DecodeError> {
    let kind = value
        .get("type")
        .and_then(Value::as_u64)
        .ok_or_else(|| DecodeError("packet without type".into()))?;
    let data = value.get("data").cloned();
    let id = value.get("id").and_then(Value::as_u64);
    let nsp = value.get("nsp").and_then(Value::as_str).unwrap_or(nsp);
    build_packet(kind, data, Vec::new(), id, nsp)
}

fn build_packet(
    kind: u64,
    data: Option<Value>,
    attachments: Vec<Bytes>,
    id: Option<u64>,
    nsp: &str,
) -> Result<Packet, DecodeError> {
    // Any number a peer sends: only 0 to 9 can be a digit (no overflow past `b'9'`).
    let digit = u8::try_from(kind).ok().filter(|k| *k <= 9).map(|k| b'0' + k);
    let kind = digit
        .and_then(|d| PacketType::from_digit(d).ok())
        .ok_or_else(|| DecodeError(format!("unknown packet type {kind}")))?;
    let packet = match kind {
        PacketType::Event | PacketType::BinaryEvent => {
            Packet::event(nsp, data.unwrap_or(Value::Array(Vec::new())), attachments, id)
        }
        PacketType::Ack | PacketType::BinaryAck => Packet::ack(
            nsp,
            id.unwrap_or_default(),
            data.unwrap_or(Value::Array(Vec::new())),
            attachments,
        ),
        PacketType::Connect => Packet::connect(nsp, data),
        PacketType::Disconnect => Packet::disconnect(nsp),
        PacketType::ConnectError => Packet::connect_error(nsp, data.unwrap_or(Value::Null)),
    };
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A packet type no digit stands for is refused, up to the largest number (found by the
    /// `redis_request` fuzz target: 208 overflowed).
    #[test]
    fn packet_types_beyond_a_digit_are_refused() {
        for kind in [7u64, 10, 208, 255, 256, u64::MAX] {
            let err = packet_from_json(&json!({ "type": kind }), "/").unwrap_err();
            assert!(err.to_string().contains("unknown packet type"), "{err}");
        }
    }

    /// The broadcast captured from the reference (PROTOCOL-NOTES §4), byte for byte.
    #[test]
    fn classic_broadcast_matches_the_capture() {
        let packet = Packet::event(
            "/",
            json!(["room", {"_placeholder": true, "num": 0}]),
            vec![Bytes::from_static(&[1, 2])],
            None,
        );
        let opts = Mp::Map(vec![
            (Mp::from("rooms"), Mp::Array(vec![Mp::from("room1")])),
            (Mp::from("except"), Mp::Array(vec![])),
            (Mp::from("flags"), Mp::Map(vec![])),
        ]);
        let msg = Mp::Array(vec![Mp::from("Yosfo5"), packet_to_msgpack(&packet, true), opts]);
        let expected = "93 a6 59 6f 73 66 6f 35 83 a4 74 79 70 65 02 a4 64 61 74 61 92 a4 72 6f 6f 6d \
                        c4 02 01 02 a3 6e 73 70 a1 2f 83 a5 72 6f 6f 6d 73 91 a5 72 6f 6f 6d 31 a6 65 \
                        78 63 65 70 74 90 a5 66 6c 61 67 73 80";
        assert_eq!(
            hex(&encode(&msg)),
            expected.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn numbers_take_notepack_encodings() {
        let cases: &[(Value, &str)] = &[
            (json!(0), "00"),
            (json!(127), "7f"),
            (json!(128), "cc 80"),
            (json!(65535), "cd ff ff"),
            (json!(65536), "ce 00 01 00 00"),
            (json!(4294967296u64), "cf 00 00 00 01 00 00 00 00"),
            (json!(-1), "ff"),
            (json!(-32), "e0"),
            (json!(-33), "d0 df"),
            (json!(-129), "d1 ff 7f"),
            (json!(-40000), "d2 ff ff 63 c0"),
            (json!(1.5), "cb 3f f8 00 00 00 00 00 00"),
            (json!(2.0), "02"),
            (json!(-3.0), "fd"),
        ];
        for (value, want) in cases {
            assert_eq!(hex(&encode(&from_json(value))), *want, "{value}");
        }
    }

    #[test]
    fn strings_and_containers_take_the_smallest_header() {
        assert_eq!(hex(&encode(&from_json(&json!("a".repeat(31)))))[..2], *"bf");
        assert_eq!(hex(&encode(&from_json(&json!("a".repeat(32)))))[..5], *"d9 20");
        assert_eq!(
            hex(&encode(&from_json(&json!("a".repeat(256)))))[..8],
            *"da 01 00"
        );
        let arr: Vec<u8> = vec![0; 16];
        assert_eq!(hex(&encode(&from_json(&json!(arr))))[..8], *"dc 00 10");
        assert_eq!(hex(&encode(&Mp::Binary(vec![0; 256])))[..8], *"c5 01 00");
    }

    #[test]
    fn undefined_is_null_in_arrays_and_absent_in_maps() {
        // [undefined, {"a": undefined, "b": 1}] as notepack writes it.
        let bytes = [
            0x92, 0xd4, 0x00, 0x00, 0x82, 0xa1, b'a', 0xd4, 0x00, 0x00, 0xa1, b'b', 0x01,
        ];
        let value = decode(&bytes).expect("decodes");
        assert_eq!(to_json(&value), json!([null, {"b": 1}]));
    }

    #[test]
    fn binary_moves_to_attachments_and_back() {
        let wire = Mp::Map(vec![
            (Mp::from("type"), Mp::from(2)),
            (
                Mp::from("data"),
                Mp::Array(vec![
                    Mp::from("ev"),
                    Mp::Map(vec![(Mp::from("x"), Mp::Binary(vec![9, 8]))]),
                    Mp::Binary(vec![7]),
                ]),
            ),
            (Mp::from("nsp"), Mp::from("/chat")),
        ]);
        let packet = packet_from_msgpack(&wire, "/").expect("packet");
        assert_eq!(packet.kind, PacketType::BinaryEvent);
        assert_eq!(packet.nsp, "/chat");
        assert_eq!(
            packet.data,
            Some(json!(["ev", {"x": {"_placeholder": true, "num": 0}}, {"_placeholder": true, "num": 1}]))
        );
        assert_eq!(
            packet.attachments,
            vec![Bytes::from_static(&[9, 8]), Bytes::from_static(&[7])]
        );
        assert_eq!(encode(&packet_to_msgpack(&packet, true)), encode(&wire));
    }

    #[test]
    fn placeholders_in_plain_events_stay_data() {
        let packet = Packet::event("/", json!(["ev", {"_placeholder": true, "num": 0}]), vec![], None);
        let mp = packet_to_msgpack(&packet, false);
        assert!(!has_binary(&mp));
        assert_eq!(
            packet_to_json(&packet, false),
            json!({"type": 2, "data": ["ev", {"_placeholder": true, "num": 0}]})
        );
    }
}
