//! Room events a client can use with no backend: `join`, `leave` and `publish`.
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

    /// Adds the three events to a namespace.
    pub fn install(self, ns: NamespaceBuilder) -> NamespaceBuilder {
        let join = self.clone();
        let publish = self.clone();
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
