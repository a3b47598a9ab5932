//! Presence: who is in a room, for the `presence` client event and `GET /api/presence/{room}`,
//! and the optional `presence:join` / `presence:leave` announcements when a user's first
//! socket enters a room or their last one leaves it.
//!
//! A user is a token's `sub`; sockets without one (development mode) each count as an
//! anonymous user of their own. Each node tracks its own sockets. A user's first socket on a
//! node announces `presence:join` (in a cluster, a user arriving on two nodes may be announced
//! twice: a client keeps a set). A user's last socket on a node announces `presence:leave`;
//! in a cluster only once the other nodes say they hold none of the user's sockets in the
//! room (asked through the user's own room, a few sockets, when `rooms.user_room` is on) and
//! none came back here meanwhile. The question is asked after the socket left, so of several
//! sockets leaving at once on different nodes the last one to ask sees nobody and announces.
//! When the cluster does not answer, no departure is announced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ferrio::{AdapterError, Namespace, Room, RoomChange, Sid, Socket};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{ConfigError, Layers, List, Settings};
use crate::rooms::{any_match, user_room};

/// The event a room's members get when a user's first socket joins it.
pub const JOIN_EVENT: &str = "presence:join";
/// The event a room's members get when a user's last socket leaves it.
pub const LEAVE_EVENT: &str = "presence:leave";

/// The announcements, reserved even when no room is announced: a client never gets one that
/// another client made up.
pub fn declare_events(events: &mut crate::events::ServerEvents) {
    events.emits(JOIN_EVENT);
    events.emits(LEAVE_EVENT);
}

/// `[presence]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceSettings {
    /// Offer the `presence` client event (room → users), checked against room permissions.
    pub query: bool,
    /// Rooms (or patterns, `chat:*`) whose members are told with `presence:join` and
    /// `presence:leave` when a user arrives or goes. None by default.
    pub announce: List,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            query: true,
            announce: List::default(),
        }
    }
}

/// Checks `presence.announce`.
pub fn validate(settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
    crate::rooms::check_patterns("presence.announce", &settings.presence.announce.0, layers)
}

/// The user a socket belongs to: its token's `sub`.
pub fn user_of(socket: &Socket) -> Option<String> {
    match socket.data().get("sub") {
        Some(Value::String(sub)) => Some(sub.clone()),
        _ => None,
    }
}

/// Who is in `room` across the cluster: `{"namespace","room","users":[{"user","connections"}],
/// "anonymous","sockets"}`, users sorted by name.
pub async fn snapshot(ns: &Namespace, room: &str) -> Result<Value, AdapterError> {
    let sockets = ns.to(room.to_owned()).fetch_sockets().await?;
    let mut users: BTreeMap<&str, usize> = BTreeMap::new();
    let mut anonymous = 0;
    for socket in &sockets {
        match socket.data.get("sub").and_then(Value::as_str) {
            Some(sub) => *users.entry(sub).or_default() += 1,
            None => anonymous += 1,
        }
    }
    let users: Vec<Value> = users
        .into_iter()
        .map(|(user, connections)| json!({ "user": user, "connections": connections }))
        .collect();
    Ok(json!({
        "namespace": ns.name(),
        "room": room,
        "users": users,
        "anonymous": anonymous,
        "sockets": sockets.len(),
    }))
}

/// Who is present, for the announced rooms only: (namespace, room) → user → their sockets.
type Members = HashMap<(Arc<str>, Room), HashMap<String, HashSet<Sid>>>;

fn announce_to(ns: &Namespace, room: &Room, sid: Sid, event: &str, message: Value) {
    let to = ns.to(room.clone()).except(sid.as_str().to_owned());
    if let Err(e) = to.emit(event, message) {
        tracing::warn!(
            error = e.to_string(),
            room = room.as_ref(),
            "cannot announce presence"
        );
    }
}

