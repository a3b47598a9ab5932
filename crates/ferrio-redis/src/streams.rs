//! The format of `@socket.io/redis-streams-adapter` 0.3 ([`crate::Mode::Streams`]).
//!
//! * Broadcasts without an ack and `socketsJoin`/`socketsLeave`/`disconnectSockets` are
//!   appended to one stream (`XADD <stream> MAXLEN ~ <max_len> * uid <uid> nsp <nsp> type <n>
//!   data <data>`); `data` is JSON, or base64 of msgpack when it carries binary. Every node
//!   reads the stream (`XREAD`) from where it last was, so a node that lost Redis for a while
//!   catches up instead of missing what was appended meanwhile.
//! * A broadcast's entry id is its recovery offset, the same on every node.
//! * A disconnected session is kept under `<prefix><pid>` as base64 of msgpack
//!   `{sid, pid, rooms, data}` with a TTL (`PX`); any node takes it back (`GETDEL`) and reads
//!   what the client missed from the stream (`XRANGE`).
//! * Requests and their answers (fetch sockets, server-side emits, broadcasts with acks) use
//!   pub/sub on `<key>#<nsp>#` and `<key>#<nsp>#<uid>#`, in the cluster adapter's message
//!   format, always msgpack.
//!
//! ferrio delivers its own broadcasts to its own sockets when it reads them back from the
//! stream, like everyone else's: so every node delivers in the stream's order, and the offset a
//! client holds marks exactly what it got.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferrio::adapter::BoxFuture;
use ferrio::parse_log_id as parse_id;
use ferrio::{LogRefusal, LoggedPacket, LoggedSession, Room, SessionLog, Sid};
use parking_lot::RwLock;
use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, Value};
use rmpv::Value as Mp;
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::adapter::{Body, RedisAdapter};
use crate::codec::{self, DecodeError};
use crate::link::{Backoff, Link, value_text as text};

/// Message types whose `data` is msgpack (base64 in the stream) when it holds binary.
const BINARY_TYPES: [u64; 5] = [3, 8, 9, 10, 12];

/// Where a restore stops reading the stream: calls of [`READ_CHUNK`] entries.
const MAX_RESTORE_READS: usize = 100;
const READ_CHUNK: usize = 1000;

/// The stream settings of a node.
#[derive(Debug, Clone)]
pub(crate) struct StreamOptions {
    pub stream: String,
    pub max_len: usize,
    pub read_count: usize,
    pub block: Duration,
    pub session_prefix: String,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            stream: "socket.io".into(),
            max_len: 10_000,
            read_count: 100,
            block: Duration::from_secs(5),
            session_prefix: "sio:session:".into(),
        }
    }
}

/// The fields of one entry: `uid`, `nsp`, `type` and `data` (JSON, or base64 of msgpack
/// when a message type that may carry binary does).
pub(crate) fn entry_fields(uid: &str, nsp: &str, kind: u64, data: &Mp) -> [(&'static str, String); 4] {
    let data = if BINARY_TYPES.contains(&kind) && codec::has_binary(data) {
        BASE64.encode(codec::encode(data))
    } else {
        codec::to_json(data).to_string()
    };
    [
        ("uid", uid.to_owned()),
        ("nsp", nsp.to_owned()),
        ("type", kind.to_string()),
        ("data", data),
    ]
}

/// The `XADD` of one message.
pub(crate) fn xadd(opts: &StreamOptions, uid: &str, nsp: &str, kind: u64, data: &Mp) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&opts.stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(opts.max_len)
        .arg("*");
    for (field, value) in entry_fields(uid, nsp, kind, data) {
        cmd.arg(field).arg(value);
    }
    cmd
}

/// One entry of the stream.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: String,
    pub uid: String,
    pub nsp: String,
    pub kind: u64,
    pub data: Option<Body>,
}

