//! Connection-state recovery, compatible with `socket.io-client` ≥ 4.6.
//!
//! With recovery on, every event sent without an ack and not volatile carries an offset as
//! its last argument and is kept for a while. When a connection drops for a reason the
//! client did not choose, its socket's id, rooms and data are kept for
//! `max_disconnection_duration`. A client that reconnects with `{pid, offset}` in its auth
//! payload gets the same socket back and, before the CONNECT answer, every packet it missed,
//! in order.
//!
//! Everything is bounded: packets by count and bytes across the namespace, sessions by
//! count, and what one session may have missed. Past a bound, recovery fails cleanly
//! (`recovered: false`) instead of memory growing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::adapter::{BroadcastOptions, EncodedPacket, Room, SessionLog};
use crate::{CloseReason, DisconnectReason, Sid};

/// Rooms a disconnected session may be in and still be kept (each keeps its room's
/// broadcasts arriving from other nodes while the session waits).
const MAX_ROOMS_KEPT: usize = 1_000;

/// Recovery settings (the reference's `connectionStateRecovery`).
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a disconnected session can still be recovered (default 2 minutes).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the namespace's connect hook (default true, as the
    /// reference's `skipMiddlewares`).
    pub skip_connect_hook: bool,
    /// Packets kept per namespace, at most (default 10,000).
    pub max_packets: usize,
    /// Bytes of packets kept per namespace, at most (default 16 MiB).
    pub max_bytes: usize,
    /// Disconnected sessions kept per namespace, at most (default 100,000).
    pub max_sessions: usize,
    /// Packets one session may have missed and still recover (default 1,000).
    pub max_missed_packets: usize,
    /// Rooms that keep a window of their own (the first rule whose pattern matches): their
    /// packets are kept per room, `size` and `ttl` each, so a busy room never pushes a quiet
    /// one's packets out; [`crate::Namespace::history`] reads them. Other packets share the
    /// namespace's window (`max_packets`, `max_bytes`). Empty by default.
    pub rooms: Vec<RoomWindow>,
}

/// A window of packets kept per room (see [`RecoveryConfig::rooms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomWindow {
    /// A room name, or a prefix followed by `*` (`chat:*`; `*` alone matches every room).
    pub pattern: String,
    /// Packets kept per room.
    pub size: usize,
    /// None older than this.
    pub ttl: Duration,
}

impl RoomWindow {
    /// Whether `room` falls under this window.
    pub fn matches(&self, room: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => room == self.pattern,
        }
    }
}

/// What [`crate::Namespace::history`] gives back.
#[derive(Debug, Clone)]
pub struct History {
    /// Oldest first.
    pub messages: Vec<HistoryMessage>,
    /// False when messages after the `since` asked for were trimmed from the window (the
    /// messages after `since` beyond `limit` are not missing: ask again after the last one).
    pub complete: bool,
}

/// One message of a room's history: the EVENT packet as sockets got it (its last argument is
/// the offset), that offset, and the rooms (or socket ids) the broadcast left out.
#[derive(Debug, Clone)]
pub struct HistoryMessage {
    pub offset: String,
    pub packet: ferrio_proto::socket::Packet,
    pub except: Vec<Room>,
}

/// Why a room's history cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Recovery is off, or no window rule covers the room.
    #[error("no history is kept for this room")]
    NotKept,
    /// `since` is not an offset of this namespace.
    #[error("unknown offset")]
    UnknownOffset,
    /// The store that keeps it (Redis, in a cluster) cannot be reached.
    #[error("history is unavailable")]
    Unavailable,
}

/// Rooms with a window of their own, at most, per namespace; past it the least recently
/// written room's window goes (and sessions in it can no longer prove they miss nothing).
const MAX_WINDOWS: usize = 10_000;

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_disconnection_duration: Duration::from_secs(120),
            skip_connect_hook: true,
            max_packets: 10_000,
            max_bytes: 16 << 20,
            max_sessions: 100_000,
            max_missed_packets: 1_000,
            rooms: Vec::new(),
        }
    }
}

/// Whether a socket that went away for `reason` may come back.
pub(crate) fn is_recoverable(reason: DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::Transport(
            CloseReason::TransportError
                | CloseReason::TransportClose
                | CloseReason::ForcedClose
                | CloseReason::PingTimeout
                | CloseReason::ServerShuttingDown
                | CloseReason::ForcedServerClose
        )
    )
}

/// Where a packet sits in the namespace's order: `(0, n)` for offsets this node gives out,
/// `(ms, seq)` for entries of a shared log (a Redis stream id).
pub(crate) type Key = (u64, u64);

/// What keeping a packet costs in memory, about: the frames as sent, the decoded packet (a
/// JSON tree, several times its text) and the entry itself. Measured: ~1.3 KB for a 200-byte
/// event.
fn footprint(packet: &EncodedPacket) -> usize {
    std::mem::size_of::<StoredPacket>() + packet.wire_len() * 5
}

/// Drops the room window written to least recently (bounds on windows and their bytes), in
/// amortized constant time: the oldest entry of the touch log that is still a window's last
/// touch names it.
fn drop_stalest_window(store: &mut Store) {
    let mut stalest = None;
    while let Some((at, room)) = store.touches.pop_front() {
        if store.windows.get(&room).is_some_and(|w| w.touched == at) {
            stalest = Some(room);
            break;
        }
    }
    let Some(room) = stalest else {
        return;
    };
    if let Some(window) = store.windows.remove(&room) {
        store.window_bytes -= window.bytes;
        let newest = window.packets.back().map(|p| p.offset).or(window.horizon);
        store.windows_dropped = store.windows_dropped.max(newest);
    }
}

/// Keeps only each window's last touch in the touch log, oldest first.
fn compact_touches(store: &mut Store) {
    let mut last: Vec<(Instant, Room)> = store
        .windows
        .iter()
        .map(|(r, w)| (w.touched, r.clone()))
        .collect();
    last.sort_by_key(|(at, _)| *at);
    store.touches = last.into();
}

/// Refuses a restore from an offset older than the session's last room change.
fn changed_after(changed: Option<Key>, offset: Key) -> Result<(), Failure> {
    match changed {
        Some(changed) if offset < changed => Err(Failure::RoomsChanged),
        _ => Ok(()),
    }
}

/// Parses a shared log's entry id (`<ms>-<seq>`, as Redis streams write them).
pub fn parse_log_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    if ms.is_empty() || seq.is_empty() || !ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What a claimed session missed, by offset (so in order, each packet once).
type Missed = std::collections::BTreeMap<Key, EncodedPacket>;

/// The key just before a shared log's entry `id`.
fn before((ms, seq): Key) -> Key {
    match seq {
        0 => (ms.saturating_sub(1), u64::MAX),
        _ => (ms, seq - 1),
    }
}

