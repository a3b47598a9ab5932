//! Namespaces: their handlers (connect hook, connection and disconnect callbacks, events),
//! their adapter, and the builder that declares them, statically or by a name pattern.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::adapter::{Adapter, BoxFuture, EncodedPacket, IntoRooms, LocalAdapter};
use crate::operators::BroadcastOperator;
use crate::socket::{ConnectOutcome, DisconnectReason};
use crate::{Event, Handshake, Payload, Sid, Socket};

/// What a connect hook sees of a connection attempt.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The namespace being joined.
    pub nsp: Arc<str>,
    /// The CONNECT packet's auth payload (`{}` when absent).
    pub auth: Value,
    /// The HTTP request that opened the connection.
    pub handshake: Arc<Handshake>,
}

type ConnectHook = Arc<dyn Fn(ConnectRequest) -> BoxFuture<'static, ConnectOutcome> + Send + Sync>;
type SocketCallback = Box<dyn Fn(&Socket) + Send + Sync>;
type DisconnectCallback = Box<dyn Fn(&Socket, DisconnectReason) + Send + Sync>;
type EventHandler = Box<dyn Fn(&Socket, Event) + Send + Sync>;
type EventGuard = Box<dyn Fn(&Socket, &Event) -> Result<(), Payload> + Send + Sync>;

/// A namespace's handlers, fixed once built. Dynamic namespaces created from one pattern
/// share them.
#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) connect_hook: Option<ConnectHook>,
    on_connect: Vec<SocketCallback>,
    on_disconnect: Vec<DisconnectCallback>,
    events: HashMap<String, EventHandler>,
    on_any: Option<EventHandler>,
    guards: Vec<EventGuard>,
}

/// Declares a namespace's behaviour.
///
/// Event handlers are called in the order events arrive, on the connection's own task, so
/// what one handler emits goes out before what the next one emits. A handler that needs to
/// wait for something spawns a task (see [`NamespaceBuilder::on_async`]).
#[derive(Default)]
pub struct NamespaceBuilder {
    handlers: Handlers,
}

