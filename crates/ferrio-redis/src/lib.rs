//! ferrio-redis: runs ferrio on several nodes that share a Redis, speaking the exact wire
//! format of Node's `@socket.io/redis-adapter` 8.x (classic pub/sub, or sharded pub/sub as
//! `createShardedAdapter`) or `@socket.io/redis-streams-adapter` 0.3 (a capped stream, sessions
//! in Redis), and accepting what `@socket.io/redis-emitter` publishes, so ferrio nodes and
//! Node.js nodes can serve one cluster.
//!
//! ```no_run
//! use ferrio::{Config, Io};
//! use ferrio_redis::{Mode, RedisAdapter};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisAdapter::builder("redis://127.0.0.1:6379")
//!     .key("socket.io")
//!     .mode(Mode::Sharded)
//!     .connect()
//!     .await?;
//! let io = Io::builder(Config::default())
//!     .adapter(redis.factory())
//!     .ns("/", |ns| ns)
//!     .build();
//! # let _ = io; Ok(()) }
//! ```
//!
//! * A broadcast is delivered to this node's sockets at once, then queued for Redis; it
//!   never waits on Redis. Each other node delivers it to its own sockets.
//! * [`Mode::Classic`]: every node receives every broadcast of a namespace
//!   (`PSUBSCRIBE <key>#<nsp>#*`). [`Mode::Sharded`] (Redis ≥ 7): a broadcast to one room
//!   goes to that room's channel, which only nodes with members in the room subscribe to;
//!   works on a Redis Cluster (`SSUBSCRIBE`/`SPUBLISH` follow the slot owner).
//! * Delivery across nodes is at most once: while Redis is down, restarting or paused,
//!   publishes fail fast and are counted in [`Stats`], local delivery goes on, and what
//!   other nodes miss is not replayed (in [`Mode::Streams`] a node reads the stream on from
//!   where it was). [`ferrio::BroadcastOperator::emit_confirmed`] tells whether the cluster
//!   has a message.
//! * [`Emitter`] publishes from a process that has no sockets (a Rust backend), like
//!   `@socket.io/redis-emitter`.

mod adapter;
mod codec;
mod emitter;
mod history;
mod link;
mod streams;

/// The decoders of what other nodes publish, reachable from the fuzz targets in `fuzz/`. Not
/// an API: anything here may change without notice.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::adapter::Body;
    pub use crate::codec::{
        decode, encode, get, packet_from_json, packet_from_msgpack, packet_to_msgpack, to_json,
        to_json_extracting,
    };
    pub use crate::streams::{fuzz_entry, fuzz_session};
}

use std::sync::Arc;
use std::time::Duration;

use ferrio::{Adapter, AdapterContext};

pub use adapter::{REMOTE_ACK_SID, RedisAdapter};
pub use emitter::{Emitter, EmitterBuilder, EmitterOperator};
pub use link::{LinkError, Stats};

use link::{Link, Settings, Target};

/// Which of the reference's formats the nodes speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `createAdapter` of `@socket.io/redis-adapter`: `PUBLISH`/`PSUBSCRIBE`, msgpack
    /// broadcasts, JSON requests. Also what `@socket.io/redis-emitter` speaks.
    #[default]
    Classic,
    /// `createShardedAdapter` (Redis ≥ 7): `SPUBLISH`/`SSUBSCRIBE` with the cluster adapter
    /// message format.
    Sharded,
    /// `@socket.io/redis-streams-adapter` 0.3 (Redis ≥ 6.2, one server): broadcasts go
    /// through a capped stream every node reads, sessions are kept in Redis, and a client
    /// recovers its session on any node, also after its node died.
    Streams,
}

/// How a sharded node subscribes to room channels (the reference's `subscriptionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// A channel per room with local members; broadcasts to one room use it. Rooms whose
    /// name is 20 characters are taken for socket ids and use the namespace channel.
    #[default]
    Dynamic,
    /// Only the namespace channel: every node receives every broadcast.
    Static,
}

/// Options shared by the adapters of one node.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub key: String,
    pub mode: Mode,
    pub subscription_mode: SubscriptionMode,
    pub requests_timeout: Duration,
    pub specific_response_channel: bool,
    pub streams: streams::StreamOptions,
    /// Rooms whose histories are kept in Redis.
    pub history: Vec<ferrio::RoomWindow>,
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL (or node list) is not a Redis address.
    #[error("invalid redis address: {0}")]
    InvalidAddress(String),
    /// Redis could not be reached.
    #[error(transparent)]
    Unreachable(#[from] LinkError),
    /// The combination asked for is not available.
    #[error("{0}")]
    Unsupported(String),
}

