//! Room permissions: the token's `rooms` and `publish` claims, plus rooms the configuration
//! grants to every authenticated user, decide what the built-in `join` and `publish` may do.
//! Patterns use `*` for any run of characters (`chat:*`).

use std::sync::Arc;

use ferrio::Socket;
use ferrio::builtins::RoomPolicy;

use crate::auth::AuthSession;
use crate::config::{ConfigError, Layers, Settings};
use crate::stats::{Rejection, Stats};

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of `name` it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

pub fn any_match(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, room))
}

/// The room every socket of user `sub` is in.
pub fn user_room(sub: &str) -> String {
    format!("user:{sub}")
}

/// Join and publish permissions of authenticated sockets.
#[derive(Debug, Clone)]
pub struct RoomPermissions {
    join: Vec<String>,
    publish: Vec<String>,
    user_room: bool,
    stats: Arc<Stats>,
}

impl RoomPermissions {
    pub fn new(settings: &Settings, stats: Arc<Stats>) -> Self {
        Self {
            join: settings.rooms.join.0.clone(),
            publish: settings.rooms.publish.0.clone(),
            user_room: settings.rooms.user_room,
            stats,
        }
    }

    fn allowed_to_join(&self, socket: &Socket, room: &str) -> bool {
        let Some(session) = socket.extension::<Arc<AuthSession>>() else {
            return false;
        };
        let identity = session.identity();
        (self.user_room && room.strip_prefix("user:") == Some(identity.sub.as_str()))
            || any_match(&identity.rooms, room)
            || any_match(&self.join, room)
    }

    /// Whether `socket` may see who is in `room`: it is a member, or may join it.
    pub fn may_view(&self, socket: &Socket, room: &str) -> bool {
        socket.rooms().iter().any(|r| r.as_ref() == room) || self.allowed_to_join(socket, room)
    }

    /// Leaves every room the socket may no longer join (after its token changed).
    pub fn leave_forbidden(&self, socket: &Socket) {
        let own = socket.id();
        for room in socket.rooms() {
            if room.as_ref() != own.as_str() && !self.allowed_to_join(socket, room.as_ref()) {
                socket.leave(room);
            }
        }
    }
}

impl RoomPolicy for RoomPermissions {
    fn may_join(&self, socket: &Socket, room: &str) -> bool {
        let ok = self.allowed_to_join(socket, room);
        if !ok {
            self.stats.count(Rejection::JoinForbidden);
        }
        ok
    }

    fn may_publish(&self, socket: &Socket, room: &str) -> bool {
        let ok = socket
            .extension::<Arc<AuthSession>>()
            .is_some_and(|s| any_match(&s.identity().publish, room) || any_match(&self.publish, room));
        if !ok {
            self.stats.count(Rejection::PublishForbidden);
        }
        ok
    }
}

/// Checks the `[rooms]` keys.
pub fn validate(settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
    check_patterns("rooms.join", &settings.rooms.join.0, layers)?;
    check_patterns("rooms.publish", &settings.rooms.publish.0, layers)
}

/// Checks a list of room patterns (`key[i]` names the bad one).
pub fn check_patterns(key: &str, patterns: &[String], layers: &Layers) -> Result<(), ConfigError> {
    for (i, p) in patterns.iter().enumerate() {
        if p.is_empty() || p.len() > ferrio::builtins::MAX_NAME_LEN {
            return Err(layers.error(&format!("{key}[{i}]"), "a room pattern must have 1 to 256 bytes"));
        }
    }
    Ok(())
}