/// Tracks the announced rooms' users on this node and tells the room when one arrives or goes.
#[derive(Debug, Default)]
pub struct Announcer {
    patterns: Vec<String>,
    members: Mutex<Members>,
    /// Other nodes may hold the user's sockets: ask them before announcing a departure.
    clustered: bool,
    /// Every socket of a user is in `user:<sub>`: the cheap way to ask where they are.
    user_room: bool,
}

impl Announcer {
    /// `None` when no room is announced.
    pub fn new(settings: &Settings) -> Option<Arc<Self>> {
        let presence = &settings.presence;
        (!presence.announce.is_empty()).then(|| {
            Arc::new(Self {
                patterns: presence.announce.0.clone(),
                members: Mutex::default(),
                clustered: settings.cluster.redis_url.is_some(),
                user_room: settings.rooms.user_room,
            })
        })
    }

    /// Whether this node holds a socket of `user` in `room`.
    fn here(&self, ns: &str, room: &Room, user: &str) -> bool {
        self.members
            .lock()
            .get(&(Arc::from(ns), room.clone()))
            .is_some_and(|users| users.contains_key(user))
    }

    /// Whether another node holds a socket of `user` in `room`; `None` when the cluster did
    /// not answer. Asks the user's own room when there is one (a few sockets), else the room.
    async fn elsewhere(&self, ns: &Namespace, room: &Room, user: &str) -> Option<bool> {
        let asked = if self.user_room {
            ns.to(user_room(user)).fetch_sockets().await
        } else {
            ns.to(room.clone()).fetch_sockets().await
        };
        match asked {
            Ok(sockets) => {
                Some(sockets.iter().any(|s| {
                    s.data.get("sub").and_then(Value::as_str) == Some(user) && s.rooms.contains(room)
                }))
            }
            Err(e) => {
                tracing::warn!(
                    error = e.to_string(),
                    room = room.as_ref(),
                    "presence: the cluster did not answer; no departure announced"
                );
                None
            }
        }
    }

    /// A socket joined or left `room`. Joining and leaving are idempotent per socket, so a
    /// repeated report changes nothing.
    pub fn on_room_change(self: &Arc<Self>, socket: &Socket, room: &Room, change: RoomChange) {
        if !any_match(&self.patterns, room) {
            return;
        }
        let sid = socket.id();
        let user = user_of(socket);
        // Anonymous sockets are users of their own.
        let key = user.clone().unwrap_or_else(|| format!("\0{sid}"));
        let ns: Arc<str> = Arc::from(socket.ns().name());
        let (event, announce) = {
            let mut members = self.members.lock();
            let room_key = (ns, room.clone());
            match change {
                RoomChange::Joined => {
                    let sockets = members.entry(room_key).or_default().entry(key).or_default();
                    (JOIN_EVENT, sockets.insert(sid) && sockets.len() == 1)
                }
                RoomChange::Left => {
                    let Some(users) = members.get_mut(&room_key) else {
                        return;
                    };
                    let Some(sockets) = users.get_mut(&key) else {
                        return;
                    };
                    let last = sockets.remove(&sid) && sockets.is_empty();
                    if sockets.is_empty() {
                        users.remove(&key);
                    }
                    if users.is_empty() {
                        members.remove(&room_key);
                    }
                    (LEAVE_EVENT, last)
                }
            }
        };
        if !announce {
            return;
        }
        let message = json!({ "room": room.as_ref(), "user": user, "socket": sid.as_str() });
        let ns = socket.ns().clone();
        let room = room.clone();
        match (change, user) {
            (RoomChange::Left, Some(user)) if self.clustered => {
                // Gone from this node; still in the room on another one? Asked after the
                // socket left, so of several leaving at once the last one asking sees nobody.
                let this = self.clone();
                tokio::spawn(async move {
                    if this.elsewhere(&ns, &room, &user).await == Some(false)
                        && !this.here(ns.name(), &room, &user)
                    {
                        announce_to(&ns, &room, sid, event, message);
                    }
                });
            }
            _ => announce_to(&ns, &room, sid, event, message),
        }
    }
}
