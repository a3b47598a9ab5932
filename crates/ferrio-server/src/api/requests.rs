//! The bodies the HTTP API accepts, and their checks beyond types.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::rooms::user_room;

fn root() -> String {
    "/".into()
}

/// Keeps an explicit `null` apart from a missing key.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `POST /api/emit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    #[serde(default = "root")]
    pub namespace: String,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
    pub event: String,
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Value>,
    #[serde(default)]
    pub volatile: bool,
}

/// `POST /api/rooms/join` and `/api/rooms/leave`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    #[serde(default = "root")]
    pub namespace: String,
    pub user: Option<String>,
    pub room: Option<String>,
    pub socket: Option<String>,
    pub rooms: Vec<String>,
}

/// `POST /api/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    #[serde(default = "root")]
    pub namespace: String,
    pub user: Option<String>,
    pub room: Option<String>,
    pub socket: Option<String>,
    /// Close the whole connection, not only this namespace.
    #[serde(default)]
    pub close: bool,
}

/// A request's problem, as `(field, message)`.
pub type Invalid = (String, String);

fn invalid(field: &str, message: &str) -> Invalid {
    (field.to_owned(), message.to_owned())
}

fn check_rooms(field: &str, rooms: &[String]) -> Result<(), Invalid> {
    for (i, room) in rooms.iter().enumerate() {
        if room.is_empty() {
            return Err(invalid(&format!("{field}[{i}]"), "must not be empty"));
        }
    }
    Ok(())
}

impl Emit {
    pub fn check(&self) -> Result<(), Invalid> {
        if self.event.is_empty() {
            return Err(invalid("event", "must not be empty"));
        }
        check_rooms("rooms", &self.rooms)?;
        check_rooms("except", &self.except)
    }
}

/// Which sockets a request is about: exactly one of `user`, `room`, `socket`, as a room.
fn target(user: &Option<String>, room: &Option<String>, socket: &Option<String>) -> Result<String, Invalid> {
    let which = "exactly one of `user`, `room` or `socket` is required";
    match (user, room, socket) {
        (Some(u), None, None) if !u.is_empty() => Ok(user_room(u)),
        (None, Some(r), None) if !r.is_empty() => Ok(r.clone()),
        // Every socket is in a room named by its id.
        (None, None, Some(s)) if !s.is_empty() => Ok(s.clone()),
        (None, None, None) => Err(invalid("", which)),
        (Some(_), None, None) => Err(invalid("user", "must not be empty")),
        (None, Some(_), None) => Err(invalid("room", "must not be empty")),
        (None, None, Some(_)) => Err(invalid("socket", "must not be empty")),
        _ => Err(invalid("", which)),
    }
}

impl Rooms {
    pub fn check(&self) -> Result<String, Invalid> {
        if self.rooms.is_empty() {
            return Err(invalid("rooms", "must name at least one room"));
        }
        check_rooms("rooms", &self.rooms)?;
        target(&self.user, &self.room, &self.socket)
    }
}

impl Disconnect {
    pub fn check(&self) -> Result<String, Invalid> {
        target(&self.user, &self.room, &self.socket)
    }
}
