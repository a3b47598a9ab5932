//! Shared by the Redis targets: what the adapter does with a packet another node published.

use ferrio::EncodedPacket;
use ferrio::proto::socket::{Packet, PacketType};
use ferrio_redis::__fuzz as codec;
use serde_json::Value;

/// A packet through one more node: to the reference's packet object (as ferrio publishes
/// it), msgpack bytes, and back.
fn relay(packet: &Packet) -> (Vec<u8>, Packet) {
    let bytes = codec::encode(&codec::packet_to_msgpack(packet, true));
    let value = codec::decode(&bytes).expect("ferrio's own msgpack decodes");
    let again = codec::packet_from_msgpack(&value, "/").expect("ferrio's own packet object decodes");
    (bytes, again)
}

/// Checks a packet decoded from another node's message: the local delivery encodes it, and
/// relaying it on changes nothing after the first hop (the first may normalise: whole
/// floats become integers, map keys strings, `undefined` goes).
pub fn check_packet(packet: Packet) {
    let encoded = EncodedPacket::new(packet.clone());
    assert!(encoded.wire_len() > 0);
    assert_eq!(encoded.packet(), &packet);

    // Near rmpv's nesting limit, a placeholder object (a map) where a `bin` was nests deeper
    // than the input did; packets from clients nest at most 128 deep.
    if packet.data.as_ref().is_some_and(|d| depth(d) > 128) {
        return;
    }
    let (_, second) = relay(&packet);
    let (second_bytes, third) = relay(&second);
    assert_eq!(third, second, "a relayed packet changes again");
    assert_eq!(relay(&third).0, second_bytes);
    // Not the kind: an attachment no placeholder refers to (its key repeated in a map) is
    // dropped on the way, and with it the BINARY_ kind.
    assert_eq!(second.nsp, packet.nsp);
    // Only events and acks carry their id in the packet object.
    if matches!(
        packet.kind,
        PacketType::Event | PacketType::BinaryEvent | PacketType::Ack | PacketType::BinaryAck
    ) {
        assert_eq!(second.id, packet.id);
    }
}

/// How deep arrays and objects nest in `value`.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, d)) = stack.pop() {
        deepest = deepest.max(d);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Checks that msgpack ferrio re-encodes reads back the same.
pub fn check_msgpack(value: &rmpv::Value) {
    let bytes = codec::encode(value);
    let again = codec::decode(&bytes).expect("encoded msgpack decodes");
    assert_eq!(codec::encode(&again), bytes);
}
