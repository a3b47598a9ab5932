//! A socket: one namespace on a [`Client`](crate::Client)'s connection. Emits, acks, the
//! offline queue, the retry queue, event handlers, connection states and the client side of
//! connection-state recovery live here; the manager drives it with what the server sends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferrio_proto::socket::{Packet, PacketType, RESERVED_EVENTS};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::client::{Command, Lifeline};
use crate::config::SocketOptions;
use crate::engine::Outbound;
use crate::error::{AckError, EmitError};
use crate::payload::{AckSender, Event, Payload};
use crate::queue::{Bounded, Overflow, Pushed};
use crate::state::{ConnectionState, DisconnectReason, StateCell, StateChanges};
use crate::transport::Wire;

/// Events held between a recovery's replay and the CONNECT reply, at most.
const MAX_RECEIVE_BUFFER: usize = 65_536;

pub(crate) type Handler = Arc<dyn Fn(Event) + Send + Sync>;
pub(crate) type AnyHandler = Arc<dyn Fn(&Event) + Send + Sync>;
type AckReply = oneshot::Sender<Result<Payload, AckError>>;

/// A try of the retry queue's head: its sequence number, ack id, and answer.
struct RetryTry {
    seq: u64,
    id: u64,
    answer: oneshot::Receiver<Result<Payload, AckError>>,
}

/// The current connection's outbound queue, and which connection it is.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::UnboundedSender<Outbound>,
    pub(crate) generation: u64,
}

impl ConnHandle {
    /// Queues a packet; hands it back if the connection is gone.
    fn send(&self, wires: Vec<Wire>) -> Result<(), Vec<Wire>> {
        self.tx.send(Outbound::Send(wires)).map_err(|e| match e.0 {
            Outbound::Send(wires) => wires,
            Outbound::Close => Vec::new(),
        })
    }
}

/// The Engine.IO messages of a Socket.IO packet: its text, then its attachments.
pub(crate) fn encode(packet: &Packet) -> Vec<Wire> {
    let mut text = String::with_capacity(64);
    text.push('4');
    packet.encode_into(&mut text);
    let mut wires = Vec::with_capacity(1 + packet.attachments.len());
    wires.push(Wire::Text(text));
    wires.extend(packet.attachments.iter().cloned().map(Wire::Binary));
    wires
}

struct AckSlot {
    tx: AckReply,
    /// Written to a transport (as opposed to waiting in the offline queue).
    in_flight: bool,
}

struct Buffered {
    wires: Vec<Wire>,
    ack: Option<u64>,
}

struct RetryItem {
    seq: u64,
    data: Value,
    attachments: Vec<Bytes>,
    tries: u32,
    pending: bool,
    waiter: Option<AckReply>,
}

impl RetryItem {
    fn answer(self, result: Result<Payload, AckError>) {
        if let Some(waiter) = self.waiter {
            let _ = waiter.send(result);
        }
    }
}

struct Inner {
    /// Wants to be connected (reconnects with the manager).
    active: bool,
    /// The connection the namespace is connected on.
    conn: Option<ConnHandle>,
    /// The connection a CONNECT was sent on, to never send two.
    connect_sent: Option<u64>,
    id: Option<String>,
    pid: Option<String>,
    last_offset: Option<String>,
    recovered: bool,
    next_ack: u64,
    acks: HashMap<u64, AckSlot>,
    offline: Bounded<Buffered>,
    received: Vec<Packet>,
    retry: Vec<RetryItem>,
    retry_seq: u64,
}

impl Inner {
    fn fail_in_flight(&mut self, error: &AckError) {
        let ids: Vec<u64> = self
            .acks
            .iter()
            .filter(|(_, slot)| slot.in_flight)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(slot) = self.acks.remove(&id) {
                let _ = slot.tx.send(Err(error.clone()));
            }
        }
    }

    fn fail_ack(&mut self, id: Option<u64>, error: AckError) {
        if let Some(slot) = id.and_then(|id| self.acks.remove(&id)) {
            let _ = slot.tx.send(Err(error));
        }
    }
}

#[derive(Default)]
struct Handlers {
    by_name: HashMap<String, Handler>,
    any: Vec<AnyHandler>,
}

/// What a socket shares with the manager and its handles.
pub(crate) struct SocketShared {
    pub(crate) nsp: String,
    pub(crate) options: SocketOptions,
    commands: mpsc::UnboundedSender<Command>,
    handlers: RwLock<Handlers>,
    inner: Mutex<Inner>,
    pub(crate) state: StateCell,
    retry_wake: Arc<Notify>,
}

impl fmt::Debug for SocketShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketShared")
            .field("nsp", &self.nsp)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

impl Drop for SocketShared {
    fn drop(&mut self) {
        self.retry_wake.notify_one();
    }
}

/// Sends an acknowledgement on the connection an event came on.
#[derive(Debug, Clone)]
pub(crate) struct SocketRef {
    shared: Arc<SocketShared>,
    generation: u64,
}