/// Decodes an entry `[id, [field, value, ...]]`.
pub(crate) fn parse_entry(value: &Value) -> Result<Entry, DecodeError> {
    let bad = |what: &str| DecodeError(format!("stream entry: {what}"));
    let Value::Array(pair) = value else {
        return Err(bad("not an array"));
    };
    let id = pair.first().and_then(text).ok_or_else(|| bad("no id"))?;
    let flat: Vec<Value>;
    let fields: &[Value] = match pair.get(1) {
        Some(Value::Array(f)) => f,
        Some(Value::Map(m)) => {
            flat = m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
            &flat
        }
        _ => return Err(bad("no fields")),
    };
    let mut entry = Entry {
        id,
        uid: String::new(),
        nsp: String::new(),
        kind: 0,
        data: None,
    };
    for kv in fields.chunks(2) {
        let [k, v] = kv else { break };
        let key = text(k).unwrap_or_default();
        match key.as_str() {
            "uid" => entry.uid = text(v).unwrap_or_default(),
            "nsp" => entry.nsp = text(v).unwrap_or_default(),
            "type" => {
                entry.kind = text(v)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("bad type"))?
            }
            "data" => {
                let raw = match v {
                    Value::BulkString(b) => b.clone(),
                    other => text(other).unwrap_or_default().into_bytes(),
                };
                entry.data = Some(if raw.first() == Some(&b'{') {
                    Body::Json(serde_json::from_slice(&raw).map_err(|e| DecodeError(e.to_string()))?)
                } else {
                    let bytes = BASE64.decode(&raw).map_err(|e| DecodeError(e.to_string()))?;
                    Body::Mp(codec::decode(&bytes)?)
                });
            }
            _ => {}
        }
    }
    Ok(entry)
}

fn is_entry(value: &Value) -> bool {
    match value {
        Value::Array(p) if p.len() == 2 => {
            text(&p[0]).is_some_and(|t| parse_id(&t).is_some())
                && match &p[1] {
                    Value::Array(fields) => fields.iter().all(|f| !matches!(f, Value::Array(_))),
                    Value::Map(_) => true,
                    _ => false,
                }
        }
        _ => false,
    }
}

/// The entries of an `XRANGE` answer, or of the streams of an `XREAD` answer.
pub(crate) fn entries_in(value: &Value) -> Vec<&Value> {
    match value {
        // XRANGE: [[id, fields], ...]
        Value::Array(items) if items.iter().all(is_entry) => items.iter().collect(),
        // XREAD (RESP2): [[stream, [[id, fields], ...]], ...]
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(p) if p.len() == 2 => Some(&p[1]),
                _ => None,
            })
            .flat_map(entries_in)
            .collect(),
        // XREAD (RESP3): {stream: [[id, fields], ...]}
        Value::Map(streams) => streams.iter().flat_map(|(_, v)| entries_in(v)).collect(),
        _ => Vec::new(),
    }
}

/// The id after `id` (`XRANGE` bounds are inclusive).
fn next_id(id: (u64, u64)) -> String {
    match id.1.checked_add(1) {
        Some(seq) => format!("{}-{seq}", id.0),
        None => format!("{}-0", id.0 + 1),
    }
}

/// Whether a broadcast to `opts` reaches a session in `rooms` (its own id among them).
fn reaches(rooms: &[Room], opts: &ferrio::BroadcastOptions) -> bool {
    (opts.rooms.is_empty() || opts.rooms.iter().any(|r| rooms.contains(r)))
        && !opts.except.iter().any(|r| rooms.contains(r))
}

/// Sessions and missed packets of one namespace, in Redis.
pub(crate) struct StreamLog {
    pub link: Arc<Link>,
    pub opts: Arc<StreamOptions>,
    pub nsp: String,
    pub sessions: Arc<SessionWriter>,
    /// The node's reader's position (see [`Hub::position`]).
    pub position: Arc<RwLock<Option<String>>>,
}

/// What is to be written for one session key.
enum SessionWrite {
    Set { value: String, ttl_ms: u64 },
    Delete,
}

/// Sessions written above this many waiting keys are dropped (and counted): a Redis that
/// stays away cannot make the node hold more.
const MAX_PENDING_SESSIONS: usize = 200_000;
/// Keys written per pipeline.
const SESSION_BATCH: usize = 512;

/// Writes sessions to Redis on a way of their own, apart from the broadcasts: the latest
/// state of each key waits here (a burst of joins or disconnections coalesces per session and
/// never crowds out a broadcast), and a write Redis did not take is tried again.
pub(crate) struct SessionWriter {
    pending: parking_lot::Mutex<HashMap<String, SessionWrite>>,
    wake: tokio::sync::Notify,
    dropped: std::sync::atomic::AtomicU64,
}

