//! The codec boundary of the Redis adapter: message types, the decoded body of a message
//! (JSON or msgpack) and broadcast options in the reference's wire shape.

use super::*;

/// Classic request and response types (`RequestType` in the reference).
pub(crate) mod classic_type {
    pub const SOCKETS: u64 = 0;
    pub const ALL_ROOMS: u64 = 1;
    pub const REMOTE_JOIN: u64 = 2;
    pub const REMOTE_LEAVE: u64 = 3;
    pub const REMOTE_DISCONNECT: u64 = 4;
    pub const REMOTE_FETCH: u64 = 5;
    pub const SERVER_SIDE_EMIT: u64 = 6;
    pub const BROADCAST: u64 = 7;
    pub const BROADCAST_CLIENT_COUNT: u64 = 8;
    pub const BROADCAST_ACK: u64 = 9;
}

/// Cluster adapter message types (`MessageType` in socket.io-adapter).
pub(crate) mod cluster_type {
    pub const BROADCAST: u64 = 3;
    pub const SOCKETS_JOIN: u64 = 4;
    pub const SOCKETS_LEAVE: u64 = 5;
    pub const DISCONNECT_SOCKETS: u64 = 6;
    pub const FETCH_SOCKETS: u64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub const SERVER_SIDE_EMIT: u64 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    pub const BROADCAST_CLIENT_COUNT: u64 = 11;
    pub const BROADCAST_ACK: u64 = 12;
}

/// A decoded message: JSON, or msgpack when it carries binary. Public only for the fuzz
/// targets (through `__fuzz`).
#[doc(hidden)]
#[derive(Debug)]
pub enum Body {
    Json(Value),
    Mp(Mp),
}

impl Body {
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.first() == Some(&b'{') {
            serde_json::from_slice(payload)
                .map(Body::Json)
                .map_err(|e| DecodeError(e.to_string()))
        } else {
            codec::decode(payload).map(Body::Mp)
        }
    }

    /// The whole message as JSON (binary becomes Buffer-shaped JSON).
    pub fn json(&self) -> Value {
        match self {
            Body::Json(v) => v.clone(),
            Body::Mp(m) => codec::to_json(m),
        }
    }

    /// Whether the message has a member `key` (read in place).
    pub fn has(&self, key: &str) -> bool {
        match self {
            Body::Json(v) => v.get(key).is_some_and(|v| !v.is_null()),
            Body::Mp(m) => codec::get(m, key).is_some_and(|v| !v.is_nil()),
        }
    }

    /// A text member `key` (read in place).
    pub fn text(&self, key: &str) -> Option<String> {
        match self {
            Body::Json(v) => v.get(key)?.as_str().map(str::to_owned),
            Body::Mp(m) => codec::get(m, key)?.as_str().map(str::to_owned),
        }
    }

    /// The broadcast options of the message (its `opts`), read in place.
    pub fn options(&self) -> BroadcastOptions {
        match self {
            Body::Json(v) => options_from(v.get("opts")),
            Body::Mp(m) => options_from_mp(codec::get(m, "opts")),
        }
    }

    /// A member, keeping msgpack as it is.
    pub fn member(&self, path: &[&str]) -> Option<Body> {
        match self {
            Body::Json(v) => {
                let mut cur = v;
                for key in path {
                    cur = cur.get(key)?;
                }
                Some(Body::Json(cur.clone()))
            }
            Body::Mp(m) => {
                let mut cur = m;
                for key in path {
                    cur = codec::get(cur, key)?;
                }
                Some(Body::Mp(cur.clone()))
            }
        }
    }

    pub fn packet(&self, nsp: &str) -> Result<Packet, DecodeError> {
        match self {
            Body::Json(v) => codec::packet_from_json(v, nsp),
            Body::Mp(m) => codec::packet_from_msgpack(m, nsp),
        }
    }

    /// A single ack argument as a [`Payload`] (binary back to attachments).
    pub fn payload(&self) -> Payload {
        match self {
            Body::Json(v) => Payload::args(vec![v.clone()]),
            Body::Mp(m) => {
                let mut attachments = Vec::new();
                let arg = codec::to_json_extracting(m, &mut attachments);
                Payload {
                    args: vec![arg],
                    attachments,
                }
            }
        }
    }
}