impl SocketRef {
    pub(crate) fn send_ack(&self, id: u64, payload: Payload) {
        let inner = self.shared.inner.lock();
        if let Some(conn) = &inner.conn
            && conn.generation == self.generation
        {
            let packet = Packet::ack(
                self.shared.nsp.as_str(),
                id,
                Value::Array(payload.args),
                payload.attachments,
            );
            let _ = conn.send(encode(&packet));
        }
    }
}

fn check_event_name(event: &str) -> Result<(), EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        Err(EmitError::ReservedEvent(event.to_owned()))
    } else {
        Ok(())
    }
}

enum Delivery {
    Sent,
    Queued,
    Dropped,
}

impl SocketShared {
    pub(crate) fn new(
        nsp: String,
        options: SocketOptions,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Arc<Self> {
        let queue = options.queue;
        let shared = Arc::new(Self {
            nsp,
            commands,
            handlers: RwLock::new(Handlers::default()),
            inner: Mutex::new(Inner {
                active: false,
                conn: None,
                connect_sent: None,
                id: None,
                pid: None,
                last_offset: None,
                recovered: false,
                next_ack: 0,
                acks: HashMap::new(),
                offline: Bounded::new(queue),
                received: Vec::new(),
                retry: Vec::new(),
                retry_seq: 0,
            }),
            state: StateCell::new(ConnectionState::Disconnected {
                reason: DisconnectReason::ClientDisconnect,
            }),
            retry_wake: Arc::new(Notify::new()),
            options,
        });
        if shared.retries_enabled() {
            tokio::spawn(retry_loop(Arc::downgrade(&shared), shared.retry_wake.clone()));
        }
        shared
    }

    fn retries_enabled(&self) -> bool {
        self.options.retries.is_some_and(|r| r > 0)
    }

    pub(crate) fn is_active(&self) -> bool {
        self.inner.lock().active
    }

    /// Marks the socket as wanting a connection. False if it already did.
    pub(crate) fn activate(&self) -> bool {
        let mut inner = self.inner.lock();
        if inner.active {
            return false;
        }
        inner.active = true;
        drop(inner);
        self.state.set(ConnectionState::Connecting);
        true
    }

    // ----- driven by the manager -----

    /// Sends CONNECT on `conn` (once per connection), after fetching the auth payload.
    pub(crate) fn start_connect(self: &Arc<Self>, conn: &ConnHandle) {
        {
            let mut inner = self.inner.lock();
            if !inner.active || inner.connect_sent == Some(conn.generation) {
                return;
            }
            inner.connect_sent = Some(conn.generation);
        }
        let shared = self.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let fetch = AssertUnwindSafe(shared.options.auth.fetch());
            match futures_util::FutureExt::catch_unwind(fetch).await {
                Ok(auth) => {
                    let data = shared.connect_data(auth);
                    let _ = conn.send(encode(&Packet::connect(shared.nsp.as_str(), data)));
                }
                Err(_) => {
                    tracing::error!(nsp = %shared.nsp, "the auth callback panicked");
                    shared.on_connect_error(Some(Value::from("the auth callback panicked")));
                    let _ = shared.commands.send(Command::Disconnect);
                }
            }
        });
    }

    /// The CONNECT payload: the auth object, with `pid` and `offset` merged in front when a
    /// previous connection had recovery on (as `socket.io-client` does).
    fn connect_data(&self, auth: Option<Value>) -> Option<Value> {
        let inner = self.inner.lock();
        let Some(pid) = &inner.pid else {
            return auth;
        };
        let mut data = Map::new();
        data.insert("pid".into(), Value::from(pid.as_str()));
        if let Some(offset) = &inner.last_offset {
            data.insert("offset".into(), Value::from(offset.as_str()));
        }
        if let Some(Value::Object(auth)) = auth {
            data.extend(auth);
        }
        Some(Value::Object(data))
    }

    pub(crate) fn set_reconnecting(&self, attempt: u32) {
        if self.is_active() {
            self.state.set(ConnectionState::Reconnecting { attempt });
        }
    }

    pub(crate) fn on_packet(self: &Arc<Self>, packet: Packet, conn: &ConnHandle) {
        match packet.kind {
            PacketType::Connect => self.on_connect_reply(packet.data, conn),
            PacketType::Event | PacketType::BinaryEvent => self.on_event(packet, conn),
            PacketType::Ack | PacketType::BinaryAck => self.on_ack(packet),
            PacketType::Disconnect => self.on_server_disconnect(),
            PacketType::ConnectError => self.on_connect_error(packet.data),
        }
    }

    fn on_connect_reply(self: &Arc<Self>, data: Option<Value>, conn: &ConnHandle) {
        let sid = data
            .as_ref()
            .and_then(|d| d.get("sid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(sid) = sid else {
            self.on_connect_error(Some(Value::from(
                "the CONNECT reply has no sid (a Socket.IO v2 server?)",
            )));
            return;
        };
        let pid = data
            .as_ref()
            .and_then(|d| d.get("pid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let received = {
            let mut inner = self.inner.lock();
            if !inner.active {
                // Disconnected while the CONNECT was under way: leave again.
                let _ = conn.send(encode(&Packet::disconnect(self.nsp.as_str())));
                return;
            }
            inner.recovered = pid.is_some() && inner.pid == pid;
            inner.pid = pid;
            inner.id = Some(sid);
            inner.conn = Some(conn.clone());
            let flushed: Vec<Buffered> = inner.offline.drain().collect();
            for item in flushed {
                let in_flight = conn.send(item.wires).is_ok();
                if let Some(slot) = item.ack.and_then(|id| inner.acks.get_mut(&id)) {
                    slot.in_flight = in_flight;
                }
            }
            std::mem::take(&mut inner.received)
        };
        for packet in received {
            self.dispatch(packet, conn.generation);
        }
        self.state.set(ConnectionState::Connected);
        self.retry_wake.notify_one();
    }

    fn on_event(self: &Arc<Self>, packet: Packet, conn: &ConnHandle) {
        {
            let mut inner = self.inner.lock();
            if inner.conn.is_none() {
                // Events before the CONNECT reply (a recovery replays missed packets first)
                // wait for it, as in the reference client.
                if inner.active && inner.received.len() < MAX_RECEIVE_BUFFER {
                    inner.received.push(packet);
                }
                return;
            }
        }
        self.dispatch(packet, conn.generation);
    }

    fn dispatch(self: &Arc<Self>, packet: Packet, generation: u64) {
        let Some(name) = packet.event_name().map(|n| n.into_owned()) else {
            return;
        };
        let args = match packet.data {
            Some(Value::Array(mut items)) => {
                items.remove(0);
                items
            }
            _ => Vec::new(),
        };
        let offset = match args.last() {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let event = Event::new(
            name,
            Payload {
                args,
                attachments: packet.attachments,
            },
            packet.id.map(|id| AckSender {
                socket: SocketRef {
                    shared: self.clone(),
                    generation,
                },
                id,
            }),
        );
        let (handler, any) = {
            let handlers = self.handlers.read();
            (handlers.by_name.get(event.name()).cloned(), handlers.any.clone())
        };
        for listener in any {
            if std::panic::catch_unwind(AssertUnwindSafe(|| listener(&event))).is_err() {
                tracing::error!(nsp = %self.nsp, event = %event.name(), "an on_any handler panicked");
            }
        }
        if let Some(handler) = handler {
            let name = event.name().to_owned();
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler(event))).is_err() {
                tracing::error!(nsp = %self.nsp, event = %name, "an event handler panicked");
            }
        }
        // The reference tracks the offset after the listeners ran.
        let mut inner = self.inner.lock();
        if inner.pid.is_some() && offset.is_some() {
            inner.last_offset = offset;
        }
    }

    fn on_ack(&self, packet: Packet) {
        let Some(id) = packet.id else { return };
        let slot = self.inner.lock().acks.remove(&id);
        if let Some(slot) = slot {
            let args = match packet.data {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let _ = slot.tx.send(Ok(Payload {
                args,
                attachments: packet.attachments,
            }));
        }
    }

    fn on_server_disconnect(&self) {
        {
            let mut inner = self.inner.lock();
            inner.active = false;
            inner.conn = None;
            inner.connect_sent = None;
            inner.fail_in_flight(&AckError::Disconnected);
        }
        self.state.set(ConnectionState::Disconnected {
            reason: DisconnectReason::ServerDisconnect,
        });
    }

    fn on_connect_error(&self, data: Option<Value>) {
        let (message, extra) = match data {
            Some(Value::String(s)) => (s, None),
            Some(Value::Object(mut map)) => {
                let message = match map.remove("message") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                (message, map.remove("data"))
            }
            Some(other) => (other.to_string(), None),
            None => (String::new(), None),
        };
        {
            let mut inner = self.inner.lock();
            inner.active = false;
            inner.conn = None;
            inner.connect_sent = None;
        }
        self.state.set(ConnectionState::Disconnected {
            reason: DisconnectReason::ConnectError { message, data: extra },
        });
    }

    /// The connection is gone; the manager decides whether to reconnect.
    pub(crate) fn on_connection_lost(&self, reason: DisconnectReason) {
        let was_active = {
            let mut inner = self.inner.lock();
            inner.conn = None;
            inner.connect_sent = None;
            inner.fail_in_flight(&AckError::Disconnected);
            inner.active
        };
        if was_active {
            self.state.set(ConnectionState::Disconnected { reason });
        }
    }

    /// Reconnection is over (given up, or not configured).
    pub(crate) fn deactivate(&self, reason: Option<DisconnectReason>) {
        let was_active = std::mem::replace(&mut self.inner.lock().active, false);
        if let (true, Some(reason)) = (was_active, reason) {
            self.state.set(ConnectionState::Disconnected { reason });
        }
    }

    /// The client is closed: every waiter is answered.
    pub(crate) fn shut_down(&self) {
        let retry = {
            let mut inner = self.inner.lock();
            inner.active = false;
            inner.conn = None;
            inner.connect_sent = None;
            for (_, slot) in inner.acks.drain() {
                let _ = slot.tx.send(Err(AckError::Closed));
            }
            inner.offline.drain().for_each(drop);
            std::mem::take(&mut inner.retry)
        };
        for item in retry {
            item.answer(Err(AckError::Closed));
        }
        if !self.state.get().is_final() {
            self.state.set(ConnectionState::Disconnected {
                reason: DisconnectReason::ClientDisconnect,
            });
        }
        self.retry_wake.notify_one();
    }

    // ----- emitting -----

    fn deliver(
        &self,
        inner: &mut Inner,
        wires: Vec<Wire>,
        ack: Option<u64>,
        volatile: bool,
    ) -> Result<Delivery, EmitError> {
        let mut wires = wires;
        if let Some(conn) = &inner.conn {
            match conn.send(wires) {
                Ok(()) => {
                    if let Some(slot) = ack.and_then(|id| inner.acks.get_mut(&id)) {
                        slot.in_flight = true;
                    }
                    return Ok(Delivery::Sent);
                }
                // The connection died under us; the manager will notice. Hold the packet.
                Err(back) => wires = back,
            }
        }
        if volatile {
            return Ok(Delivery::Dropped);
        }
        match inner.offline.push(Buffered { wires, ack }) {
            Pushed::Queued => Ok(Delivery::Queued),
            Pushed::Evicted(old) => {
                inner.fail_ack(old.ack, AckError::Dropped);
                Ok(Delivery::Queued)
            }
            Pushed::Dropped(item) => {
                inner.fail_ack(item.ack, AckError::Dropped);
                Ok(Delivery::Dropped)
            }
            Pushed::Refused(item) => {
                // The caller's slot is removed without an answer: the emit itself fails.
                if let Some(id) = item.ack {
                    inner.acks.remove(&id);
                }
                Err(EmitError::QueueFull)
            }
        }
    }

    fn enqueue_retry(
        &self,
        data: Value,
        attachments: Vec<Bytes>,
        waiter: Option<AckReply>,
    ) -> Result<(), EmitError> {
        let limits = self.options.queue;
        {
            let mut inner = self.inner.lock();
            if inner.retry.len() >= limits.capacity {
                match limits.overflow {
                    Overflow::Error => return Err(EmitError::QueueFull),
                    Overflow::DropNewest => {
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(Err(AckError::Dropped));
                        }
                        return Ok(());
                    }
                    Overflow::DropOldest => {
                        // Never the packet in flight: its answer is awaited.
                        match inner.retry.iter().position(|item| !item.pending) {
                            Some(index) => inner.retry.remove(index).answer(Err(AckError::Dropped)),
                            None => {
                                if let Some(waiter) = waiter {
                                    let _ = waiter.send(Err(AckError::Dropped));
                                }
                                return Ok(());
                            }
                        }
                    }
                }
            }
            let seq = inner.retry_seq;
            inner.retry_seq += 1;
            inner.retry.push(RetryItem {
                seq,
                data,
                attachments,
                tries: 0,
                pending: false,
                waiter,
            });
        }
        self.retry_wake.notify_one();
        Ok(())
    }

    /// Sends the head of the retry queue, if connected and it is not in flight already.
    fn start_retry_try(&self) -> Option<RetryTry> {
        let mut inner = self.inner.lock();
        let conn = inner.conn.clone()?;
        let id = inner.next_ack;
        let head = inner.retry.first_mut()?;
        if head.pending {
            return None;
        }
        head.pending = true;
        head.tries += 1;
        let seq = head.seq;
        let packet = Packet::event(
            self.nsp.as_str(),
            head.data.clone(),
            head.attachments.clone(),
            Some(id),
        );
        inner.next_ack += 1;
        let (tx, rx) = oneshot::channel();
        inner.acks.insert(id, AckSlot { tx, in_flight: true });
        tracing::trace!(nsp = %self.nsp, seq, id, "sending queued packet");
        let _ = conn.send(encode(&packet));
        Some(RetryTry { seq, id, answer: rx })
    }

    fn finish_retry_try(&self, seq: u64, id: u64, outcome: Result<Payload, AckError>) {
        let retries = self.options.retries.unwrap_or(0);
        let finished = {
            let mut inner = self.inner.lock();
            inner.acks.remove(&id);
            let Some(head) = inner.retry.first_mut() else {
                return;
            };
            if head.seq != seq {
                return;
            }
            head.pending = false;
            let done = match &outcome {
                Ok(_) => true,
                Err(AckError::Timeout) => head.tries > retries,
                // As in the reference: a disconnection fails the try only when tries can
                // time out; otherwise the packet is simply sent again after reconnecting.
                Err(AckError::Disconnected) => self.options.ack_timeout.is_some() && head.tries > retries,
                Err(_) => true,
            };
            if done { Some(inner.retry.remove(0)) } else { None }
        };
        if let Some(item) = finished {
            item.answer(outcome);
        }
    }

    fn emit_packet(&self, event: &str, payload: Payload, volatile: bool) -> Result<Delivery, EmitError> {
        check_event_name(event)?;
        if self.retries_enabled() && !volatile {
            self.enqueue_retry(payload.event_data(event), payload.attachments, None)?;
            return Ok(Delivery::Queued);
        }
        let packet = Packet::event(
            self.nsp.as_str(),
            payload.event_data(event),
            payload.attachments,
            None,
        );
        let wires = encode(&packet);
        let mut inner = self.inner.lock();
        self.deliver(&mut inner, wires, None, volatile)
    }

    fn emit_with_ack(self: &Arc<Self>, event: &str, payload: Payload, limit: Option<Duration>) -> AckFuture {
        if let Err(e) = check_event_name(event) {
            return AckFuture::ready(Err(e.into()));
        }
        let (tx, rx) = oneshot::channel();
        if self.retries_enabled() {
            if let Err(e) = self.enqueue_retry(payload.event_data(event), payload.attachments, Some(tx)) {
                return AckFuture::ready(Err(e.into()));
            }
            return AckFuture::new(async move { rx.await.unwrap_or(Err(AckError::Closed)) });
        }
        let id = {
            let mut inner = self.inner.lock();
            let id = inner.next_ack;
            inner.next_ack += 1;
            inner.acks.insert(id, AckSlot { tx, in_flight: false });
            let packet = Packet::event(
                self.nsp.as_str(),
                payload.event_data(event),
                payload.attachments,
                Some(id),
            );
            if let Err(e) = self.deliver(&mut inner, encode(&packet), Some(id), false) {
                return AckFuture::ready(Err(e.into()));
            }
            id
        };
        let guard = AckGuard {
            shared: Arc::downgrade(self),
            id,
        };
        AckFuture::new(async move {
            let _guard = guard;
            let answer = async { rx.await.unwrap_or(Err(AckError::Closed)) };
            match limit {
                Some(limit) => tokio::time::timeout(limit, answer)
                    .await
                    .unwrap_or(Err(AckError::Timeout)),
                None => answer.await,
            }
        })
    }
}

