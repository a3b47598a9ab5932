//! A connection does not outlive its token: each authenticated socket holds an
//! [`AuthSession`]; a task warns the client before `exp` (`token:expiring`), takes a new
//! token through the `refresh` event, and disconnects the socket at `exp` plus the leeway.

use std::sync::Arc;
use std::time::Duration;

use ferrio::{Event, Socket};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{AuthFailure, Authenticator, Identity, unix_now};
use crate::rooms::RoomPermissions;
use crate::stats::{Rejection, Stats};

/// The identity of one socket, replaced when the client refreshes its token.
#[derive(Debug)]
pub struct AuthSession {
    identity: RwLock<Arc<Identity>>,
    /// The current `exp`; `None` once the socket is gone (stops the watch task).
    exp: watch::Sender<Option<u64>>,
}

impl AuthSession {
    pub fn new(identity: Identity) -> Arc<Self> {
        let (exp, _) = watch::channel(Some(identity.exp));
        Arc::new(Self {
            identity: RwLock::new(Arc::new(identity)),
            exp,
        })
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity.read().clone()
    }

    /// Whether the token ran out (beyond the leeway).
    pub fn expired(&self, leeway: u64) -> bool {
        unix_now() > self.identity.read().exp.saturating_add(leeway)
    }

    fn replace(&self, identity: Identity) {
        let exp = identity.exp;
        *self.identity.write() = Arc::new(identity);
        self.exp.send_replace(Some(exp));
    }

    /// The socket left: stop watching.
    pub fn close(&self) {
        self.exp.send_replace(None);
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

fn until_unix(at_ms: u64) -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(at_ms.saturating_sub(now_ms))
}

/// Watches one socket's token: warns before `exp`, disconnects after `exp` + leeway unless a
/// refresh moved `exp`. Ends when the socket leaves.
pub fn spawn_watch(
    socket: Socket,
    session: Arc<AuthSession>,
    settings: Arc<LifetimeSettings>,
    stats: Arc<Stats>,
) {
    let mut exp_rx = session.exp.subscribe();
    tokio::spawn(async move {
        let mut warned_for = None;
        loop {
            let Some(exp) = *exp_rx.borrow_and_update() else {
                return;
            };
            let exp_ms = exp.saturating_mul(1000);
            let warn_in = until_unix(exp_ms.saturating_sub(settings.warning.as_millis() as u64));
            let end_in = until_unix(exp_ms.saturating_add(settings.leeway.as_millis() as u64));
            tokio::select! {
                changed = exp_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(warn_in), if warned_for != Some(exp) => {
                    warned_for = Some(exp);
                    let left = exp.saturating_sub(unix_now());
                    let _ = socket.emit(&settings.expiring_event, json!({ "exp": exp, "expires_in": left }));
                }
                () = tokio::time::sleep(end_in) => {
                    if !socket.connected() {
                        return;
                    }
                    stats.count(Rejection::ExpiredDisconnect);
                    tracing::info!(sub = %session.identity().sub, ns = %socket.ns().name(), "token expired; disconnecting");
                    let _ = socket.emit(&settings.expired_event, json!({ "reason": AuthFailure::TokenExpired.reason() }));
                    socket.disconnect(false);
                    return;
                }
            }
        }
    });
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
            other => other,
        },
    };
    let answer = match result {
        Ok(identity) => {
            let exp = identity.exp;
            session.replace(identity);
            rooms.leave_forbidden(&socket);
            tracing::debug!(sub = %session.identity().sub, exp, "token refreshed");
            json!({ "ok": true, "exp": exp })
        }
        Err(failure) => {
            stats.count(failure);
            tracing::debug!(sub = %session.identity().sub, reason = failure.reason(), "refresh refused");
            json!({ "ok": false, "error": failure.reason() })
        }
    };
    event.ack(answer);
}