fn resp3_client(url: &str) -> Result<redis::Client, ConnectError> {
    let client = redis::Client::open(url).map_err(|e| ConnectError::InvalidAddress(e.to_string()))?;
    let info = client.get_connection_info().clone();
    let redis_info = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(redis_info))
        .map_err(|e| ConnectError::InvalidAddress(e.to_string()))
}

fn cluster_client(nodes: &[String]) -> Result<redis::cluster::ClusterClient, ConnectError> {
    redis::cluster::ClusterClient::builder(nodes.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .build()
        .map_err(|e| ConnectError::InvalidAddress(e.to_string()))
}

/// Where to connect: one Redis, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone)]
enum Address {
    Single(String),
    Cluster(Vec<String>),
}

impl Address {
    fn target(&self) -> Result<Target, ConnectError> {
        Ok(match self {
            Address::Single(url) => Target::Standalone(Box::new(resp3_client(url)?)),
            Address::Cluster(nodes) => Target::Cluster(Box::new(cluster_client(nodes)?)),
        })
    }
}

/// Configures the Redis adapter of a node. See [`RedisAdapter::builder`].
#[derive(Debug, Clone)]
pub struct RedisAdapterBuilder {
    address: Address,
    options: Options,
    settings: Settings,
}

impl RedisAdapter {
    /// An adapter on one Redis server (`redis://[user:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisAdapterBuilder {
        RedisAdapterBuilder::new(Address::Single(url.into()))
    }

    /// An adapter on a Redis Cluster, given some of its nodes.
    pub fn cluster_builder<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> RedisAdapterBuilder {
        RedisAdapterBuilder::new(Address::Cluster(nodes.into_iter().map(Into::into).collect()))
    }
}

impl RedisAdapterBuilder {
    fn new(address: Address) -> Self {
        Self {
            address,
            options: Options {
                key: "socket.io".into(),
                mode: Mode::Classic,
                subscription_mode: SubscriptionMode::Dynamic,
                requests_timeout: Duration::from_secs(5),
                specific_response_channel: false,
                streams: streams::StreamOptions::default(),
                history: Vec::new(),
            },
            settings: Settings::default(),
        }
    }

