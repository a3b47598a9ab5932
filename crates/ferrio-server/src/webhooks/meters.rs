//! The webhook and RPC series, taken once as handles so the hot path only adds to atomics.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ferrio_webhook_events_total` | counter | `result`: `delivered`, `failed`, `rejected`, `dropped` |
//! | `ferrio_webhook_requests_total` | counter | `result`: `ok`, `timeout`, `unreachable`, `retryable`, `rejected` |
//! | `ferrio_webhook_seconds` | histogram | |
//! | `ferrio_webhook_queue` | gauge | |
//! | `ferrio_rpc_requests_total` | counter | `result`: `ok`, `timeout`, `failed`, `unavailable`, `bad_reply`, `busy` |
//! | `ferrio_rpc_seconds` | histogram | |

use metrics::{Counter, Gauge, Histogram};

use super::rpc::RpcError;

pub fn describe() {
    metrics::describe_counter!(
        "ferrio_webhook_events_total",
        "Webhook events by what became of them"
    );
    metrics::describe_counter!(
        "ferrio_webhook_requests_total",
        "Webhook delivery requests (each attempt) by result"
    );
    metrics::describe_histogram!(
        "ferrio_webhook_seconds",
        metrics::Unit::Seconds,
        "Webhook delivery request to the backend's answer"
    );
    metrics::describe_gauge!("ferrio_webhook_queue", "Webhook events queued or being delivered");
    metrics::describe_counter!("ferrio_rpc_requests_total", "RPC events by result");
    metrics::describe_histogram!(
        "ferrio_rpc_seconds",
        metrics::Unit::Seconds,
        "RPC request to the backend's reply"
    );
}

/// What one delivery request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx.
    Ok,
    Timeout,
    /// No connection, or it broke.
    Unreachable,
    /// 5xx, 408 or 429: worth another try.
    Retryable,
    /// Any other status: another try would get the same.
    Rejected,
}

impl Attempt {
    const ALL: [Attempt; 5] = [
        Attempt::Ok,
        Attempt::Timeout,
        Attempt::Unreachable,
        Attempt::Retryable,
        Attempt::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            Attempt::Ok => "ok",
            Attempt::Timeout => "timeout",
            Attempt::Unreachable => "unreachable",
            Attempt::Retryable => "retryable",
            Attempt::Rejected => "rejected",
        }
    }
}

const RPC_RESULTS: [Result<(), RpcError>; 6] = [
    Ok(()),
    Err(RpcError::Timeout),
    Err(RpcError::Status(0)),
    Err(RpcError::Unreachable),
    Err(RpcError::BadReply),
    Err(RpcError::Busy),
];

fn rpc_index(result: Result<(), RpcError>) -> usize {
    match result {
        Ok(()) => 0,
        Err(RpcError::Timeout) => 1,
        Err(RpcError::Status(_)) => 2,
        Err(RpcError::Unreachable) => 3,
        Err(RpcError::BadReply) => 4,
        Err(RpcError::Busy) => 5,
    }
}

/// Handles to the webhook series.
#[derive(Debug)]
pub struct EventMeters {
    pub delivered: Counter,
    pub failed: Counter,
    pub rejected: Counter,
    pub dropped: Counter,
    pub queue: Gauge,
    pub seconds: Histogram,
    attempts: [Counter; 5],
}

impl EventMeters {
    pub fn new() -> Self {
        let events =
            |result: &'static str| metrics::counter!("ferrio_webhook_events_total", "result" => result);
        Self {
            delivered: events("delivered"),
            failed: events("failed"),
            rejected: events("rejected"),
            dropped: events("dropped"),
            queue: metrics::gauge!("ferrio_webhook_queue"),
            seconds: metrics::histogram!("ferrio_webhook_seconds"),
            attempts: Attempt::ALL
                .map(|a| metrics::counter!("ferrio_webhook_requests_total", "result" => a.label())),
        }
    }

    pub fn attempt(&self, a: Attempt) {
        self.attempts[a as usize].increment(1);
    }
}

/// Handles to the RPC series.
#[derive(Debug)]
pub struct RpcMeters {
    results: [Counter; 6],
    pub seconds: Histogram,
}

impl RpcMeters {
    pub fn new() -> Self {
        Self {
            results: RPC_RESULTS.map(|r| {
                let label = r.err().map_or("ok", RpcError::label);
                metrics::counter!("ferrio_rpc_requests_total", "result" => label)
            }),
            seconds: metrics::histogram!("ferrio_rpc_seconds"),
        }
    }

    pub fn count(&self, result: Result<(), RpcError>) {
        self.results[rpc_index(result)].increment(1);
    }
}
