//! [`RedisAdapter`]: one namespace's adapter. It delivers locally through ferrio's
//! [`LocalAdapter`] and speaks the reference's message formats to the other nodes: the
//! classic `@socket.io/redis-adapter` format, the cluster adapter format of
//! `createShardedAdapter`, or that format over a stream as `@socket.io/redis-streams-adapter`
//! (see [`crate::streams`]).
//!
//! This file holds what every format shares: the adapter's state, its channels, requests and
//! their answers, and the [`Adapter`] implementation, which picks the format. Each format
//! reads its messages in a file of its own: [`classic`] (the classic format), [`sharded`] (the
//! cluster adapter format, also used for the streams mode's requests) and [`stream`] (appends
//! to the stream and what the reader hands back); [`wire`] is the codec boundary they share
//! (message types, the decoded body, broadcast options in the wire shape).
//!
//! Two deviations from the reference that are invisible on the wire:
//! * classic `socketsJoin`/`socketsLeave`/`disconnectSockets` are applied to local sockets
//!   at once, and the node's own request is skipped when Redis echoes it back (the
//!   reference applies them only on the echo, so they are lost locally while Redis is down);
//! * a broadcast is delivered locally before it is queued for Redis, and never waits on it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferrio::adapter::BoxFuture;
use ferrio::proto::socket::Packet;
use ferrio::{
    Adapter, AdapterContext, AdapterError, BroadcastFlags, BroadcastOptions, EncodedPacket, LocalAdapter,
    Payload, Room, Sent, ServerEvent, Sid, SocketInfo,
};
use parking_lot::Mutex;
use rmpv::Value as Mp;
use serde_json::{Value, json};
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, DecodeError};
use crate::link::{Inbound, Link, LinkError, ReachKey, RouteKind, SubKind};
use crate::streams;
use crate::{Mode, Options, SubscriptionMode};

mod classic;
mod sharded;
mod stream;
mod wire;

pub use wire::Body;
pub(crate) use wire::{classic_type, cluster_type, options_from, options_json, options_mp};
use wire::{names, room_text, rooms_of};

/// The socket id reported with acknowledgements that came from another node, whose
/// messages do not say which socket answered.
pub const REMOTE_ACK_SID: &str = "____remote__socket__";

/// Where the ack ids of broadcasts from other nodes start: 2^52, below JavaScript's
/// largest safe integer.
const REMOTE_ACK_ID_BASE: u64 = 1 << 52;

/// A packet as published: without the ack id, which each receiving node assigns.
fn unnumbered(packet: &Packet) -> Packet {
    let mut packet = packet.clone();
    packet.id = None;
    packet
}

fn remote_ack_sid() -> Sid {
    REMOTE_ACK_SID.parse().unwrap_or_else(|_| Sid::random())
}

/// The reference's `uid2(6)`: 6 characters from `[A-Za-z0-9]`.
fn uid2(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(CHARS[rand::random_range(0..CHARS.len())]))
        .collect()
}

/// `randomBytes(8).toString("hex")`.
fn hex_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable(e: LinkError) -> AdapterError {
    AdapterError::Unavailable(e.to_string())
}

/// The channels of one namespace.
#[derive(Debug)]
struct Channels {
    /// Classic: `<key>#<nsp>#` (broadcasts; rooms append `<room>#`). Sharded: the same
    /// name is the namespace's channel, room channels append `<room>#`.
    main: String,
    /// Classic requests: `<key>-request#<nsp>#`.
    request: String,
    /// Classic shared responses: `<key>-response#<nsp>#`.
    response: String,
    /// Responses for this node only: classic `<key>-response#<nsp>#<uid>#`, sharded
    /// `<key>#<nsp>#<uid>#`.
    own: String,
}

/// A request waiting for other nodes' answers.
struct Pending {
    expected: usize,
    items: Vec<Value>,
    done: Option<oneshot::Sender<Vec<Value>>>,
}

struct AckRequest {
    acks: mpsc::UnboundedSender<(Sid, Payload)>,
    counts: mpsc::UnboundedSender<usize>,
}

/// The adapter of one namespace on one node.
pub struct RedisAdapter {
    local: LocalAdapter,
    ctx: AdapterContext,
    link: Arc<Link>,
    opts: Arc<Options>,
    uid: String,
    channels: Channels,
    requests: Mutex<HashMap<String, Pending>>,
    ack_requests: Mutex<HashMap<String, AckRequest>>,
    /// Ack ids for broadcasts from other nodes, far above the namespace's own counter
    /// (which this crate cannot draw from).
    remote_ack_ids: AtomicU64,
    /// Sharded room channels kept subscribed for disconnected sessions that may come back.
    lingering: Mutex<HashSet<Room>>,
    /// Streams mode: the node's stream reader and settings.
    hub: Option<Arc<streams::Hub>>,
    /// Rooms whose histories are kept in Redis.
    history: Option<crate::history::Rules>,
    me: Weak<RedisAdapter>,
}