#[derive(Debug)]
struct StoredPacket {
    offset: Key,
    at: Instant,
    rooms: smallvec::SmallVec<[Room; 1]>,
    except: smallvec::SmallVec<[Room; 1]>,
    packet: EncodedPacket,
    bytes: usize,
}

struct Session {
    sid: Sid,
    rooms: Vec<Room>,
    data: Value,
    at: Instant,
    /// Where the namespace was when the socket last joined or left a room.
    changed: Option<Key>,
}

/// Why a client that asked to recover its session did not (the `reason` of
/// `ferrio_recovery_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No disconnected session under that private id: never existed, expired, evicted by
    /// the session bound, or already recovered.
    UnknownSession,
    /// The offset is not one this node gave out (another node's, a previous process's, or
    /// malformed).
    UnknownOffset,
    /// The packets after the offset are no longer all kept (window or size bounds).
    HistoryTrimmed,
    /// More packets were missed than `max_missed_packets`.
    TooManyMissed,
    /// This node's feed from the rest of the cluster broke during the session's absence, so
    /// it cannot know what it missed.
    ClusterGap,
    /// The shared session store (Redis) could not be asked.
    Unavailable,
    /// The socket joined or left a room after the client's last packet: what it was sent in
    /// between cannot be told from what it would have been sent.
    RoomsChanged,
}

impl From<crate::adapter::LogRefusal> for Failure {
    fn from(refusal: crate::adapter::LogRefusal) -> Self {
        use crate::adapter::LogRefusal;
        match refusal {
            LogRefusal::UnknownSession => Failure::UnknownSession,
            LogRefusal::UnknownOffset => Failure::UnknownOffset,
            LogRefusal::HistoryTrimmed => Failure::HistoryTrimmed,
            LogRefusal::TooManyMissed => Failure::TooManyMissed,
            LogRefusal::Unavailable => Failure::Unavailable,
        }
    }
}

impl Failure {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::UnknownSession => "unknown_session",
            Failure::UnknownOffset => "unknown_offset",
            Failure::HistoryTrimmed => "history_trimmed",
            Failure::TooManyMissed => "too_many_missed",
            Failure::ClusterGap => "cluster_gap",
            Failure::Unavailable => "unavailable",
            Failure::RoomsChanged => "rooms_changed",
        }
    }
}

/// A session taken out of the store by a reconnecting client, before its namespace CONNECT
/// is accepted. [`Recovery::resume`] turns it into a restored socket.
#[derive(Debug)]
pub(crate) struct Claim {
    pid: Sid,
    offset: Key,
    sid: Sid,
    rooms: Vec<Room>,
    data: Value,
    /// Shared log only: the packets read back from it after the offset, and the last entry
    /// read (`None`: the offset is in this node's cache, nothing was read).
    read: Option<(Vec<StoredPacket>, Key)>,
    /// Keeps the session's rooms retained (broadcasts from other nodes kept, sharded room
    /// channels subscribed) until the socket is back in them, or the claim is given up.
    hold: Option<Hold>,
}

/// The rooms a claimed session keeps retained; released when dropped.
#[derive(Debug)]
struct Hold {
    store: std::sync::Weak<Mutex<Store>>,
    sid: Sid,
    rooms: Vec<Room>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(store) = self.store.upgrade() {
            store.lock().release_rooms(self.sid, &self.rooms);
        }
    }
}

/// What a successful restore gives back.
#[derive(Debug)]
pub(crate) struct Restored {
    pub sid: Sid,
    pub pid: Sid,
    pub rooms: Vec<Room>,
    pub data: Value,
    pub missed: Vec<EncodedPacket>,
}

#[derive(Default)]
struct Store {
    packets: VecDeque<StoredPacket>,
    bytes: usize,
    next_offset: u64,
    sessions: HashMap<Sid, Session>,
    /// Sessions in the order they were persisted, for expiry and the count bound.
    order: VecDeque<(Instant, Sid)>,
    /// Rooms (and socket ids) of the kept sessions, with how many sessions are in each: a
    /// cluster adapter keeps receiving their broadcasts while nobody here is in them.
    retained: HashMap<Room, usize>,
    /// The cluster feed is down now: nothing can be proven complete.
    gap_open: bool,
    /// The cluster feed may be down (its connection stopped answering): refused meanwhile,
    /// and forgotten if the same connection answers again.
    suspect: bool,
    /// The first offset recorded after the cluster feed last came back: a session whose
    /// offset is older may have missed what other nodes sent meanwhile.
    gap_end: Option<Key>,
    /// The newest packet trimmed from the namespace's window.
    horizon: Option<Key>,
    /// Shared log only: the last entry delivered here.
    delivered: Option<Key>,
    /// Shared log only: the newest entry that may never have reached this cache (it came
    /// before this node started reading, or during a break in reading).
    blind: Option<Key>,
    /// Shared log only: reading broke; the next entry delivered marks where it resumed.
    rebase: bool,
    /// Rooms with a window of their own.
    windows: HashMap<Room, Window>,
    /// Every write to a window, oldest first (entries a later write made stale are skipped
    /// and compacted away): which window was written to least recently.
    touches: VecDeque<(Instant, Room)>,
    window_bytes: usize,
    /// The newest packet of any window that was dropped whole.
    windows_dropped: Option<Key>,
}

/// One room's own window of packets.
struct Window {
    rule: usize,
    packets: VecDeque<StoredPacket>,
    bytes: usize,
    /// The newest packet trimmed from it.
    horizon: Option<Key>,
    touched: Instant,
}

impl Store {
    fn keep(&mut self, offset: Key, opts: &BroadcastOptions, packet: &EncodedPacket, at: Instant) {
        let bytes = footprint(packet);
        self.packets.push_back(StoredPacket {
            offset,
            at,
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            packet: packet.clone(),
            bytes,
        });
        self.bytes += bytes;
    }

    fn retain(&mut self, session: &Session) {
        let own = Room::from(session.sid.as_str());
        for room in session.rooms.iter().chain(std::iter::once(&own)) {
            *self.retained.entry(room.clone()).or_default() += 1;
        }
    }

    fn release_rooms(&mut self, sid: Sid, rooms: &[Room]) {
        let own = Room::from(sid.as_str());
        for room in rooms.iter().chain(std::iter::once(&own)) {
            if let Some(n) = self.retained.get_mut(room) {
                *n -= 1;
                if *n == 0 {
                    self.retained.remove(room);
                }
            }
        }
    }

    fn take_session(&mut self, pid: &Sid) -> Option<Session> {
        let session = self.sessions.remove(pid)?;
        self.release_rooms(session.sid, &session.rooms);
        Some(session)
    }
}

