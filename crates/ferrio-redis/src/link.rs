//! The node's connections to Redis: one ordered, bounded publish queue drained by a
//! publisher task, one subscriber connection that keeps every wanted channel subscribed
//! (across reconnects), and the table that routes each received message to the namespace
//! adapter that owns its channel.
//!
//! Failure policy: nothing here ever makes local delivery wait. A publish is queued without
//! awaiting; when the queue is full or Redis is known to be down it fails at once and is
//! counted. The publisher sends each batch with a deadline; a batch that misses it fails,
//! the connection is dropped and re-established with exponential backoff. The subscriber
//! reconnects with backoff too, and subscribes to every channel again on each new
//! connection. Messages published while a node was cut off are not replayed (at most once,
//! as with the reference adapter).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use ferrio::ClusterFeed;

/// Why a Redis operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Redis did not answer in time.
    #[error("redis timed out")]
    Timeout,
    /// The connection is down (or reconnecting after a failure).
    #[error("redis unavailable: {0}")]
    Down(String),
    /// The publish queue is full.
    #[error("publish queue full")]
    QueueFull,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(String),
    /// Redis took the message, but fewer nodes were subscribed than before the last outage:
    /// some are still reconnecting and missed it.
    #[error("reached {reached} of {expected} subscribed nodes")]
    Incomplete { reached: u64, expected: u64 },
}

/// Where the node connects.
#[derive(Clone)]
pub(crate) enum Target {
    Standalone(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// Timing and bounds of the connections.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub publish_timeout: Duration,
    pub connect_timeout: Duration,
    pub health_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub queue_len: usize,
    pub queue_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            publish_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(1000),
            health_interval: Duration::from_millis(1000),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            queue_len: 4096,
            queue_bytes: 64 << 20,
        }
    }
}

/// Counters of one node's Redis traffic.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub published: AtomicU64,
    pub publish_failed: AtomicU64,
    pub publish_rejected: AtomicU64,
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    pub subscriber_reconnects: AtomicU64,
}

/// A snapshot of a node's Redis counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages Redis accepted.
    pub published: u64,
    /// Messages sent to Redis that failed (timeout, connection lost, error reply).
    pub publish_failed: u64,
    /// Messages refused before sending: Redis known down, or the queue full.
    pub publish_rejected: u64,
    /// Messages received from Redis.
    pub received: u64,
    /// Received messages that could not be decoded.
    pub malformed: u64,
    /// Times the subscriber connection was re-established.
    pub subscriber_reconnects: u64,
    /// Whether the publisher can reach Redis now.
    pub publisher_up: bool,
    /// Whether the subscriber connection is up with every channel subscribed.
    pub subscriber_up: bool,
}

/// The kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SubKind {
    Channel,
    Pattern,
    Shard,
}

/// Receives the messages of the channels it registered.
pub(crate) trait Inbound: Send + Sync + 'static {
    fn on_message(&self, route: RouteKind, channel: &str, payload: &[u8]);

    /// The subscriber connection's state changed (see [`ferrio::ClusterFeed`]).
    fn on_feed(&self, _state: ferrio::ClusterFeed) {}
}

/// What a channel carries, for the adapter that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// Classic broadcasts (`<key>#<nsp>#*`).
    Broadcast,
    /// Classic requests.
    Request,
    /// Classic responses.
    Response,
    /// Sharded messages (namespace and room channels).
    Message,
    /// Sharded responses addressed to this node.
    ShardResponse,
}

struct Route {
    kind: RouteKind,
    target: Weak<dyn Inbound>,
}

#[derive(Default)]
struct Routes {
    channels: HashMap<String, Route>,
    patterns: HashMap<String, Route>,
    shards: HashMap<String, Route>,
}

impl Routes {
    fn table(&mut self, kind: SubKind) -> &mut HashMap<String, Route> {
        match kind {
            SubKind::Channel => &mut self.channels,
            SubKind::Pattern => &mut self.patterns,
            SubKind::Shard => &mut self.shards,
        }
    }

    fn wanted(&self) -> HashSet<(SubKind, String)> {
        let mut out = HashSet::new();
        out.extend(self.channels.keys().map(|k| (SubKind::Channel, k.clone())));
        out.extend(self.patterns.keys().map(|k| (SubKind::Pattern, k.clone())));
        out.extend(self.shards.keys().map(|k| (SubKind::Shard, k.clone())));
        out
    }
}

/// What is told when Redis answered a queued message (or failed).
pub(crate) type Done = Box<dyn FnOnce(Result<Value, LinkError>) + Send + Sync>;

/// One message for Redis: a `PUBLISH` (`SPUBLISH`) of `payload` to `channel`, or, with
/// `command`, that command (whose key is `channel`: the pipelines of a cluster are per key).
pub(crate) struct Outgoing {
    pub sharded: bool,
    pub channel: String,
    pub payload: Bytes,
    pub command: Option<Cmd>,
    /// What the publish must reach to be confirmed (see [`Reach`]); none for messages that
    /// only some nodes are meant to receive.
    pub reach: Option<ReachKey>,
    pub done: Option<Done>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.payload.len()
            + self.channel.len()
            + self.command.as_ref().map_or(0, |c| c.get_packed_command().len())
    }

    fn add_to(&self, pipe: &mut redis::Pipeline) {
        match &self.command {
            Some(cmd) => {
                pipe.add_command(cmd.clone());
            }
            None => {
                pipe.cmd(if self.sharded { "SPUBLISH" } else { "PUBLISH" })
                    .arg(&self.channel)
                    .arg(&self.payload[..]);
            }
        }
    }
}

