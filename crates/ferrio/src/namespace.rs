//! Namespaces: their handlers (connect hook, connection and disconnect callbacks, events),
//! their adapter, and the builder that declares them, statically or by a name pattern.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;

use ferrio_proto::socket::{Packet, PacketType};

use crate::adapter::{Adapter, BoxFuture, EncodedPacket, IntoRooms, LocalAdapter};
use crate::operators::BroadcastOperator;
use crate::recovery::Recovery;
use crate::socket::{ConnectOutcome, DisconnectReason};
use crate::{Event, Handshake, Payload, Room, Sid, Socket};

/// Sessions written to a shared log per step of its refresh, and the pause between steps.
const REFRESH_CHUNK: usize = 256;
const REFRESH_PAUSE: Duration = Duration::from_millis(10);

/// The state of a cluster adapter's feed of broadcasts from other nodes (see
/// [`Namespace::cluster_feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterFeed {
    /// Its connection stopped answering: it may be losing messages.
    Suspect,
    /// The same connection answers again: nothing was lost.
    Answering,
    /// It broke: messages published meanwhile are lost to this node.
    Lost,
    /// It is whole again (reconnected and resubscribed).
    Restored,
}

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
type RoomCallback = Box<dyn Fn(&Socket, &Room, RoomChange) + Send + Sync>;
type EventGuard = Box<dyn Fn(&Socket, &Event) -> Result<(), Payload> + Send + Sync>;
type ServerEventHandler = Box<dyn Fn(&Namespace, ServerEvent) + Send + Sync>;

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
    server_events: HashMap<String, ServerEventHandler>,
    on_room: Vec<RoomCallback>,
    /// The `namespace` label of this namespace's metrics when it is created on demand.
    metrics_label: Option<Arc<str>>,
}

/// A socket's membership of a room changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomChange {
    /// It joined the room (it was not in it before).
    Joined,
    /// It left the room, or disconnected while in it.
    Left,
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

    /// Runs whenever a socket of this namespace joins a room it was not in, or leaves one it
    /// was in, for whatever reason: its own request, a broadcast operator's `sockets_join`,
    /// a restored session, or its disconnection (which leaves every room, before the
    /// disconnect callbacks run). A socket's own-id room is not reported.
    pub fn on_room_change(mut self, f: impl Fn(&Socket, &Room, RoomChange) + Send + Sync + 'static) -> Self {
        self.handlers.on_room.push(Box::new(f));
        self
    }

    /// Handles an event another server of the cluster sent with
    /// [`Namespace::server_side_emit`].
    pub fn on_server_event(
        mut self,
        event: &str,
        f: impl Fn(&Namespace, ServerEvent) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.server_events.insert(event.to_owned(), Box::new(f));
        self
    }

    /// The `namespace` label the metrics of namespaces created on demand from this builder
    /// carry (default `dynamic`); ferrio serve uses the pattern (`/tenant-*`). Their own names
    /// are chosen by clients and never become label values. A declared namespace is labelled
    /// with its name.
    pub fn metrics_label(mut self, label: &str) -> Self {
        self.handlers.metrics_label = Some(Arc::from(label));
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
    /// The `namespace` label of its metrics.
    metrics_label: Arc<str>,
    /// Created on demand from a pattern (and removed once empty for a while).
    dynamic: bool,
    /// CONNECTs admitted to it whose socket is not registered yet: it is not removed meanwhile.
    joining: std::sync::atomic::AtomicUsize,
    handlers: Arc<Handlers>,
    adapter: Arc<dyn Adapter>,
    next_ack_id: AtomicU64,
    /// Whether the shared log's session refresh runs.
    refreshing: std::sync::atomic::AtomicBool,
    ack_timeout: Duration,
    recovery: Option<Recovery>,
}

fn server_event_args(event: &str, args: Vec<Value>) -> Vec<Value> {
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(Value::from(event));
    all.extend(args);
    all
}

/// A namespace. Cheap to clone.
#[derive(Clone)]
pub struct Namespace(Arc<NamespaceInner>);

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

/// What an adapter is told about the namespace it serves.
#[derive(Clone)]
pub struct AdapterContext {
    name: Arc<str>,
    namespace: Arc<OnceLock<Weak<NamespaceInner>>>,
}

