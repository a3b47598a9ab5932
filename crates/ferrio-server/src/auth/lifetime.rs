//! A connection does not outlive its token: each authenticated socket holds an
//! [`AuthSession`]; one scheduler task for the whole server warns each client before `exp`
//! (`token:expiring`) and disconnects the socket at `exp` plus the leeway unless a `refresh`
//! moved `exp`. The scheduler keeps two deadlines per live socket, not a task.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferrio::{Event, Namespace, Sid, Socket};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{AuthFailure, Authenticator, Identity, unix_now};
use crate::rooms::RoomPermissions;
use crate::stats::{Rejection, Stats};

/// The identity of one socket, replaced when the client refreshes its token.
#[derive(Debug)]
pub struct AuthSession {
    identity: RwLock<Arc<Identity>>,
}

impl AuthSession {
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(Self {
            identity: RwLock::new(Arc::new(identity)),
        })
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity.read().clone()
    }

    /// The current token's `exp`.
    pub fn exp(&self) -> u64 {
        self.identity.read().exp
    }

    /// Whether the token ran out (beyond the leeway).
    pub fn expired(&self, leeway: u64) -> bool {
        unix_now() > self.exp().saturating_add(leeway)
    }

    fn replace(&self, identity: Identity) {
        *self.identity.write() = Arc::new(identity);
    }
}

/// The events of a token's lifetime: the two the server emits, and the one clients send it
/// (relayed by another client, it would look like the server asking for a token).
pub fn declare_events(auth: &crate::config::AuthSettings, events: &mut crate::events::ServerEvents) {
    for name in [&auth.expiring_event, &auth.expired_event, &auth.refresh_event] {
        events.emits(name);
    }
}

/// What the token lifetime needs to know.
#[derive(Debug, Clone)]
pub struct LifetimeSettings {
    pub warning: Duration,
    pub leeway: Duration,
    pub expiring_event: String,
    pub expired_event: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Warn,
    End,
}

#[derive(Debug)]
enum Command {
    Watch { ns: Namespace, sid: Sid, exp: u64 },
    Forget { ns: Arc<str>, sid: Sid },
}

type SocketKey = (Arc<str>, Sid);

/// Deadlines by time, and each socket's deadlines by socket (to replace or drop them).
#[derive(Default)]
struct Deadlines {
    by_time: BTreeMap<(Instant, u64), (Due, Namespace, Sid, u64)>,
    by_socket: HashMap<SocketKey, [(Instant, u64); 2]>,
    seq: u64,
}

impl Deadlines {
    fn forget(&mut self, key: &SocketKey) {
        if let Some(slots) = self.by_socket.remove(key) {
            for slot in slots {
                self.by_time.remove(&slot);
            }
        }
    }

    fn watch(&mut self, ns: Namespace, sid: Sid, exp: u64, settings: &LifetimeSettings) {
        let key = (Arc::<str>::from(ns.name()), sid);
        self.forget(&key);
        let exp_ms = exp.saturating_mul(1000);
        let now = Instant::now();
        let at = |unix_ms: u64| now + until_unix(unix_ms);
        let warn = at(exp_ms.saturating_sub(settings.warning.as_millis() as u64));
        let end = at(exp_ms.saturating_add(settings.leeway.as_millis() as u64));
        let mut slot = |at: Instant, due: Due| {
            self.seq += 1;
            self.by_time.insert((at, self.seq), (due, ns.clone(), sid, exp));
            (at, self.seq)
        };
        let slots = [slot(warn, Due::Warn), slot(end, Due::End)];
        self.by_socket.insert(key, slots);
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.keys().next().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Due, Namespace, Sid, u64)> {
        let (&slot, _) = self.by_time.iter().next().filter(|((at, _), _)| *at <= now)?;
        let due = self.by_time.remove(&slot)?;
        if due.0 == Due::End {
            self.by_socket.remove(&(Arc::<str>::from(due.1.name()), due.2));
        }
        Some(due)
    }
}

fn until_unix(at_ms: u64) -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(at_ms.saturating_sub(now_ms))
}

/// Warns and disconnects sockets whose tokens run out, for the whole server.
#[derive(Debug, Clone)]
pub struct ExpiryScheduler {
    commands: mpsc::UnboundedSender<Command>,
}

