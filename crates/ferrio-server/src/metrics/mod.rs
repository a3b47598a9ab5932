//! `/metrics`: the Prometheus recorder behind the `metrics` facade (the library's `ferrio_*`
//! series and the server's own), rendered in the Prometheus text format.
//!
//! The server's own series:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ferrio_rejections_total` | counter | `kind` (`auth`, `limits`, `origin`, `rooms`), `reason` |
//! | `ferrio_api_requests_total` | counter | `endpoint`, `status` |
//! | `ferrio_adapter_healthy` | gauge (1 or 0) | |
//! | `ferrio_draining` | gauge (1 while draining) | |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::stats::Rejection;

/// Seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Recipients of one broadcast.
const FANOUT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 100000.0,
];

/// Installs the process-wide recorder. Only the first call installs; later ones (tests that
/// build several servers in one process) get `None`.
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full("ferrio_broadcast_recipients".into()),
            FANOUT_BUCKETS,
        )
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    crate::webhooks::describe();
    metrics::describe_counter!(
        "ferrio_rejections_total",
        "Refusals by the security layer, by kind and reason"
    );
    metrics::describe_counter!(
        "ferrio_api_requests_total",
        "HTTP API requests by endpoint and status"
    );
    metrics::describe_gauge!(
        "ferrio_adapter_healthy",
        "1 when the cluster adapter (or the local one) is healthy"
    );
    metrics::describe_gauge!("ferrio_draining", "1 while the node drains before exiting");
    metrics::describe_gauge!("ferrio_connections", "Open Engine.IO connections by transport");
    metrics::describe_counter!("ferrio_handshakes_total", "Engine.IO handshakes by transport");
    metrics::describe_counter!("ferrio_disconnects_total", "Closed connections by reason");
    metrics::describe_histogram!(
        "ferrio_delivery_seconds",
        "Queued to written, oldest packet of each batch"
    );
    metrics::describe_histogram!("ferrio_ack_seconds", "Server emit to client ack");
    metrics::describe_histogram!(
        "ferrio_broadcast_recipients",
        "Recipients of one broadcast on this node"
    );
    metrics::describe_gauge!(
        "ferrio_sockets",
        "Sockets by namespace (namespaces created on demand: by their pattern)"
    );
    metrics::describe_gauge!(
        "ferrio_namespaces",
        "Namespaces that exist, declared and created on demand"
    );
    metrics::describe_counter!(
        "ferrio_bodies_refused_total",
        "Polling bodies refused: timed_out, too_slow, busy, unreadable"
    );
    metrics::describe_counter!(
        "ferrio_protocol_errors_total",
        "Protocol violations by peers, by kind"
    );
    metrics::describe_counter!("ferrio_events_received_total", "Events received from clients");
    metrics::describe_counter!("ferrio_packets_sent_total", "Packets written to clients");
    metrics::describe_counter!("ferrio_bytes_received_total", "Bytes received by transport");
    metrics::describe_counter!("ferrio_bytes_sent_total", "Bytes sent by transport");
    metrics::describe_counter!(
        "ferrio_dropped_packets_total",
        "Packets dropped: volatile, or a slow consumer's queue"
    );
    // Every refusal reason shows from the start, at zero, so rates work from the first scrape.
    for &r in Rejection::ALL {
        rejection(r, 0);
    }
}

/// Counts a refusal (`auth.token_expired` becomes `kind="auth", reason="token_expired"`).
pub fn rejection(r: Rejection, n: u64) {
    let (kind, reason) = r.label().split_once('.').unwrap_or(("other", r.label()));
    metrics::counter!("ferrio_rejections_total", "kind" => kind, "reason" => reason).increment(n);
}

pub fn api_request(endpoint: &'static str, status: u16) {
    metrics::counter!("ferrio_api_requests_total", "endpoint" => endpoint, "status" => status.to_string())
        .increment(1);
}

pub fn adapter_healthy(healthy: bool) {
    metrics::gauge!("ferrio_adapter_healthy").set(if healthy { 1.0 } else { 0.0 });
}

pub fn draining(on: bool) {
    metrics::gauge!("ferrio_draining").set(if on { 1.0 } else { 0.0 });
}