/// Which nodes a confirmed publish must reach: those counted under `key` (the namespace, or
/// a sharded room channel), who are also the subscribers of `count_channel`. For a sharded
/// room channel, `node_channel` is the namespace's channel, which every node of the namespace
/// subscribes to: it tells a node that left the room from a node that lost its connection.
#[derive(Debug, Clone)]
pub(crate) struct ReachKey {
    pub key: String,
    pub count_channel: String,
    pub node_channel: Option<String>,
}

/// How long after Redis answers again a publish must still reach as many nodes as before
/// the outage to be confirmed.
const SETTLE: Duration = Duration::from_secs(5);

/// How long a lower subscriber count must last before it is taken as nodes having left
/// rather than reconnecting: longer than a reconnection and resubscription takes.
const DROP_HOLD: Duration = Duration::from_secs(2);

/// Bound of the subscriber counts remembered (one per namespace, or room channel when
/// sharded); past it the least recently used go.
const MAX_REACH_KEYS: usize = 16_384;

/// What confirms a publish: Redis answers a PUBLISH with how many subscribers got it.
///
/// * A count lower than the one seen before may mean a node lost its subscriber connection
///   and is resubscribing: the publish is not confirmed. Only when the lower count has held
///   for [`DROP_HOLD`] is it taken as nodes having left. (For a sharded room channel, a
///   lower count while the namespace's channel keeps its count is a node leaving the room,
///   taken at once.)
/// * From this node's own failure until [`SETTLE`] after its first publish that succeeds
///   again, the count from before the failure is the bar, and the count is also asked again
///   one round trip after the publish: Redis may have counted a subscriber connection that
///   its node had already given up (and not yet seen it close).
#[derive(Default)]
struct Reach {
    seen: HashMap<String, (u64, Instant)>,
    dropped: HashMap<String, Instant>,
    failed: bool,
    settle_until: Option<Instant>,
}

/// The verdict on one publish's count.
enum Verdict {
    Reached,
    /// Fewer nodes than expected: `dropped` when not settling (maybe a node that left).
    Short {
        reached: u64,
        expected: u64,
        dropped: bool,
    },
}

impl Reach {
    fn failure(&mut self) {
        self.failed = true;
        self.settle_until = None;
    }

    fn settling(&self, now: Instant) -> bool {
        self.failed || self.settle_until.is_some_and(|until| now < until)
    }

    fn expected(&self, key: &str) -> Option<u64> {
        self.seen.get(key).map(|(n, _)| *n)
    }

    fn remember(&mut self, key: &str, count: u64, now: Instant) {
        if self.seen.len() >= MAX_REACH_KEYS && !self.seen.contains_key(key) {
            // Forget the quarter used least recently.
            let mut ages: Vec<Instant> = self.seen.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 4];
            self.seen.retain(|_, (_, at)| *at > cutoff);
            self.dropped.retain(|k, _| self.seen.contains_key(k));
        }
        self.seen.insert(key.to_owned(), (count, now));
    }

    /// Takes a lower count as the new normal (nodes left).
    fn accept(&mut self, key: &str, count: u64, now: Instant) {
        self.dropped.remove(key);
        self.remember(key, count, now);
    }

    fn check(&mut self, key: &str, reached: u64, now: Instant) -> Verdict {
        if std::mem::take(&mut self.failed) {
            self.settle_until = Some(now + SETTLE);
        }
        let settling = self.settle_until.is_some_and(|until| now < until);
        match self.expected(key) {
            Some(expected) if reached < expected => {
                if settling {
                    return Verdict::Short {
                        reached,
                        expected,
                        dropped: false,
                    };
                }
                let since = *self.dropped.entry(key.to_owned()).or_insert(now);
                if now.duration_since(since) >= DROP_HOLD {
                    self.accept(key, reached, now);
                    return Verdict::Reached;
                }
                Verdict::Short {
                    reached,
                    expected,
                    dropped: true,
                }
            }
            expected => {
                self.dropped.remove(key);
                if !settling || reached > expected.unwrap_or(0) {
                    self.remember(key, reached, now);
                } else if let Some(entry) = self.seen.get_mut(key) {
                    entry.1 = now;
                }
                Verdict::Reached
            }
        }
    }
}

/// `PUBSUB NUMSUB` (or `SHARDNUMSUB`) of several channels in one command, without touching
/// the publisher's state (a slow answer here must not count as Redis failing).
async fn count_subscribers(
    shared: &Shared,
    sharded: bool,
    channels: &[String],
) -> Option<HashMap<String, u64>> {
    if channels.is_empty() {
        return Some(HashMap::new());
    }
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg(if sharded { "SHARDNUMSUB" } else { "NUMSUB" });
    for channel in channels {
        cmd.arg(channel.as_str());
    }
    let value = shared.ask(&cmd).await.ok()?;
    Some(
        channels
            .iter()
            .map(|c| (c.clone(), count_in(&value, c) as u64))
            .collect(),
    )
}

/// Distinct channels recounted per batch at most; the others are not confirmed meanwhile.
const MAX_RECOUNT: usize = 64;

/// The waits between reconnection attempts: ferrio's one backoff policy (doubling from `min`
/// to `max`, a fifth either way at random) and its attempt counter.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: ferrio::proto::backoff::Backoff,
    attempts: ferrio::proto::backoff::Attempts,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            policy: ferrio::proto::backoff::Backoff::doubling(min, max, 0.2),
            attempts: Default::default(),
        }
    }

    pub(crate) fn step(&mut self) -> Duration {
        self.attempts
            .next_delay(&self.policy, rand::random::<f64>())
            .unwrap_or(self.policy.max)
    }

    pub(crate) fn reset(&mut self) {
        self.attempts.reset();
    }
}