pub(crate) fn room_text(v: &Value) -> Option<Room> {
    match v {
        Value::String(s) => Some(Room::from(s.as_str())),
        Value::Number(n) => Some(Room::from(n.to_string().as_str())),
        _ => None,
    }
}

pub(crate) fn rooms_of(v: Option<&Value>) -> SmallVec<[Room; 1]> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(room_text).collect())
        .unwrap_or_default()
}

/// `{rooms, except, flags}` as the reference sends it.
pub(crate) fn options_from(v: Option<&Value>) -> BroadcastOptions {
    let Some(v) = v else {
        return BroadcastOptions::default();
    };
    let flags = v.get("flags");
    BroadcastOptions {
        rooms: rooms_of(v.get("rooms")),
        except: rooms_of(v.get("except")),
        flags: BroadcastFlags {
            volatile: flags
                .and_then(|f| f.get("volatile"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            local: false,
            timeout: flags
                .and_then(|f| f.get("timeout"))
                .and_then(Value::as_u64)
                .map(Duration::from_millis),
        },
    }
}

pub(crate) fn flags_json(flags: &BroadcastFlags) -> Value {
    let mut map = serde_json::Map::new();
    if flags.volatile {
        map.insert("volatile".into(), Value::Bool(true));
    }
    if let Some(t) = flags.timeout {
        map.insert("timeout".into(), Value::from(t.as_millis() as u64));
    }
    Value::Object(map)
}

pub(crate) fn names(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::from(r.as_ref())).collect())
}

/// `{rooms, except, flags}` for broadcasts; `{rooms, except}` for classic requests.
pub(crate) fn options_json(opts: &BroadcastOptions, with_flags: bool) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("rooms".into(), names(&opts.rooms));
    map.insert("except".into(), names(&opts.except));
    if with_flags {
        map.insert("flags".into(), flags_json(&opts.flags));
    }
    Value::Object(map)
}

fn room_mp(v: &Mp) -> Option<Room> {
    match v {
        Mp::String(s) => s.as_str().map(Room::from),
        Mp::Integer(n) => Some(Room::from(n.to_string().as_str())),
        _ => None,
    }
}

fn rooms_of_mp(v: Option<&Mp>) -> SmallVec<[Room; 1]> {
    match v {
        Some(Mp::Array(items)) => items.iter().filter_map(room_mp).collect(),
        _ => SmallVec::new(),
    }
}

/// [`options_from`] for a msgpack message.
pub(crate) fn options_from_mp(v: Option<&Mp>) -> BroadcastOptions {
    let Some(v) = v else {
        return BroadcastOptions::default();
    };
    let flags = codec::get(v, "flags");
    let flag = |name: &str| flags.and_then(|f| codec::get(f, name));
    BroadcastOptions {
        rooms: rooms_of_mp(codec::get(v, "rooms")),
        except: rooms_of_mp(codec::get(v, "except")),
        flags: BroadcastFlags {
            volatile: flag("volatile").and_then(Mp::as_bool).unwrap_or(false),
            local: false,
            timeout: flag("timeout").and_then(Mp::as_u64).map(Duration::from_millis),
        },
    }
}

/// [`options_json`] written straight to msgpack.
pub(crate) fn options_mp(opts: &BroadcastOptions, with_flags: bool) -> Mp {
    let names = |rooms: &[Room]| Mp::Array(rooms.iter().map(|r| Mp::from(r.as_ref())).collect());
    let mut map = vec![
        (Mp::from("rooms"), names(&opts.rooms)),
        (Mp::from("except"), names(&opts.except)),
    ];
    if with_flags {
        let mut flags = Vec::new();
        if opts.flags.volatile {
            flags.push((Mp::from("volatile"), Mp::Boolean(true)));
        }
        if let Some(t) = opts.flags.timeout {
            flags.push((Mp::from("timeout"), Mp::from(t.as_millis() as u64)));
        }
        map.push((Mp::from("flags"), Mp::Map(flags)));
    }
    Mp::Map(map)
}