/// Forgets an ack waiter that ended (answered, timed out or dropped): its slot, and its
/// packet if it still waits in the offline queue (as the reference client does on timeout).
struct AckGuard {
    shared: Weak<SocketShared>,
    id: u64,
}

impl Drop for AckGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut inner = shared.inner.lock();
            if inner.acks.remove(&self.id).is_some() {
                let id = self.id;
                inner.offline.remove_where(|item| item.ack == Some(id));
            }
        }
    }
}

async fn retry_loop(socket: Weak<SocketShared>, wake: Arc<Notify>) {
    loop {
        let Some(shared) = socket.upgrade() else { return };
        match shared.start_retry_try() {
            Some(RetryTry { seq, id, answer }) => {
                let outcome = match shared.options.ack_timeout {
                    Some(limit) => match tokio::time::timeout(limit, answer).await {
                        Ok(answer) => answer.unwrap_or(Err(AckError::Closed)),
                        Err(_) => Err(AckError::Timeout),
                    },
                    None => answer.await.unwrap_or(Err(AckError::Closed)),
                };
                shared.finish_retry_try(seq, id, outcome);
            }
            None => {
                // Woken by a new packet, a connection, or the socket's end.
                drop(shared);
                wake.notified().await;
            }
        }
    }
}

/// The answer to [`Socket::emit_with_ack`]: the server's ack arguments, or why there are
/// none.
#[must_use = "an ack future does nothing unless awaited (the packet is sent either way)"]
pub struct AckFuture {
    inner: Pin<Box<dyn Future<Output = Result<Payload, AckError>> + Send>>,
}

