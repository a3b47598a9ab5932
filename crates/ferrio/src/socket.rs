//! A client's connection to one namespace: emitting, acknowledgements both ways, rooms,
//! per-socket data, and the disconnect that releases everything it holds.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use ferrio_proto::socket::Packet;

use crate::adapter::{EncodedPacket, IntoRooms, Room};
use crate::engine::{CloseReason, Connection, Control, SendError, TransportKind};
use crate::namespace::RoomChange;
use crate::operators::BroadcastOperator;
use crate::{Handshake, Namespace, Payload, Sid};

/// Why a socket left its namespace, with the reference's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The connection under the socket closed for this reason.
    Transport(CloseReason),
    /// The client left the namespace (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The server removed the socket from the namespace (`socket.disconnect()` here).
    ServerNamespaceDisconnect,
}

impl DisconnectReason {
    /// The reason's text, as the reference reports it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Transport(r) => r.as_str(),
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal from a namespace's connect hook, sent to the client as CONNECT_ERROR
/// `{"message": ..., "data": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            data: None,
        }
    }

    /// Adds the `data` member (machine-readable details).
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        match &self.data {
            Some(data) => json!({ "message": self.message, "data": data }),
            None => json!({ "message": self.message }),
        }
    }
}

/// What a connect hook hands to the socket it accepts.
#[derive(Debug, Default)]
pub struct Accepted {
    pub(crate) data: Option<Value>,
    pub(crate) extensions: http::Extensions,
}

impl Accepted {
    /// Accepts with nothing attached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the socket's initial `data`.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Attaches a typed value the socket's handlers can read with [`Socket::extension`].
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }
}

/// A connect hook's verdict.
pub type ConnectOutcome = Result<Accepted, ConnectError>;

/// Why an emit with an acknowledgement got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The client did not answer in time.
    #[error("acknowledgement timed out")]
    Timeout,
    /// The socket disconnected first.
    #[error("socket disconnected before acknowledging")]
    Disconnected,
    /// The packet could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
}

pub(crate) enum AckWaiter {
    One(oneshot::Sender<Payload>),
    Many(mpsc::UnboundedSender<(Sid, Payload)>),
}

impl AckWaiter {
    fn is_abandoned(&self) -> bool {
        match self {
            AckWaiter::One(tx) => tx.is_closed(),
            AckWaiter::Many(tx) => tx.is_closed(),
        }
    }
}

/// Who a new socket is: a fresh identity, or the one a recovered session had.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub sid: Sid,
    /// The private id of connection-state recovery, when it is on.
    pub pid: Option<Sid>,
    pub recovered: bool,
}

pub(crate) struct SocketInner {
    pub(crate) id: Sid,
    pid: Option<Sid>,
    recovered: bool,
    pub(crate) ns: Namespace,
    pub(crate) conn: Arc<Connection>,
    handshake: Arc<Handshake>,
    auth: Value,
    connected: AtomicBool,
    acks: Mutex<HashMap<u64, AckWaiter>>,
    /// With recovery on: where the namespace was at the socket's last room change.
    rooms_changed: Mutex<Option<crate::recovery::Key>>,
    data: Mutex<Value>,
    extensions: RwLock<http::Extensions>,
}

/// A client connected to a namespace. Cheap to clone; all clones are the same socket.
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketInner>);

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.0.id)
            .field("ns", &self.0.ns.name())
            .finish()
    }
}

impl PartialEq for Socket {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Socket {
    pub(crate) fn new(
        ns: Namespace,
        conn: Arc<Connection>,
        handshake: Arc<Handshake>,
        auth: Value,
        accepted: Accepted,
        identity: Identity,
    ) -> Self {
        Self(Arc::new(SocketInner {
            id: identity.sid,
            pid: identity.pid,
            recovered: identity.recovered,
            ns,
            conn,
            handshake,
            auth,
            connected: AtomicBool::new(true),
            acks: Mutex::new(HashMap::new()),
            rooms_changed: Mutex::new(None),
            data: Mutex::new(accepted.data.unwrap_or(Value::Null)),
            extensions: RwLock::new(accepted.extensions),
        }))
    }

    /// The socket's id (20 characters; also the name of its own room).
    pub fn id(&self) -> Sid {
        self.0.id
    }

    /// Whether this socket came back through connection-state recovery (same id, rooms and
    /// data as before its connection dropped, missed packets delivered).
    pub fn recovered(&self) -> bool {
        self.0.recovered
    }

    pub(crate) fn pid(&self) -> Option<Sid> {
        self.0.pid
    }

    /// The namespace it belongs to.
    pub fn ns(&self) -> &Namespace {
        &self.0.ns
    }

    /// The request that opened the underlying connection.
    pub fn handshake(&self) -> &Handshake {
        &self.0.handshake
    }