/// The command connection: publishes and queries. Standalone connections are (re)made
/// here, lazily and with backoff; a cluster connection repairs itself.
#[allow(clippy::large_enum_variant)] // one per node, never moved
enum Commands {
    Standalone {
        client: redis::Client,
        config: AsyncConnectionConfig,
        current: Mutex<Option<MultiplexedConnection>>,
        connecting: tokio::sync::Mutex<()>,
        backoff: Mutex<(Backoff, Option<Instant>)>,
    },
    Cluster(ClusterConnection),
}

enum Handle {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Commands {
    async fn handle(&self) -> Result<Handle, LinkError> {
        match self {
            Commands::Cluster(conn) => Ok(Handle::Cluster(conn.clone())),
            Commands::Standalone {
                client,
                config,
                current,
                connecting,
                backoff,
            } => {
                if let Some(conn) = current.lock().clone() {
                    return Ok(Handle::Standalone(conn));
                }
                let _one_at_a_time = connecting.lock().await;
                if let Some(conn) = current.lock().clone() {
                    return Ok(Handle::Standalone(conn));
                }
                if let Some(at) = backoff.lock().1
                    && Instant::now() < at
                {
                    return Err(LinkError::Down("reconnecting".into()));
                }
                match client.get_multiplexed_async_connection_with_config(config).await {
                    Ok(conn) => {
                        backoff.lock().0.reset();
                        backoff.lock().1 = None;
                        *current.lock() = Some(conn.clone());
                        Ok(Handle::Standalone(conn))
                    }
                    Err(e) => {
                        let mut b = backoff.lock();
                        let wait = b.0.step();
                        b.1 = Some(Instant::now() + wait);
                        Err(LinkError::Down(e.to_string()))
                    }
                }
            }
        }
    }

    /// Whether the last failure dropped a connection that had worked (rather than a
    /// reconnection attempt failing); resets the mark.
    fn was_connected(&self) -> bool {
        match self {
            Commands::Standalone { backoff, .. } => backoff.lock().1.is_none(),
            Commands::Cluster(_) => false,
        }
    }

    /// Drops a standalone connection that failed, so the next use reconnects.
    fn invalidate(&self) {
        if let Commands::Standalone { current, .. } = self {
            current.lock().take();
        }
    }
}

fn redis_error(e: redis::RedisError) -> LinkError {
    if e.is_timeout() {
        LinkError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        LinkError::Down(e.to_string())
    } else {
        LinkError::Redis(e.to_string())
    }
}

/// What the tasks share with the handle.
struct Shared {
    target: Target,
    settings: Settings,
    counters: Counters,
    commands: Commands,
    routes: RwLock<Routes>,
    routes_changed: Notify,
    /// Bumped on every routing change; `synced_gen` is the change the subscriber caught up with.
    routes_gen: AtomicU64,
    synced_gen: AtomicU64,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    queued_bytes: AtomicUsize,
    reach: Mutex<Reach>,
    /// Since when the publisher connection has been failing, for the log line when it is back.
    publisher_down_since: Mutex<Option<Instant>>,
}

impl Shared {
    /// Records whether the command connection works, logging each change.
    fn publisher_state(&self, up: bool, error: Option<&LinkError>) {
        self.publisher_up.store(up, Ordering::Release);
        let mut since = self.publisher_down_since.lock();
        match (up, since.is_some()) {
            (false, false) => {
                *since = Some(Instant::now());
                self.reach.lock().failure();
                tracing::warn!(
                    error = error.map(ToString::to_string),
                    "redis unreachable: publishes are refused until it answers again"
                );
            }
            (true, true) => {
                let down = since.take().map(|t| t.elapsed()).unwrap_or_default();
                tracing::info!(
                    down_ms = down.as_millis() as u64,
                    "redis answers again: publishing resumed"
                );
            }
            _ => {}
        }
    }

    /// Runs one command on the command connection, within the publish timeout; what it
    /// says of Redis's state is the caller's to record.
    async fn ask(&self, cmd: &Cmd) -> Result<Value, LinkError> {
        let handle = self.commands.handle().await?;
        let deadline = self.settings.publish_timeout;
        let result = match handle {
            Handle::Standalone(mut conn) => {
                tokio::time::timeout(deadline, conn.req_packed_command(cmd)).await
            }
            Handle::Cluster(mut conn) => tokio::time::timeout(deadline, conn.req_packed_command(cmd)).await,
        };
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(redis_error(e)),
            Err(_) => Err(LinkError::Timeout),
        }
    }

    async fn query(&self, cmd: &Cmd) -> Result<Value, LinkError> {
        let result = self.ask(cmd).await;
        match &result {
            Ok(_) => self.publisher_state(true, None),
            Err(LinkError::Redis(_)) => {}
            Err(e) => {
                self.publisher_state(false, Some(e));
                self.commands.invalidate();
            }
        }
        result
    }

