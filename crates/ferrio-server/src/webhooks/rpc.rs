//! RPC events: one signed request per client event, its JSON reply the client's ack. No
//! retries (the client is waiting and can retry itself); a bounded number in flight.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::WebhookSettings;
use super::endpoint::{self, Endpoint};
use super::meters::RpcMeters;

/// The largest reply accepted, in bytes.
pub const MAX_REPLY: usize = 1 << 20;

/// Why an RPC has no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcError {
    /// No complete reply within `rpc_timeout`.
    Timeout,
    /// The backend answered with a status other than 2xx.
    Status(u16),
    /// No connection to the backend, or it broke.
    Unreachable,
    /// A 2xx whose body is not JSON, or is larger than [`MAX_REPLY`].
    BadReply,
    /// `rpc_concurrency` RPCs are in flight already.
    Busy,
}

impl RpcError {
    /// The `error` the client's ack carries.
    pub fn code(&self) -> &'static str {
        match self {
            RpcError::Timeout => "rpc_timeout",
            RpcError::Status(_) => "rpc_failed",
            RpcError::Unreachable => "rpc_unavailable",
            RpcError::BadReply => "rpc_bad_reply",
            RpcError::Busy => "rpc_busy",
        }
    }

    /// The `result` label of `ferrio_rpc_requests_total`.
    pub(super) fn label(self) -> &'static str {
        &self.code()["rpc_".len()..]
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Timeout => f.write_str("the backend did not reply in time"),
            RpcError::Status(status) => write!(f, "the backend answered {status}"),
            RpcError::Unreachable => f.write_str("the backend is unreachable"),
            RpcError::BadReply => f.write_str("the backend's reply is not JSON (or too large)"),
            RpcError::Busy => f.write_str("too many RPCs in flight"),
        }
    }
}

impl std::error::Error for RpcError {}

#[derive(Debug)]
pub struct Rpc {
    endpoint: Endpoint,
    node: String,
    /// `<random per process>-<n>`: each RPC's `id`, so a backend can refuse a replayed one.
    instance: String,
    next_id: std::sync::atomic::AtomicU64,
    timeout: Duration,
    slots: Semaphore,
    meters: RpcMeters,
}

impl Rpc {
    pub fn new(endpoint: Endpoint, settings: &WebhookSettings, node: String) -> Self {
        Self {
            endpoint,
            node,
            instance: format!("{:016x}", rand::random::<u64>()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            timeout: settings.rpc_timeout.0,
            slots: Semaphore::new(settings.rpc_concurrency),
            meters: RpcMeters::new(),
        }
    }

    pub async fn call(&self, body: Value) -> Result<Value, RpcError> {
        let Ok(_slot) = self.slots.try_acquire() else {
            self.meters.count(Err(RpcError::Busy));
            return Err(RpcError::Busy);
        };
        let body = match body {
            Value::Object(fields) => {
                let mut framed = Map::with_capacity(fields.len() + 3);
                framed.insert("type".into(), "rpc".into());
                framed.insert("node".into(), self.node.clone().into());
                let n = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                framed.insert("id".into(), format!("{}-{n}", self.instance).into());
                for (k, v) in fields {
                    if k != "type" && k != "node" && k != "id" {
                        framed.insert(k, v);
                    }
                }
                Value::Object(framed)
            }
            other => other,
        };
        let sent = Instant::now();
        let result = self.request(Bytes::from(body.to_string())).await;
        self.meters.seconds.record(sent.elapsed());
        self.meters.count(result.as_ref().map(|_| ()).map_err(|e| *e));
        if let Err(e) = &result {
            tracing::debug!(error = %e, "RPC failed");
        }
        result
    }

    async fn request(&self, body: Bytes) -> Result<Value, RpcError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                RpcError::Timeout
            } else {
                RpcError::Unreachable
            }
        };
        let mut res = self.endpoint.post(body, self.timeout).await.map_err(transport)?;
        let status = res.status();
        if !status.is_success() {
            return Err(RpcError::Status(status.as_u16()));
        }
        let reply = endpoint::read_body(&mut res, MAX_REPLY)
            .await
            .map_err(transport)?
            .ok_or(RpcError::BadReply)?;
        serde_json::from_slice(&reply).map_err(|_| RpcError::BadReply)
    }
}