impl fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckFuture").finish_non_exhaustive()
    }
}

impl AckFuture {
    fn new(fut: impl Future<Output = Result<Payload, AckError>> + Send + 'static) -> Self {
        Self { inner: Box::pin(fut) }
    }

    fn ready(result: Result<Payload, AckError>) -> Self {
        Self::new(std::future::ready(result))
    }
}

impl Future for AckFuture {
    type Output = Result<Payload, AckError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// One namespace on a [`Client`](crate::Client)'s connection. Cheap to clone; every clone
/// is the same socket.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ferrio_client::{Client, Payload};
/// use serde_json::json;
///
/// let client = Client::new("http://127.0.0.1:3000")?;
/// let socket = client
///     .socket("/")
///     .on("message", |event| println!("got {:?}", event.args()))
///     .connect();
/// socket.wait_connected().await?;
///
/// socket.emit("join", "lobby")?;
/// let answer = socket
///     .emit_with_ack("publish", json!({"room": "lobby", "event": "message", "data": "hi"}))
///     .await?;
/// assert_eq!(answer.arg_as::<serde_json::Value>(0)?, json!({"ok": true}));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Socket {
    pub(crate) shared: Arc<SocketShared>,
    /// Keeps the client open while this handle lives.
    pub(crate) _life: Arc<Lifeline>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("nsp", &self.shared.nsp)
            .field("state", &self.state())
            .finish()
    }
}