    /// The channel prefix (`key` of the classic adapter, `channelPrefix` of the sharded
    /// one). Default `socket.io`; every node of a cluster must use the same.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.options.key = key.into();
        self
    }

    /// Classic or sharded (default classic). Every node of a cluster must use the same.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Room channels in sharded mode (default dynamic).
    pub fn subscription_mode(mut self, mode: SubscriptionMode) -> Self {
        self.options.subscription_mode = mode;
        self
    }

    /// How long cluster-wide requests (fetch sockets, server-side emit with acks, ...) wait
    /// for the other nodes. Default 5 s (`requestsTimeout`).
    pub fn requests_timeout(mut self, timeout: Duration) -> Self {
        self.options.requests_timeout = timeout;
        self
    }

    /// Classic mode: other nodes answer requests on this node's own response channel
    /// (`publishOnSpecificResponseChannel`). Default false.
    pub fn publish_on_specific_response_channel(mut self, on: bool) -> Self {
        self.options.specific_response_channel = on;
        self
    }

    /// Streams mode: the stream's key (`streamName`, default `socket.io`), the same on
    /// every node.
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.options.streams.stream = name.into();
        self
    }

    /// Streams mode: about how many entries the stream keeps (`maxLen`, default 10,000). A
    /// client whose offset was trimmed away is told `recovered: false`.
    pub fn stream_max_len(mut self, entries: usize) -> Self {
        self.options.streams.max_len = entries.max(1);
        self
    }

    /// Streams mode: the prefix of the keys of kept sessions (`sessionKeyPrefix`, default
    /// `sio:session:`).
    pub fn session_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.streams.session_prefix = prefix.into();
        self
    }

    /// Rooms whose recent messages are kept in Redis for the whole cluster (give the same
    /// rules as [`ferrio::RecoveryConfig::rooms`]): a broadcast to such a room is appended
    /// to a stream of the room's own, `{<name>}:history:<nsp>:<room>` (`<name>` is the stream
    /// name in streams mode, the channel prefix otherwise), trimmed to the rule's `size` and
    /// `ttl`, and [`ferrio::Namespace::history`] reads it there on any node. Needs Redis 7.0.
    /// None by default.
    pub fn history(mut self, rooms: Vec<ferrio::RoomWindow>) -> Self {
        self.options.history = rooms;
        self
    }

    /// How long Redis may take to accept a publish before it counts as failed. Default 1 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.settings.publish_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How often the subscriber connection is checked with a `PING`. Default 1 s.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.settings.health_interval = interval;
        self
    }

    /// The delays between reconnection attempts: doubling from `min` up to `max`, with
    /// jitter. Default 100 ms to 2 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.backoff_min = min;
        self.settings.backoff_max = max.max(min);
        self
    }

    /// Bounds of the publish queue: messages and bytes waiting for Redis. Beyond them a
    /// publish fails at once. Default 4096 messages, 64 MiB.
    pub fn queue_limits(mut self, messages: usize, bytes: usize) -> Self {
        self.settings.queue_len = messages.max(1);
        self.settings.queue_bytes = bytes.max(1);
        self
    }

    /// Connects (Redis must answer within the connect timeout) and returns the factory to
    /// give to [`ferrio::IoBuilder::adapter`]. From then on the connections repair
    /// themselves.
    pub async fn connect(self) -> Result<RedisAdapterFactory, ConnectError> {
        let hub = match (&self.address, self.options.mode) {
            (Address::Single(url), Mode::Streams) => Some(streams::Hub::start(
                resp3_client(url)?,
                Arc::new(self.options.streams.clone()),
                (self.settings.backoff_min, self.settings.backoff_max),
            )),
            (Address::Cluster(_), Mode::Streams) => {
                return Err(ConnectError::InvalidAddress(
                    "streams mode needs one Redis server, not a Redis Cluster".into(),
                ));
            }
            _ => None,
        };
        let link = Link::connect(self.address.target()?, self.settings).await?;
        if !self.options.history.is_empty() {
            // The histories' scripts record trims with XSETID ... MAXDELETEDID (Redis 7.0).
            let info = link.query(redis::cmd("INFO").arg("server")).await?;
            let version = link::value_text(&info)
                .and_then(|text| {
                    let line = text.lines().find_map(|l| l.strip_prefix("redis_version:"))?;
                    line.trim().split('.').next()?.parse::<u32>().ok()
                })
                .unwrap_or(0);
            if version < 7 {
                return Err(ConnectError::Unsupported(
                    "rooms' histories in Redis need Redis 7.0 or later".into(),
                ));
            }
        }
        Ok(RedisAdapterFactory {
            link,
            options: Arc::new(self.options),
            hub,
        })
    }
}

/// A node's Redis connections, and the maker of its namespaces' adapters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisAdapterFactory {
    link: Arc<Link>,
    options: Arc<Options>,
    hub: Option<Arc<streams::Hub>>,
}

impl RedisAdapterFactory {
    /// The adapter factory for [`ferrio::IoBuilder::adapter`].
    pub fn factory(&self) -> impl Fn(&AdapterContext) -> Arc<dyn Adapter> + Send + Sync + 'static {
        let this = self.clone();
        move |ctx| this.adapter_for(ctx)
    }

    /// The adapter of one namespace.
    pub fn adapter_for(&self, ctx: &AdapterContext) -> Arc<dyn Adapter> {
        RedisAdapter::create(ctx, self.link.clone(), self.options.clone(), self.hub.clone())
    }

    /// The node's Redis counters.
    pub fn stats(&self) -> Stats {
        self.link.stats()
    }

    /// Whether the node can publish to and receive from Redis right now.
    pub fn is_healthy(&self) -> bool {
        self.link.is_healthy()
    }

    /// Whether every channel this node's adapters want (namespaces, and rooms in sharded
    /// mode) is subscribed right now. A room's first local member is reachable from other
    /// nodes once this holds again.
    pub fn is_subscribed(&self) -> bool {
        self.link.is_synced()
    }

    /// The mode the node speaks.
    pub fn mode(&self) -> Mode {
        self.options.mode
    }
}
