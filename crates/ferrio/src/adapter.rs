//! Room membership and broadcast: the [`Adapter`] trait a cluster adapter implements, and
//! [`LocalAdapter`], the in-memory index every node keeps of its own sockets.
//!
//! A broadcast is encoded once into an [`EncodedPacket`] whose frames are shared (reference
//! counted) by every recipient. Recipients are snapshotted under a read lock and the lock is
//! released before any frame is queued, so joins and leaves never wait on a fan-out.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use ferrio_proto::socket::Packet;

use crate::engine::Frame;
use crate::socket::AckWaiter;
use crate::{Payload, Sid, Socket};

/// A room name. Cheap to clone.
pub type Room = Arc<str>;

/// Anything that names one or more rooms.
pub trait IntoRooms {
    fn into_rooms(self) -> SmallVec<[Room; 1]>;
}

impl IntoRooms for &str {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        smallvec::smallvec![Room::from(self)]
    }
}
impl IntoRooms for String {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        smallvec::smallvec![Room::from(self)]
    }
}
impl IntoRooms for Room {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        smallvec::smallvec![self]
    }
}
impl IntoRooms for Sid {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        smallvec::smallvec![Room::from(self.as_str())]
    }
}
impl<T: IntoRooms> IntoRooms for Vec<T> {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        self.into_iter().flat_map(IntoRooms::into_rooms).collect()
    }
}
impl<T: IntoRooms + Clone> IntoRooms for &[T] {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        self.iter().cloned().flat_map(IntoRooms::into_rooms).collect()
    }
}
impl<T: IntoRooms, const N: usize> IntoRooms for [T; N] {
    fn into_rooms(self) -> SmallVec<[Room; 1]> {
        self.into_iter().flat_map(IntoRooms::into_rooms).collect()
    }
}

/// A Socket.IO packet and its wire frames, encoded once.
#[derive(Debug, Clone)]
pub struct EncodedPacket {
    packet: Packet,
    frames: SmallVec<[Frame; 1]>,
    /// Its last argument is this node's recovery offset.
    offset: bool,
}

impl EncodedPacket {
    /// Encodes `packet` (the Engine.IO `message` text, then one binary frame per attachment).
    pub fn new(packet: Packet) -> Self {
        let mut text = String::with_capacity(64);
        text.push('4');
        packet.encode_into(&mut text);
        let mut frames = SmallVec::with_capacity(1 + packet.attachments.len());
        frames.push(Frame::text(text));
        frames.extend(packet.attachments.iter().cloned().map(Frame::Binary));
        Self {
            packet,
            frames,
            offset: false,
        }
    }

    /// Marks the last argument as this node's recovery offset, which other nodes must not
    /// see (they give the packet offsets of their own).
    pub(crate) fn with_offset(mut self) -> Self {
        self.offset = true;
        self
    }

    /// An EVENT packet for `event` with `payload`.
    pub fn event(nsp: &str, event: &str, payload: Payload, id: Option<u64>) -> Self {
        let mut data = Vec::with_capacity(payload.args.len() + 1);
        data.push(Value::from(event));
        data.extend(payload.args);
        Self::new(Packet::event(nsp, Value::Array(data), payload.attachments, id))
    }

    /// The packet, as this node's sockets receive it.
    pub fn packet(&self) -> &Packet {
        &self.packet
    }

    /// The packet as cluster adapters publish it to other nodes: without this node's
    /// recovery offset.
    pub fn cluster_packet(&self) -> std::borrow::Cow<'_, Packet> {
        if !self.offset {
            return std::borrow::Cow::Borrowed(&self.packet);
        }
        let mut packet = self.packet.clone();
        if let Some(Value::Array(args)) = &mut packet.data {
            args.pop();
        }
        std::borrow::Cow::Owned(packet)
    }

    /// Bytes the packet takes on the wire (all frames).
    pub fn wire_len(&self) -> usize {
        self.frames.iter().map(Frame::len).sum()
    }

    pub(crate) fn frames(&self) -> &[Frame] {
        &self.frames
    }
}