/// How often lingering room channels are checked.
const LINGER_SWEEP: Duration = Duration::from_secs(5);

/// Room channels kept subscribed for disconnected sessions, at most, per namespace.
const MAX_LINGERING: usize = 10_000;

impl fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("nsp", &self.ctx.name())
            .field("uid", &self.uid)
            .field("mode", &self.opts.mode)
            .finish()
    }
}

impl RedisAdapter {
    pub(crate) fn create(
        ctx: &AdapterContext,
        link: Arc<Link>,
        opts: Arc<Options>,
        hub: Option<Arc<streams::Hub>>,
    ) -> Arc<Self> {
        let nsp = ctx.name();
        let key = &opts.key;
        let uid = match opts.mode {
            Mode::Classic => uid2(6),
            Mode::Sharded | Mode::Streams => hex_id(),
        };
        let main = format!("{key}#{nsp}#");
        let channels = Channels {
            request: format!("{key}-request#{nsp}#"),
            response: format!("{key}-response#{nsp}#"),
            own: match opts.mode {
                Mode::Classic => format!("{key}-response#{nsp}#{uid}#"),
                Mode::Sharded | Mode::Streams => format!("{main}{uid}#"),
            },
            main,
        };
        let history = (!opts.history.is_empty()).then(|| crate::history::Rules {
            windows: opts.history.clone(),
            base: match opts.mode {
                Mode::Streams => opts.streams.stream.clone(),
                Mode::Classic | Mode::Sharded => opts.key.clone(),
            },
        });
        let adapter = Arc::new_cyclic(|me| Self {
            local: LocalAdapter::new(),
            ctx: ctx.clone(),
            link: link.clone(),
            opts,
            uid,
            channels,
            requests: Mutex::new(HashMap::new()),
            ack_requests: Mutex::new(HashMap::new()),
            remote_ack_ids: AtomicU64::new(REMOTE_ACK_ID_BASE),
            lingering: Mutex::new(HashSet::new()),
            history,
            hub,
            me: me.clone(),
        });
        let target: Weak<dyn Inbound> = adapter.me.clone();
        let ch = &adapter.channels;
        match adapter.opts.mode {
            Mode::Classic => {
                link.subscribe(
                    SubKind::Pattern,
                    format!("{}*", ch.main),
                    RouteKind::Broadcast,
                    target.clone(),
                );
                link.subscribe(
                    SubKind::Channel,
                    ch.request.clone(),
                    RouteKind::Request,
                    target.clone(),
                );
                link.subscribe(
                    SubKind::Channel,
                    ch.response.clone(),
                    RouteKind::Response,
                    target.clone(),
                );
                link.subscribe(SubKind::Channel, ch.own.clone(), RouteKind::Response, target);
            }
            Mode::Sharded | Mode::Streams => {
                let kind = adapter.subscription_kind();
                link.subscribe(kind, ch.main.clone(), RouteKind::Message, target.clone());
                link.subscribe(kind, ch.own.clone(), RouteKind::ShardResponse, target);
            }
        }
        if let Some(hub) = &adapter.hub {
            hub.register(nsp, adapter.me.clone());
        }
        adapter
    }

    /// Sharded pub/sub, or plain channels (streams mode's requests and answers).
    fn subscription_kind(&self) -> SubKind {
        if self.sharded() {
            SubKind::Shard
        } else {
            SubKind::Channel
        }
    }