/// The packets and sessions of one namespace.
pub(crate) struct Recovery {
    config: RecoveryConfig,
    /// Distinguishes this process's offsets from a previous one's (and another node's).
    epoch: String,
    store: Arc<Mutex<Store>>,
    /// Sessions and packets kept by the cluster adapter in a shared log (Redis streams):
    /// offsets are the log's entry ids, sessions live there, and the store above is this
    /// node's cache of what it delivered.
    log: Option<Arc<dyn SessionLog>>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Recovery {
    #[cfg(test)]
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        Self::with_log(config, None)
    }

    pub(crate) fn with_log(config: RecoveryConfig, log: Option<Arc<dyn SessionLog>>) -> Self {
        let epoch = format!("{:016x}", rand::random::<u64>());
        Self {
            config,
            epoch,
            store: Arc::new(Mutex::new(Store::default())),
            log,
        }
    }

    /// The shared log, when the cluster adapter keeps recovery.
    pub(crate) fn log(&self) -> Option<&Arc<dyn SessionLog>> {
        self.log.as_ref()
    }

    /// How often a connected socket's state is written again to the shared log.
    pub(crate) fn refresh_interval(&self) -> Duration {
        (self.config.max_disconnection_duration / 4).max(Duration::from_secs(1))
    }

    /// Writes a connected socket's state to the shared log (it lives on past the node's
    /// death for at least `max_disconnection_duration`).
    pub(crate) fn write_through(
        &self,
        pid: Sid,
        sid: Sid,
        rooms: Vec<Room>,
        data: Value,
        changed: Option<Key>,
    ) {
        if let Some(log) = &self.log {
            let ttl = self.config.max_disconnection_duration + self.refresh_interval();
            let changed = changed.map(|(ms, seq)| format!("{ms}-{seq}"));
            log.persist(pid, sid, rooms, data, changed, ttl);
        }
    }

    /// A socket left for good: its session must not come back.
    pub(crate) fn forget(&self, pid: Sid) {
        if let Some(log) = &self.log {
            log.forget(pid);
        }
    }

    pub(crate) fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    fn offset_text(&self, offset: u64) -> String {
        format!("{}-{offset:x}", self.epoch)
    }

    fn parse_offset(&self, text: &str) -> Option<Key> {
        let (epoch, n) = text.split_once('-')?;
        if epoch != self.epoch {
            return None;
        }
        u64::from_str_radix(n, 16).ok().map(|n| (0, n))
    }

    /// Appends an offset to an event's arguments, keeps the packet, and hands it to `deliver`
    /// while no other packet of the namespace can be recorded or delivered: every socket
    /// receives the namespace's packets in offset order, so the offset a client holds marks
    /// exactly what it has.
    pub(crate) fn record<R>(
        &self,
        build: impl FnOnce(String) -> EncodedPacket,
        opts: &BroadcastOptions,
        deliver: impl FnOnce(&EncodedPacket) -> R,
    ) -> R {
        let now = Instant::now();
        let mut store = self.store.lock();
        let offset = store.next_offset;
        store.next_offset += 1;
        let packet = build(self.offset_text(offset));
        self.keep_packet(&mut store, (0, offset), opts, &packet, now);
        self.trim(&mut store, now);
        deliver(&packet)
    }

    /// Whether a broadcast from another node concerns a kept session (so a cluster adapter
    /// must keep it although no local socket is in its rooms).
    pub(crate) fn retains(&self, room: &str) -> bool {
        self.store.lock().retained.contains_key(room)
    }

    /// The feed of broadcasts from other nodes broke (a cluster adapter lost Redis):
    /// sessions cannot be proven complete until it is back.
    pub(crate) fn feed_lost(&self) {
        self.store.lock().gap_open = true;
    }

    /// The feed's connection stopped answering (`true`), or answers again on the same
    /// connection (`false`: nothing was lost).
    pub(crate) fn feed_suspect(&self, suspect: bool) {
        self.store.lock().suspect = suspect;
    }

    /// Where the namespace is now: the key the next kept packet comes after.
    pub(crate) fn position(&self) -> Key {
        let store = self.store.lock();
        if self.log.is_some() {
            store.delivered.unwrap_or((0, 0))
        } else {
            (0, store.next_offset)
        }
    }

    /// The feed is back: sessions whose offset predates this point stay unrecoverable.
    pub(crate) fn feed_restored(&self) {
        let mut store = self.store.lock();
        store.suspect = false;
        if store.gap_open {
            store.gap_open = false;
            store.gap_end = Some((0, store.next_offset));
        }
    }

    /// Whether a room keeps a window of its own (a history).
    pub(crate) fn keeps_history(&self, room: &str) -> bool {
        self.window_for(room).is_some()
    }

    /// The window rule of a room (never a socket's own room).
    fn window_for(&self, room: &str) -> Option<usize> {
        if self.config.rooms.is_empty() || room.parse::<Sid>().is_ok() {
            return None;
        }
        self.config.rooms.iter().position(|w| w.matches(room))
    }

    /// Keeps a packet: in the window of each of its rooms that has one, and in the
    /// namespace's window unless every room it goes to has its own.
    fn keep_packet(
        &self,
        store: &mut Store,
        offset: Key,
        opts: &BroadcastOptions,
        packet: &EncodedPacket,
        now: Instant,
    ) {
        let mut everywhere_windowed = !opts.rooms.is_empty();
        for room in &opts.rooms {
            let Some(rule) = self.window_for(room) else {
                everywhere_windowed = false;
                continue;
            };
            if !store.windows.contains_key(room) && store.windows.len() >= MAX_WINDOWS {
                drop_stalest_window(store);
            }
            let bytes = footprint(packet);
            // A window dropped earlier (bounds) lost what it held: a new one starts from there.
            let dropped = store.windows_dropped;
            let window = store.windows.entry(room.clone()).or_insert_with(|| Window {
                rule,
                packets: VecDeque::new(),
                bytes: 0,
                horizon: dropped,
                touched: now,
            });
            window.packets.push_back(StoredPacket {
                offset,
                at: now,
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                packet: packet.clone(),
                bytes,
            });
            window.bytes += bytes;
            window.touched = now;
            store.touches.push_back((now, room.clone()));
            if store.touches.len() > 2 * store.windows.len() + 64 {
                compact_touches(store);
            }
            store.window_bytes += bytes;
            self.trim_window(store, room, now);
        }
        while store.window_bytes > self.config.max_bytes && !store.windows.is_empty() {
            drop_stalest_window(store);
        }
        if !everywhere_windowed {
            store.keep(offset, opts, packet, now);
        }
    }

