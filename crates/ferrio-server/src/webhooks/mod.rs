//! Webhooks: lifecycle and client events posted to a backend, signed and at least once; RPC
//! events whose backend reply becomes the client's ack.
//!
//! [`Webhooks::send`] numbers an event and puts it in a bounded queue without waiting; one
//! sender task posts what is queued in batches, in order, retrying a batch until it is
//! delivered or its retry time runs out. [`Webhooks::rpc`] posts one request and returns the
//! reply. Both sign their bodies with the shared secret. `docs/webhooks.md` is the backend's
//! side of the contract.

mod endpoint;
mod meters;
mod queue;
mod rpc;
mod sender;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::values::{self, List, Millis, Secs};

pub use endpoint::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use rpc::{MAX_REPLY, RpcError};

use endpoint::Endpoint;
use sender::Shared;

/// Lifecycle events `events` may name.
pub const LIFECYCLE_EVENTS: &[&str] = &["connection", "disconnection", "join", "leave"];

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// `[webhooks]`: where events go and how hard ferrio tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// The backend's URL; unset turns webhooks (and RPC events) off.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// The shared secret the signature is made with (at least 16 bytes).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// A file holding the secret instead (trailing whitespace is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Lifecycle events to send: `connection`, `disconnection`, `join`, `leave`.
    pub events: List,
    /// How long one delivery request may take.
    pub timeout: Millis,
    /// Events waiting for delivery at most; beyond that new events are dropped.
    pub queue_capacity: usize,
    /// Bytes the waiting events may hold at most (their JSON, roughly); beyond that new events
    /// are dropped, so large forwarded payloads cannot take the node's memory.
    pub queue_max_bytes: usize,
    /// Events in one request at most.
    pub batch_size: usize,
    /// How long the sender waits for more events to fill a batch once one is queued (0: send
    /// at once). A few milliseconds turn a stream of events into few requests.
    pub batch_wait: Millis,
    /// How long a batch is retried, from its first attempt, before it is given up.
    pub retry_for: Secs,
    /// The first wait between two attempts; it doubles on each retry...
    pub retry_backoff: Millis,
    /// ...up to this.
    pub retry_backoff_max: Millis,
    /// Where RPC events are posted (default: `url`).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpc_url: Option<String>,
    /// How long one RPC may take.
    pub rpc_timeout: Millis,
    /// RPCs in flight at most; beyond that they fail at once with `rpc_busy`.
    pub rpc_concurrency: usize,
    /// RPCs one socket may have in flight at once (so one client cannot take every slot).
    pub rpc_per_socket: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            secret_file: None,
            events: List::of(LIFECYCLE_EVENTS),
            timeout: Millis(Duration::from_secs(5)),
            queue_capacity: 10_000,
            queue_max_bytes: 64 * 1024 * 1024,
            batch_size: 100,
            batch_wait: Millis(Duration::from_millis(10)),
            retry_for: Secs(Duration::from_secs(60)),
            retry_backoff: Millis(Duration::from_millis(200)),
            retry_backoff_max: Millis(Duration::from_secs(10)),
            rpc_url: None,
            rpc_timeout: Millis(Duration::from_secs(5)),
            rpc_concurrency: 256,
            rpc_per_socket: 8,
        }
    }
}

impl WebhookSettings {
    /// The secret's bytes, from `secret` or `secret_file`.
    pub fn secret_bytes(&self) -> Result<Vec<u8>, (&'static str, String)> {
        let (key, bytes) = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err((
                    "webhooks.secret_file",
                    "set `webhooks.secret` or `webhooks.secret_file`, not both".into(),
                ));
            }
            (Some(secret), None) => ("webhooks.secret", secret.as_bytes().to_vec()),
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    (
                        "webhooks.secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                ("webhooks.secret_file", bytes.trim_ascii_end().to_vec())
            }
            (None, None) => {
                return Err((
                    "webhooks.secret",
                    "required when `webhooks.url` is set (or `webhooks.secret_file`)".into(),
                ));
            }
        };
        if bytes.len() < MIN_SECRET_LEN {
            return Err((key, format!("the secret must be at least {MIN_SECRET_LEN} bytes")));
        }
        Ok(bytes)
    }
}