impl Socket {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.shared.nsp
    }

    /// The socket id the server gave (changes on every connection, unless recovered).
    pub fn id(&self) -> Option<String> {
        let inner = self.shared.inner.lock();
        inner.conn.as_ref().and(inner.id.clone())
    }

    /// Whether the namespace is connected.
    pub fn connected(&self) -> bool {
        self.shared.inner.lock().conn.is_some()
    }

    /// Whether the last connection recovered the previous session (connection-state
    /// recovery): same id, rooms kept, missed packets delivered before `Connected`.
    pub fn recovered(&self) -> bool {
        self.shared.inner.lock().recovered
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.get()
    }

    /// The latest state, as a `watch` receiver.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.watch()
    }

    /// Every state transition from now on.
    pub fn state_changes(&self) -> StateChanges {
        self.shared.state.changes()
    }

    /// Waits until the socket is connected, or until no connection is coming any more (a
    /// final disconnection, or any disconnection with reconnection turned off); the error
    /// says why.
    pub async fn wait_connected(&self) -> Result<(), DisconnectReason> {
        let mut watch = self.shared.state.watch();
        loop {
            let state = watch.borrow_and_update().clone();
            match state {
                ConnectionState::Connected => return Ok(()),
                // Inactive means no reconnection is coming: a final reason, or any reason
                // when reconnection is turned off.
                ConnectionState::Disconnected { reason } if !self.shared.is_active() => {
                    return Err(reason);
                }
                _ => {}
            }
            if watch.changed().await.is_err() {
                return Err(DisconnectReason::ClientDisconnect);
            }
        }
    }

    /// Emits an event. While disconnected it waits in the offline queue and goes out, in
    /// order, on reconnection. With `retries`, it goes through the retry queue instead.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), EmitError> {
        self.shared.emit_packet(event, payload.into(), false).map(|_| ())
    }

    /// Emits any serializable value as one argument.
    pub fn emit_typed<T: Serialize + ?Sized>(&self, event: &str, value: &T) -> Result<(), EmitError> {
        let payload = Payload::json(value).unwrap_or_else(|_| Payload::args(vec![Value::Null]));
        self.emit(event, payload)
    }

    /// Emits an event only if it can be written now; it is never queued. Returns whether it
    /// was written.
    pub fn emit_volatile(&self, event: &str, payload: impl Into<Payload>) -> Result<bool, EmitError> {
        self.shared
            .emit_packet(event, payload.into(), true)
            .map(|d| matches!(d, Delivery::Sent))
    }

    /// Emits an event and waits for the server's acknowledgement, within the socket's
    /// `ack_timeout` if one is set. With `retries`, the retry queue resends it until it is
    /// acknowledged or the tries are used up; dropping the future does not cancel that.
    pub fn emit_with_ack(&self, event: &str, payload: impl Into<Payload>) -> AckFuture {
        self.shared
            .emit_with_ack(event, payload.into(), self.shared.options.ack_timeout)
    }

    /// [`Socket::emit_with_ack`] with its own timeout (ignored with `retries`, where the
    /// socket's `ack_timeout` times each try).
    pub fn emit_with_ack_timeout(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> AckFuture {
        self.shared.emit_with_ack(event, payload.into(), Some(timeout))
    }

    /// Handles event `event` (replacing an earlier handler of it). Handlers run on the
    /// connection's task in arrival order: keep them short, or spawn.
    pub fn on(&self, event: &str, handler: impl Fn(Event) + Send + Sync + 'static) -> &Self {
        self.shared
            .handlers
            .write()
            .by_name
            .insert(event.to_owned(), Arc::new(handler));
        self
    }

    /// Handles event `event`, deserializing its first argument; events whose argument does
    /// not match `T` are logged and skipped.
    pub fn on_typed<T, F>(&self, event: &str, handler: F) -> &Self
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        self.on(event, typed(handler))
    }

    /// Sees every event before its own handler does.
    pub fn on_any(&self, handler: impl Fn(&Event) + Send + Sync + 'static) -> &Self {
        self.shared.handlers.write().any.push(Arc::new(handler));
        self
    }

    /// Removes the handler of `event`.
    pub fn off(&self, event: &str) -> &Self {
        self.shared.handlers.write().by_name.remove(event);
        self
    }

    /// Connects again after a final disconnection (explicit, refused, or given up).
    pub fn connect(&self) {
        if self.shared.activate() {
            let _ = self.shared.commands.send(Command::Connect(self.shared.clone()));
        }
    }

    /// Leaves the namespace: sends DISCONNECT and stops reconnecting. Acks in flight fail
    /// with [`AckError::Disconnected`]; queued emits wait for a later [`Socket::connect`].
    /// When no socket of the client is left connected, the connection closes.
    pub fn disconnect(&self) {
        {
            let mut inner = self.shared.inner.lock();
            if let Some(conn) = inner.conn.take() {
                let _ = conn.send(encode(&Packet::disconnect(self.shared.nsp.as_str())));
            }
            inner.active = false;
            inner.connect_sent = None;
            inner.fail_in_flight(&AckError::Disconnected);
        }
        self.shared.state.set(ConnectionState::Disconnected {
            reason: DisconnectReason::ClientDisconnect,
        });
        let _ = self.shared.commands.send(Command::Disconnect);
    }

    /// Packets waiting in the offline queue.
    pub fn queued(&self) -> usize {
        self.shared.inner.lock().offline.len()
    }

    /// Packets in the retry queue (including the one in flight).
    pub fn retry_queued(&self) -> usize {
        self.shared.inner.lock().retry.len()
    }
}