    /// Trims one room's window to its size and age.
    fn trim_window(&self, store: &mut Store, room: &str, now: Instant) {
        let Some(window) = store.windows.get_mut(room) else {
            return;
        };
        let rule = &self.config.rooms[window.rule];
        let oldest = now.checked_sub(rule.ttl);
        let mut freed = 0;
        while let Some(front) = window.packets.front() {
            if window.packets.len() > rule.size || oldest.is_some_and(|o| front.at < o) {
                window.horizon = Some(front.offset);
                window.bytes -= front.bytes;
                freed += front.bytes;
                window.packets.pop_front();
            } else {
                break;
            }
        }
        store.window_bytes -= freed;
    }

    /// Whether a room's packets after `offset` are all here: in its own window, or (when it
    /// has none) in the namespace's.
    fn covers(&self, store: &mut Store, room: &str, offset: Key, now: Instant) -> bool {
        if self.window_for(room).is_none() {
            return true;
        }
        if store.blind.is_some_and(|b| b > offset) {
            return false;
        }
        self.trim_window(store, room, now);
        match store.windows.get(room) {
            Some(window) => window.horizon.is_none_or(|h| h <= offset),
            None => store.windows_dropped.is_none_or(|h| h <= offset),
        }
    }

    fn trim(&self, store: &mut Store, now: Instant) {
        let horizon = now.checked_sub(self.config.max_disconnection_duration);
        while let Some(front) = store.packets.front() {
            let too_old = horizon.is_some_and(|h| front.at < h);
            if too_old || store.packets.len() > self.config.max_packets || store.bytes > self.config.max_bytes
            {
                store.bytes -= front.bytes;
                store.horizon = Some(front.offset);
                store.packets.pop_front();
            } else {
                break;
            }
        }
        while let Some(&(at, pid)) = store.order.front() {
            let too_old = horizon.is_some_and(|h| at < h);
            if too_old || store.order.len() > self.config.max_sessions {
                store.order.pop_front();
                if store.sessions.get(&pid).is_some_and(|s| s.at == at) {
                    store.take_session(&pid);
                }
            } else {
                break;
            }
        }
    }

    /// Keeps a disconnected socket's state under its private id.
    pub(crate) fn persist(&self, pid: Sid, sid: Sid, rooms: Vec<Room>, data: Value, changed: Option<Key>) {
        if let Some(log) = &self.log {
            let changed = changed.map(|(ms, seq)| format!("{ms}-{seq}"));
            log.persist(
                pid,
                sid,
                rooms,
                data,
                changed,
                self.config.max_disconnection_duration,
            );
            return;
        }
        let now = Instant::now();
        let mut store = self.store.lock();
        store.take_session(&pid);
        if rooms.len() > MAX_ROOMS_KEPT {
            // Not kept: a session in that many rooms would hold them all retained.
            return;
        }
        let session = Session {
            sid,
            rooms,
            data,
            at: now,
            changed,
        };
        store.retain(&session);
        store.sessions.insert(pid, session);
        store.order.push_back((now, pid));
        self.trim(&mut store, now);
    }

    /// Checks that a session can come back (known, not expired, offset still kept, no
    /// gap in the cluster feed) and takes it out of the store. The packets it missed are
    /// collected by [`Recovery::resume`], when the socket is ready to receive them.
    pub(crate) fn claim(&self, pid: &str, offset: &str) -> Result<Claim, Failure> {
        let now = Instant::now();
        let mut store = self.store.lock();
        self.trim(&mut store, now);
        let pid: Sid = pid.parse().map_err(|_| Failure::UnknownSession)?;
        // Out of the session table at once (a session is claimed once), but its rooms stay
        // retained until the socket is back in them.
        let session = store.sessions.remove(&pid).ok_or(Failure::UnknownSession)?;
        let hold = Hold {
            store: Arc::downgrade(&self.store),
            sid: session.sid,
            rooms: session.rooms.clone(),
        };
        let offset = match self.parse_offset(offset) {
            Some(offset) => offset,
            None => {
                drop(store);
                drop(hold);
                return Err(Failure::UnknownOffset);
            }
        };
        let checked = self
            .check(&store, offset)
            .and_then(|_| changed_after(session.changed, offset));
        if let Err(failure) = checked {
            drop(store);
            drop(hold);
            return Err(failure);
        }
        Ok(Claim {
            pid,
            offset,
            sid: session.sid,
            rooms: session.rooms,
            data: session.data,
            read: None,
            hold: Some(hold),
        })
    }

    /// Whether everything after `offset` is still here and nothing bypassed the store.
    fn check(&self, store: &Store, offset: Key) -> Result<(), Failure> {
        if offset >= (0, store.next_offset) {
            return Err(Failure::UnknownOffset);
        }
        if store.gap_open || store.suspect || store.gap_end.is_some_and(|end| offset < end) {
            return Err(Failure::ClusterGap);
        }
        // Nothing after the offset may have been trimmed from the namespace's window.
        if store.horizon.is_some_and(|h| h > offset) {
            return Err(Failure::HistoryTrimmed);
        }
        Ok(())
    }

    /// Collects what a claimed session missed and hands it to `attach` while no packet of the
    /// namespace can be recorded or delivered, so that the socket `attach` registers (in its
    /// rooms) neither misses nor doubles a packet recorded meanwhile, and gets the missed ones
    /// before any newer one.
    pub(crate) fn resume<R>(
        &self,
        mut claim: Claim,
        attach: impl FnOnce(Result<Restored, Failure>) -> R,
    ) -> R {
        let now = Instant::now();
        let hold = claim.hold.take();
        let mut store = self.store.lock();
        if let Some(mut hold) = hold {
            // Released here, under the lock, by hand (its drop would lock again): from now
            // on the socket itself, put in its rooms by `attach`, keeps them hosted.
            store.release_rooms(hold.sid, &hold.rooms);
            hold.store = std::sync::Weak::new();
        }
        self.trim(&mut store, now);
        let result = if self.log.is_some() {
            self.collect_logged(&mut store, &claim)
        } else {
            self.collect_local(&mut store, &claim)
        };
        let result = result.map(|missed| Restored {
            sid: claim.sid,
            pid: claim.pid,
            rooms: claim.rooms,
            data: claim.data,
            missed,
        });
        let out = attach(result);
        drop(store);
        out
    }

    fn collect_local(&self, store: &mut Store, claim: &Claim) -> Result<Vec<EncodedPacket>, Failure> {
        self.check(store, claim.offset)?;
        let mut missed = Missed::default();
        self.gather_cached(store, claim, claim.offset, (u64::MAX, u64::MAX), &mut missed)?;
        Ok(missed.into_values().collect())
    }