    /// Sends a batch in order: one pipeline (one per channel on a cluster, whose pipelines
    /// must stay within one slot).
    /// Returns each message's answer (for a publish, how many subscribers it reached).
    async fn send_batch(&self, batch: &[Outgoing]) -> Result<Vec<Value>, LinkError> {
        let handle = self.commands.handle().await?;
        let deadline = self.settings.publish_timeout;
        let result = match handle {
            Handle::Standalone(mut conn) => {
                let mut pipe = redis::pipe();
                for out in batch {
                    out.add_to(&mut pipe);
                }
                tokio::time::timeout(deadline, pipe.query_async::<Vec<Value>>(&mut conn)).await
            }
            Handle::Cluster(conn) => {
                // One pipeline per channel; `members` maps each answer back to its message.
                let mut groups: Vec<(&str, redis::Pipeline, Vec<usize>)> = Vec::new();
                for (i, out) in batch.iter().enumerate() {
                    let idx = match groups.iter().position(|(c, _, _)| *c == out.channel) {
                        Some(g) => g,
                        None => {
                            groups.push((&out.channel, redis::pipe(), Vec::new()));
                            groups.len() - 1
                        }
                    };
                    let group = &mut groups[idx];
                    out.add_to(&mut group.1);
                    group.2.push(i);
                }
                let sends = groups.into_iter().map(|(_, pipe, members)| {
                    let mut conn = conn.clone();
                    async move {
                        let counts: Vec<Value> = pipe.query_async(&mut conn).await?;
                        Ok::<_, redis::RedisError>((members, counts))
                    }
                });
                tokio::time::timeout(deadline, async {
                    let mut reached = vec![Value::Nil; batch.len()];
                    for r in futures_util::future::join_all(sends).await {
                        let (members, counts) = r?;
                        for (i, n) in members.into_iter().zip(counts) {
                            reached[i] = n;
                        }
                    }
                    Ok(reached)
                })
                .await
            }
        };
        let result = match result {
            Ok(Ok(reached)) => Ok(reached),
            Ok(Err(e)) => Err(redis_error(e)),
            Err(_) => Err(LinkError::Timeout),
        };
        match &result {
            Ok(_) => self.publisher_state(true, None),
            Err(LinkError::Redis(_)) => {}
            Err(e) => {
                self.publisher_state(false, Some(e));
                self.commands.invalidate();
            }
        }
        result
    }

    /// Tells every adapter how the feed is.
    fn feed(&self, state: ferrio::ClusterFeed) {
        let targets: Vec<Arc<dyn Inbound>> = {
            let routes = self.routes.read();
            let mut seen = HashSet::new();
            [&routes.channels, &routes.patterns, &routes.shards]
                .into_iter()
                .flat_map(|table| table.values())
                .filter_map(|route| route.target.upgrade())
                .filter(|t| seen.insert(Arc::as_ptr(t) as *const () as usize))
                .collect()
        };
        for target in targets {
            target.on_feed(state);
        }
    }

    fn dispatch(&self, info: PushInfo) {
        let (kind, key_at, channel_at, payload_at) = match info.kind {
            PushKind::Message => (SubKind::Channel, 0, 0, 1),
            PushKind::PMessage => (SubKind::Pattern, 0, 1, 2),
            PushKind::SMessage => (SubKind::Shard, 0, 0, 1),
            _ => return,
        };
        let text = |v: Option<&Value>| v.and_then(value_text);
        let (Some(key), Some(channel)) = (text(info.data.get(key_at)), text(info.data.get(channel_at)))
        else {
            return;
        };
        let Some(Value::BulkString(payload)) = info.data.get(payload_at) else {
            return;
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let target = {
            let routes = self.routes.read();
            let table = match kind {
                SubKind::Channel => &routes.channels,
                SubKind::Pattern => &routes.patterns,
                SubKind::Shard => &routes.shards,
            };
            table
                .get(&key)
                .and_then(|r| r.target.upgrade().map(|t| (r.kind, t)))
        };
        if let Some((route, target)) = target {
            target.on_message(route, &channel, payload);
        }
    }
}

/// A node's connections to Redis. Dropping it stops its tasks.
pub(crate) struct Link {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Outgoing>,
    _stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("stats", &self.stats()).finish()
    }
}

impl Link {
    /// Connects (the first connection must succeed within the connect timeout) and starts
    /// the publisher and subscriber tasks.
    pub(crate) async fn connect(target: Target, settings: Settings) -> Result<Arc<Self>, LinkError> {
        Self::start(target, settings, true).await
    }

    /// Like [`Link::connect`], without a subscriber (for emitters).
    pub(crate) async fn connect_publisher(
        target: Target,
        settings: Settings,
    ) -> Result<Arc<Self>, LinkError> {
        Self::start(target, settings, false).await
    }