impl SessionWriter {
    pub(crate) fn start(link: Arc<Link>) -> Arc<Self> {
        let writer = Arc::new(Self {
            pending: parking_lot::Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(run_session_writer(Arc::downgrade(&writer), link));
        writer
    }

    fn put(&self, key: String, write: SessionWrite) {
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING_SESSIONS && !pending.contains_key(&key) {
                let n = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "redis does not keep up with session writes; sessions are dropped"
                    );
                }
                return;
            }
            pending.insert(key, write);
        }
        self.wake.notify_one();
    }
}

async fn run_session_writer(writer: std::sync::Weak<SessionWriter>, link: Arc<Link>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let Some(strong) = writer.upgrade() else { return };
        let batch: Vec<(String, SessionWrite)> = {
            let mut pending = strong.pending.lock();
            let keys: Vec<String> = pending.keys().take(SESSION_BATCH).cloned().collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k).map(|w| (k, w)))
                .collect()
        };
        if batch.is_empty() {
            // Holds the writer at most a second after its last user went.
            tokio::select! {
                _ = strong.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let mut pipe = redis::pipe();
        for (key, write) in &batch {
            match write {
                SessionWrite::Set { value, ttl_ms } => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg(*ttl_ms)
                        .ignore();
                }
                SessionWrite::Delete => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
            }
        }
        match link.pipeline(&pipe).await {
            Ok(_) => backoff.reset(),
            Err(e) => {
                tracing::debug!(error = e.to_string(), "session writes failed; trying again");
                // Put back what no newer write replaced.
                {
                    let mut pending = strong.pending.lock();
                    for (key, write) in batch {
                        pending.entry(key).or_insert(write);
                    }
                }
                drop(strong);
                tokio::time::sleep(backoff.step()).await;
            }
        }
    }
}

impl StreamLog {
    fn key(&self, pid: Sid) -> String {
        format!("{}{}", self.opts.session_prefix, pid.as_str())
    }
}

/// A session as the reference writes it, plus `changed` (the stream position of the last room
/// change; the reference ignores unknown fields).
fn session_value(pid: Sid, sid: Sid, rooms: &[Room], data: &Json, changed: Option<&str>) -> String {
    let mut all = vec![Mp::from(sid.as_str())];
    all.extend(
        rooms
            .iter()
            .filter(|r| r.as_ref() != sid.as_str())
            .map(|r| Mp::from(r.as_ref())),
    );
    let mut session = vec![
        (Mp::from("sid"), Mp::from(sid.as_str())),
        (Mp::from("pid"), Mp::from(pid.as_str())),
        (Mp::from("rooms"), Mp::Array(all)),
        (Mp::from("data"), codec::from_json(data)),
    ];
    if let Some(changed) = changed {
        session.push((Mp::from("changed"), Mp::from(changed)));
    }
    BASE64.encode(codec::encode(&Mp::Map(session)))
}

fn session_changed_at(raw: &[u8]) -> Option<String> {
    let session = codec::decode(&BASE64.decode(raw).ok()?).ok()?;
    codec::get(&session, "changed")?.as_str().map(str::to_owned)
}

fn parse_session(raw: &[u8]) -> Option<(Sid, Vec<Room>, Json)> {
    let bytes = BASE64.decode(raw).ok()?;
    let session = codec::decode(&bytes).ok()?;
    let sid: Sid = codec::get(&session, "sid")?.as_str()?.parse().ok()?;
    let rooms = match codec::get(&session, "rooms") {
        Some(Mp::Array(rooms)) => rooms
            .iter()
            .filter_map(Mp::as_str)
            .filter(|r| *r != sid.as_str())
            .map(Room::from)
            .collect(),
        _ => Vec::new(),
    };
    let data = codec::get(&session, "data")
        .map(codec::to_json)
        .unwrap_or(Json::Null);
    Some((sid, rooms, data))
}