pub(crate) fn typed<T, F>(handler: F) -> impl Fn(Event) + Send + Sync + 'static
where
    T: DeserializeOwned,
    F: Fn(T) + Send + Sync + 'static,
{
    move |event: Event| match event.arg::<T>(0) {
        Ok(value) => handler(value),
        Err(e) => tracing::warn!(event = %event.name(), error = %e, "event argument does not match its type"),
    }
}

/// Adds handlers to a socket before it connects.
pub(crate) fn add_handler(shared: &SocketShared, event: String, handler: Handler) {
    shared.handlers.write().by_name.insert(event, handler);
}

pub(crate) fn add_any_handler(shared: &SocketShared, handler: AnyHandler) {
    shared.handlers.write().any.push(handler);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Auth;
    use crate::queue::QueueLimits;

    /// A socket connected to a fake connection whose outbound packets the test reads.
    fn connected_socket(options: SocketOptions) -> (Arc<SocketShared>, mpsc::UnboundedReceiver<Outbound>) {
        let (commands, _) = mpsc::unbounded_channel();
        let shared = SocketShared::new("/".into(), options, commands);
        assert!(shared.activate());
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = ConnHandle { tx, generation: 1 };
        shared.on_packet(Packet::connect("/", Some(json!({"sid": "s1"}))), &conn);
        assert_eq!(shared.state.get(), ConnectionState::Connected);
        (shared, rx)
    }

    fn sent_text(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> String {
        match rx.try_recv() {
            Ok(Outbound::Send(wires)) => match &wires[0] {
                Wire::Text(text) => text.clone(),
                Wire::Binary(_) => panic!("binary first"),
            },
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn ack(shared: &Arc<SocketShared>, id: u64) {
        let (tx, _rx) = mpsc::unbounded_channel();
        let conn = ConnHandle { tx, generation: 1 };
        shared.on_packet(Packet::ack("/", id, json!(["ok"]), vec![]), &conn);
    }

    #[test]
    fn encodes_attachments_after_the_text() {
        let packet = Packet::event(
            "/chat",
            json!(["f", ferrio_proto::socket::placeholder(0)]),
            vec![Bytes::from_static(b"ab")],
            Some(3),
        );
        assert_eq!(
            encode(&packet),
            vec![
                Wire::Text(r#"451-/chat,3["f",{"_placeholder":true,"num":0}]"#.into()),
                Wire::Binary(Bytes::from_static(b"ab")),
            ]
        );
    }

    #[tokio::test]
    async fn connect_payload_merges_pid_and_offset_in_front_of_auth() {
        let (commands, _) = mpsc::unbounded_channel();
        let shared = SocketShared::new("/".into(), SocketOptions::default(), commands);
        assert_eq!(shared.connect_data(None), None);
        assert_eq!(shared.connect_data(Some(json!({"a": 1}))), Some(json!({"a": 1})));
        {
            let mut inner = shared.inner.lock();
            inner.pid = Some("P".into());
            inner.last_offset = Some("O".into());
        }
        let data = shared.connect_data(Some(json!({"token": "t"}))).unwrap();
        assert_eq!(data, json!({"pid": "P", "offset": "O", "token": "t"}));
        let keys: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["pid", "offset", "token"]);
        assert_eq!(
            shared.connect_data(None),
            Some(json!({"pid": "P", "offset": "O"}))
        );
    }

    #[tokio::test]
    async fn offsets_are_tracked_only_with_a_pid() {
        let (shared, _rx) = connected_socket(SocketOptions::default());
        let (tx, _out) = mpsc::unbounded_channel();
        let conn = ConnHandle { tx, generation: 1 };
        shared.on_packet(
            Packet::event("/", json!(["news", "a", "off1"]), vec![], None),
            &conn,
        );
        assert_eq!(shared.inner.lock().last_offset, None);
        // A CONNECT reply with a pid turns tracking on; a new pid is not a recovery.
        shared.on_packet(
            Packet::connect("/", Some(json!({"sid": "s2", "pid": "P"}))),
            &conn,
        );
        assert!(!shared.inner.lock().recovered);
        shared.on_packet(
            Packet::event("/", json!(["news", "b", "off2"]), vec![], None),
            &conn,
        );
        shared.on_packet(Packet::event("/", json!(["news", 1]), vec![], None), &conn);
        assert_eq!(shared.inner.lock().last_offset.as_deref(), Some("off2"));
        // The same pid again is.
        shared.on_packet(
            Packet::connect("/", Some(json!({"sid": "s2", "pid": "P"}))),
            &conn,
        );
        assert!(shared.inner.lock().recovered);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_resend_the_same_arguments_until_acknowledged() {
        let (shared, mut rx) = connected_socket(SocketOptions {
            retries: Some(2),
            ack_timeout: Some(Duration::from_millis(100)),
            auth: Auth::None,
            queue: QueueLimits::default(),
        });
        let answer = shared.emit_with_ack("job", Payload::from(json!({"id": 7})), None);
        let second = shared.emit_with_ack("job", Payload::from(json!({"id": 8})), None);
        tokio::task::yield_now().await;
        assert_eq!(sent_text(&mut rx), r#"420["job",{"id":7}]"#);
        // One packet in flight: the second waits.
        assert!(rx.try_recv().is_err());
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(
            sent_text(&mut rx),
            r#"421["job",{"id":7}]"#,
            "same arguments, new ack id"
        );
        // A late answer to the first try is ignored; the second try's answer counts.
        ack(&shared, 0);
        assert!(rx.try_recv().is_err());
        ack(&shared, 1);
        assert_eq!(answer.await.unwrap().args, vec![json!("ok")]);
        tokio::task::yield_now().await;
        assert_eq!(sent_text(&mut rx), r#"422["job",{"id":8}]"#);
        // Never answered: 1 + 2 retries, then a timeout.
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(sent_text(&mut rx), r#"423["job",{"id":8}]"#);
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(sent_text(&mut rx), r#"424["job",{"id":8}]"#);
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(second.await.unwrap_err(), AckError::Timeout);
        assert!(rx.try_recv().is_err());
        assert_eq!(shared.inner.lock().retry.len(), 0);
        assert!(shared.inner.lock().acks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnection_fails_a_try_only_with_an_ack_timeout() {
        for ack_timeout in [None, Some(Duration::from_secs(60))] {
            let (shared, mut rx) = connected_socket(SocketOptions {
                retries: Some(1),
                ack_timeout,
                ..SocketOptions::default()
            });
            let mut answer = shared.emit_with_ack("job", Payload::from(1), None);
            tokio::task::yield_now().await;
            assert_eq!(sent_text(&mut rx), r#"420["job",1]"#);
            // Two losses: the first uses the one retry; the second, with a timeout, ends it.
            for _ in 0..2 {
                shared.on_connection_lost(DisconnectReason::TransportClose);
                tokio::task::yield_now().await;
                let (tx, new_rx) = mpsc::unbounded_channel();
                rx = new_rx;
                shared.start_connect(&ConnHandle {
                    tx: tx.clone(),
                    generation: 2,
                });
                shared.on_packet(
                    Packet::connect("/", Some(json!({"sid": "s"}))),
                    &ConnHandle { tx, generation: 2 },
                );
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            let done = futures_util::FutureExt::now_or_never(&mut answer);
            match ack_timeout {
                Some(_) => assert_eq!(done, Some(Err(AckError::Disconnected))),
                None => {
                    assert!(done.is_none(), "without a timeout it is sent again");
                    let resent: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
                    assert!(!resent.is_empty());
                }
            }
        }
    }

    #[tokio::test]
    async fn offline_emits_flush_in_order_on_connect() {
        let (commands, _) = mpsc::unbounded_channel();
        let shared = SocketShared::new("/".into(), SocketOptions::default(), commands);
        shared.activate();
        for i in 0..3 {
            assert!(matches!(
                shared.emit_packet("n", Payload::from(i), false),
                Ok(Delivery::Queued)
            ));
        }
        assert!(matches!(
            shared.emit_packet("v", Payload::from(9), true),
            Ok(Delivery::Dropped)
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let conn = ConnHandle { tx, generation: 1 };
        shared.on_packet(Packet::connect("/", Some(json!({"sid": "s"}))), &conn);
        for i in 0..3 {
            assert_eq!(sent_text(&mut rx), format!(r#"42["n",{i}]"#));
        }
        assert!(rx.try_recv().is_err());
    }
}