/// Flags of a broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastFlags {
    /// May be dropped for recipients not ready to receive it.
    pub volatile: bool,
    /// Only this node's sockets (cluster adapters do not forward it).
    pub local: bool,
    /// How long to wait for acknowledgements, for broadcasts that expect them.
    pub timeout: Option<Duration>,
}

/// Who a broadcast reaches: sockets in any of `rooms` (all sockets when empty), minus those
/// in any of `except`.
#[derive(Debug, Clone, Default)]
pub struct BroadcastOptions {
    pub rooms: SmallVec<[Room; 1]>,
    pub except: SmallVec<[Room; 1]>,
    pub flags: BroadcastFlags,
}

/// A failure of a cluster-wide operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// Other nodes could not be reached; local delivery happened.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// Not every node answered in time.
    #[error("cluster request timed out")]
    Timeout,
    /// The event name is reserved (`connect`, `disconnect`, ...); nothing was sent.
    #[error("reserved event name")]
    ReservedEvent,
}

/// A boxed future, as cluster-wide adapter operations return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broadcast handed to the adapter with [`Adapter::broadcast_confirmed`]: delivered to
/// `local` sockets of this node at once, and `cluster` resolves once the rest of the cluster
/// has it (`Ok`) or cannot be known to have it (`Err`).
pub struct Sent {
    pub local: usize,
    pub cluster: BoxFuture<'static, Result<(), AdapterError>>,
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sent")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A packet read back from a shared log for a session being restored: its entry id (the
/// offset the client gets) and the broadcast as published, without an offset.
#[derive(Debug, Clone)]
pub struct LoggedPacket {
    pub id: String,
    pub packet: Packet,
    pub opts: BroadcastOptions,
}

/// A disconnected session a [`SessionLog`] gave back.
#[derive(Debug, Clone)]
pub struct LoggedSession {
    pub sid: Sid,
    pub rooms: Vec<Room>,
    pub data: Value,
    /// The recoverable packets after the client's offset that it may need (events without
    /// an ack, not volatile, for its rooms), and the id of the last entry read; `None` when
    /// nothing was read (the caller said its own cache holds the offset).
    pub missed: Option<(Vec<LoggedPacket>, String)>,
    /// The log position of the socket's last room change (a restore from an older offset
    /// is refused), when the session says.
    pub rooms_changed_at: Option<String>,
}

/// Why a [`SessionLog`] could not give a session back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRefusal {
    /// No such session (never kept, expired, already taken).
    UnknownSession,
    /// The offset is not an entry id.
    UnknownOffset,
    /// The offset is no longer in the log (trimmed): entries after it may be gone too.
    HistoryTrimmed,
    /// More than the allowed number of packets were missed.
    TooManyMissed,
    /// The log could not be read.
    Unavailable,
}

/// Connection-state recovery kept by a cluster adapter in a shared log (the Redis streams
/// adapter): a broadcast's offset is its entry id in the log, sessions are stored beside it,
/// and a client recovers on whichever node it reaches. The adapter delivers every logged
/// broadcast through [`crate::Namespace::deliver_logged`], in log order, also the node's own.
pub trait SessionLog: Send + Sync + 'static {
    /// Keeps a socket's state for `ttl`: written when it connects, when its rooms or data
    /// change and every so often while it is connected (so it survives its node dying), and
    /// when it disconnects in a way that allows recovery.
    /// `changed` is the log position of the socket's last room change, if any.
    fn persist(
        &self,
        pid: Sid,
        sid: Sid,
        rooms: Vec<Room>,
        data: Value,
        changed: Option<String>,
        ttl: Duration,
    );

    /// Drops a session that must not come back (the client left on purpose).
    fn forget(&self, pid: Sid);

    /// How far this node has read the log: every later entry will be delivered through
    /// [`crate::Namespace::deliver_logged`]. `None` until the node knows where it reads from.
    fn position(&self) -> Option<String> {
        None
    }

    /// Takes a session out of the log (once) and, unless `cached` (this node's cache holds
    /// the offset), reads back what it missed after `offset`, at most `max_missed` packets.
    fn restore(
        &self,
        pid: Sid,
        offset: String,
        cached: bool,
        max_missed: usize,
    ) -> BoxFuture<'static, Result<LoggedSession, LogRefusal>>;
}

