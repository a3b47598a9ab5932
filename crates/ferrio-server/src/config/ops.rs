//! The operations sections of the configuration: the HTTP API, metrics, drain, cluster
//! adapter and connection-state recovery.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{self, List, Millis, Secs};

/// The HTTP API under `/api/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Keys a backend sends as `Authorization: Bearer <key>` (or `X-Api-Key`). No key turns
    /// the API off (404). Reloaded on SIGHUP.
    pub keys: List,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            keys: List::default(),
            max_body: 64 * 1024,
        }
    }
}

/// `/metrics` in the Prometheus text format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    pub enabled: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// What happens on SIGTERM: `/readyz` turns false for `delay` (load balancers stop sending
/// new clients), then connections close; everything ends within `shutdown_timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainSettings {
    pub delay: Millis,
    /// Connections are closed in batches spread over this window (bounded by what is left of
    /// `shutdown_timeout`), so the clients' reconnections do not land on the other nodes at
    /// once.
    pub window: Millis,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            delay: Millis(Duration::ZERO),
            window: Millis(Duration::from_secs(5)),
        }
    }
}

/// Several nodes sharing a Redis (`ferrio-redis`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// `redis://host:6379`; unset runs a single node.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub redis_url: Option<String>,
    /// Channel prefix, the same on every node.
    #[serde(deserialize_with = "values::text")]
    pub key: String,
    /// `classic`, `sharded` (Redis >= 7) or `streams` (Redis >= 6.2; recovery on any node),
    /// the same on every node.
    #[serde(deserialize_with = "values::text")]
    pub mode: String,
    /// Streams mode: the stream's key (`streamName` of the reference), the same on every node.
    #[serde(deserialize_with = "values::text")]
    pub stream_name: String,
    /// Streams mode: about how many entries the stream keeps (`maxLen`).
    pub stream_max_len: usize,
    /// This node's name in `/api/stats` (default: the host name).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_id: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            key: "socket.io".into(),
            mode: "classic".into(),
            stream_name: "socket.io".into(),
            stream_max_len: 10_000,
            node_id: None,
        }
    }
}

/// Connection-state recovery (socket.io-client >= 4.6): a client that lost its connection
/// gets its id, rooms and missed packets back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverySettings {
    pub enabled: bool,
    pub max_disconnection_duration: Secs,
    /// Packets kept per namespace for clients that come back.
    pub max_packets: usize,
    /// Bytes of packets kept per namespace.
    pub max_bytes: usize,
    /// Disconnected sessions kept per namespace.
    pub max_sessions: usize,
    /// Packets one session may have missed and still recover.
    pub max_missed_packets: usize,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        let library = ferrio::RecoveryConfig::default();
        Self {
            enabled: false,
            max_disconnection_duration: Secs(library.max_disconnection_duration),
            max_packets: library.max_packets,
            max_bytes: library.max_bytes,
            max_sessions: library.max_sessions,
            max_missed_packets: library.max_missed_packets,
        }
    }
}

impl RecoverySettings {
    pub fn library_config(&self, history: &HistorySettings) -> Option<ferrio::RecoveryConfig> {
        self.enabled.then(|| ferrio::RecoveryConfig {
            max_disconnection_duration: self.max_disconnection_duration.0,
            max_packets: self.max_packets,
            max_bytes: self.max_bytes,
            max_sessions: self.max_sessions,
            max_missed_packets: self.max_missed_packets,
            rooms: history
                .rooms
                .iter()
                .map(|r| ferrio::RoomWindow {
                    pattern: r.pattern.clone(),
                    size: r.size,
                    ttl: r.ttl.0,
                })
                .collect(),
            ..ferrio::RecoveryConfig::default()
        })
    }
}

/// Rooms that keep a window of recent messages of their own: the `history` client event and
/// `GET /api/history/{room}` read it, and a reconnecting client is replayed from it (a busy
/// room never pushes a quiet room's messages out). Built on recovery's offsets: needs
/// `[recovery] enabled`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistorySettings {
    /// `[[history.rooms]]`: the first whose `pattern` matches a room applies.
    pub rooms: Vec<HistoryRoom>,
}

/// One rule of `[history]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRoom {
    /// A room name, or a prefix and `*` (`chat:*`).
    #[serde(deserialize_with = "values::text")]
    pub pattern: String,
    /// Messages kept per room.
    pub size: usize,
    /// None older than this.
    pub ttl: Secs,
}

impl Default for HistoryRoom {
    fn default() -> Self {
        Self {
            pattern: String::new(),
            size: 100,
            ttl: Secs(Duration::from_secs(600)),
        }
    }
}

/// Checks of `[history]`.
pub fn validate_history(
    history: &HistorySettings,
    recovery: &RecoverySettings,
) -> Result<(), (&'static str, String)> {
    if history.rooms.is_empty() {
        return Ok(());
    }
    if !recovery.enabled {
        return Err((
            "history.rooms",
            "needs [recovery] enabled = true (history uses recovery's offsets)".into(),
        ));
    }
    for room in &history.rooms {
        if room.pattern.is_empty() || room.pattern.len() > ferrio::builtins::MAX_NAME_LEN {
            return Err(("history.rooms", "every pattern must be 1 to 256 bytes".into()));
        }
        if !(1..=100_000).contains(&room.size) {
            return Err((
                "history.rooms",
                format!("size of {:?} must be 1 to 100000", room.pattern),
            ));
        }
        if room.ttl.0.is_zero() {
            return Err((
                "history.rooms",
                format!("ttl of {:?} must be positive", room.pattern),
            ));
        }
    }
    Ok(())
}

/// Checks of the operations sections.
pub fn validate(cluster: &ClusterSettings, api: &ApiSettings) -> Result<(), (&'static str, String)> {
    if !matches!(cluster.mode.as_str(), "classic" | "sharded" | "streams") {
        return Err((
            "cluster.mode",
            format!("{:?} is not `classic`, `sharded` or `streams`", cluster.mode),
        ));
    }
    if cluster.stream_max_len == 0 {
        return Err(("cluster.stream_max_len", "must be positive".into()));
    }
    if api.keys.iter().any(|k| k.len() < 16) {
        return Err(("api.keys", "every key must be at least 16 characters".into()));
    }
    if api.max_body == 0 {
        return Err(("api.max_body", "must be positive".into()));
    }
    Ok(())
}