    /// Adds to `missed` what this node's cache holds for a claimed session after `from` and up
    /// to `upto`: the namespace's window and the session's rooms' own, each of which must still
    /// hold everything after `from`.
    fn gather_cached(
        &self,
        store: &mut Store,
        claim: &Claim,
        from: Key,
        upto: Key,
        missed: &mut Missed,
    ) -> Result<(), Failure> {
        let now = Instant::now();
        for room in &claim.rooms {
            if !self.covers(store, room, from, now) {
                return Err(Failure::HistoryTrimmed);
            }
        }
        let windows = claim.rooms.iter().filter_map(|r| store.windows.get(r));
        for packets in std::iter::once(&store.packets).chain(windows.map(|w| &w.packets)) {
            let start = packets.partition_point(|p| p.offset <= from);
            for p in packets.range(start..).take_while(|p| p.offset <= upto) {
                self.add_missed(missed, claim, p)?;
            }
        }
        Ok(())
    }

    /// Adds a packet to what a claimed session missed if it was addressed to the session (and
    /// not there yet), within `max_missed_packets`.
    fn add_missed(&self, missed: &mut Missed, claim: &Claim, p: &StoredPacket) -> Result<(), Failure> {
        let own = Room::from(claim.sid.as_str());
        let in_rooms = |rooms: &[Room]| rooms.iter().any(|r| *r == own || claim.rooms.contains(r));
        let addressed = (p.rooms.is_empty() || in_rooms(&p.rooms)) && !in_rooms(&p.except);
        if addressed && !missed.contains_key(&p.offset) {
            if missed.len() == self.config.max_missed_packets {
                return Err(Failure::TooManyMissed);
            }
            missed.insert(p.offset, p.packet.clone());
        }
        Ok(())
    }

    /// The packets kept in a room's own window: the first `limit` after `since`, or without
    /// it the newest `limit`, each with its offset; and whether nothing sent to the room after
    /// `since` was trimmed.
    pub(crate) fn history(
        &self,
        room: &str,
        since: Option<&str>,
        limit: usize,
    ) -> Result<History, HistoryError> {
        if self.window_for(room).is_none() {
            return Err(HistoryError::NotKept);
        }
        let since = match since {
            None => None,
            Some(text) => Some(
                if self.log.is_some() {
                    parse_log_id(text)
                } else {
                    self.parse_offset(text)
                }
                .ok_or(HistoryError::UnknownOffset)?,
            ),
        };
        let now = Instant::now();
        let mut store = self.store.lock();
        let complete = match since {
            Some(since) => self.covers(&mut store, room, since, now),
            None => true,
        };
        let Some(window) = store.windows.get(room) else {
            return Ok(History {
                messages: Vec::new(),
                complete,
            });
        };
        let range = match since {
            Some(since) => {
                let from = window.packets.partition_point(|p| p.offset <= since);
                from..window.packets.len().min(from.saturating_add(limit))
            }
            None => window.packets.len().saturating_sub(limit)..window.packets.len(),
        };
        let messages = window
            .packets
            .range(range)
            .map(|p| HistoryMessage {
                offset: if self.log.is_some() {
                    format!("{}-{}", p.offset.0, p.offset.1)
                } else {
                    self.offset_text(p.offset.1)
                },
                packet: p.packet.packet().clone(),
                except: p.except.to_vec(),
            })
            .collect();
        Ok(History { messages, complete })
    }

    // ---------------------------------------------------------------------------------
    // Shared log (the cluster adapter keeps sessions and packets)

    /// Delivers an entry of the shared log, in log order: `deliver` gets the packet to keep
    /// (with its id as offset) when there is one, `None` to deliver the entry as it is. An
    /// entry at or before the last one delivered is skipped (0).
    pub(crate) fn record_logged(
        &self,
        id: (u64, u64),
        opts: &BroadcastOptions,
        keep: Option<EncodedPacket>,
        deliver: impl FnOnce(Option<&EncodedPacket>) -> usize,
    ) -> usize {
        let now = Instant::now();
        let mut store = self.store.lock();
        if store.delivered.is_some_and(|d| id <= d) {
            return 0;
        }
        // The first entry this node reads, or the first after a break: whatever came before
        // may never reach it.
        if store.delivered.is_none() || store.rebase {
            store.blind = store.blind.max(Some(before(id)));
        }
        store.rebase = false;
        store.delivered = Some(id);
        let Some(packet) = keep else {
            return deliver(None);
        };
        self.keep_packet(&mut store, id, opts, &packet, now);
        self.trim(&mut store, now);
        deliver(Some(&packet))
    }

    /// Reading the shared log broke and entries up to the current end may never have been
    /// delivered here: the cache no longer proves anything older.
    pub(crate) fn log_broke(&self) {
        let mut store = self.store.lock();
        store.blind = store.blind.max(store.delivered);
        store.rebase = true;
    }

    /// Whether this node's cache holds everything after `offset` that went to the namespace
    /// at large (the rooms with windows of their own are checked once the session's rooms are
    /// known): a restore then needs nothing read back from the log. An offset this node has
    /// not reached yet is read back.
    pub(crate) fn cache_holds(&self, offset: &str) -> bool {
        let Some(key) = parse_log_id(offset) else {
            return false;
        };
        let store = self.store.lock();
        store.delivered.is_some_and(|d| key <= d)
            && store.blind.is_none_or(|b| b <= key)
            && store.horizon.is_none_or(|h| h <= key)
    }

    /// A claim on a session the shared log gave back.
    pub(crate) fn claim_logged(
        &self,
        pid: Sid,
        offset: &str,
        session: crate::adapter::LoggedSession,
    ) -> Result<Claim, Failure> {
        let offset = parse_log_id(offset).ok_or(Failure::UnknownOffset)?;
        let read = match session.missed {
            Some((packets, until)) => {
                let until = parse_log_id(&until).ok_or(Failure::UnknownOffset)?;
                let mut kept = Vec::with_capacity(packets.len());
                for p in packets {
                    let id = parse_log_id(&p.id).ok_or(Failure::UnknownOffset)?;
                    let mut packet = p.packet;
                    if let Some(Value::Array(args)) = &mut packet.data {
                        args.push(Value::String(p.id));
                    }
                    let packet = EncodedPacket::new(packet);
                    kept.push(StoredPacket {
                        offset: id,
                        at: Instant::now(),
                        rooms: p.opts.rooms,
                        except: p.opts.except,
                        bytes: packet.wire_len(),
                        packet,
                    });
                }
                Some((kept, until))
            }
            None => None,
        };
        let changed = session.rooms_changed_at.as_deref().and_then(parse_log_id);
        changed_after(changed, offset)?;
        Ok(Claim {
            pid,
            offset,
            sid: session.sid,
            rooms: session.rooms,
            data: session.data,
            read,
            hold: None,
        })
    }