impl SessionLog for StreamLog {
    fn persist(
        &self,
        pid: Sid,
        sid: Sid,
        rooms: Vec<Room>,
        data: Json,
        changed: Option<String>,
        ttl: Duration,
    ) {
        let value = session_value(pid, sid, &rooms, &data, changed.as_deref());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.sessions
            .put(self.key(pid), SessionWrite::Set { value, ttl_ms });
    }

    fn forget(&self, pid: Sid) {
        self.sessions.put(self.key(pid), SessionWrite::Delete);
    }

    fn position(&self) -> Option<String> {
        self.position.read().clone()
    }

    fn restore(
        &self,
        pid: Sid,
        offset: String,
        cached: bool,
        max_missed: usize,
    ) -> BoxFuture<'static, Result<LoggedSession, LogRefusal>> {
        let link = self.link.clone();
        let opts = self.opts.clone();
        let nsp = self.nsp.clone();
        let key = self.key(pid);
        Box::pin(async move {
            let down = |_| LogRefusal::Unavailable;
            let raw = link.query(redis::cmd("GETDEL").arg(&key)).await.map_err(down)?;
            let raw = match raw {
                Value::BulkString(b) => b,
                Value::SimpleString(s) => s.into_bytes(),
                _ => return Err(LogRefusal::UnknownSession),
            };
            let (sid, rooms, data) = parse_session(&raw).ok_or(LogRefusal::UnknownSession)?;
            let rooms_changed_at = session_changed_at(&raw);
            let from = parse_id(&offset).ok_or(LogRefusal::UnknownOffset)?;
            let missed = if cached {
                None
            } else {
                // The offset must still be in the stream: otherwise entries after it may
                // have been trimmed.
                let probe = link
                    .query(redis::cmd("XRANGE").arg(&opts.stream).arg(&offset).arg(&offset))
                    .await
                    .map_err(down)?;
                if entries_in(&probe).is_empty() {
                    return Err(LogRefusal::HistoryTrimmed);
                }
                let mut own = rooms.clone();
                own.push(Room::from(sid.as_str()));
                let mut packets = Vec::new();
                let mut until = from;
                for _ in 0..MAX_RESTORE_READS {
                    let answer = link
                        .query(
                            redis::cmd("XRANGE")
                                .arg(&opts.stream)
                                .arg(next_id(until))
                                .arg("+")
                                .arg("COUNT")
                                .arg(READ_CHUNK),
                        )
                        .await
                        .map_err(down)?;
                    let entries = entries_in(&answer);
                    if entries.is_empty() {
                        break;
                    }
                    for value in entries {
                        let Ok(entry) = parse_entry(value) else { continue };
                        if let Some(id) = parse_id(&entry.id) {
                            until = id;
                        }
                        if entry.nsp != nsp || entry.kind != 3 {
                            continue;
                        }
                        let Some(missed) = recoverable(&entry, &nsp) else {
                            continue;
                        };
                        if reaches(&own, &missed.opts) {
                            if packets.len() == max_missed {
                                return Err(LogRefusal::TooManyMissed);
                            }
                            packets.push(missed);
                        }
                    }
                }
                Some((packets, format!("{}-{}", until.0, until.1)))
            };
            Ok(LoggedSession {
                sid,
                rooms,
                data,
                missed,
                rooms_changed_at,
            })
        })
    }
}

/// Decodes a stream entry `[id, [field, value, ...]]` built from `fields` as the reader and a
/// restore do, and the broadcast in it (for the fuzz targets).
#[doc(hidden)]
pub fn fuzz_entry(id: &[u8], fields: &[&[u8]]) {
    let value = Value::Array(vec![
        Value::BulkString(id.to_vec()),
        Value::Array(fields.iter().map(|f| Value::BulkString(f.to_vec())).collect()),
    ]);
    for found in entries_in(&Value::Array(vec![value.clone()])) {
        if let Ok(entry) = parse_entry(found) {
            let _ = parse_id(&entry.id);
            if let Some(missed) = recoverable(&entry, "/") {
                let _ = reaches(&[Room::from("r")], &missed.opts);
            }
        }
    }
}

/// Decodes a kept session's value as a restore does (for the fuzz targets).
#[doc(hidden)]
pub fn fuzz_session(raw: &[u8]) {
    let _ = parse_session(raw);
    let _ = session_changed_at(raw);
}