    async fn start(target: Target, settings: Settings, subscriber: bool) -> Result<Arc<Self>, LinkError> {
        let commands = match &target {
            Target::Standalone(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.publish_timeout));
                let conn = tokio::time::timeout(
                    settings.connect_timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| LinkError::Timeout)?
                .map_err(redis_error)?;
                Commands::Standalone {
                    client: (**client).clone(),
                    config,
                    current: Mutex::new(Some(conn)),
                    connecting: tokio::sync::Mutex::new(()),
                    backoff: Mutex::new((Backoff::new(settings.backoff_min, settings.backoff_max), None)),
                }
            }
            Target::Cluster(client) => {
                let conn = tokio::time::timeout(settings.connect_timeout * 5, client.get_async_connection())
                    .await
                    .map_err(|_| LinkError::Timeout)?
                    .map_err(redis_error)?;
                Commands::Cluster(conn)
            }
        };
        let (queue, rx) = mpsc::channel(settings.queue_len);
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            target,
            settings,
            counters: Counters::default(),
            commands,
            routes: RwLock::new(Routes::default()),
            routes_changed: Notify::new(),
            routes_gen: AtomicU64::new(0),
            synced_gen: AtomicU64::new(u64::MAX),
            publisher_up: AtomicBool::new(true),
            subscriber_up: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            reach: Mutex::new(Reach::default()),
            publisher_down_since: Mutex::new(None),
        });
        tokio::spawn(run_publisher(shared.clone(), rx));
        if subscriber {
            tokio::spawn(run_subscriber(shared.clone(), stopped));
        }
        Ok(Arc::new(Self {
            shared,
            queue,
            _stop: stop,
        }))
    }

    /// Queues a message; fails at once when Redis is known down or the queue is full.
    pub(crate) fn publish(&self, sharded: bool, channel: String, payload: Vec<u8>) -> Result<(), LinkError> {
        self.enqueue(Outgoing {
            sharded,
            channel,
            payload: Bytes::from(payload),
            command: None,
            reach: None,
            done: None,
        })
    }

    /// Queues a command, in order with the publishes; `done` gets Redis's answer.
    pub(crate) fn command(&self, key: String, cmd: Cmd, done: Option<Done>) -> Result<(), LinkError> {
        self.enqueue(Outgoing {
            sharded: false,
            channel: key,
            payload: Bytes::new(),
            command: Some(cmd),
            reach: None,
            done,
        })
    }

    /// Runs one command on the command connection (not queued behind publishes).
    pub(crate) async fn query(&self, cmd: &Cmd) -> Result<Value, LinkError> {
        self.shared.query(cmd).await
    }

    /// Runs a pipeline on the command connection (not queued behind publishes); Redis's
    /// answers in order.
    pub(crate) async fn pipeline(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, LinkError> {
        let handle = self.shared.commands.handle().await?;
        let deadline = self.shared.settings.publish_timeout;
        let answer = match handle {
            Handle::Standalone(mut conn) => tokio::time::timeout(deadline, pipe.query_async(&mut conn)).await,
            Handle::Cluster(mut conn) => tokio::time::timeout(deadline, pipe.query_async(&mut conn)).await,
        };
        match answer {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(redis_error(e)),
            Err(_) => Err(LinkError::Timeout),
        }
    }

    /// Queues a message and waits until Redis took it (or refused it).
    pub(crate) async fn publish_confirmed(
        &self,
        sharded: bool,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), LinkError> {
        self.publish_receipt(sharded, channel, payload, None)?.await
    }

    /// Queues a message now (in order with every other publish of this node) and returns
    /// what resolves once Redis took it: `Ok` when it did and, with `reach`, reached every
    /// node that was subscribed before the last outage.
    pub(crate) fn publish_receipt(
        &self,
        sharded: bool,
        channel: String,
        payload: Vec<u8>,
        reach: Option<ReachKey>,
    ) -> Result<impl std::future::Future<Output = Result<(), LinkError>> + Send + 'static, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Outgoing {
            sharded,
            channel,
            payload: Bytes::from(payload),
            command: None,
            reach,
            done: Some(Box::new(move |result: Result<Value, LinkError>| {
                let _ = tx.send(result.map(drop));
            })),
        })?;
        let deadline = self.shared.settings.publish_timeout * 3;
        Ok(async move {
            match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(LinkError::Down("publisher stopped".into())),
                Err(_) => Err(LinkError::Timeout),
            }
        })
    }

    fn enqueue(&self, out: Outgoing) -> Result<(), LinkError> {
        let s = &self.shared;
        if !s.publisher_up.load(Ordering::Acquire) {
            s.counters.publish_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::Down("redis unreachable".into()));
        }
        let size = out.size();
        if s.queued_bytes.fetch_add(size, Ordering::AcqRel) + size > s.settings.queue_bytes {
            s.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            s.counters.publish_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::QueueFull);
        }
        self.queue.try_send(out).map_err(|_| {
            s.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            s.counters.publish_rejected.fetch_add(1, Ordering::Relaxed);
            LinkError::QueueFull
        })
    }

    /// `PUBSUB NUMSUB` (or `SHARDNUMSUB`) of one channel, summed over a cluster's nodes.
    pub(crate) async fn subscriber_count(&self, sharded: bool, channel: &str) -> Result<usize, LinkError> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg(if sharded { "SHARDNUMSUB" } else { "NUMSUB" })
            .arg(channel);
        let value = self.shared.query(&cmd).await?;
        Ok(count_in(&value, channel))
    }

    /// Routes `channel` (of `kind`) to `target` and subscribes to it.
    pub(crate) fn subscribe(
        &self,
        kind: SubKind,
        channel: String,
        route: RouteKind,
        target: Weak<dyn Inbound>,
    ) {
        let mut routes = self.shared.routes.write();
        routes.table(kind).insert(channel, Route { kind: route, target });
        self.shared.routes_gen.fetch_add(1, Ordering::AcqRel);
        drop(routes);
        self.shared.routes_changed.notify_one();
    }

    /// Stops routing `channel` and unsubscribes from it.
    pub(crate) fn unsubscribe(&self, kind: SubKind, channel: &str) {
        let mut routes = self.shared.routes.write();
        if routes.table(kind).remove(channel).is_some() {
            self.shared.routes_gen.fetch_add(1, Ordering::AcqRel);
            drop(routes);
            self.shared.routes_changed.notify_one();
        }
    }

    /// Whether the node talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.shared.target, Target::Cluster(_))
    }

    /// Whether the subscriber is up and subscribed to every channel wanted so far.
    pub(crate) fn is_synced(&self) -> bool {
        self.shared.subscriber_up.load(Ordering::Acquire)
            && self.shared.synced_gen.load(Ordering::Acquire)
                == self.shared.routes_gen.load(Ordering::Acquire)
    }

    /// Whether both connections work.
    pub(crate) fn is_healthy(&self) -> bool {
        self.shared.publisher_up.load(Ordering::Acquire) && self.shared.subscriber_up.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            published: c.published.load(Ordering::Relaxed),
            publish_failed: c.publish_failed.load(Ordering::Relaxed),
            publish_rejected: c.publish_rejected.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            subscriber_reconnects: c.subscriber_reconnects.load(Ordering::Relaxed),
            publisher_up: self.shared.publisher_up.load(Ordering::Acquire),
            subscriber_up: self.shared.subscriber_up.load(Ordering::Acquire),
        }
    }

    pub(crate) fn count_malformed(&self) {
        self.shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A Redis string (bulk, simple or verbatim) as text.
pub(crate) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    }
}