impl fmt::Debug for AdapterContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterContext")
            .field("name", &self.name)
            .finish()
    }
}

impl AdapterContext {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace, once it exists (the adapter is created first), while it exists.
    pub fn namespace(&self) -> Option<Namespace> {
        self.namespace.get()?.upgrade().map(Namespace)
    }
}

/// Creates the adapter of each namespace.
pub type AdapterFactory = Arc<dyn Fn(&AdapterContext) -> Arc<dyn Adapter> + Send + Sync>;

pub(crate) fn local_adapter_factory() -> AdapterFactory {
    Arc::new(|_| Arc::new(LocalAdapter::new()))
}

/// An event another server of the cluster sent with `server_side_emit`.
#[derive(Debug)]
pub struct ServerEvent {
    /// The event's name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<Value>,
    ack: Option<tokio::sync::oneshot::Sender<Value>>,
}

impl ServerEvent {
    /// An event as an adapter received it; `ack` receives the handler's answer, if the
    /// sender asked for one.
    pub fn new(name: String, args: Vec<Value>, ack: Option<tokio::sync::oneshot::Sender<Value>>) -> Self {
        Self { name, args, ack }
    }

    /// Whether the sending server waits for an answer.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Answers the sending server (once; later calls do nothing).
    pub fn ack(&mut self, answer: Value) {
        if let Some(tx) = self.ack.take() {
            let _ = tx.send(answer);
        }
    }
}

impl Namespace {
    pub(crate) fn new(
        name: Arc<str>,
        dynamic: bool,
        handlers: Arc<Handlers>,
        factory: &AdapterFactory,
        ack_timeout: Duration,
        recovery: Option<crate::RecoveryConfig>,
    ) -> Self {
        let context = AdapterContext {
            name: name.clone(),
            namespace: Arc::new(OnceLock::new()),
        };
        let adapter = factory(&context);
        let log = adapter.session_log();
        let metrics_label = match (dynamic, &handlers.metrics_label) {
            (false, _) => name.clone(),
            (true, Some(label)) => label.clone(),
            (true, None) => Arc::from("dynamic"),
        };
        let ns = Self(Arc::new(NamespaceInner {
            name,
            metrics_label,
            dynamic,
            joining: std::sync::atomic::AtomicUsize::new(0),
            handlers,
            adapter,
            next_ack_id: AtomicU64::new(0),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            ack_timeout,
            recovery: recovery.map(|config| Recovery::with_log(config, log)),
        }));
        let _ = context.namespace.set(Arc::downgrade(&ns.0));
        // A namespace made while its cluster feed is down (or not up yet) starts with a gap.
        if let Some(recovery) = &ns.0.recovery
            && recovery.log().is_none()
            && !ns.0.adapter.is_healthy()
        {
            recovery.feed_lost();
        }
        ns
    }

    /// Sends an event to the other servers of the cluster (their `on_server_event` handlers),
    /// not to clients. With one server, nobody hears it.
    pub async fn server_side_emit(&self, event: &str, args: Vec<Value>) -> Result<(), crate::AdapterError> {
        self.0
            .adapter
            .server_side_emit(server_event_args(event, args))
            .await
    }

