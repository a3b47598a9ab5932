//! Engine.IO v4 over HTTP: the session registry, the handshake, request verification with
//! the reference's error codes, long-polling requests and WebSocket upgrades. Each session is
//! run by one [`driver`] task; this module only routes requests to it.

mod connection;
mod driver;
mod http;
mod ws;
mod ws_io;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;

pub use connection::{CloseReason, SendError, TransportKind};
pub(crate) use connection::{Connection, Control, Frame, UpperCommand};
pub(crate) use http::handle_request;
pub use http::{RemoteAddr, RequestBody, ResponseBody};

use crate::{Config, Sid};

/// The WebSocket connection type ferrio drives.
pub(crate) type WsStream = ws::WsConn;

/// What a session's owner sees of one Engine.IO message.
pub use ferrio_proto::engine::Data;

/// The upper layer of one Engine.IO session (Socket.IO's client state, or a bare Engine.IO
/// application). Its methods run inside the session's driver task, in order.
pub(crate) trait SessionHandler: Send + Unpin + 'static {
    /// A `message` packet arrived.
    fn on_message(&mut self, conn: &Arc<Connection>, data: Data<'_>) -> Result<(), CloseReason>;
    /// A command the upper layer posted to itself with [`Control::Upper`].
    fn on_command(&mut self, conn: &Arc<Connection>, command: UpperCommand);
    /// The server is ending the connection; say goodbye at the upper layer first.
    fn on_server_disconnect(&mut self, conn: &Arc<Connection>);
    /// The next instant at which [`SessionHandler::on_deadline`] must run, if any.
    fn deadline(&self) -> Option<tokio::time::Instant>;
    /// A deadline passed.
    fn on_deadline(&mut self, conn: &Arc<Connection>, now: tokio::time::Instant) -> Result<(), CloseReason>;
    /// The session closed (called once, before the transport is released).
    fn on_close(&mut self, conn: &Arc<Connection>, reason: CloseReason);
}

/// Creates the upper layer of each new session.
pub(crate) trait SessionFactory: Send + Sync + 'static {
    type Handler: SessionHandler;
    fn open(&self, conn: &Arc<Connection>, handshake: Arc<crate::Handshake>) -> Self::Handler;
    /// A WebSocket handshake was answered (101) but the upgrade never completed: no session
    /// opened for it.
    fn abandoned(&self, _handshake: &crate::Handshake) {}
}

/// Settings the engine needs, copied out of [`Config`].
#[derive(Clone)]
pub(crate) struct EngineConfig {
    pub path: String,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload: usize,
    pub upgrade_timeout: Duration,
    pub transports: crate::config::Transports,
    pub allow_upgrades: bool,
    pub max_queued_packets: usize,
    pub max_queued_bytes: usize,
    pub cors: crate::config::Cors,
    pub allow_request: Option<crate::config::AllowRequest>,
    /// The bounds of one polling POST body.
    pub body: crate::body::BodyLimits,
    pub max_inflight_body_bytes: usize,
    /// The largest message or body before the first namespace CONNECT.
    pub max_payload_before_connect: usize,
}

impl EngineConfig {
    /// The largest message or body `conn` may send now.
    pub(crate) fn max_payload_for(&self, conn: &Connection) -> usize {
        if conn.is_established() {
            self.max_payload
        } else {
            self.max_payload_before_connect.min(self.max_payload)
        }
    }
}

impl From<&Config> for EngineConfig {
    fn from(c: &Config) -> Self {
        Self {
            path: c.path.clone(),
            ping_interval: c.ping_interval,
            ping_timeout: c.ping_timeout,
            max_payload: c.max_payload,
            upgrade_timeout: c.upgrade_timeout,
            transports: c.transports,
            allow_upgrades: c.allow_upgrades,
            max_queued_packets: c.max_queued_packets,
            max_queued_bytes: c.max_queued_bytes,
            cors: c.cors.clone(),
            allow_request: c.allow_request.clone(),
            body: crate::body::BodyLimits {
                max_bytes: c.max_payload,
                timeout: c.body_timeout,
                min_rate: c.body_min_rate,
            },
            max_inflight_body_bytes: c.max_inflight_body_bytes,
            max_payload_before_connect: c.max_payload_before_connect,
        }
    }
}

/// An Engine.IO server: sessions by id, and the factory of their upper layer.
pub(crate) struct Engine<F> {
    pub config: EngineConfig,
    sessions: RwLock<HashMap<Sid, Arc<Connection>>>,
    /// Signalled when the last session is removed (for graceful shutdown).
    emptied: Notify,
    /// The bytes every polling POST body in flight holds.
    pub bodies: Arc<crate::body::BodyBudget>,
    pub factory: F,
}

impl<F> std::fmt::Debug for Engine<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.config.path)
            .field("sessions", &self.sessions.read().len())
            .finish()
    }
}

impl<F: SessionFactory> Engine<F> {
    pub(crate) fn new(config: EngineConfig, factory: F) -> Self {
        let bodies = crate::body::BodyBudget::new(config.max_inflight_body_bytes);
        Self {
            config,
            sessions: RwLock::new(HashMap::new()),
            emptied: Notify::new(),
            bodies,
            factory,
        }
    }

    pub(crate) fn session(&self, sid: &Sid) -> Option<Arc<Connection>> {
        self.sessions.read().get(sid).cloned()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    fn insert(&self, conn: Arc<Connection>) {
        self.sessions.write().insert(conn.sid, conn);
    }

    pub(crate) fn remove(&self, sid: &Sid) {
        let mut sessions = self.sessions.write();
        sessions.remove(sid);
        if sessions.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Closes up to `n` sessions that are not closing yet; returns how many it closed.
    pub(crate) fn close_some(&self, n: usize, reason: CloseReason) -> usize {
        let open: Vec<Arc<Connection>> = self
            .sessions
            .read()
            .values()
            .filter(|c| c.close_requested().is_none())
            .take(n)
            .cloned()
            .collect();
        for conn in &open {
            conn.close(reason);
        }
        open.len()
    }

    /// Closes every session with `reason` and waits until all are gone, or `deadline` passes.
    /// Returns the number of sessions still open.
    pub(crate) async fn close_all(&self, reason: CloseReason, deadline: Duration) -> usize {
        self.close_some(usize::MAX, reason);
        self.wait_empty(deadline).await
    }

    /// Waits until every session is gone or `deadline` passes; returns how many are left.
    pub(crate) async fn wait_empty(&self, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let emptied = self.emptied.notified();
                if self.session_count() == 0 {
                    return;
                }
                emptied.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.session_count()
    }

    /// The handshake JSON of a new session.
    fn open_packet(&self, sid: &Sid, upgrades: bool) -> String {
        let upgrades = if upgrades { r#"["websocket"]"# } else { "[]" };
        format!(
            r#"0{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            sid,
            upgrades,
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        )
    }
}

/// The address of the peer, if the embedding server told us.
pub(crate) fn remote_of<B>(req: &::http::Request<B>) -> Option<SocketAddr> {
    req.extensions().get::<RemoteAddr>().map(|r| r.0)
}