/// The count for `channel` in a NUMSUB answer (`[ch, n]`, or a map in RESP3 and on a
/// cluster, where the counts of every node were combined).
fn count_in(value: &Value, channel: &str) -> usize {
    let as_count = |v: &Value| match v {
        Value::Int(n) => usize::try_from(*n).unwrap_or(0),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let is_channel = |v: &Value| match v {
        Value::BulkString(b) => b == channel.as_bytes(),
        Value::SimpleString(s) => s == channel,
        _ => false,
    };
    match value {
        Value::Map(entries) => entries
            .iter()
            .filter(|(k, _)| is_channel(k))
            .map(|(_, v)| as_count(v))
            .sum(),
        Value::Array(items) => items
            .chunks(2)
            .filter(|pair| pair.len() == 2 && is_channel(&pair[0]))
            .map(|pair| as_count(&pair[1]))
            .sum(),
        _ => 0,
    }
}

const MAX_BATCH: usize = 512;

async fn run_publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        let bytes: usize = batch.iter().map(Outgoing::size).sum();
        let mut result = shared.send_batch(&batch).await;
        if matches!(result, Err(LinkError::Down(_))) && shared.commands.was_connected() {
            // The connection died since its last use (Redis restarted): one retry on a new
            // connection, which fails at once if Redis is still away.
            result = shared.send_batch(&batch).await;
        }
        shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let counter = if result.is_ok() {
            &shared.counters.published
        } else {
            &shared.counters.publish_failed
        };
        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::debug!(
                error = e.to_string(),
                messages = batch.len(),
                "redis publish failed"
            );
        }
        let now = Instant::now();
        // After an outage, every channel is counted again one round trip later.
        // After an outage, every channel is counted again one round trip later (one command
        // per kind); a lower count on a sharded room channel is checked against its
        // namespace's channel.
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(batch.len());
        let settling = shared.reach.lock().settling(now);
        let mut wanted: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        if let Ok(answers) = &result {
            let mut state = shared.reach.lock();
            for (i, out) in batch.iter().enumerate() {
                let verdict = out.reach.as_ref().map(|reach| {
                    let reached = match &answers[i] {
                        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                        _ => 0,
                    };
                    state.check(&reach.key, reached, now)
                });
                if let Some(reach) = &out.reach {
                    let list = &mut wanted[usize::from(out.sharded)];
                    if settling && !list.contains(&reach.count_channel) {
                        list.push(reach.count_channel.clone());
                    }
                    if let (Some(Verdict::Short { dropped: true, .. }), Some(node)) =
                        (&verdict, &reach.node_channel)
                        && !list.contains(node)
                    {
                        list.push(node.clone());
                    }
                }
                verdicts.push(verdict);
            }
        }
        let mut counted: [Option<HashMap<String, u64>>; 2] = [None, None];
        for (sharded, list) in wanted.iter_mut().enumerate() {
            if !list.is_empty() {
                list.truncate(MAX_RECOUNT);
                counted[sharded] = count_subscribers(&shared, sharded == 1, list).await;
            }
        }
        for (i, out) in batch.drain(..).enumerate() {
            let outcome = match (&result, &out.reach) {
                (Ok(answers), Some(reach)) => {
                    let counts = counted[usize::from(out.sharded)].as_ref();
                    let mut state = shared.reach.lock();
                    match verdicts[i].take() {
                        Some(Verdict::Short {
                            reached,
                            expected,
                            dropped: true,
                        }) => {
                            // A node that left the room keeps the namespace's channel.
                            let node = reach.node_channel.as_ref();
                            let now_count = node.and_then(|n| counts.and_then(|c| c.get(n)).copied());
                            match (node, now_count) {
                                (Some(node), Some(count))
                                    if state.expected(node).is_none_or(|e| count >= e) =>
                                {
                                    state.remember(node, count, now);
                                    state.accept(&reach.key, reached, now);
                                    Ok(answers[i].clone())
                                }
                                _ => Err(LinkError::Incomplete { reached, expected }),
                            }
                        }
                        Some(Verdict::Short {
                            reached, expected, ..
                        }) => Err(LinkError::Incomplete { reached, expected }),
                        _ if settling => {
                            match (
                                counts.and_then(|c| c.get(&reach.count_channel)),
                                state.expected(&reach.key),
                            ) {
                                (Some(&counted), Some(expected)) if counted < expected => {
                                    Err(LinkError::Incomplete {
                                        reached: counted,
                                        expected,
                                    })
                                }
                                // Not recounted (past the cap, or the count failed).
                                (None, Some(expected)) => Err(LinkError::Incomplete { reached: 0, expected }),
                                _ => Ok(answers[i].clone()),
                            }
                        }
                        _ => Ok(answers[i].clone()),
                    }
                }
                (Ok(answers), None) => match &answers[i] {
                    Value::ServerError(e) => Err(LinkError::Redis(format!("{e:?}"))),
                    answer => Ok(answer.clone()),
                },
                (Err(e), _) => Err(e.clone()),
            };
            if let Some(done) = out.done {
                done(outcome);
            }
        }
    }
}