/// A broadcast entry a session may get back: an event without an ack, not volatile.
pub(crate) fn recoverable(entry: &Entry, nsp: &str) -> Option<LoggedPacket> {
    let data = entry.data.as_ref()?;
    if data.has("requestId") {
        return None;
    }
    let packet = data.member(&["packet"])?.packet(nsp).ok()?;
    let opts = data.options();
    let event = matches!(
        packet.kind,
        ferrio::proto::socket::PacketType::Event | ferrio::proto::socket::PacketType::BinaryEvent
    );
    (event && packet.id.is_none() && !opts.flags.volatile && matches!(packet.data, Some(Json::Array(_))))
        .then(|| LoggedPacket {
            id: entry.id.clone(),
            packet,
            opts,
        })
}

/// The namespaces' adapters of a node, and the task that reads the stream for them.
pub(crate) struct Hub {
    opts: Arc<StreamOptions>,
    sessions: std::sync::OnceLock<Arc<SessionWriter>>,
    adapters: RwLock<HashMap<String, Weak<RedisAdapter>>>,
    /// The newest entry the reader has taken (set before it is delivered): every later one
    /// reaches the namespaces registered by then. `None` until the reader first connects.
    position: Arc<RwLock<Option<String>>>,
    _stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("stream", &self.opts.stream)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn start(
        client: redis::Client,
        opts: Arc<StreamOptions>,
        backoff: (Duration, Duration),
    ) -> Arc<Self> {
        let (stop, stopped) = watch::channel(false);
        let hub = Arc::new(Self {
            opts,
            sessions: std::sync::OnceLock::new(),
            adapters: RwLock::new(HashMap::new()),
            position: Arc::new(RwLock::new(None)),
            _stop: stop,
        });
        tokio::spawn(run_reader(Arc::downgrade(&hub), client, backoff, stopped));
        hub
    }

    /// The reader's position, shared with the namespaces' session logs.
    pub(crate) fn position(&self) -> Arc<RwLock<Option<String>>> {
        self.position.clone()
    }

    pub(crate) fn options(&self) -> &Arc<StreamOptions> {
        &self.opts
    }

    /// The node's session writer (started with the first namespace).
    pub(crate) fn sessions(&self, link: Arc<Link>) -> Arc<SessionWriter> {
        self.sessions.get_or_init(|| SessionWriter::start(link)).clone()
    }

    pub(crate) fn register(&self, nsp: &str, adapter: Weak<RedisAdapter>) {
        self.adapters.write().insert(nsp.to_owned(), adapter);
    }

    pub(crate) fn unregister(&self, nsp: &str) {
        let mut adapters = self.adapters.write();
        if adapters.get(nsp).is_some_and(|a| a.strong_count() == 0) {
            adapters.remove(nsp);
        }
    }

    fn adapter(&self, nsp: &str) -> Option<Arc<RedisAdapter>> {
        self.adapters.read().get(nsp)?.upgrade()
    }

    fn each(&self, f: impl Fn(&RedisAdapter)) {
        let adapters: Vec<_> = self.adapters.read().values().filter_map(Weak::upgrade).collect();
        for adapter in adapters {
            f(&adapter);
        }
    }
}

/// The id of the first entry `cmd` (`XRANGE` or `XREVRANGE`) gives between `bounds`.
async fn edge(
    conn: &mut impl ConnectionLike,
    cmd: &str,
    stream: &str,
    bounds: (&str, &str),
) -> redis::RedisResult<Option<String>> {
    let answer = conn
        .req_packed_command(
            redis::cmd(cmd)
                .arg(stream)
                .arg(bounds.0)
                .arg(bounds.1)
                .arg("COUNT")
                .arg(1),
        )
        .await?;
    Ok(entries_in(&answer)
        .first()
        .and_then(|e| parse_entry(e).ok())
        .map(|e| e.id))
}

/// The id of the stream's oldest entry, without its fields (nil for an empty stream).
const OLDEST_ID: &str = "local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1) \
    if #e == 0 then return false end return e[1][1]";

