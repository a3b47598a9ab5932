//! A bare Engine.IO server, for applications that speak Engine.IO without Socket.IO (and for
//! the Engine.IO conformance suite).

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

use crate::Config;
use crate::adapter::BoxFuture;
use crate::engine::{
    CloseReason, Connection, Data, Engine, EngineConfig, Frame, ResponseBody, SendError, SessionFactory,
    SessionHandler,
};
use crate::service::RequestBody;

/// A message received from a bare Engine.IO client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMessage {
    Text(String),
    Binary(Bytes),
}

/// One bare Engine.IO session.
#[derive(Clone)]
pub struct EngineSocket(Arc<Connection>);

impl fmt::Debug for EngineSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineSocket").finish_non_exhaustive()
    }
}

impl EngineSocket {
    /// Sends a text message.
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        let mut s = String::with_capacity(text.len() + 1);
        s.push('4');
        s.push_str(text);
        self.0.push(&[Frame::text(s)], false)
    }

    /// Sends a binary message.
    pub fn send_binary(&self, bytes: Bytes) -> Result<(), SendError> {
        self.0.push(&[Frame::Binary(bytes)], false)
    }

    /// Closes the session.
    pub fn close(&self) {
        self.0.close(CloseReason::ForcedClose);
    }
}

type OnMessage = Arc<dyn Fn(&EngineSocket, EngineMessage) + Send + Sync>;

struct Factory(OnMessage);

struct Session {
    on_message: OnMessage,
}

impl SessionFactory for Factory {
    type Handler = Session;

    fn open(&self, _conn: &Arc<Connection>, _handshake: Arc<crate::Handshake>) -> Session {
        Session {
            on_message: self.0.clone(),
        }
    }
}

impl SessionHandler for Session {
    fn on_message(&mut self, conn: &Arc<Connection>, data: Data<'_>) -> Result<(), CloseReason> {
        let msg = match data {
            Data::Text(t) => EngineMessage::Text(t.to_owned()),
            Data::Binary(b) => EngineMessage::Binary(Bytes::copy_from_slice(&b)),
        };
        (self.on_message)(&EngineSocket(conn.clone()), msg);
        Ok(())
    }

    fn on_command(&mut self, _conn: &Arc<Connection>, _command: crate::engine::UpperCommand) {}

    fn on_server_disconnect(&mut self, _conn: &Arc<Connection>) {}

    fn deadline(&self) -> Option<tokio::time::Instant> {
        None
    }

    fn on_deadline(
        &mut self,
        _conn: &Arc<Connection>,
        _now: tokio::time::Instant,
    ) -> Result<(), CloseReason> {
        Ok(())
    }

    fn on_close(&mut self, _conn: &Arc<Connection>, _reason: CloseReason) {}
}

/// A bare Engine.IO server. Its path defaults to `/engine.io/` unless `config.path` is set
/// to something other than the Socket.IO default.
#[derive(Clone)]
pub struct EngineIo(Arc<Engine<Factory>>);

impl fmt::Debug for EngineIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineIo")
            .field("path", &self.0.config.path)
            .finish()
    }
}

impl EngineIo {
    /// A server calling `on_message` for every message of every session.
    pub fn new(
        config: Config,
        on_message: impl Fn(&EngineSocket, EngineMessage) + Send + Sync + 'static,
    ) -> Self {
        let mut config = config;
        if config.path == Config::default().path {
            config.path = "/engine.io/".into();
        }
        let config = config.normalized();
        Self(Arc::new(Engine::new(
            EngineConfig::from(&config),
            Factory(Arc::new(on_message)),
        )))
    }

    /// The path it serves.
    pub fn path(&self) -> &str {
        &self.0.config.path
    }

    /// Closes every session and waits up to `deadline`.
    pub async fn close(&self, deadline: Duration) -> usize {
        self.0.close_all(CloseReason::ServerShuttingDown, deadline).await
    }
}

impl<B: RequestBody> tower::Service<Request<B>> for EngineIo {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        crate::service::call_engine(&self.0, req)
    }
}