    /// This adapter's server id on the wire.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn nsp(&self) -> &str {
        self.ctx.name()
    }

    fn sharded(&self) -> bool {
        self.opts.mode == Mode::Sharded
    }

    fn room_channel(&self, room: &str) -> String {
        format!("{}{room}#", self.channels.main)
    }

    /// Whether a room has a channel of its own (sharded, dynamic subscriptions).
    fn room_has_channel(&self, room: &str) -> bool {
        self.sharded()
            && self.opts.subscription_mode == SubscriptionMode::Dynamic
            && room.encode_utf16().count() != 20
    }

    fn on_room_created(&self, room: &Room) {
        if self.room_has_channel(room) {
            let target: Weak<dyn Inbound> = self.me.clone();
            self.link.subscribe(
                SubKind::Shard,
                self.room_channel(room),
                RouteKind::Message,
                target,
            );
        }
    }

    fn on_room_emptied(&self, room: &Room) {
        if !self.room_has_channel(room) {
            return;
        }
        if self.retains(room) {
            // A session that may come back is in it: its broadcasts must keep arriving, to be
            // replayed. Unsubscribed once nobody needs it (see `sweep_lingering`).
            let (first, full) = {
                let mut lingering = self.lingering.lock();
                let first = lingering.is_empty();
                let full = lingering.len() >= MAX_LINGERING;
                if !full {
                    lingering.insert(room.clone());
                }
                (first, full)
            };
            if !full {
                if first {
                    self.start_sweeper();
                }
                return;
            }
            // Past the bound, the channel goes: the sessions kept here can no longer prove
            // they miss nothing, and are told so (a gap in the feed).
            if let Some(ns) = self.ctx.namespace() {
                ns.cluster_feed(ferrio::ClusterFeed::Lost);
                ns.cluster_feed(ferrio::ClusterFeed::Restored);
            }
        }
        self.unsubscribe_room(room);
    }

    /// Unsubscribes a room channel, unless a socket joined it meanwhile (then the channel is
    /// wanted again at once).
    fn unsubscribe_room(&self, room: &Room) {
        self.link.unsubscribe(SubKind::Shard, &self.room_channel(room));
        if self.local.has_room(room) {
            self.on_room_created(room);
        }
    }

    /// Unsubscribes lingering room channels that neither a local socket nor a kept session
    /// needs any more. Returns whether some still linger.
    fn sweep_lingering(&self) -> bool {
        let mut lingering = self.lingering.lock();
        lingering.retain(|room| {
            if self.local.has_room(room) {
                return false;
            }
            if self.retains(room) {
                return true;
            }
            self.unsubscribe_room(room);
            false
        });
        !lingering.is_empty()
    }

    fn start_sweeper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(LINGER_SWEEP).await;
                let Some(me) = me.upgrade() else { return };
                if !me.sweep_lingering() {
                    return;
                }
            }
        });
    }

    fn server_count_channel(&self) -> &str {
        match self.opts.mode {
            Mode::Classic => &self.channels.request,
            Mode::Sharded | Mode::Streams => &self.channels.main,
        }
    }

    async fn count_servers(&self) -> Result<usize, AdapterError> {
        self.link
            .subscriber_count(self.sharded(), self.server_count_channel())
            .await
            .map_err(unavailable)
    }

    /// Where a request goes: classic requests channel, or the sharded namespace channel.
    fn request_channel(&self) -> String {
        match self.opts.mode {
            Mode::Classic => self.channels.request.clone(),
            Mode::Sharded | Mode::Streams => self.channels.main.clone(),
        }
    }

    /// Where a classic node answers a request.
    fn classic_response_channel(&self, requester: Option<&str>) -> String {
        match requester {
            Some(uid) if self.opts.specific_response_channel => format!("{}{uid}#", self.channels.response),
            _ => self.channels.response.clone(),
        }
    }

    fn publish(&self, channel: String, payload: Vec<u8>) -> Result<(), AdapterError> {
        self.link
            .publish(self.sharded(), channel, payload)
            .map_err(unavailable)
    }

    /// Publishes to a channel every node of the namespace subscribes to, and waits until
    /// Redis took it and (after an outage) every node that was there before got it.
    async fn publish_confirmed(&self, channel: String, payload: Vec<u8>) -> Result<(), AdapterError> {
        let reach = Some(ReachKey {
            key: channel.clone(),
            count_channel: channel.clone(),
            node_channel: None,
        });
        self.link
            .publish_receipt(self.sharded(), channel, payload, reach)
            .map_err(unavailable)?
            .await
            .map_err(unavailable)
    }

    fn broadcast_payload(&self, packet: &Packet, opts: &BroadcastOptions) -> (String, Vec<u8>) {
        match self.opts.mode {
            Mode::Classic => {
                let channel = if opts.rooms.len() == 1 {
                    self.room_channel(&opts.rooms[0])
                } else {
                    self.channels.main.clone()
                };
                let msg = Mp::Array(vec![
                    Mp::from(self.uid.as_str()),
                    codec::packet_to_msgpack(packet, true),
                    options_mp(opts, true),
                ]);
                (channel, codec::encode(&msg))
            }
            Mode::Sharded | Mode::Streams => {
                let channel = if opts.rooms.len() == 1 && self.room_has_channel(&opts.rooms[0]) {
                    self.room_channel(&opts.rooms[0])
                } else {
                    self.channels.main.clone()
                };
                let data = Mp::Map(vec![
                    (Mp::from("packet"), codec::packet_to_msgpack(packet, false)),
                    (Mp::from("opts"), options_mp(opts, true)),
                ]);
                (channel, self.cluster_message(cluster_type::BROADCAST, data))
            }
        }
    }

    /// Registers a request for `expected` answers and publishes it; resolves with the
    /// answers, or `Timeout` when some did not come.
    async fn request(
        &self,
        request_id: String,
        expected: usize,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<Value>, AdapterError> {
        let (tx, rx) = oneshot::channel();
        self.requests.lock().insert(
            request_id.clone(),
            Pending {
                expected,
                items: Vec::new(),
                done: Some(tx),
            },
        );
        let cleanup = RemoveOnDrop {
            map: &self.requests,
            key: request_id,
        };
        self.publish_confirmed(self.request_channel(), payload).await?;
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(items)) => Ok(items),
            _ => Err(AdapterError::Timeout),
        };
        drop(cleanup);
        result
    }

    /// Records one answer to a pending request.
    fn answer(&self, request_id: &str, items: impl IntoIterator<Item = Value>, counts_as_one: bool) {
        let mut requests = self.requests.lock();
        let Some(pending) = requests.get_mut(request_id) else {
            return;
        };
        pending.items.extend(items);
        if counts_as_one {
            pending.expected = pending.expected.saturating_sub(1);
        }
        if pending.expected == 0
            && let Some(mut pending) = requests.remove(request_id)
            && let Some(done) = pending.done.take()
        {
            let _ = done.send(pending.items);
        }
    }

    /// Whether a disconnected session that may still be recovered here is in `room`: its
    /// broadcasts are kept although no local socket is in it.
    fn retains(&self, room: &str) -> bool {
        self.ctx.namespace().is_some_and(|ns| ns.retains_room(room))
    }

    /// Delivers a broadcast from another node (and keeps it for recovery).
    fn deliver(&self, packet: Packet, opts: &BroadcastOptions) {
        match self.ctx.namespace() {
            Some(ns) => {
                ns.deliver_from_cluster(packet, opts);
            }
            None => {
                self.local.broadcast(&EncodedPacket::new(packet), opts);
            }
        }
    }

    fn socket_json(info: &SocketInfo) -> Value {
        json!({
            "id": info.id.as_str(),
            "handshake": info.handshake,
            "rooms": info.rooms.iter().map(|r| r.as_ref()).collect::<Vec<_>>(),
            "data": info.data,
        })
    }

    fn socket_from_json(v: &Value) -> Option<SocketInfo> {
        Some(SocketInfo {
            id: v.get("id")?.as_str()?.parse().ok()?,
            rooms: v
                .get("rooms")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(room_text).collect())
                .unwrap_or_default(),
            data: v.get("data").cloned().unwrap_or(Value::Null),
            handshake: v.get("handshake").cloned().unwrap_or(Value::Null),
            local: None,
        })
    }

    fn local_join(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.local.select(opts) {
            socket.join(rooms.to_vec());
        }
    }

    fn local_leave(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.local.select(opts) {
            for room in rooms {
                socket.leave(room.clone());
            }
        }
    }

    fn local_disconnect(&self, opts: &BroadcastOptions, close: bool) {
        for socket in self.local.select(opts) {
            socket.disconnect(close);
        }
    }

    /// Runs a server-side emit from another node; `respond` publishes the handler's answer.
    fn run_server_event(&self, data: &Value, respond: Option<Box<dyn FnOnce(Value) + Send>>) {
        let Some(ns) = self.ctx.namespace() else {
            return;
        };
        let Some(items) = data.as_array() else {
            return;
        };
        let Some(name) = items.first().and_then(Value::as_str) else {
            return;
        };
        let args = items[1..].to_vec();
        match respond {
            None => ns.dispatch_server_event(ServerEvent::new(name.to_owned(), args, None)),
            Some(respond) => {
                let (tx, rx) = oneshot::channel();
                ns.dispatch_server_event(ServerEvent::new(name.to_owned(), args, Some(tx)));
                let wait = self.opts.requests_timeout;
                tokio::spawn(async move {
                    if let Ok(Ok(answer)) = tokio::time::timeout(wait, rx).await {
                        respond(answer);
                    }
                });
            }
        }
    }

    /// Delivers a broadcast that wants acknowledgements to local sockets and reports back:
    /// the client count first, then each answer.
    fn run_broadcast_with_ack(
        &self,
        mut packet: Packet,
        opts: BroadcastOptions,
        request_id: String,
        requester: Option<String>,
    ) {
        // The sender publishes before numbering the packet, as the reference does; each
        // receiving node numbers it for its own sockets.
        packet.id = Some(self.remote_ack_ids.fetch_add(1, Ordering::Relaxed));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = self
            .local
            .broadcast_with_ack(&EncodedPacket::new(packet), &opts, tx);
        let wait = opts.flags.timeout.unwrap_or(self.opts.requests_timeout);
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let count_msg = match self.opts.mode {
            Mode::Classic => json!({"type": classic_type::BROADCAST_CLIENT_COUNT, "requestId": request_id, "clientCount": n})
                .to_string()
                .into_bytes(),
            Mode::Sharded | Mode::Streams => self.cluster_message(
                cluster_type::BROADCAST_CLIENT_COUNT,
                codec::from_json(&json!({"requestId": request_id, "clientCount": n})),
            ),
        };
        let channel = self.response_channel_for(requester.as_deref());
        let _ = self.publish(channel.clone(), count_msg);
        if n == 0 {
            return;
        }
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + wait;
            for _ in 0..n {
                let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                    return;
                };
                let arg = payload
                    .args
                    .first()
                    .map(|a| codec::from_json_with_attachments(a, &payload.attachments))
                    .unwrap_or(Mp::Nil);
                let msg = match me.opts.mode {
                    Mode::Classic => codec::encode(&Mp::Map(vec![
                        (Mp::from("type"), Mp::from(classic_type::BROADCAST_ACK)),
                        (Mp::from("requestId"), Mp::from(request_id.as_str())),
                        (Mp::from("packet"), arg),
                    ])),
                    Mode::Sharded | Mode::Streams => me.cluster_message(
                        cluster_type::BROADCAST_ACK,
                        Mp::Map(vec![
                            (Mp::from("requestId"), Mp::from(request_id.as_str())),
                            (Mp::from("packet"), arg),
                        ]),
                    ),
                };
                let _ = me.publish(channel.clone(), msg);
            }
        });
    }

    fn response_channel_for(&self, requester: Option<&str>) -> String {
        match self.opts.mode {
            Mode::Classic => self.classic_response_channel(requester),
            Mode::Sharded | Mode::Streams => {
                format!("{}{}#", self.channels.main, requester.unwrap_or_default())
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Classic inbound

    // ---------------------------------------------------------------------------------
    // Sharded inbound

    async fn fetch_remote(&self, opts: &BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        let servers = self.count_servers().await?;
        let expected = servers.saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let timeout = opts.flags.timeout.unwrap_or(self.opts.requests_timeout);
        let (request_id, payload) = match self.opts.mode {
            Mode::Classic => {
                let id = uid2(6);
                let msg = json!({
                    "uid": self.uid,
                    "requestId": id,
                    "type": classic_type::REMOTE_FETCH,
                    "opts": options_json(opts, false),
                });
                (id, msg.to_string().into_bytes())
            }
            Mode::Sharded | Mode::Streams => {
                let id = hex_id();
                let data = json!({"opts": options_json(opts, true), "requestId": id});
                (
                    id,
                    self.cluster_message(cluster_type::FETCH_SOCKETS, codec::from_json(&data)),
                )
            }
        };
        let answers = self.request(request_id, expected, payload, timeout).await?;
        Ok(answers.iter().filter_map(Self::socket_from_json).collect())
    }

    /// Publishes a join/leave/disconnect for the other nodes.
    async fn publish_selection_op(
        &self,
        opts: &BroadcastOptions,
        classic: (u64, &str, Value),
        sharded: (u64, &str, Value),
    ) -> Result<(), AdapterError> {
        let payload = match self.opts.mode {
            Mode::Classic => {
                let (kind, field, value) = classic;
                let mut msg = serde_json::Map::new();
                msg.insert("uid".into(), Value::from(self.uid.as_str()));
                msg.insert("type".into(), Value::from(kind));
                msg.insert("opts".into(), options_json(opts, false));
                msg.insert(field.into(), value);
                Value::Object(msg).to_string().into_bytes()
            }
            Mode::Sharded | Mode::Streams => {
                let (kind, field, value) = sharded;
                let mut data = serde_json::Map::new();
                data.insert("opts".into(), options_json(opts, true));
                data.insert(field.into(), value);
                let data = codec::from_json(&Value::Object(data));
                if let Some(hub) = &self.hub {
                    let cmd = streams::xadd(hub.options(), &self.uid, self.nsp(), kind, &data);
                    return self.append(cmd, None).await;
                }
                self.cluster_message(kind, data)
            }
        };
        self.publish_confirmed(self.request_channel(), payload).await
    }
}

/// Removes a pending request when its waiter finishes, however it finishes.
struct RemoveOnDrop<'a, T> {
    map: &'a Mutex<HashMap<String, T>>,
    key: String,
}

impl<T> Drop for RemoveOnDrop<'_, T> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

impl Inbound for RedisAdapter {
    fn on_feed(&self, state: ferrio::ClusterFeed) {
        if let Some(ns) = self.ctx.namespace() {
            ns.cluster_feed(state);
        }
    }

    fn on_message(&self, route: RouteKind, channel: &str, payload: &[u8]) {
        let result = match route {
            RouteKind::Broadcast => self.on_classic_broadcast(channel, payload),
            RouteKind::Request => self.on_classic_request(payload),
            RouteKind::Response => self.on_classic_response(payload),
            RouteKind::Message => self.on_cluster_message(payload, false),
            RouteKind::ShardResponse => self.on_cluster_message(payload, true),
        };
        if let Err(e) = result {
            self.link.count_malformed();
            tracing::debug!(
                channel,
                error = e.to_string(),
                "ignored a malformed message from redis"
            );
        }
    }
}

impl Drop for RedisAdapter {
    fn drop(&mut self) {
        let ch = &self.channels;
        match self.opts.mode {
            Mode::Classic => {
                self.link.unsubscribe(SubKind::Pattern, &format!("{}*", ch.main));
                self.link.unsubscribe(SubKind::Channel, &ch.request);
                self.link.unsubscribe(SubKind::Channel, &ch.response);
                self.link.unsubscribe(SubKind::Channel, &ch.own);
            }
            Mode::Sharded | Mode::Streams => {
                self.link.unsubscribe(self.subscription_kind(), &ch.main);
                self.link.unsubscribe(self.subscription_kind(), &ch.own);
                if let Some(hub) = &self.hub {
                    hub.unregister(self.nsp());
                }
                let rooms = self.local.rooms();
                let lingering = std::mem::take(&mut *self.lingering.lock());
                for room in rooms.iter().chain(&lingering) {
                    if self.room_has_channel(room) {
                        self.link.unsubscribe(SubKind::Shard, &self.room_channel(room));
                    }
                }
            }
        }
    }
}

impl Adapter for RedisAdapter {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    fn add_all(&self, sid: Sid, rooms: SmallVec<[Room; 1]>) -> SmallVec<[Room; 1]> {
        let done = self.local.add_all(sid, rooms);
        for room in &done.edges {
            self.on_room_created(room);
        }
        done.changed
    }

    fn del(&self, sid: Sid, room: &Room) -> SmallVec<[Room; 1]> {
        let done = self.local.del(sid, room);
        for room in &done.edges {
            self.on_room_emptied(room);
        }
        done.changed
    }

    fn del_all(&self, sid: Sid) -> SmallVec<[Room; 1]> {
        let done = self.local.del_all(sid);
        for room in &done.edges {
            self.on_room_emptied(room);
        }
        done.changed
    }

    fn broadcast(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> Result<usize, AdapterError> {
        if self.hub.is_some() && !opts.flags.local {
            let (local, appended) = self.broadcast_to_stream(packet, opts);
            return appended.map(|_| local);
        }
        let n = self.local.broadcast(packet, opts);
        if opts.flags.local {
            return Ok(n);
        }
        let failed: Box<dyn FnOnce() + Send + Sync> = Box::new(|| {
            tracing::warn!("Redis did not take a broadcast into its rooms' histories");
        });
        if let Some(Err(e)) = self.append_history(packet, opts, Some(failed)) {
            tracing::warn!(error = %e, "a broadcast could not be kept in its rooms' histories");
        }
        let (channel, payload) = self.broadcast_payload(&packet.cluster_packet(), opts);
        self.publish(channel, payload)?;
        Ok(n)
    }

    fn broadcast_confirmed(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> Sent {
        if self.hub.is_some() && !opts.flags.local {
            let (local, appended) = self.broadcast_to_stream(packet, opts);
            let cluster: BoxFuture<'static, Result<(), AdapterError>> = match appended {
                Ok(receipt) => Box::pin(receipt),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            };
            return Sent { local, cluster };
        }
        let local = self.local.broadcast(packet, opts);
        if opts.flags.local {
            return Sent {
                local,
                cluster: Box::pin(std::future::ready(Ok(()))),
            };
        }
        let (channel, payload) = self.broadcast_payload(&packet.cluster_packet(), opts);
        // Every node that serves the namespace receives its broadcasts: classic nodes through
        // one pattern, sharded ones through the namespace's or the room's channel.
        // Every classic node subscribes to the namespace's pattern and its request channel
        // on one connection; a sharded room channel counts its own subscribers.
        let reach = match self.opts.mode {
            // On a Redis Cluster a PUBLISH counts the subscribers of the shard that owns
            // the channel only: each channel has its own count there.
            Mode::Classic => ReachKey {
                key: if self.link.is_cluster() {
                    channel.clone()
                } else {
                    self.channels.main.clone()
                },
                count_channel: self.channels.request.clone(),
                node_channel: None,
            },
            Mode::Sharded | Mode::Streams => ReachKey {
                node_channel: (channel != self.channels.main).then(|| self.channels.main.clone()),
                key: channel.clone(),
                count_channel: channel.clone(),
            },
        };
        // Confirmed when the publish reached the other nodes and the rooms' histories (if
        // any) have the message.
        let history = self.append_history(packet, opts, None);
        let cluster: BoxFuture<'static, Result<(), AdapterError>> =
            match self
                .link
                .publish_receipt(self.sharded(), channel, payload, Some(reach))
            {
                Ok(receipt) => Box::pin(async move {
                    if let Some(history) = history {
                        history?.await?;
                    }
                    receipt.await.map_err(unavailable)
                }),
                Err(e) => Box::pin(std::future::ready(Err(unavailable(e)))),
            };
        Sent { local, cluster }
    }

    fn broadcast_with_ack(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        acks: mpsc::UnboundedSender<(Sid, Payload)>,
    ) -> BoxFuture<'_, Result<usize, AdapterError>> {
        let local = self.local.broadcast_with_ack(packet, opts, acks.clone());
        if opts.flags.local {
            return Box::pin(async move { Ok(local) });
        }
        let timeout = opts.flags.timeout.unwrap_or(self.opts.requests_timeout);
        let (counts_tx, mut counts) = mpsc::unbounded_channel();
        let (request_id, channel, payload) = match self.opts.mode {
            Mode::Classic => {
                let id = uid2(6);
                let msg = Mp::Map(vec![
                    (Mp::from("uid"), Mp::from(self.uid.as_str())),
                    (Mp::from("requestId"), Mp::from(id.as_str())),
                    (Mp::from("type"), Mp::from(classic_type::BROADCAST)),
                    (
                        Mp::from("packet"),
                        codec::packet_to_msgpack(&unnumbered(packet.packet()), true),
                    ),
                    (Mp::from("opts"), options_mp(opts, true)),
                ]);
                (id, self.channels.request.clone(), codec::encode(&msg))
            }
            Mode::Sharded | Mode::Streams => {
                let id = hex_id();
                let data = Mp::Map(vec![
                    (
                        Mp::from("packet"),
                        codec::packet_to_msgpack(&unnumbered(packet.packet()), false),
                    ),
                    (Mp::from("requestId"), Mp::from(id.as_str())),
                    (Mp::from("opts"), options_mp(opts, true)),
                ]);
                (
                    id,
                    self.channels.main.clone(),
                    self.cluster_message(cluster_type::BROADCAST, data),
                )
            }
        };
        self.ack_requests.lock().insert(
            request_id.clone(),
            AckRequest {
                acks,
                counts: counts_tx,
            },
        );
        // Answers are forwarded until the broadcast's own timeout, as in the reference.
        let me = self.me.clone();
        let forget = request_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(me) = me.upgrade() {
                me.ack_requests.lock().remove(&forget);
            }
        });
        let published = self.publish(channel, payload);
        Box::pin(async move {
            if let Err(e) = published {
                tracing::debug!(error = e.to_string(), "broadcast with ack reached this node only");
                return Ok(local);
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let Ok(servers) = self.count_servers().await else {
                return Ok(local);
            };
            let mut total = local;
            for _ in 1..servers {
                match tokio::time::timeout_at(deadline, counts.recv()).await {
                    Ok(Some(n)) => total += n,
                    _ => break,
                }
            }
            Ok(total)
        })
    }

    fn fetch_sockets(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>> {
        Box::pin(async move {
            let mut sockets = self.local.fetch_sockets(&opts);
            if !opts.flags.local {
                sockets.extend(self.fetch_remote(&opts).await?);
            }
            Ok(sockets)
        })
    }

    fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_join(&opts, &rooms);
        Box::pin(async move {
            if opts.flags.local {
                return Ok(());
            }
            let value = names(&rooms);
            self.publish_selection_op(
                &opts,
                (classic_type::REMOTE_JOIN, "rooms", value.clone()),
                (cluster_type::SOCKETS_JOIN, "rooms", value),
            )
            .await
        })
    }

    fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_leave(&opts, &rooms);
        Box::pin(async move {
            if opts.flags.local {
                return Ok(());
            }
            let value = names(&rooms);
            self.publish_selection_op(
                &opts,
                (classic_type::REMOTE_LEAVE, "rooms", value.clone()),
                (cluster_type::SOCKETS_LEAVE, "rooms", value),
            )
            .await
        })
    }

    fn disconnect_sockets(
        &self,
        opts: BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_disconnect(&opts, close);
        Box::pin(async move {
            if opts.flags.local {
                return Ok(());
            }
            self.publish_selection_op(
                &opts,
                (classic_type::REMOTE_DISCONNECT, "close", Value::Bool(close)),
                (cluster_type::DISCONNECT_SOCKETS, "close", Value::Bool(close)),
            )
            .await
        })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        Box::pin(async move {
            let mut rooms = self.local.rooms();
            match self.opts.mode {
                Mode::Classic => {
                    let expected = self.count_servers().await?.saturating_sub(1);
                    if expected > 0 {
                        let id = uid2(6);
                        let msg = json!({"uid": self.uid, "requestId": id, "type": classic_type::ALL_ROOMS});
                        let answers = self
                            .request(
                                id,
                                expected,
                                msg.to_string().into_bytes(),
                                self.opts.requests_timeout,
                            )
                            .await?;
                        rooms.extend(answers.iter().filter_map(room_text));
                    }
                }
                Mode::Sharded | Mode::Streams => {
                    // The cluster format has no rooms request: the rooms of every socket
                    // elsewhere, their own ids left out.
                    for socket in self.fetch_remote(&BroadcastOptions::default()).await? {
                        let own = socket.id.as_str();
                        rooms.extend(socket.rooms.into_iter().filter(|r| r.as_ref() != own));
                    }
                }
            }
            Ok(rooms)
        })
    }

    fn server_side_emit(&self, args: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            let payload = match self.opts.mode {
                Mode::Classic => {
                    json!({"uid": self.uid, "type": classic_type::SERVER_SIDE_EMIT, "data": args})
                        .to_string()
                        .into_bytes()
                }
                Mode::Sharded | Mode::Streams => self.cluster_message(
                    cluster_type::SERVER_SIDE_EMIT,
                    codec::from_json(&json!({"packet": args})),
                ),
            };
            self.publish_confirmed(self.request_channel(), payload).await
        })
    }

    fn server_side_emit_with_ack(
        &self,
        args: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async move {
            let expected = self.count_servers().await?.saturating_sub(1);
            if expected == 0 {
                return Ok(Vec::new());
            }
            let (id, payload) = match self.opts.mode {
                Mode::Classic => {
                    let id = uid2(6);
                    let msg = json!({"uid": self.uid, "requestId": id, "type": classic_type::SERVER_SIDE_EMIT, "data": args});
                    (id, msg.to_string().into_bytes())
                }
                Mode::Sharded | Mode::Streams => {
                    let id = hex_id();
                    let data = json!({"requestId": id, "packet": args});
                    (
                        id,
                        self.cluster_message(cluster_type::SERVER_SIDE_EMIT, codec::from_json(&data)),
                    )
                }
            };
            self.request(id, expected, payload, timeout).await
        })
    }

    fn server_count(&self) -> BoxFuture<'_, Result<usize, AdapterError>> {
        Box::pin(async move { Ok(self.count_servers().await?.max(1)) })
    }

    fn history_store(&self) -> Option<Arc<dyn ferrio::HistoryStore>> {
        let rules = self.history.clone()?;
        Some(Arc::new(crate::history::RedisHistory {
            link: self.link.clone(),
            rules,
            nsp: self.nsp().to_owned(),
        }))
    }

    fn session_log(&self) -> Option<Arc<dyn ferrio::SessionLog>> {
        let hub = self.hub.as_ref()?;
        Some(Arc::new(streams::StreamLog {
            link: self.link.clone(),
            opts: hub.options().clone(),
            nsp: self.nsp().to_owned(),
            sessions: hub.sessions(self.link.clone()),
            position: hub.position(),
        }))
    }

    fn is_healthy(&self) -> bool {
        self.link.is_healthy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_have_the_reference_shapes() {
        let classic = uid2(6);
        assert_eq!(classic.len(), 6);
        assert!(classic.chars().all(|c| c.is_ascii_alphanumeric()));
        let sharded = hex_id();
        assert_eq!(sharded.len(), 16);
        assert!(sharded.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(remote_ack_sid().as_str(), REMOTE_ACK_SID);
    }

    #[test]
    fn options_round_trip_through_the_wire_shape() {
        let opts = BroadcastOptions {
            rooms: smallvec::smallvec![Room::from("a")],
            except: smallvec::smallvec![Room::from("b")],
            flags: BroadcastFlags {
                volatile: true,
                local: false,
                timeout: Some(Duration::from_millis(1500)),
            },
        };
        let wire = options_json(&opts, true);
        assert_eq!(
            wire,
            json!({"rooms": ["a"], "except": ["b"], "flags": {"volatile": true, "timeout": 1500}})
        );
        let back = options_from(Some(&wire));
        assert_eq!(back.rooms, opts.rooms);
        assert_eq!(back.except, opts.except);
        assert_eq!(back.flags, opts.flags);
        // Numeric rooms (Node allows them) become their text.
        let numeric = options_from(Some(&json!({"rooms": [5], "except": []})));
        assert_eq!(numeric.rooms.as_slice(), &[Room::from("5")]);
        // Straight to msgpack and back, the same shape as through JSON.
        let mp = options_mp(&opts, true);
        assert_eq!(codec::to_json(&mp), wire);
        let back = wire::options_from_mp(Some(&mp));
        assert_eq!(
            (back.rooms, back.except, back.flags),
            (opts.rooms.clone(), opts.except.clone(), opts.flags)
        );
        let body = Body::Mp(Mp::Map(vec![(Mp::from("opts"), mp)]));
        assert_eq!(body.options().rooms, opts.rooms);
        assert!(!body.has("requestId"));
        let numeric = wire::options_from_mp(Some(&codec::from_json(&json!({"rooms": [5], "except": []}))));
        assert_eq!(numeric.rooms.as_slice(), &[Room::from("5")]);
    }
}