/// Whether the stream's oldest entry lies beyond the entry after `at` (where the reader is):
/// then entries between may have been trimmed before the reader got them.
fn overtaken(at: Option<&str>, oldest: Option<(u64, u64)>) -> bool {
    let (Some(at), Some(oldest)) = (at.and_then(parse_id), oldest) else {
        return false;
    };
    // 0-0: the stream was empty when the reader started, it reads from the beginning.
    at != (0, 0) && oldest > (at.0, at.1.saturating_add(1))
}

/// Reads the stream from where it last was, forever: every entry goes to its namespace's
/// adapter, in order.
async fn run_reader(
    hub: Weak<Hub>,
    client: redis::Client,
    (min, max): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(min, max);
    let mut last: Option<String> = None;
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let Some(opts) = hub.upgrade().map(|h| h.opts.clone()) else {
            return;
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(opts.block + Duration::from_secs(5)));
        let connected = tokio::select! {
            c = client.get_multiplexed_async_connection_with_config(&config) => c,
            _ = stop.changed() => return,
        };
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                if down_since.is_none() {
                    down_since = Some(tokio::time::Instant::now());
                    tracing::warn!(error = e.to_string(), "redis stream reader disconnected");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // Where to read from: where this node was, or the end of the stream on the first
        // connection. If the stream was trimmed past where this node was, entries are lost
        // to it: recovery caches cannot prove anything older.
        let Ok(oldest) = edge(&mut conn, "XRANGE", &opts.stream, ("-", "+")).await else {
            continue;
        };
        match &last {
            Some(at) => {
                let lost = overtaken(Some(at), oldest.as_deref().and_then(parse_id));
                if lost {
                    tracing::warn!(
                        "the redis stream was trimmed past this node's position: entries were lost to it"
                    );
                    if let Some(hub) = hub.upgrade() {
                        hub.each(RedisAdapter::stream_broke);
                    }
                }
            }
            None => {
                let Ok(newest) = edge(&mut conn, "XREVRANGE", &opts.stream, ("+", "-")).await else {
                    continue;
                };
                last = Some(newest.unwrap_or_else(|| "0-0".to_owned()));
                if let Some(hub) = hub.upgrade() {
                    *hub.position.write() = last.clone();
                }
            }
        }
        if let Some(since) = down_since.take() {
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                "redis stream reader reconnected; reading on from where it was"
            );
        }
        backoff.reset();
        loop {
            let at = last.clone().unwrap_or_else(|| "$".into());
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(opts.read_count)
                .arg("BLOCK")
                .arg(opts.block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&opts.stream)
                .arg(&at);
            let answer = tokio::select! {
                a = conn.req_packed_command(&cmd) => a,
                _ = stop.changed() => return,
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    down_since = Some(tokio::time::Instant::now());
                    tracing::warn!(error = e.to_string(), "redis stream reader disconnected");
                    break;
                }
            };
            // A read that may have crossed a trimmed stretch (the reader fell more than the
            // stream's length behind): a full batch, or any batch when the stream keeps fewer
            // entries than a batch. Before its entries are delivered, the stream's oldest id
            // says whether entries after the reader's position were trimmed before it got
            // them; then its recovery caches must not claim them.
            let entries = entries_in(&answer);
            let suspect =
                !entries.is_empty() && (entries.len() >= opts.read_count || opts.max_len < opts.read_count);
            if suspect {
                let oldest = match conn
                    .req_packed_command(redis::cmd("EVAL").arg(OLDEST_ID).arg(1).arg(&opts.stream))
                    .await
                {
                    Ok(id) => text(&id).as_deref().and_then(parse_id),
                    Err(e) => {
                        down_since = Some(tokio::time::Instant::now());
                        tracing::warn!(error = e.to_string(), "redis stream reader disconnected");
                        break;
                    }
                };
                if overtaken(last.as_deref(), oldest) {
                    tracing::warn!(
                        "the redis stream was trimmed past this node's reader: entries were lost to it"
                    );
                    if let Some(hub) = hub.upgrade() {
                        hub.each(RedisAdapter::stream_broke);
                    }
                }
            }
            let Some(hub) = hub.upgrade() else { return };
            for value in entries {
                match parse_entry(value) {
                    Ok(entry) => {
                        last = Some(entry.id.clone());
                        *hub.position.write() = last.clone();
                        if entry.nsp.is_empty() {
                            continue;
                        }
                        if let Some(adapter) = hub.adapter(&entry.nsp) {
                            adapter.on_stream_entry(entry);
                        }
                    }
                    Err(e) => {
                        if let Value::Array(pair) = value
                            && let Some(id) = pair.first().and_then(text)
                        {
                            last = Some(id);
                            *hub.position.write() = last.clone();
                        }
                        tracing::debug!(error = e.to_string(), "ignored a malformed stream entry");
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.step()) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_overtaken_only_when_entries_after_it_may_be_gone() {
        assert!(
            !overtaken(Some("5-1"), Some((5, 2))),
            "the next entry is the oldest"
        );
        assert!(!overtaken(Some("5-1"), Some((4, 0))));
        assert!(!overtaken(Some("5-1"), None), "an empty stream");
        assert!(!overtaken(None, Some((9, 0))));
        assert!(!overtaken(Some("0-0"), Some((9, 0))), "read from the beginning");
        assert!(overtaken(Some("5-1"), Some((5, 3))));
        assert!(overtaken(Some("5-1"), Some((6, 0))));
    }

    #[test]
    fn ids_step_and_parse() {
        assert_eq!(next_id((5, 1)), "5-2");
        assert_eq!(next_id((5, u64::MAX)), "6-0");
        assert_eq!(parse_id("1796422564719-0"), Some((1796422564719, 0)));
        assert_eq!(parse_id("x-0"), None);
    }

    #[test]
    fn sessions_round_trip_in_the_references_shape() {
        let (pid, sid) = (Sid::random(), Sid::random());
        let value = session_value(
            pid,
            sid,
            &[Room::from("a")],
            &serde_json::json!({"k": 1}),
            Some("5-1"),
        );
        assert_eq!(session_changed_at(value.as_bytes()).as_deref(), Some("5-1"));
        let (back_sid, rooms, data) = parse_session(value.as_bytes()).unwrap();
        assert_eq!(back_sid, sid);
        assert_eq!(rooms, vec![Room::from("a")]);
        assert_eq!(data, serde_json::json!({"k": 1}));
        // The reference keeps the socket's own id among the rooms.
        let raw = codec::decode(&BASE64.decode(value).unwrap()).unwrap();
        let listed = codec::to_json(codec::get(&raw, "rooms").unwrap());
        assert_eq!(listed, serde_json::json!([sid.as_str(), "a"]));
    }

    /// A stream entry of a broadcast as the reference writes it.
    fn broadcast_entry(id: &str, data: &str) -> Value {
        let field = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let fields = ["uid", "f2b28024d9039499", "nsp", "/", "type", "3", "data", data];
        Value::Array(vec![
            field(id),
            Value::Array(fields.into_iter().map(field).collect()),
        ])
    }

    #[test]
    fn entries_decode_json_and_base64_msgpack() {
        let json = broadcast_entry(
            "1-0",
            r#"{"packet":{"type":2,"data":["ev",1]},"opts":{"rooms":["room"],"except":[],"flags":{}}}"#,
        );
        let entry = parse_entry(&json).unwrap();
        assert_eq!((entry.kind, entry.nsp.as_str()), (3, "/"));
        let missed = recoverable(&entry, "/").unwrap();
        assert_eq!(missed.packet.data, Some(serde_json::json!(["ev", 1])));
        assert_eq!(missed.opts.rooms.as_slice(), &[Room::from("room")]);
        // Binary: base64 of msgpack, as the reference writes it.
        let binary = broadcast_entry(
            "2-0",
            "gqZwYWNrZXSCpHR5cGUCpGRhdGGSo2JpbsQDAQIDpG9wdHODpXJvb21zkaRyb29tpmV4Y2VwdJGlb3RoZXKlZmxhZ3OA",
        );
        let entry = parse_entry(&binary).unwrap();
        let missed = recoverable(&entry, "/").unwrap();
        assert_eq!(
            missed.packet.attachments,
            vec![bytes::Bytes::from_static(&[1, 2, 3])]
        );
        assert_eq!(missed.opts.except.as_slice(), &[Room::from("other")]);
    }
}