/// Subscribes `conn` to one channel, pattern or shard channel (one per command: a command
/// is answered with one confirmation per channel).
async fn apply(
    conn: &mut impl ConnectionLike,
    kind: SubKind,
    channel: &str,
    on: bool,
) -> redis::RedisResult<()> {
    let name = match (kind, on) {
        (SubKind::Channel, true) => "SUBSCRIBE",
        (SubKind::Channel, false) => "UNSUBSCRIBE",
        (SubKind::Pattern, true) => "PSUBSCRIBE",
        (SubKind::Pattern, false) => "PUNSUBSCRIBE",
        (SubKind::Shard, true) => "SSUBSCRIBE",
        (SubKind::Shard, false) => "SUNSUBSCRIBE",
    };
    let mut cmd = redis::cmd(name);
    cmd.arg(channel);
    conn.req_packed_command(&cmd).await.map(drop)
}

async fn apply_cluster(
    conn: &mut ClusterConnection,
    kind: SubKind,
    channel: &str,
    on: bool,
) -> redis::RedisResult<()> {
    match (kind, on) {
        (SubKind::Channel, true) => conn.subscribe(channel).await,
        (SubKind::Channel, false) => conn.unsubscribe(channel).await,
        (SubKind::Pattern, true) => conn.psubscribe(channel).await,
        (SubKind::Pattern, false) => conn.punsubscribe(channel).await,
        (SubKind::Shard, true) => conn.ssubscribe(channel).await,
        (SubKind::Shard, false) => conn.sunsubscribe(channel).await,
    }
}

enum SubConn {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubConn {
    async fn apply(&mut self, kind: SubKind, channel: &str, on: bool) -> redis::RedisResult<()> {
        match self {
            SubConn::Standalone(c) => apply(c, kind, channel, on).await,
            SubConn::Cluster(c) => apply_cluster(c, kind, channel, on).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            SubConn::Standalone(c) => c.req_packed_command(&cmd).await.map(drop),
            SubConn::Cluster(c) => c.req_packed_command(&cmd).await.map(drop),
        }
    }
}

async fn open_subscriber(shared: &Arc<Shared>, lost: &Arc<Notify>) -> redis::RedisResult<SubConn> {
    let weak = Arc::downgrade(shared);
    let lost = lost.clone();
    let sender = move |info: PushInfo| -> Result<(), ()> {
        if info.kind == PushKind::Disconnection {
            lost.notify_one();
        } else if let Some(shared) = weak.upgrade() {
            shared.dispatch(info);
        }
        Ok(())
    };
    let s = &shared.settings;
    match &shared.target {
        Target::Standalone(client) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(s.connect_timeout))
                .set_response_timeout(Some(s.publish_timeout))
                .set_push_sender(sender);
            let conn = tokio::time::timeout(
                s.connect_timeout,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
            Ok(SubConn::Standalone(conn))
        }
        Target::Cluster(client) => {
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(s.connect_timeout)
                .set_response_timeout(s.publish_timeout)
                .set_push_sender(sender);
            let conn = tokio::time::timeout(
                s.connect_timeout * 5,
                client.get_async_connection_with_config(config),
            )
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
            Ok(SubConn::Cluster(conn))
        }
    }
}

/// Health checks in a row that the subscriber connection may leave unanswered before it is
/// given up for a new one.
const MAX_MISSED_PINGS: u32 = 4;