    /// Like [`Namespace::server_side_emit`], collecting one answer per other server until
    /// `timeout`.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, crate::AdapterError> {
        self.0
            .adapter
            .server_side_emit_with_ack(server_event_args(event, args), timeout)
            .await
    }

    /// Runs this namespace's handler for an event from another server (adapters call this).
    pub fn dispatch_server_event(&self, event: ServerEvent) {
        if let Some(f) = self.0.handlers.server_events.get(&event.name) {
            f(self, event);
        }
    }

    /// The namespace's name (`/`, `/admin`, ...).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The `namespace` label of its metrics: its name, or its pattern's label when it was
    /// created on demand.
    pub(crate) fn metrics_label(&self) -> &str {
        &self.0.metrics_label
    }

    pub(crate) fn begin_join(&self) {
        self.0.joining.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn end_join(&self) {
        self.0.joining.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn has_joining(&self) -> bool {
        self.0.joining.load(Ordering::Acquire) > 0
    }

    /// Whether it was created on demand from a pattern.
    pub fn is_dynamic(&self) -> bool {
        self.0.dynamic
    }

    /// The namespace's adapter.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.0.adapter
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.0.handlers
    }

    pub(crate) fn recovery(&self) -> Option<&Recovery> {
        self.0.recovery.as_ref()
    }

    /// Encodes an event for `opts`' recipients and hands it to `deliver`. With recovery on,
    /// an event without an ack that is not volatile gets an offset, is kept for clients that
    /// reconnect, and is delivered in offset order with every other kept packet.
    pub(crate) fn encode_and<R>(
        &self,
        event: &str,
        payload: Payload,
        id: Option<u64>,
        opts: &crate::BroadcastOptions,
        deliver: impl FnOnce(&EncodedPacket) -> R,
    ) -> R {
        match (&self.0.recovery, id, opts.flags.volatile) {
            // The shared log gives the offset; the adapter delivers it in the log's order.
            (Some(recovery), None, false) if recovery.log().is_some() => {
                deliver(&EncodedPacket::event(self.name(), event, payload, None))
            }
            (Some(recovery), None, false) => recovery.record(
                |offset| {
                    let mut payload = payload;
                    payload.args.push(Value::String(offset));
                    EncodedPacket::event(self.name(), event, payload, None).with_offset()
                },
                opts,
                deliver,
            ),
            _ => deliver(&EncodedPacket::event(self.name(), event, payload, id)),
        }
    }

    /// Delivers a broadcast that another node of the cluster published (for cluster
    /// adapters): to this node's sockets in `opts`' rooms and, with recovery on, into the
    /// store with an offset of this node, so a client that was away while it arrived gets
    /// it back. Returns how many local sockets it was queued for.
    ///
    /// Kept are events without an ack id that are not volatile, addressed to the whole
    /// namespace or to a room that has a local member or a kept session.
    pub fn deliver_from_cluster(&self, packet: Packet, opts: &crate::BroadcastOptions) -> usize {
        let local = self.0.adapter.local();
        let recovery = match &self.0.recovery {
            Some(recovery)
                if matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent)
                    && packet.id.is_none()
                    && !opts.flags.volatile
                    && matches!(packet.data, Some(Value::Array(_))) =>
            {
                recovery
            }
            _ => return local.broadcast(&EncodedPacket::new(packet), opts),
        };
        let hosted = opts.rooms.is_empty()
            || opts
                .rooms
                .iter()
                .any(|room| local.has_room_or_socket(room) || recovery.retains(room));
        if !hosted {
            return 0;
        }
        recovery.record(
            |offset| {
                let mut packet = packet;
                if let Some(Value::Array(args)) = &mut packet.data {
                    args.push(Value::String(offset));
                }
                EncodedPacket::new(packet).with_offset()
            },
            opts,
            |packet| local.broadcast(packet, opts),
        )
    }

    /// A room's recent messages, from its own window (see
    /// [`crate::RecoveryConfig::rooms`]), oldest first: the first `limit` after `since` (an
    /// offset from an earlier answer), or without it the newest `limit`. In a cluster whose adapter keeps histories
    /// ([`crate::Adapter::history_store`]) they are read from there, whichever node sent them;
    /// otherwise from this node's window.
    pub async fn history(
        &self,
        room: &str,
        since: Option<&str>,
        limit: usize,
    ) -> Result<crate::History, crate::HistoryError> {
        let Some(recovery) = self.0.recovery.as_ref().filter(|r| r.keeps_history(room)) else {
            return Err(crate::HistoryError::NotKept);
        };
        match self.0.adapter.history_store() {
            Some(store) => store.read(room, since, limit).await,
            None => recovery.history(room, since, limit),
        }
    }

    /// Whether a direct emit to one socket must go through the adapter's shared log (to be
    /// recoverable on any node) rather than straight to the socket.
    pub(crate) fn logs_direct_emits(&self, id: Option<u64>, volatile: bool) -> bool {
        id.is_none() && !volatile && self.0.recovery.as_ref().is_some_and(|r| r.log().is_some())
    }

    /// Delivers an entry of a shared log (for cluster adapters with a [`crate::SessionLog`]):
    /// to this node's sockets in `opts`' rooms, in log order, each entry once. With recovery
    /// on, an event without an ack that is not volatile gets the entry id `id` as its offset
    /// and is kept in this node's cache. Returns how many local sockets it was queued for.
    pub fn deliver_logged(&self, id: &str, packet: Packet, opts: &crate::BroadcastOptions) -> usize {
        let local = self.0.adapter.local();
        let (Some(recovery), Some(key)) = (&self.0.recovery, crate::recovery::parse_log_id(id)) else {
            return local.broadcast(&EncodedPacket::new(packet), opts);
        };
        let eligible = matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent)
            && packet.id.is_none()
            && !opts.flags.volatile
            && matches!(packet.data, Some(Value::Array(_)));
        if eligible {
            let mut packet = packet;
            if let Some(Value::Array(args)) = &mut packet.data {
                args.push(Value::String(id.to_owned()));
            }
            let keep = EncodedPacket::new(packet).with_offset();
            recovery.record_logged(key, opts, Some(keep), |p| {
                p.map_or(0, |p| local.broadcast(p, opts))
            })
        } else {
            let plain = EncodedPacket::new(packet);
            recovery.record_logged(key, opts, None, |_| local.broadcast(&plain, opts))
        }
    }

    /// For cluster adapters with a shared log: reading it broke, and entries may have been
    /// lost to this node (the log was trimmed past where it was reading).
    pub fn log_broke(&self) {
        if let Some(recovery) = &self.0.recovery {
            recovery.log_broke();
        }
    }

    /// With recovery kept in a shared log: from the first connection on, rewrites every
    /// local socket's state there every `refresh_interval`, so the sessions of a node that
    /// dies stay recoverable for `max_disconnection_duration`.
    pub(crate) fn start_session_refresh(&self) {
        let Some(recovery) = &self.0.recovery else { return };
        if recovery.log().is_none() || self.0.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = recovery.refresh_interval();
        let ns = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(sockets) = ns.upgrade().map(|ns| {
                    Namespace(ns)
                        .adapter()
                        .local()
                        .select(&crate::BroadcastOptions::default())
                }) else {
                    return;
                };
                // Paced, so the writes never crowd out the broadcasts sharing the way to Redis.
                for chunk in sockets.chunks(REFRESH_CHUNK) {
                    for socket in chunk {
                        socket.session_changed();
                    }
                    tokio::time::sleep(REFRESH_PAUSE).await;
                }
            }
        });
    }

    /// Whether a room must stay reachable from the cluster although no local socket is in
    /// it: a disconnected session that may still be recovered is in it.
    pub fn retains_room(&self, room: &str) -> bool {
        self.0.recovery.as_ref().is_some_and(|r| r.retains(room))
    }

    /// For cluster adapters: the state of the feed of broadcasts from other nodes. While it
    /// is broken or suspect, and afterwards for every client whose last packet predates its
    /// return, recovery answers `recovered: false` (reason `cluster_gap`): what other nodes
    /// sent meanwhile may never have reached this node.
    pub fn cluster_feed(&self, state: ClusterFeed) {
        if let Some(recovery) = &self.0.recovery {
            match state {
                ClusterFeed::Suspect => recovery.feed_suspect(true),
                ClusterFeed::Answering => recovery.feed_suspect(false),
                ClusterFeed::Lost => recovery.feed_lost(),
                ClusterFeed::Restored => recovery.feed_restored(),
            }
        }
    }

    pub(crate) fn ack_timeout(&self) -> Duration {
        self.0.ack_timeout
    }

    /// Server-side ack ids come from one counter per namespace, as in the reference.
    pub fn next_ack_id(&self) -> u64 {
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
        self.0.adapter.on_socket_added(socket.id());
    }

    pub(crate) fn run_connect_handlers(&self, socket: &Socket) {
        for f in &self.0.handlers.on_connect {
            f(socket);
        }
    }

    pub(crate) fn run_room_handlers(&self, socket: &Socket, room: &Room, change: RoomChange) {
        for f in &self.0.handlers.on_room {
            f(socket, room, change);
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
}