impl fmt::Debug for NamespaceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamespaceBuilder")
            .field("events", &self.handlers.events.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NamespaceBuilder {
    /// Runs before a client is admitted: accept (optionally attaching data to the socket) or
    /// refuse with a CONNECT_ERROR. No event reaches a socket before its hook accepted it.
    pub fn connect_hook<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ConnectRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConnectOutcome> + Send + 'static,
    {
        self.handlers.connect_hook = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Runs when a socket has connected (after the client got its CONNECT answer).
    pub fn on_connect(mut self, f: impl Fn(&Socket) + Send + Sync + 'static) -> Self {
        self.handlers.on_connect.push(Box::new(f));
        self
    }

    /// Runs when a socket has disconnected, with the reason.
    pub fn on_disconnect(mut self, f: impl Fn(&Socket, DisconnectReason) + Send + Sync + 'static) -> Self {
        self.handlers.on_disconnect.push(Box::new(f));
        self
    }

    /// Handles an event, in order with the socket's other events.
    pub fn on(mut self, event: &str, f: impl Fn(&Socket, Event) + Send + Sync + 'static) -> Self {
        self.handlers.events.insert(event.to_owned(), Box::new(f));
        self
    }

    /// Handles an event with an async function, each call on a task of its own (calls may
    /// then finish out of order).
    pub fn on_async<F, Fut>(self, event: &str, f: F) -> Self
    where
        F: Fn(Socket, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on(event, move |socket, ev| {
            tokio::spawn(f(socket.clone(), ev));
        })
    }

    /// Checks every event before its handler runs (rate limits, permissions, schemas). The
    /// first guard that answers `Err(payload)` stops the event: no handler sees it, and the
    /// client's ack (if it asked for one) carries `payload`. Guards run in the order added.
    pub fn guard(
        mut self,
        f: impl Fn(&Socket, &Event) -> Result<(), Payload> + Send + Sync + 'static,
    ) -> Self {
        self.handlers.guards.push(Box::new(f));
        self
    }

    /// Handles every event that has no handler of its own.
    pub fn on_any(mut self, f: impl Fn(&Socket, Event) + Send + Sync + 'static) -> Self {
        self.handlers.on_any = Some(Box::new(f));
        self
    }

    pub(crate) fn into_handlers(self) -> Arc<Handlers> {
        Arc::new(self.handlers)
    }
}

pub(crate) struct NamespaceInner {
    name: Arc<str>,
    handlers: Arc<Handlers>,
    adapter: Arc<dyn Adapter>,
    next_ack_id: AtomicU64,
    ack_timeout: Duration,
}

/// A namespace. Cheap to clone.
#[derive(Clone)]
pub struct Namespace(Arc<NamespaceInner>);

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

/// Creates the adapter of each namespace.
pub type AdapterFactory = Arc<dyn Fn(&str) -> Arc<dyn Adapter> + Send + Sync>;

pub(crate) fn local_adapter_factory() -> AdapterFactory {
    Arc::new(|_| Arc::new(LocalAdapter::new()))
}

impl Namespace {
    pub(crate) fn new(
        name: Arc<str>,
        handlers: Arc<Handlers>,
        adapter: Arc<dyn Adapter>,
        ack_timeout: Duration,
    ) -> Self {
        Self(Arc::new(NamespaceInner {
            name,
            handlers,
            adapter,
            next_ack_id: AtomicU64::new(0),
            ack_timeout,
        }))
    }

    /// The namespace's name (`/`, `/admin`, ...).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The namespace's adapter.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.0.adapter
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.0.handlers
    }

    pub(crate) fn ack_timeout(&self) -> Duration {
        self.0.ack_timeout
    }

    /// Server-side ack ids come from one counter per namespace, as in the reference.
    pub(crate) fn next_ack_id(&self) -> u64 {
        self.0.next_ack_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A broadcast to every socket of the namespace (narrow it with `to`, `except`, ...).
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// A broadcast to `rooms`.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// Emits to every socket of the namespace.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<usize, crate::AdapterError> {
        self.broadcast().emit(event, payload)
    }

    /// A local socket by id.
    pub fn socket(&self, sid: Sid) -> Option<Socket> {
        let opts = crate::BroadcastOptions {
            rooms: sid.into_rooms(),
            ..Default::default()
        };
        self.0.adapter.local().select(&opts).into_iter().next()
    }

    /// How many sockets are connected to this namespace on this node.
    pub fn socket_count(&self) -> usize {
        self.0.adapter.local().socket_count()
    }

    pub(crate) fn register(&self, socket: &Socket) {
        self.0.adapter.local().add_socket(socket.clone());
    }

    pub(crate) fn run_connect_handlers(&self, socket: &Socket) {
        for f in &self.0.handlers.on_connect {
            f(socket);
        }
    }

    pub(crate) fn run_disconnect_handlers(&self, socket: &Socket, reason: DisconnectReason) {
        for f in &self.0.handlers.on_disconnect {
            f(socket, reason);
        }
    }

    pub(crate) fn dispatch(&self, socket: &Socket, mut event: Event) {
        let handlers = &self.0.handlers;
        for guard in &handlers.guards {
            if let Err(answer) = guard(socket, &event) {
                // Refused: the client learns why through its ack, if it asked for one.
                event.ack(answer);
                return;
            }
        }
        if let Some(f) = handlers.events.get(event.name()) {
            f(socket, event);
        } else if let Some(f) = &handlers.on_any {
            f(socket, event);
        }
    }

    pub(crate) fn encode_event(&self, event: &str, payload: Payload, id: Option<u64>) -> EncodedPacket {
        EncodedPacket::event(self.name(), event, payload, id)
    }
}