/// A socket as seen by `fetch_sockets`, on this node or another.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    pub id: Sid,
    pub rooms: Vec<Room>,
    pub data: Value,
    /// The handshake in the reference's shape (`headers`, `time`, `address`, `xdomain`,
    /// `secure`, `issued`, `url`, `query`, `auth`).
    pub handshake: Value,
    /// Set for sockets on this node.
    pub local: Option<Socket>,
}

/// Room membership and broadcast for one namespace.
///
/// With connection-state recovery on, `broadcast`, `broadcast_confirmed`, `add_all` and
/// `on_socket_added` may run while the namespace holds its recovery lock (that is what keeps
/// every socket's packets in offset order): they must not call back into the namespace
/// (emit, [`crate::Namespace::deliver_from_cluster`], ...) on the same thread.
///
/// The default methods work on this node alone through [`Adapter::local`]; a cluster adapter
/// overrides the ones that must reach other nodes and calls the local index for its own
/// sockets. Registering and indexing local sockets always goes through the local index.
pub trait Adapter: Send + Sync + 'static {
    /// This node's index.
    fn local(&self) -> &LocalAdapter;

    /// A local socket connected (it is in the local index, in its own room). Cluster
    /// adapters that subscribe per socket-id room start here.
    fn on_socket_added(&self, _sid: Sid) {}

    /// A local socket left (already gone from the local index).
    fn on_socket_removed(&self, _sid: Sid) {}

    /// Adds a socket to rooms; returns the rooms it was not in before.
    fn add_all(&self, sid: Sid, rooms: SmallVec<[Room; 1]>) -> SmallVec<[Room; 1]> {
        self.local().add_all(sid, rooms).changed
    }

    /// Removes a socket from a room; returns it if the socket was in it.
    fn del(&self, sid: Sid, room: &Room) -> SmallVec<[Room; 1]> {
        self.local().del(sid, room).changed
    }

    /// Removes a socket from every room; returns the rooms it was in.
    fn del_all(&self, sid: Sid) -> SmallVec<[Room; 1]> {
        self.local().del_all(sid).changed
    }

    /// The rooms a local socket is in (its own id excluded).
    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.local().socket_rooms(sid)
    }

    /// Delivers a packet; returns how many local sockets it was queued for.
    fn broadcast(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> Result<usize, AdapterError> {
        Ok(self.local().broadcast(packet, opts))
    }

    /// Delivers a packet like [`Adapter::broadcast`], and says when the other nodes have it.
    /// What is queued locally and for the cluster happens before this returns, in the same
    /// order as plain broadcasts; only the confirmation is awaited.
    fn broadcast_confirmed(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> Sent {
        let result = self.broadcast(packet, opts);
        Sent {
            local: *result.as_ref().unwrap_or(&0),
            cluster: Box::pin(std::future::ready(result.map(drop))),
        }
    }

    /// Delivers a packet that expects acknowledgements; every answer is sent on `acks`.
    /// Returns how many recipients were reached, i.e. how many answers to wait for.
    fn broadcast_with_ack(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        acks: mpsc::UnboundedSender<(Sid, Payload)>,
    ) -> BoxFuture<'_, Result<usize, AdapterError>> {
        let n = self.local().broadcast_with_ack(packet, opts, acks);
        Box::pin(async move { Ok(n) })
    }

    /// The sockets a selection matches, on every node.
    fn fetch_sockets(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>> {
        let sockets = self.local().fetch_sockets(&opts);
        Box::pin(async move { Ok(sockets) })
    }

    /// Makes the selected sockets join `rooms`, on every node.
    fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        for socket in self.local().select(&opts) {
            socket.join(rooms.clone());
        }
        Box::pin(async { Ok(()) })
    }

    /// Makes the selected sockets leave `rooms`, on every node.
    fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        for socket in self.local().select(&opts) {
            for room in &rooms {
                socket.leave(room.clone());
            }
        }
        Box::pin(async { Ok(()) })
    }

    /// Disconnects the selected sockets, on every node.
    fn disconnect_sockets(
        &self,
        opts: BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        for socket in self.local().select(&opts) {
            socket.disconnect(close);
        }
        Box::pin(async { Ok(()) })
    }

    /// Every room with at least one member, on every node (socket-id rooms excluded).
    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        let rooms = self.local().rooms();
        Box::pin(async move { Ok(rooms) })
    }

    /// Sends `args` (event name first) to the other servers' namespace handlers. A single
    /// node has nobody to tell.
    fn server_side_emit(&self, _args: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async { Ok(()) })
    }

    /// Like [`Adapter::server_side_emit`], collecting one answer per other server.
    fn server_side_emit_with_ack(
        &self,
        _args: Vec<Value>,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// How many servers share this namespace (this one included).
    fn server_count(&self) -> BoxFuture<'_, Result<usize, AdapterError>> {
        Box::pin(async { Ok(1) })
    }

    /// Whether the adapter can reach the rest of the cluster right now (readiness probes).
    fn is_healthy(&self) -> bool {
        true
    }

    /// A shared log that keeps connection-state recovery for the whole cluster, if the
    /// adapter has one (then broadcasts reach local sockets through the log, in its order).
    fn session_log(&self) -> Option<Arc<dyn SessionLog>> {
        None
    }

    /// A store that keeps the rooms' histories for the whole cluster (see
    /// [`crate::RecoveryConfig::rooms`]), if the adapter has one; without it each node reads
    /// its own windows.
    fn history_store(&self) -> Option<Arc<dyn HistoryStore>> {
        None
    }
}