    /// The handshake in the reference's `socket.handshake` shape, as cluster adapters send it
    /// to other nodes.
    pub fn handshake_json(&self) -> Value {
        let h = &self.0.handshake;
        let headers: serde_json::Map<String, Value> = h
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap_or_default())))
            .collect();
        let query: serde_json::Map<String, Value> = h
            .query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), Value::from(v))
            })
            .collect();
        json!({
            "headers": headers,
            "time": h.time(),
            "address": h.address.map(|a| a.ip().to_string()).unwrap_or_default(),
            "xdomain": h.xdomain,
            "secure": h.secure,
            "issued": h.issued,
            "url": h.url,
            "query": query,
            "auth": self.0.auth,
        })
    }

    /// The auth payload of the CONNECT packet (`{}` when the client sent none).
    pub fn auth(&self) -> &Value {
        &self.0.auth
    }

    /// The transport the connection currently uses.
    pub fn transport(&self) -> TransportKind {
        self.0.conn.transport()
    }

    /// The Engine.IO session id of the underlying connection (shared by the connection's
    /// sockets in other namespaces). It works as a bearer secret: do not log it.
    pub fn engine_sid(&self) -> Sid {
        self.0.conn.sid
    }

    /// Whether the socket is still connected.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// The socket's free-form data (shared with other nodes by cluster adapters).
    pub fn data(&self) -> Value {
        self.0.data.lock().clone()
    }

    /// Replaces the socket's data.
    pub fn set_data(&self, data: Value) {
        *self.0.data.lock() = data;
        self.session_changed();
    }

    /// Notes where the namespace was when the socket's rooms changed: a packet sent before
    /// then was addressed by other rooms than the session keeps, so recovery from an older
    /// offset is refused.
    fn rooms_changed(&self) {
        if let Some(recovery) = self.0.ns.recovery() {
            *self.0.rooms_changed.lock() = Some(recovery.position());
        }
        self.session_changed();
    }

    /// With recovery kept in a shared log, writes the socket's state there.
    pub(crate) fn session_changed(&self) {
        if let (Some(recovery), Some(pid)) = (self.0.ns.recovery(), self.0.pid)
            && recovery.log().is_some()
            && self.connected()
        {
            let rooms = self.0.ns.adapter().socket_rooms(self.id());
            recovery.write_through(pid, self.id(), rooms, self.data(), *self.0.rooms_changed.lock());
        }
    }

    /// A typed value attached by the connect hook or by [`Socket::insert_extension`].
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.0.extensions.read().get::<T>().cloned()
    }

    /// Attaches a typed value to the socket.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.0.extensions.write().insert(value);
    }

    /// Sends an event to this client.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), SendError> {
        self.send_event(event, payload.into(), None, false)
    }

    /// Sends an event that may be dropped if the connection is not ready for it right now.
    pub fn emit_volatile(&self, event: &str, payload: impl Into<Payload>) -> Result<(), SendError> {
        self.send_event(event, payload.into(), None, true)
    }

    /// Sends an event and waits for the client's acknowledgement, up to the namespace's ack
    /// timeout.
    pub async fn emit_with_ack(&self, event: &str, payload: impl Into<Payload>) -> Result<Payload, AckError> {
        let timeout = self.0.ns.ack_timeout();
        self.emit_with_ack_timeout(event, payload, timeout).await
    }

    /// Sends an event and waits for the client's acknowledgement, up to `timeout`.
    pub async fn emit_with_ack_timeout(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        let id = self.0.ns.next_ack_id();
        let (tx, rx) = oneshot::channel();
        self.register_ack(id, AckWaiter::One(tx));
        let guard = AckGuard { socket: self, id };
        if !self.connected() {
            return Err(AckError::Disconnected);
        }
        self.send_event(event, payload.into(), Some(id), false)?;
        let sent_at = tokio::time::Instant::now();
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(payload)) => {
                crate::metrics::ack_round_trip(sent_at.elapsed());
                Ok(payload)
            }
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => Err(AckError::Timeout),
        };
        drop(guard);
        result
    }

    fn send_event(
        &self,
        event: &str,
        payload: Payload,
        id: Option<u64>,
        volatile: bool,
    ) -> Result<(), SendError> {
        if is_reserved(event) {
            return Err(SendError::ReservedEvent);
        }
        // With recovery on, a direct emit is kept like a broadcast to the socket's own room.
        let opts = crate::BroadcastOptions {
            rooms: smallvec::smallvec![Room::from(self.id().as_str())],
            flags: crate::BroadcastFlags {
                volatile,
                ..Default::default()
            },
            ..Default::default()
        };
        if self.0.ns.logs_direct_emits(id, volatile) {
            // Through the shared log, which gives the offset and delivers it back here.
            let adapter = self.0.ns.adapter();
            return self
                .0
                .ns
                .encode_and(event, payload, id, &opts, |packet| {
                    adapter.broadcast(packet, &opts)
                })
                .map(drop)
                .map_err(|_| SendError::Closed);
        }
        self.0
            .ns
            .encode_and(event, payload, id, &opts, |packet| self.deliver(packet, volatile))
    }

    /// Queues an encoded packet on this socket's connection.
    pub(crate) fn deliver(&self, packet: &EncodedPacket, volatile: bool) -> Result<(), SendError> {
        if !self.connected() {
            return Err(SendError::Closed);
        }
        self.0.conn.push(packet.frames(), volatile)
    }

    pub(crate) fn register_ack(&self, id: u64, waiter: AckWaiter) {
        let mut acks = self.0.acks.lock();
        // Waiters whose emitter gave up (timed out, dropped) are pruned here, so a client
        // that never answers cannot grow the map.
        acks.retain(|_, w| !w.is_abandoned());
        acks.insert(id, waiter);
    }

    pub(crate) fn unregister_ack(&self, id: u64) {
        self.0.acks.lock().remove(&id);
    }

    pub(crate) fn send_ack(&self, id: u64, payload: Payload) {
        let packet = Packet::ack(
            self.0.ns.name(),
            id,
            Value::Array(payload.args),
            payload.attachments,
        );
        let _ = self.deliver(&EncodedPacket::new(packet), false);
    }

    pub(crate) fn on_ack(&self, id: u64, payload: Payload) {
        let waiter = self.0.acks.lock().remove(&id);
        match waiter {
            Some(AckWaiter::One(tx)) => {
                let _ = tx.send(payload);
            }
            Some(AckWaiter::Many(tx)) => {
                let _ = tx.send((self.id(), payload));
            }
            // An ack nobody waits for (late, or forged) is ignored, as in the reference.
            None => {}
        }
    }

    /// Joins one or more rooms.
    pub fn join(&self, rooms: impl IntoRooms) {
        if !self.connected() {
            return;
        }
        let joined = self.0.ns.adapter().add_all(self.id(), rooms.into_rooms());
        if !joined.is_empty() {
            self.rooms_changed();
        }
        for room in &joined {
            self.0.ns.run_room_handlers(self, room, RoomChange::Joined);
        }
    }

    /// Leaves a room.
    pub fn leave(&self, room: impl Into<Room>) {
        let left = self.0.ns.adapter().del(self.id(), &room.into());
        if !left.is_empty() {
            self.rooms_changed();
        }
        for room in &left {
            self.0.ns.run_room_handlers(self, room, RoomChange::Left);
        }
    }

    /// The rooms this socket is in, its own id included.
    pub fn rooms(&self) -> Vec<Room> {
        let mut rooms = self.0.ns.adapter().socket_rooms(self.id());
        rooms.push(Room::from(self.id().as_str()));
        rooms
    }

    /// Broadcasts to `rooms`, excluding this socket.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// Broadcasts to the whole namespace, excluding this socket.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.0.ns.clone()).except(Room::from(self.id().as_str()))
    }

    /// Removes the socket from its namespace (the client sees "io server disconnect" and does
    /// not reconnect). With `close`, the whole underlying connection closes too.
    pub fn disconnect(&self, close: bool) {
        if self.connected() {
            let _ = self.deliver(&EncodedPacket::new(Packet::disconnect(self.0.ns.name())), false);
            self.on_disconnect(DisconnectReason::ServerNamespaceDisconnect);
        }
        if close {
            // The connection's driver disconnects its other namespaces, then closes.
            if self.0.conn.control(Control::Disconnect).is_err() {
                self.0.conn.close(CloseReason::ForcedClose);
            }
        }
    }

    /// Releases everything the socket holds: rooms, pending acks, then tells the handlers.
    pub(crate) fn on_disconnect(&self, reason: DisconnectReason) {
        if !self.0.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        if let (Some(recovery), Some(pid)) = (self.0.ns.recovery(), self.0.pid) {
            if crate::recovery::is_recoverable(reason) {
                let rooms = self.0.ns.adapter().socket_rooms(self.id());
                recovery.persist(pid, self.id(), rooms, self.data(), *self.0.rooms_changed.lock());
            } else {
                recovery.forget(pid);
            }
        }
        crate::metrics::socket_disconnected(self.0.ns.metrics_label());
        let left = self.0.ns.adapter().del_all(self.id());
        for room in &left {
            self.0.ns.run_room_handlers(self, room, RoomChange::Left);
        }
        self.0.ns.adapter().on_socket_removed(self.id());
        // Dropping the senders wakes every waiter with "disconnected".
        drop(std::mem::take(&mut *self.0.acks.lock()));
        tracing::debug!(
            ns = self.0.ns.name(),
            reason = reason.as_str(),
            "socket disconnected"
        );
        self.0.ns.run_disconnect_handlers(self, reason);
    }

    /// Acknowledgements this socket still waits for (ones whose emitter gave up are dropped).
    pub fn pending_acks(&self) -> usize {
        let mut acks = self.0.acks.lock();
        acks.retain(|_, w| !w.is_abandoned());
        acks.len()
    }
}

/// Event names clients treat as their own lifecycle events; sending one breaks the client
/// (the reference throws).
pub(crate) fn is_reserved(event: &str) -> bool {
    ferrio_proto::socket::RESERVED_EVENTS.contains(&event)
}

/// Removes an ack registration when its emit finishes, whatever the outcome.
struct AckGuard<'a> {
    socket: &'a Socket,
    id: u64,
}

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.socket.0.acks.lock().remove(&self.id);
    }
}