    /// [`Recovery::resume`] for a shared log: what was read back from the log up to what
    /// this node delivered, then this node's cache after it (the namespace's window and the
    /// windows of the session's rooms, each of which must hold everything after that point).
    fn collect_logged(&self, store: &mut Store, claim: &Claim) -> Result<Vec<EncodedPacket>, Failure> {
        // Nothing delivered here yet: where the node reads the log (every later entry will
        // come), or, before it knows, nothing can be proven.
        let delivered = match store.delivered {
            Some(delivered) => delivered,
            None => self
                .log
                .as_ref()
                .and_then(|log| log.position())
                .and_then(|p| parse_log_id(&p))
                .ok_or(Failure::Unavailable)?,
        };
        let mut missed = Missed::default();
        let from = match &claim.read {
            Some((read, until)) => {
                // Entries read but not yet delivered here reach the socket live, after it
                // joins its rooms.
                for p in read.iter().filter(|p| p.offset <= delivered) {
                    self.add_missed(&mut missed, claim, p)?;
                }
                (*until).max(claim.offset)
            }
            None => claim.offset,
        };
        if delivered > from {
            let hidden = |h: Option<Key>| h.is_some_and(|h| h > from);
            if hidden(store.blind) || hidden(store.horizon) {
                return Err(Failure::HistoryTrimmed);
            }
            self.gather_cached(store, claim, from, delivered, &mut missed)?;
        }
        Ok(missed.into_values().collect())
    }

    #[cfg(test)]
    fn stored(&self) -> (usize, usize, usize) {
        let s = self.store.lock();
        (s.packets.len(), s.bytes, s.sessions.len())
    }