/// Rooms' histories kept for the whole cluster by a cluster adapter (written when a node
/// broadcasts to a room with a window, read by any node).
pub trait HistoryStore: Send + Sync + 'static {
    /// The messages sent to `room` after `since` (an offset this store gave out; all when
    /// `None`), the newest `limit`, oldest first; `complete` is false when messages after
    /// `since` may have been trimmed.
    fn read(
        &self,
        room: &str,
        since: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'static, Result<crate::History, crate::HistoryError>>;
}

#[derive(Debug)]
struct Entry {
    socket: Socket,
    rooms: SmallVec<[Room; 2]>,
}

#[derive(Debug, Default)]
struct Index {
    sockets: HashMap<Sid, Entry>,
    rooms: HashMap<Room, HashSet<Sid>>,
}

impl Index {
    /// Members of `room`: a named room, or a socket's own room (its id).
    fn members<'a>(&'a self, room: &Room) -> impl Iterator<Item = Sid> + 'a {
        let named = self.rooms.get(room).into_iter().flatten().copied();
        let own = room
            .parse::<Sid>()
            .ok()
            .filter(|sid| self.sockets.contains_key(sid));
        named.chain(own)
    }

    fn excluded(&self, except: &[Room]) -> HashSet<Sid> {
        except.iter().flat_map(|r| self.members(r)).collect()
    }
}

/// What a membership change did on this node, decided under the index's lock (so two
/// changes racing each other never both claim the same room).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The rooms the socket joined (was not in) or left (was in).
    pub changed: SmallVec<[Room; 1]>,
    /// Of those, the rooms that got their first local member or lost their last one (where
    /// cluster adapters subscribe and unsubscribe).
    pub edges: SmallVec<[Room; 1]>,
}