impl ExpiryScheduler {
    /// Starts the scheduler's task (it ends when every handle is dropped).
    pub fn start(settings: Arc<LifetimeSettings>, stats: Arc<Stats>) -> Self {
        let (commands, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut deadlines = Deadlines::default();
            loop {
                let next = deadlines.next();
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(Command::Watch { ns, sid, exp }) => deadlines.watch(ns, sid, exp, &settings),
                        Some(Command::Forget { ns, sid }) => deadlines.forget(&(ns, sid)),
                        None => return,
                    },
                    () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                        while let Some((due, ns, sid, exp)) = deadlines.pop_due(Instant::now()) {
                            fire(due, &ns, sid, exp, &settings, &stats);
                        }
                    }
                }
            }
        });
        Self { commands }
    }

    /// Schedules (or moves) the deadlines of `socket` for a token expiring at `exp`.
    pub fn watch(&self, socket: &Socket, exp: u64) {
        let _ = self.commands.send(Command::Watch {
            ns: socket.ns().clone(),
            sid: socket.id(),
            exp,
        });
    }

    /// Drops the deadlines of a socket that left.
    pub fn forget(&self, socket: &Socket) {
        let _ = self.commands.send(Command::Forget {
            ns: Arc::from(socket.ns().name()),
            sid: socket.id(),
        });
    }
}

fn fire(due: Due, ns: &Namespace, sid: Sid, exp: u64, settings: &LifetimeSettings, stats: &Stats) {
    let Some(socket) = ns.socket(sid) else { return };
    let Some(session) = socket.extension::<Arc<AuthSession>>() else {
        return;
    };
    // A refresh moved the deadline meanwhile.
    if session.exp() != exp {
        return;
    }
    match due {
        Due::Warn => {
            let left = exp.saturating_sub(unix_now());
            let _ = socket.emit(
                &settings.expiring_event,
                json!({ "exp": exp, "expires_in": left }),
            );
        }
        Due::End => {
            stats.count(Rejection::ExpiredDisconnect);
            tracing::info!(
                sub = session.identity().sub.as_str(),
                ns = ns.name(),
                "token expired; disconnecting"
            );
            let _ = socket.emit(
                &settings.expired_event,
                json!({ "reason": AuthFailure::TokenExpired.reason() }),
            );
            socket.disconnect(false);
        }
    }
}

fn token_arg(event: &Event) -> Option<&str> {
    match event.args().first() {
        Some(Value::String(t)) => Some(t),
        Some(Value::Object(m)) => m.get("token").and_then(Value::as_str),
        _ => None,
    }
}

/// Handles the `refresh` event: verifies the new token, which must name the same user, and
/// answers `{"ok":true,"exp":...}` or `{"ok":false,"error":<reason>}`. Rooms the new token no
/// longer allows are left.
pub async fn refresh(
    socket: Socket,
    mut event: Event,
    auth: Arc<Authenticator>,
    rooms: Arc<RoomPermissions>,
    expiry: ExpiryScheduler,
    stats: Arc<Stats>,
) {
    let Some(session) = socket.extension::<Arc<AuthSession>>() else {
        event.ack(json!({ "ok": false, "error": "unauthorized" }));
        return;
    };
    let result = match token_arg(&event) {
        None => Err(AuthFailure::TokenMissing),
        Some(token) => match auth.verify(token).await {
            Ok(identity) if identity.sub != session.identity().sub => Err(AuthFailure::SubjectMismatch),
            // A refreshed token must still allow the namespace the socket is in.
            Ok(identity) => auth
                .check_namespace(&identity, socket.ns().name())
                .map(|()| identity),
            other => other,
        },
    };
    let answer = match result {
        Ok(identity) => {
            let exp = identity.exp;
            session.replace(identity);
            expiry.watch(&socket, exp);
            rooms.leave_forbidden(&socket);
            tracing::debug!(sub = session.identity().sub.as_str(), exp, "token refreshed");
            json!({ "ok": true, "exp": exp })
        }
        Err(failure) => {
            stats.count(failure);
            tracing::debug!(
                sub = session.identity().sub.as_str(),
                reason = failure.reason(),
                "refresh refused"
            );
            json!({ "ok": false, "error": failure.reason() })
        }
    };
    event.ack(answer);
}