    #[cfg(test)]
    fn restore(&self, pid: &str, offset: &str) -> Result<Restored, Failure> {
        let claim = self.claim(pid, offset)?;
        self.resume(claim, |r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn opts(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except: except.iter().map(|r| Room::from(*r)).collect(),
            ..Default::default()
        }
    }

    fn record(r: &Recovery, n: u32, o: &BroadcastOptions) -> String {
        let mut off = String::new();
        r.record(
            |offset| {
                off = offset.clone();
                EncodedPacket::event("/", "m", Payload::args(vec![n.into(), offset.into()]), None)
            },
            o,
            |_| (),
        );
        off
    }

    fn text(p: &EncodedPacket) -> String {
        p.packet().encode()
    }

    #[tokio::test]
    async fn restores_rooms_and_missed_packets_in_order() {
        let r = Recovery::new(RecoveryConfig::default());
        let sid = Sid::random();
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, sid, vec![Room::from("a")], serde_json::json!({"k": 1}), None);
        record(&r, 1, &opts(&["a"], &[]));
        record(&r, 2, &opts(&["b"], &[]));
        record(&r, 3, &opts(&[sid.as_str()], &[]));
        record(&r, 4, &opts(&[], &["a"]));
        record(&r, 5, &opts(&[], &[]));
        let back = r.restore(pid.as_str(), &seen).unwrap();
        assert_eq!(back.sid, sid);
        assert_eq!(back.rooms, vec![Room::from("a")]);
        let missed: Vec<String> = back.missed.iter().map(text).collect();
        assert_eq!(missed.len(), 3, "{missed:?}");
        assert!(missed[0].starts_with(r#"2["m",1,"#));
        assert!(missed[1].starts_with(r#"2["m",3,"#));
        assert!(missed[2].starts_with(r#"2["m",5,"#));
        // A session is restored once.
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::UnknownSession
        );
    }

    #[tokio::test]
    async fn unknown_or_foreign_offsets_and_pids_fail() {
        let r = Recovery::new(RecoveryConfig::default());
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null, None);
        assert_eq!(
            r.restore(Sid::random().as_str(), &seen).unwrap_err(),
            Failure::UnknownSession
        );
        assert_eq!(r.restore("short", &seen).unwrap_err(), Failure::UnknownSession);
        assert!(r.restore(pid.as_str(), &seen).is_ok());
        // A failed attempt uses the session up: offsets cannot be tried one after another.
        for bad in ["zz-0", "nonsense", &format!("{}-ffff", r.epoch)] {
            let pid = Sid::random();
            r.persist(pid, Sid::random(), vec![], Value::Null, None);
            assert_eq!(
                r.restore(pid.as_str(), bad).unwrap_err(),
                Failure::UnknownOffset,
                "{bad}"
            );
            assert_eq!(
                r.restore(pid.as_str(), &seen).unwrap_err(),
                Failure::UnknownSession
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn everything_expires_after_the_disconnection_duration() {
        let r = Recovery::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(10),
            ..Default::default()
        });
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null, None);
        tokio::time::advance(Duration::from_secs(11)).await;
        record(&r, 1, &opts(&[], &[]));
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::UnknownSession
        );
        let (packets, _, sessions) = r.stored();
        assert_eq!(
            (packets, sessions),
            (1, 0),
            "expired packets and sessions are dropped"
        );
    }

    #[tokio::test]
    async fn bounds_hold_and_fail_recovery_cleanly() {
        let r = Recovery::new(RecoveryConfig {
            max_packets: 5,
            max_missed_packets: 3,
            max_sessions: 2,
            ..Default::default()
        });
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null, None);
        for n in 1..=4 {
            record(&r, n, &opts(&[], &[]));
        }
        // Missed 4 packets, 3 allowed: no recovery.
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::TooManyMissed
        );
        // The packet store never holds more than its bound.
        for n in 0..100 {
            record(&r, n, &opts(&[], &[]));
        }
        assert_eq!(r.stored().0, 5);
        // Nor the session store.
        for _ in 0..10 {
            r.persist(Sid::random(), Sid::random(), vec![], Value::Null, None);
        }
        assert_eq!(r.stored().2, 2);
        let (_, bytes, _) = r.stored();
        // Five packets of a few dozen bytes each, counted at what they cost in memory.
        assert!(bytes > 5 * 312 && bytes < 5 * (312 + 5 * 64), "{bytes}");
    }

    #[tokio::test]
    async fn a_trimmed_window_refuses_instead_of_replaying_a_part() {
        let r = Recovery::new(RecoveryConfig {
            max_packets: 5,
            ..Default::default()
        });
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null, None);
        for n in 1..=20 {
            record(&r, n, &opts(&[], &[]));
        }
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::HistoryTrimmed
        );
    }

    #[tokio::test]
    async fn a_break_in_the_cluster_feed_refuses_older_offsets_only() {
        let r = Recovery::new(RecoveryConfig::default());
        let before = record(&r, 0, &opts(&[], &[]));
        let (a, b) = (Sid::random(), Sid::random());
        r.persist(a, Sid::random(), vec![], Value::Null, None);
        r.feed_lost();
        // While the feed is down, nothing can be proven complete.
        let during = record(&r, 1, &opts(&[], &[]));
        r.persist(b, Sid::random(), vec![], Value::Null, None);
        let c = Sid::random();
        r.persist(c, Sid::random(), vec![], Value::Null, None);
        assert_eq!(r.restore(c.as_str(), &during).unwrap_err(), Failure::ClusterGap);
        r.feed_restored();
        assert_eq!(r.restore(a.as_str(), &before).unwrap_err(), Failure::ClusterGap);
        assert_eq!(r.restore(b.as_str(), &during).unwrap_err(), Failure::ClusterGap);
        // A session whose last packet came after the feed was back is whole.
        let after = record(&r, 2, &opts(&[], &[]));
        let d = Sid::random();
        r.persist(d, Sid::random(), vec![], Value::Null, None);
        record(&r, 3, &opts(&[], &[]));
        assert_eq!(r.restore(d.as_str(), &after).unwrap().missed.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn kept_sessions_retain_their_rooms_until_they_end() {
        let r = Recovery::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(10),
            ..Default::default()
        });
        let seen = record(&r, 0, &opts(&[], &[]));
        let (pid, sid) = (Sid::random(), Sid::random());
        r.persist(pid, sid, vec![Room::from("a")], Value::Null, None);
        let other = Sid::random();
        r.persist(
            other,
            Sid::random(),
            vec![Room::from("a"), Room::from("b")],
            Value::Null,
            None,
        );
        assert!(r.retains("a") && r.retains("b") && r.retains(sid.as_str()));
        assert!(!r.retains("c"));
        r.restore(pid.as_str(), &seen).unwrap();
        assert!(r.retains("a") && !r.retains(sid.as_str()));
        tokio::time::advance(Duration::from_secs(11)).await;
        record(&r, 1, &opts(&[], &[]));
        assert!(
            !r.retains("a") && !r.retains("b"),
            "expired sessions release their rooms"
        );
    }

    fn windowed(max_packets: usize, size: usize) -> Recovery {
        Recovery::new(RecoveryConfig {
            max_packets,
            rooms: vec![RoomWindow {
                pattern: "chat:*".into(),
                size,
                ttl: Duration::from_secs(60),
            }],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_busy_room_does_not_push_a_quiet_rooms_packets_out() {
        let r = windowed(5, 100);
        let (pid, sid) = (Sid::random(), Sid::random());
        let seen = record(&r, 0, &opts(&["chat:quiet"], &[]));
        r.persist(pid, sid, vec![Room::from("chat:quiet")], Value::Null, None);
        for n in 1..=50 {
            record(&r, n, &opts(&["chat:busy"], &[]));
        }
        record(&r, 51, &opts(&["chat:quiet"], &[]));
        record(&r, 52, &opts(&["chat:quiet", "chat:busy"], &[]));
        let back = r.restore(pid.as_str(), &seen).unwrap();
        let missed: Vec<String> = back.missed.iter().map(text).collect();
        assert_eq!(missed.len(), 2, "{missed:?}");
        assert!(missed[0].starts_with(r#"2["m",51,"#));
        assert!(missed[1].starts_with(r#"2["m",52,"#));
        // The namespace's window holds what no room window does: it stayed small.
        assert!(r.stored().0 <= 5);
    }

    /// A shared log that is never asked anything: the cache answers.
    struct Unused;
    impl SessionLog for Unused {
        fn persist(&self, _: Sid, _: Sid, _: Vec<Room>, _: Value, _: Option<String>, _: Duration) {}
        fn forget(&self, _: Sid) {}
        fn restore(
            &self,
            _: Sid,
            _: String,
            _: bool,
            _: usize,
        ) -> futures_util::future::BoxFuture<'static, Result<crate::LoggedSession, crate::LogRefusal>>
        {
            unreachable!()
        }
    }

    /// Delivers a shared log's entry `ms-0` to a room, as a cluster adapter does.
    fn logged(r: &Recovery, ms: u64, room: &str) {
        let packet = EncodedPacket::event(
            "/",
            "m",
            Payload::args(vec![ms.into(), format!("{ms}-0").into()]),
            None,
        );
        r.record_logged((ms, 0), &opts(&[room], &[]), Some(packet.with_offset()), |_| 0);
    }

    /// A node reading the shared log restores a session from its cache with every room's own
    /// window: a busy room pushing entries out of the namespace's window (and out of the log
    /// itself) does not cost a quiet room its packets; a node that started reading after the
    /// offset, or broke off reading, refuses.
    #[tokio::test]
    async fn a_shared_logs_cache_keeps_each_rooms_window() {
        let mut config = windowed(5, 100).config;
        config.rooms[0].size = 20;
        let r = Recovery::with_log(config.clone(), Some(Arc::new(Unused)));
        let session = |rooms: &[&str]| crate::LoggedSession {
            sid: Sid::random(),
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            data: Value::Null,
            missed: None,
            rooms_changed_at: None,
        };
        let restore = |r: &Recovery, offset: &str, rooms: &[&str]| {
            assert!(r.cache_holds(offset), "{offset}");
            let claim = r.claim_logged(Sid::random(), offset, session(rooms))?;
            r.resume(claim, |restored| {
                restored.map(|back| back.missed.iter().map(text).collect::<Vec<_>>())
            })
        };
        logged(&r, 100, "chat:quiet");
        for ms in 101..=200 {
            logged(&r, ms, "chat:busy");
        }
        logged(&r, 201, "chat:quiet");
        logged(&r, 202, "lobby");
        let missed = restore(&r, "100-0", &["chat:quiet"]).unwrap();
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(missed[0].starts_with(r#"2["m",201,"#), "{missed:?}");
        // The lobby has no window: the namespace's holds it.
        let missed = restore(&r, "100-0", &["chat:quiet", "lobby"]).unwrap();
        assert_eq!(missed.len(), 2, "{missed:?}");
        // The busy room's own window (20) was trimmed past the offset.
        assert_eq!(
            restore(&r, "100-0", &["chat:busy"]).unwrap_err(),
            Failure::HistoryTrimmed
        );
        assert_eq!(restore(&r, "195-0", &["chat:busy"]).unwrap().len(), 5);

        // A node whose first entry is after the offset cannot know what came before.
        let late = Recovery::with_log(config, Some(Arc::new(Unused)));
        logged(&late, 300, "chat:quiet");
        assert!(!late.cache_holds("250-0"));
        let claim = late
            .claim_logged(Sid::random(), "250-0", session(&["chat:quiet"]))
            .unwrap();
        assert_eq!(
            late.resume(claim, |x| x.map(drop)).unwrap_err(),
            Failure::HistoryTrimmed
        );
        assert_eq!(restore(&late, "300-0", &["chat:quiet"]).unwrap().len(), 0);
        // A break in reading hides everything up to where reading resumed (305), not only
        // up to where it stood (301).
        logged(&late, 301, "chat:quiet");
        late.log_broke();
        logged(&late, 305, "chat:quiet");
        for offset in ["300-0", "301-0", "303-0", "304-9"] {
            assert!(!late.cache_holds(offset), "{offset}");
            let claim = late
                .claim_logged(Sid::random(), offset, session(&["chat:quiet"]))
                .unwrap();
            assert_eq!(
                late.resume(claim, |x| x.map(drop)).unwrap_err(),
                Failure::HistoryTrimmed
            );
        }
        assert_eq!(restore(&late, "305-0", &["chat:quiet"]).unwrap().len(), 0);

        // A node that has delivered nothing and does not know where it reads proves nothing.
        let fresh = Recovery::with_log(late.config.clone(), Some(Arc::new(Unused)));
        let mut read = session(&["chat:quiet"]);
        read.missed = Some((Vec::new(), "400-0".into()));
        let claim = fresh.claim_logged(Sid::random(), "390-0", read).unwrap();
        assert_eq!(
            fresh.resume(claim, |x| x.map(drop)).unwrap_err(),
            Failure::Unavailable
        );
    }

    /// Past the bound on windows the one written to least recently goes, found without a
    /// scan, and the touch log stays within a small multiple of the windows.
    #[tokio::test(start_paused = true)]
    async fn the_window_written_to_least_recently_goes_first() {
        let r = Recovery::new(RecoveryConfig {
            rooms: vec![RoomWindow {
                pattern: "*".into(),
                size: 2,
                ttl: Duration::from_secs(60),
            }],
            ..Default::default()
        });
        for i in 0..MAX_WINDOWS {
            record(&r, 0, &opts(&[format!("r{i}").as_str()], &[]));
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        record(&r, 1, &opts(&["r0"], &[]));
        tokio::time::advance(Duration::from_micros(1)).await;
        record(&r, 2, &opts(&["new"], &[]));
        let store = r.store.lock();
        assert_eq!(store.windows.len(), MAX_WINDOWS);
        assert!(store.windows.contains_key("r0"), "written to again: kept");
        assert!(!store.windows.contains_key("r1"), "the stalest went");
        assert!(store.windows.contains_key("new"));
        assert!(store.touches.len() <= 2 * store.windows.len() + 64);
    }

    /// A room window dropped by the bounds and written to again does not claim to hold what
    /// the dropped one had.
    #[tokio::test]
    async fn a_dropped_window_written_again_does_not_cover_older_offsets() {
        let r = windowed(100, 100);
        let (pid, sid) = (Sid::random(), Sid::random());
        let seen = record(&r, 0, &opts(&["chat:quiet"], &[]));
        record(&r, 1, &opts(&["chat:quiet"], &[]));
        r.persist(pid, sid, vec![Room::from("chat:quiet")], Value::Null, None);
        {
            let mut store = r.store.lock();
            drop_stalest_window(&mut store);
            assert!(store.windows.is_empty());
        }
        record(&r, 2, &opts(&["chat:quiet"], &[]));
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::HistoryTrimmed
        );
    }

    #[tokio::test]
    async fn a_rooms_window_past_its_size_refuses_and_others_still_bound_it() {
        let r = windowed(5, 3);
        let (pid, sid) = (Sid::random(), Sid::random());
        let seen = record(&r, 0, &opts(&["chat:a"], &[]));
        r.persist(pid, sid, vec![Room::from("chat:a")], Value::Null, None);
        for n in 1..=4 {
            record(&r, n, &opts(&["chat:a"], &[]));
        }
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::HistoryTrimmed
        );
        // A namespace-wide packet goes to the namespace's window, which a session needs too.
        let r = windowed(2, 100);
        let (pid, sid) = (Sid::random(), Sid::random());
        let seen = record(&r, 0, &opts(&["chat:a"], &[]));
        r.persist(pid, sid, vec![Room::from("chat:a")], Value::Null, None);
        for n in 1..=3 {
            record(&r, n, &opts(&[], &[]));
        }
        assert_eq!(
            r.restore(pid.as_str(), &seen).unwrap_err(),
            Failure::HistoryTrimmed
        );
    }

    #[tokio::test]
    async fn history_reads_a_rooms_window() {
        let r = windowed(5, 3);
        assert_eq!(r.history("lobby", None, 10).unwrap_err(), HistoryError::NotKept);
        let first = record(&r, 0, &opts(&["chat:a"], &[]));
        for n in 1..=4 {
            record(&r, n, &opts(&["chat:a"], &[]));
        }
        let all = r.history("chat:a", None, 10).unwrap();
        assert!(all.complete);
        let numbers: Vec<u64> = all
            .messages
            .iter()
            .map(|m| m.packet.data.as_ref().unwrap()[1].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, vec![2, 3, 4], "the window keeps its last 3");
        assert_eq!(r.history("chat:a", None, 2).unwrap().messages.len(), 2);
        // After an offset that was trimmed: what is left, marked incomplete.
        let after = r.history("chat:a", Some(&first), 10).unwrap();
        assert!(!after.complete);
        assert_eq!(after.messages.len(), 3);
        let since = all.messages[1].offset.clone();
        let newer = r.history("chat:a", Some(&since), 10).unwrap();
        assert!(newer.complete);
        assert_eq!(newer.messages.len(), 1);
        assert_eq!(
            r.history("chat:a", Some("nonsense"), 1).unwrap_err(),
            HistoryError::UnknownOffset
        );
        assert_eq!(r.history("chat:empty", None, 1).unwrap().messages.len(), 0);
    }

    #[test]
    fn recoverable_reasons_are_the_references() {
        assert!(is_recoverable(DisconnectReason::Transport(
            CloseReason::PingTimeout
        )));
        assert!(is_recoverable(DisconnectReason::Transport(
            CloseReason::TransportClose
        )));
        assert!(!is_recoverable(DisconnectReason::ClientNamespaceDisconnect));
        assert!(!is_recoverable(DisconnectReason::ServerNamespaceDisconnect));
        assert!(!is_recoverable(DisconnectReason::Transport(
            CloseReason::SlowConsumer
        )));
    }
}

#[cfg(test)]
mod footprint {
    /// What one stored packet and one persisted session cost beyond their payload (the
    /// figures docs/delivery.md quotes).
    #[test]
    fn fixed_costs_stay_small() {
        let packet = std::mem::size_of::<super::StoredPacket>();
        let session =
            std::mem::size_of::<super::Session>() + std::mem::size_of::<(crate::Sid, tokio::time::Instant)>();
        assert!(packet <= 320, "{packet}");
        assert!(session <= 224, "{session}");
        eprintln!("stored packet: {packet} B + payload; session: {session} B + rooms and data");
    }
}