/// Checks of `[webhooks]`, as `(key, message)`. Reads `secret_file`.
pub fn validate(settings: &WebhookSettings) -> Result<(), (&'static str, String)> {
    let Some(url) = &settings.url else {
        if settings.rpc_url.is_some() {
            return Err(("webhooks.rpc_url", "requires `webhooks.url`".into()));
        }
        return Ok(());
    };
    check_url("webhooks.url", url)?;
    if let Some(rpc_url) = &settings.rpc_url {
        check_url("webhooks.rpc_url", rpc_url)?;
    }
    settings.secret_bytes()?;
    if let Some(kind) = settings.events.iter().find(|k| !LIFECYCLE_EVENTS.contains(k)) {
        return Err((
            "webhooks.events",
            format!("{kind:?} is not one of {}", LIFECYCLE_EVENTS.join(", ")),
        ));
    }
    for (key, d) in [
        ("webhooks.timeout", settings.timeout.0),
        ("webhooks.retry_backoff", settings.retry_backoff.0),
        ("webhooks.rpc_timeout", settings.rpc_timeout.0),
    ] {
        if d.is_zero() {
            return Err((key, "must be positive".into()));
        }
    }
    if settings.retry_backoff_max.0 < settings.retry_backoff.0 {
        return Err((
            "webhooks.retry_backoff_max",
            "must be at least `webhooks.retry_backoff`".into(),
        ));
    }
    for (key, n) in [
        ("webhooks.queue_capacity", settings.queue_capacity),
        ("webhooks.queue_max_bytes", settings.queue_max_bytes),
        ("webhooks.batch_size", settings.batch_size),
        ("webhooks.rpc_concurrency", settings.rpc_concurrency),
        ("webhooks.rpc_per_socket", settings.rpc_per_socket),
    ] {
        if n == 0 {
            return Err((key, "must be positive".into()));
        }
    }
    Ok(())
}

fn check_url(key: &'static str, url: &str) -> Result<(), (&'static str, String)> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err((key, "must be an http:// or https:// URL".into())),
    }
}

/// Describes the webhook and RPC series to the metrics recorder.
pub fn describe() {
    meters::describe();
}

/// What happened to the events so far, for tests and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Queued or being delivered.
    pub pending: u64,
    /// Accepted by the backend (2xx).
    pub delivered: u64,
    /// Given up when their batch's retry time ran out.
    pub failed: u64,
    /// Refused by the backend with a status not worth retrying.
    pub rejected: u64,
    /// Not queued: the queue was full.
    pub dropped: u64,
}

/// The webhook sender and RPC client of one node.
#[derive(Debug)]
pub struct Webhooks {
    shared: Arc<Shared>,
    events: Vec<String>,
    rpc: rpc::Rpc,
    sender: tokio::task::JoinHandle<()>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl Webhooks {
    /// `None` when `settings.url` is unset; an error when the secret cannot be read (the
    /// settings were validated, so only a file that vanished since does that): configured
    /// RPC events must not go unanswered, so the server does not start. Spawns the
    /// sender task, so it needs a tokio runtime; the metrics recorder must be installed first.
    pub fn start(settings: &WebhookSettings, node_id: String) -> Result<Option<Arc<Webhooks>>, String> {
        let Some(url) = settings.url.as_deref() else {
            return Ok(None);
        };
        let secret = settings
            .secret_bytes()
            .map_err(|(key, message)| format!("`{key}`: {message}"))?;
        let client = endpoint::client().map_err(|e| format!("webhooks: cannot build an HTTP client: {e}"))?;
        let rpc_url = settings.rpc_url.as_deref().unwrap_or(url);
        let (Some(events_endpoint), Some(rpc_endpoint)) = (
            Endpoint::new(client.clone(), url, &secret),
            Endpoint::new(client, rpc_url, &secret),
        ) else {
            return Err("webhooks: `webhooks.url` or `webhooks.rpc_url` is not an http(s) URL".into());
        };
        let shared = Arc::new(Shared::new(settings, events_endpoint, node_id.clone()));
        let sender = tokio::spawn(sender::run(shared.clone()));
        tracing::info!(
            url = %endpoint::printable(url),
            events = %settings.events.0.join(","),
            "webhooks on"
        );
        Ok(Some(Arc::new(Webhooks {
            shared,
            events: settings.events.0.clone(),
            rpc: rpc::Rpc::new(rpc_endpoint, settings, node_id),
            sender,
        })))
    }

    /// Queues one event; never blocks or awaits. `fields` follow `seq`, `type` and `time` in
    /// the event object (fields of those names are left out). Returns `false` when the queue
    /// was full: the event is dropped, its sequence number skipped.
    pub fn send(&self, kind: &'static str, fields: Map<String, Value>) -> bool {
        self.shared.send(kind, fields)
    }

    /// Whether lifecycle event `kind` is configured in `events`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|k| k == kind)
    }

    /// Posts `body` to the RPC URL, signed like the events, and returns the backend's JSON
    /// reply. An object `body` gets `"type": "rpc"` and `"node"` in front of its fields.
    pub async fn rpc(&self, body: Value) -> Result<Value, RpcError> {
        self.rpc.call(body).await
    }

    /// Waits until every queued event is delivered or given up, or until `deadline`; returns
    /// how many were left.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> usize {
        self.shared.flush(deadline).await
    }

    /// The counts so far.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.shared.counts;
        WebhookStats {
            pending: self.shared.pending.load(Ordering::Acquire) as u64,
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}