/// The in-memory index of one namespace's sockets on this node, and local delivery.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    index: RwLock<Index>,
}

impl LocalAdapter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connected socket (it is in its own room from now on).
    pub(crate) fn add_socket(&self, socket: Socket) {
        let sid = socket.id();
        self.index.write().sockets.insert(
            sid,
            Entry {
                socket,
                rooms: SmallVec::new(),
            },
        );
    }

    /// Adds a local socket to rooms; unknown sockets are ignored.
    pub fn add_all(&self, sid: Sid, rooms: SmallVec<[Room; 1]>) -> Membership {
        let mut done = Membership::default();
        let mut index = self.index.write();
        let Index {
            sockets,
            rooms: by_room,
        } = &mut *index;
        let Some(entry) = sockets.get_mut(&sid) else {
            return done;
        };
        for room in rooms {
            if room.as_ref() == sid.as_str() || entry.rooms.contains(&room) {
                continue;
            }
            let members = by_room.entry(room.clone()).or_default();
            if members.is_empty() {
                done.edges.push(room.clone());
            }
            members.insert(sid);
            entry.rooms.push(room.clone());
            done.changed.push(room);
        }
        done
    }

    /// Removes a local socket from a room.
    pub fn del(&self, sid: Sid, room: &Room) -> Membership {
        let mut done = Membership::default();
        let mut index = self.index.write();
        let Index { sockets, rooms } = &mut *index;
        let Some(entry) = sockets.get_mut(&sid) else {
            return done;
        };
        let Some(pos) = entry.rooms.iter().position(|r| r == room) else {
            return done;
        };
        entry.rooms.swap_remove(pos);
        done.changed.push(room.clone());
        if remove_member(rooms, room, sid) {
            done.edges.push(room.clone());
        }
        done
    }

    /// Removes a local socket from every room and from the index.
    pub fn del_all(&self, sid: Sid) -> Membership {
        let mut done = Membership::default();
        let mut index = self.index.write();
        let Index { sockets, rooms } = &mut *index;
        let Some(entry) = sockets.remove(&sid) else {
            return done;
        };
        for room in entry.rooms {
            if remove_member(rooms, &room, sid) {
                done.edges.push(room.clone());
            }
            done.changed.push(room);
        }
        done
    }

    /// The rooms a local socket is in (its own id excluded).
    pub fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.index
            .read()
            .sockets
            .get(&sid)
            .map(|e| e.rooms.to_vec())
            .unwrap_or_default()
    }

    /// Every named room with a local member.
    pub fn rooms(&self) -> HashSet<Room> {
        self.index.read().rooms.keys().cloned().collect()
    }

    /// Whether a named room has a local member.
    pub fn has_room(&self, room: &str) -> bool {
        self.index.read().rooms.contains_key(room)
    }

    /// Whether a socket with this id is connected here.
    pub fn has_socket(&self, sid: Sid) -> bool {
        self.index.read().sockets.contains_key(&sid)
    }

    /// How many local sockets are connected.
    pub fn socket_count(&self) -> usize {
        self.index.read().sockets.len()
    }

    /// How many named rooms have local members.
    pub fn room_count(&self) -> usize {
        self.index.read().rooms.len()
    }

    /// The `n` named rooms with the most local members, largest first (ties by name), with
    /// their local member counts. One pass over the rooms, for dashboards and diagnostics.
    pub fn largest_rooms(&self, n: usize) -> Vec<(Room, usize)> {
        // Sorted by this key: larger first, then by name.
        fn key(room: &Room, size: usize) -> (std::cmp::Reverse<usize>, &str) {
            (std::cmp::Reverse(size), room)
        }
        let index = self.index.read();
        let mut top: Vec<(Room, usize)> = Vec::with_capacity(n.min(index.rooms.len()) + 1);
        for (room, members) in &index.rooms {
            let k = key(room, members.len());
            if top.len() == n && top.last().is_none_or(|(r, s)| k >= key(r, *s)) {
                continue;
            }
            let at = top.partition_point(|(r, s)| key(r, *s) < k);
            top.insert(at, (room.clone(), members.len()));
            top.truncate(n);
        }
        top
    }

    /// Calls `f` for each local socket a selection matches, once each (under the index's
    /// read lock).
    fn for_each_selected(&self, opts: &BroadcastOptions, mut f: impl FnMut(&Socket)) {
        let index = self.index.read();
        let excluded = index.excluded(&opts.except);
        let keep = |sid: &Sid| !excluded.contains(sid);
        if opts.rooms.is_empty() {
            for (_, e) in index.sockets.iter().filter(|(sid, _)| keep(sid)) {
                f(&e.socket);
            }
            return;
        }
        let mut seen = HashSet::new();
        let single = opts.rooms.len() == 1;
        for room in &opts.rooms {
            for sid in index.members(room) {
                if keep(&sid)
                    && (single || seen.insert(sid))
                    && let Some(entry) = index.sockets.get(&sid)
                {
                    f(&entry.socket);
                }
            }
        }
    }

    /// The local sockets a selection matches, each once.
    pub fn select(&self, opts: &BroadcastOptions) -> Vec<Socket> {
        let mut out = Vec::new();
        self.for_each_selected(opts, |socket| out.push(socket.clone()));
        out
    }

    /// How many local sockets a selection matches.
    pub fn count(&self, opts: &BroadcastOptions) -> usize {
        let mut n = 0;
        self.for_each_selected(opts, |_| n += 1);
        n
    }

    /// Whether `room` reaches a local socket: a named room with a member, or the id of a
    /// socket connected here (every socket is in the room named by its id).
    pub fn has_room_or_socket(&self, room: &str) -> bool {
        self.has_room(room) || room.parse::<Sid>().is_ok_and(|sid| self.has_socket(sid))
    }

    /// Queues `packet` for every matching local socket; returns how many.
    pub fn broadcast(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> usize {
        let recipients = self.select(opts);
        crate::metrics::broadcast(recipients.len());
        let volatile = opts.flags.volatile;
        recipients
            .iter()
            .filter(|s| s.deliver(packet, volatile).is_ok())
            .count()
    }

    /// Like [`LocalAdapter::broadcast`], registering each recipient's acknowledgement.
    pub fn broadcast_with_ack(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        acks: mpsc::UnboundedSender<(Sid, Payload)>,
    ) -> usize {
        let Some(id) = packet.packet().id else {
            return self.broadcast(packet, opts);
        };
        let recipients = self.select(opts);
        let mut reached = 0;
        for socket in recipients {
            socket.register_ack(id, AckWaiter::Many(acks.clone()));
            if socket.deliver(packet, opts.flags.volatile).is_ok() {
                reached += 1;
            } else {
                socket.unregister_ack(id);
            }
        }
        reached
    }

    /// The matching local sockets, described.
    pub fn fetch_sockets(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        self.select(opts)
            .into_iter()
            .map(|socket| SocketInfo {
                id: socket.id(),
                rooms: socket.rooms(),
                data: socket.data(),
                handshake: socket.handshake_json(),
                local: Some(socket),
            })
            .collect()
    }
}

/// Removes `sid` from `room`; true when that emptied (and dropped) the room.
fn remove_member(rooms: &mut HashMap<Room, HashSet<Sid>>, room: &Room, sid: Sid) -> bool {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(&sid);
        if members.is_empty() {
            rooms.remove(room);
            return true;
        }
    }
    false
}

impl Adapter for LocalAdapter {
    fn local(&self) -> &LocalAdapter {
        self
    }
}
