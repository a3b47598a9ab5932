//! Room events a client can use with no backend: `join`, `leave`, `publish` and `history`.
//!
//! Each answers its acknowledgement with `{"ok":true}` or `{"ok":false,"error":"<reason>"}`;
//! bad arguments never crash anything or vanish silently. A [`RoomPolicy`] decides who may
//! join and publish where; [`RoomEvents::reserve_events`] keeps event names the server emits
//! itself out of `publish`.

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};

use ferrio_proto::socket::RESERVED_EVENTS;

use crate::{Confirmation, EmitError, Event, NamespaceBuilder, Payload, Socket};

/// Longest room or event name the built-in events accept, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Most messages one `history` call returns (and its default).
pub const MAX_HISTORY_LIMIT: usize = 100;
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// `history` reads in flight per namespace, at most (each may wait on the cluster's store);
/// past it a read is refused with `busy`.
pub const MAX_HISTORY_READS: usize = 64;

/// A history message as JSON: `{"offset", "event", "args"}` (the args without the trailing
/// offset). Each binary argument becomes what `binary` makes of its bytes.
pub fn history_message(
    message: &crate::HistoryMessage,
    mut binary: impl FnMut(bytes::Bytes) -> Value,
) -> Value {
    let packet = &message.packet;
    let mut data = match &packet.data {
        Some(Value::Array(data)) => data.clone(),
        _ => Vec::new(),
    };
    data.pop(); // the offset
    let event = if data.is_empty() {
        Value::Null
    } else {
        data.remove(0)
    };
    let mut args = Value::Array(data);
    replace_placeholders(&mut args, &packet.attachments, &mut binary);
    json!({ "offset": message.offset, "event": event, "args": args })
}

fn replace_placeholders(
    value: &mut Value,
    attachments: &[bytes::Bytes],
    binary: &mut impl FnMut(bytes::Bytes) -> Value,
) {
    match value {
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
            let found = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| attachments.get(n as usize));
            *value = found.map_or(Value::Null, |bytes| binary(bytes.clone()));
        }
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| replace_placeholders(v, attachments, binary)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_placeholders(v, attachments, binary)),
        _ => {}
    }
}

/// Decides what a socket may do with the built-in room events. Everything is allowed by
/// default.
pub trait RoomPolicy: Send + Sync + 'static {
    /// Whether `socket` may join `room`.
    fn may_join(&self, _socket: &Socket, _room: &str) -> bool {
        true
    }

    /// Whether `socket` may publish to `room`.
    fn may_publish(&self, _socket: &Socket, _room: &str) -> bool {
        true
    }
}

/// Allows everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenRooms;

impl RoomPolicy for OpenRooms {}

/// Whether an event name, published by a socket, is one only the server may emit.
type ReservedEvents = dyn Fn(&Socket, &str) -> bool + Send + Sync;

/// The built-in `join`, `leave` and `publish` events.
#[derive(Clone)]
pub struct RoomEvents {
    policy: Arc<dyn RoomPolicy>,
    reserved: Option<Arc<ReservedEvents>>,
}

impl fmt::Debug for RoomEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomEvents").finish_non_exhaustive()
    }
}

impl Default for RoomEvents {
    fn default() -> Self {
        Self::new(OpenRooms)
    }
}

fn ok() -> Value {
    json!({ "ok": true })
}

fn failure(reason: &str) -> Value {
    json!({ "ok": false, "error": reason })
}

/// The answer to a publish that the rest of the cluster may not have: it reached
/// `local_recipients` sockets of this node only.
pub fn unavailable(e: &EmitError) -> Value {
    match e.error {
        crate::AdapterError::ReservedEvent => failure("reserved event name"),
        _ => json!({ "ok": false, "error": "unavailable", "local_recipients": e.local }),
    }
}

/// A room name argument: a string of 1 to [`MAX_NAME_LEN`] bytes, or why not.
pub fn room_name(value: Option<&Value>) -> Result<&str, &'static str> {
    match value {
        Some(Value::String(s)) if s.is_empty() => Err("room must not be empty"),
        Some(Value::String(s)) if s.len() > MAX_NAME_LEN => Err("room name too long"),
        Some(Value::String(s)) => Ok(s),
        _ => Err("room must be a string"),
    }
}