/// Keeps the subscriber connection up and subscribed to every routed channel.
async fn run_subscriber(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let s = shared.settings.clone();
    let mut backoff = Backoff::new(s.backoff_min, s.backoff_max);
    let is_cluster = matches!(shared.target, Target::Cluster(_));
    let lost = Arc::new(Notify::new());
    let mut first = true;
    // Since when the feed has been broken (for the log line when it is whole again).
    let mut down_since: Option<Instant> = None;
    let mut ever_synced = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let conn = tokio::select! {
            c = open_subscriber(&shared, &lost) => c,
            _ = stop.changed() => return,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = e.to_string(), "redis subscriber connect failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if !first {
            shared
                .counters
                .subscriber_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let mut subscribed: HashSet<(SubKind, String)> = HashSet::new();
        let mut missed_pings = 0;
        let mut cluster_repair = false;
        let why: String = 'session: loop {
            let (wanted, generation) = {
                let routes = shared.routes.read();
                (routes.wanted(), shared.routes_gen.load(Ordering::Acquire))
            };
            let adds: Vec<_> = wanted.difference(&subscribed).cloned().collect();
            let removes: Vec<_> = subscribed.difference(&wanted).cloned().collect();
            for (kind, channel) in adds {
                match tokio::time::timeout(s.publish_timeout, conn.apply(kind, &channel, true)).await {
                    Ok(Ok(())) => {
                        subscribed.insert((kind, channel));
                    }
                    Ok(Err(e)) => break 'session format!("subscribing failed: {e}"),
                    Err(_) => break 'session "subscribing timed out".to_owned(),
                }
            }
            for (kind, channel) in removes {
                match tokio::time::timeout(s.publish_timeout, conn.apply(kind, &channel, false)).await {
                    Ok(Ok(())) => {
                        subscribed.remove(&(kind, channel));
                    }
                    Ok(Err(e)) => break 'session format!("unsubscribing failed: {e}"),
                    Err(_) => break 'session "unsubscribing timed out".to_owned(),
                }
            }
            shared.synced_gen.store(generation, Ordering::Release);
            shared.subscriber_up.store(true, Ordering::Release);
            backoff.reset();
            if !std::mem::replace(&mut ever_synced, true) {
                // The first time every channel is subscribed: namespaces made before that
                // started with a gap (there was no feed yet).
                shared.feed(ClusterFeed::Restored);
            }
            if let Some(since) = down_since.take() {
                // Whole again: the publisher is checked at once rather than at the next
                // health tick, so publishing resumes with the feed.
                let _ = shared.query(&redis::cmd("PING")).await;
                shared.feed(ClusterFeed::Restored);
                tracing::info!(
                    down_ms = since.elapsed().as_millis() as u64,
                    "redis subscriber connection restored and resubscribed"
                );
            }
            tokio::select! {
                _ = shared.routes_changed.notified() => {}
                _ = lost.notified(), if !is_cluster => break 'session "connection closed".to_owned(),
                _ = lost.notified(), if is_cluster => {
                    // A cluster connection reconnects and resubscribes a node by itself: what
                    // was published meanwhile is lost all the same. Whole again once the next
                    // health check passes.
                    if !cluster_repair {
                        cluster_repair = true;
                        shared.subscriber_up.store(false, Ordering::Release);
                        shared.reach.lock().failure();
                        shared.feed(ClusterFeed::Lost);
                        tracing::warn!("a redis cluster node's subscriber connection was lost: messages from other nodes are missed until it is back");
                    }
                }
                _ = tokio::time::sleep(s.health_interval) => {
                    let alive = matches!(tokio::time::timeout(s.publish_timeout, conn.ping()).await, Ok(Ok(())));
                    // Finds a dead publisher connection (and Redis coming back) without
                    // waiting for traffic.
                    let _ = shared.query(&redis::cmd("PING")).await;
                    // A connection that does not answer for a while is not given up at
                    // once: while it is open, Redis still delivers to it once it can (a
                    // paused Redis, a short partition), and nothing is missed. A closed one
                    // is noticed at once (above). Meanwhile the feed is suspect.
                    if alive {
                        if missed_pings > 0 {
                            shared.feed(ClusterFeed::Answering);
                        }
                        missed_pings = 0;
                        if std::mem::take(&mut cluster_repair) {
                            shared.subscriber_up.store(true, Ordering::Release);
                            shared.feed(ClusterFeed::Restored);
                        }
                    } else {
                        if missed_pings == 0 {
                            shared.reach.lock().failure();
                            shared.feed(ClusterFeed::Suspect);
                        }
                        missed_pings += 1;
                    }
                    if missed_pings >= MAX_MISSED_PINGS {
                        break 'session "health check failed".to_owned();
                    }
                }
                _ = stop.changed() => return,
            }
        };
        shared.subscriber_up.store(false, Ordering::Release);
        if down_since.is_none() {
            down_since = Some(Instant::now());
            shared.reach.lock().failure();
            shared.feed(ClusterFeed::Lost);
            tracing::warn!(
                reason = why.as_str(),
                "redis subscriber connection lost: messages from other nodes are missed until it is back"
            );
        }
        drop(conn);
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
    fn numsub_answers_in_every_shape() {
        let ch = "socket.io-request#/#";
        let array = Value::Array(vec![Value::BulkString(ch.into()), Value::Int(3)]);
        assert_eq!(count_in(&array, ch), 3);
        let map = Value::Map(vec![(Value::BulkString(ch.into()), Value::Int(2))]);
        assert_eq!(count_in(&map, ch), 2);
        assert_eq!(count_in(&Value::Nil, ch), 0);
    }

    #[test]
    fn a_lower_count_is_not_confirmed_until_it_holds() {
        let mut reach = Reach::default();
        let t0 = Instant::now();
        assert!(matches!(reach.check("ns", 3, t0), Verdict::Reached));
        // A node dropped its subscriber: not confirmed...
        let v = reach.check("ns", 2, t0 + Duration::from_millis(10));
        assert!(matches!(
            v,
            Verdict::Short {
                reached: 2,
                expected: 3,
                dropped: true
            }
        ));
        // ...nor while it is back for one publish and gone again...
        assert!(matches!(
            reach.check("ns", 2, t0 + Duration::from_secs(1)),
            Verdict::Short { .. }
        ));
        // ...until the lower count held for DROP_HOLD: then the node is taken as gone.
        let later = t0 + Duration::from_millis(10) + DROP_HOLD;
        assert!(matches!(reach.check("ns", 2, later), Verdict::Reached));
        assert_eq!(reach.expected("ns"), Some(2));
        // The count coming back is taken at once.
        assert!(matches!(reach.check("ns", 3, later), Verdict::Reached));
        assert_eq!(reach.expected("ns"), Some(3));
    }

    #[test]
    fn after_an_own_failure_the_count_before_it_is_the_bar() {
        let mut reach = Reach::default();
        let t0 = Instant::now();
        reach.check("ns", 3, t0);
        reach.failure();
        assert!(reach.settling(t0));
        let v = reach.check("ns", 1, t0 + Duration::from_secs(1));
        assert!(matches!(v, Verdict::Short { dropped: false, .. }));
        // Settling never lowers the bar.
        let v = reach.check("ns", 1, t0 + Duration::from_secs(4));
        assert!(matches!(v, Verdict::Short { expected: 3, .. }));
        assert!(matches!(
            reach.check("ns", 3, t0 + Duration::from_secs(4)),
            Verdict::Reached
        ));
        assert!(!reach.settling(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn remembered_counts_stay_bounded() {
        let mut reach = Reach::default();
        let t0 = Instant::now();
        for i in 0..MAX_REACH_KEYS + 100 {
            reach.check(&format!("room{i}"), 1, t0 + Duration::from_micros(i as u64));
        }
        assert!(reach.seen.len() <= MAX_REACH_KEYS);
        // The newest are kept.
        assert!(reach.expected(&format!("room{}", MAX_REACH_KEYS + 99)).is_some());
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.step();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..10 {
            b.step();
        }
        let late = b.step();
        assert!(late >= Duration::from_millis(1600) && late <= Duration::from_secs(2));
        b.reset();
        assert!(b.step() <= Duration::from_millis(120));
    }
}