impl RoomEvents {
    /// Room events governed by `policy`.
    pub fn new(policy: impl RoomPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            reserved: None,
        }
    }

    /// Refuses to `publish` an event that `reserved(socket, name)` says the server emits
    /// itself (`reserved event name`, as for the protocol's own names), so that no client can
    /// forge one to others.
    pub fn reserve_events(
        mut self,
        reserved: impl Fn(&Socket, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.reserved = Some(Arc::new(reserved));
        self
    }

    /// Adds the four events to a namespace.
    pub fn install(self, ns: NamespaceBuilder) -> NamespaceBuilder {
        let join = self.clone();
        let publish = self.clone();
        let history = self.clone();
        let reads = Arc::new(tokio::sync::Semaphore::new(MAX_HISTORY_READS));
        ns.on("join", move |socket, mut event| {
            let answer = join.join(socket, &event);
            event.ack(answer);
        })
        .on("leave", |socket, mut event| {
            let answer = match room_name(event.args().first()) {
                Ok(room) => {
                    socket.leave(room);
                    ok()
                }
                Err(reason) => failure(reason),
            };
            event.ack(answer);
        })
        .on("publish", move |socket, mut event| {
            match publish.publish(socket, &event) {
                Ok(confirmed) => {
                    // Sent now, in order with the socket's other events; only the answer waits
                    // until the rest of the cluster has it.
                    tokio::spawn(async move {
                        let answer = match confirmed.await {
                            Ok(_) => ok(),
                            Err(e) => unavailable(&e),
                        };
                        event.ack(answer);
                    });
                }
                Err(answer) => event.ack(answer),
            }
        })
        .on("history", move |socket, mut event| {
            let Ok(permit) = reads.clone().try_acquire_owned() else {
                event.ack(failure("busy"));
                return;
            };
            let history = history.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let answer = history.history(&socket, &event).await;
                drop(permit);
                event.ack(answer);
            });
        })
    }

    /// `history {room, since?, limit?}`: the room's recent messages, for its members and
    /// those who may join it (without those the broadcast left the socket or its rooms out
    /// of). Binary arguments come back as attachments of the answer.
    async fn history(&self, socket: &Socket, event: &Event) -> Payload {
        let refuse = |reason: &str| Payload::args(vec![failure(reason)]);
        let Some(Value::Object(msg)) = event.args().first() else {
            return refuse("expected {room, since?, limit?}");
        };
        let room = match room_name(msg.get("room")) {
            Ok(room) => room,
            Err(reason) => return refuse(reason),
        };
        let since = match msg.get("since") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Some(s.as_str()),
            _ => return refuse("since must be an offset string"),
        };
        let limit = match msg.get("limit") {
            None | Some(Value::Null) => DEFAULT_HISTORY_LIMIT,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => n as usize,
                _ => return refuse("limit must be an integer from 1 to 100"),
            },
        };
        let member = socket.rooms().iter().any(|r| r.as_ref() == room);
        if !member && !self.policy.may_join(socket, room) {
            return refuse("forbidden");
        }
        match socket.ns().history(room, since, limit).await {
            Ok(history) => {
                let mut attachments = Vec::new();
                let own = crate::Room::from(socket.id().as_str());
                let rooms = socket.rooms();
                let left_out =
                    |m: &&crate::HistoryMessage| m.except.iter().any(|r| *r == own || rooms.contains(r));
                let messages: Vec<Value> = history
                    .messages
                    .iter()
                    .filter(|m| !left_out(m))
                    .map(|m| {
                        history_message(m, |bytes| {
                            attachments.push(bytes);
                            json!({ "_placeholder": true, "num": attachments.len() - 1 })
                        })
                    })
                    .collect();
                Payload {
                    args: vec![json!({ "ok": true, "messages": messages, "complete": history.complete })],
                    attachments,
                }
            }
            Err(crate::HistoryError::NotKept) => refuse("not_kept"),
            Err(crate::HistoryError::UnknownOffset) => refuse("unknown offset"),
            Err(crate::HistoryError::Unavailable) => refuse("unavailable"),
        }
    }

    fn join(&self, socket: &Socket, event: &Event) -> Value {
        match room_name(event.args().first()) {
            Ok(room) if self.policy.may_join(socket, room) => {
                socket.join(room);
                ok()
            }
            Ok(_) => failure("forbidden"),
            Err(reason) => failure(reason),
        }
    }

    /// Checks a `publish` and sends it; the answer is a refusal, or what resolves once the
    /// cluster has it.
    fn publish(&self, socket: &Socket, event: &Event) -> Result<Confirmation, Value> {
        let Some(Value::Object(msg)) = event.args().first() else {
            return Err(failure("expected {room, event, data}"));
        };
        let room = room_name(msg.get("room")).map_err(failure)?;
        let name = match msg.get("event") {
            Some(Value::String(e)) if e.is_empty() => return Err(failure("event must not be empty")),
            Some(Value::String(e)) if e.len() > MAX_NAME_LEN => return Err(failure("event name too long")),
            Some(Value::String(e))
                if RESERVED_EVENTS.contains(&e.as_str())
                    || self.reserved.as_ref().is_some_and(|reserved| reserved(socket, e)) =>
            {
                return Err(failure("reserved event name"));
            }
            Some(Value::String(e)) => e,
            _ => return Err(failure("event must be a string")),
        };
        if !self.policy.may_publish(socket, room) {
            return Err(failure("forbidden"));
        }
        let data = msg.get("data").cloned().unwrap_or(Value::Null);
        // Placeholders inside `data` keep their numbers, so the attachments go along as they are.
        let payload = Payload {
            args: vec![data],
            attachments: event.payload().attachments.clone(),
        };
        Ok(socket.to(room).emit_confirmed(name, payload))
    }
}
