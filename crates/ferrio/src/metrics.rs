//! What the server counts, through the `metrics` facade: nothing is recorded unless the
//! application installs a recorder (ferrio serve installs a Prometheus one).
//!
//! Names follow Prometheus conventions. Labels stay low-cardinality: transport, reason,
//! namespace.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ferrio_connections` | gauge | `transport` |
//! | `ferrio_handshakes_total` | counter | `transport` |
//! | `ferrio_disconnects_total` | counter | `reason` |
//! | `ferrio_sockets` | gauge | `namespace` |
//! | `ferrio_events_received_total` | counter | |
//! | `ferrio_packets_sent_total` | counter | |
//! | `ferrio_bytes_received_total` / `ferrio_bytes_sent_total` | counter | `transport` |
//! | `ferrio_broadcast_recipients` | histogram | |
//! | `ferrio_delivery_seconds` | histogram (queued → written, oldest of each batch) | |
//! | `ferrio_ack_seconds` | histogram (server emit → client ack) | |
//! | `ferrio_dropped_packets_total` | counter | `reason` (`volatile`, `slow_consumer`) |
//! | `ferrio_protocol_errors_total` | counter | `kind` (a `ProtocolError` or `WsError` label) |
//! | `ferrio_bodies_refused_total` | counter | `reason` (`timed_out`, `too_slow`, `busy`, `unreadable`) |
//! | `ferrio_namespaces` | gauge | |
//! | `ferrio_recovery_total` | counter | `result` (`recovered`, `failed`), `reason` (`none`, or a failure: `unknown_session`, `unknown_offset`, `history_trimmed`, `too_many_missed`, `cluster_gap`, `rooms_changed`, `unavailable`, `connection_gone`) |
//!
//! A namespace created on demand is counted under its pattern's label (see
//! [`crate::NamespaceBuilder::metrics_label`]), never under its own name: clients choose those
//! names, and a series per name would let them grow the scrape without bound.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::engine::{CloseReason, TransportKind};

fn transport_label(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Polling => "polling",
        TransportKind::WebSocket => "websocket",
    }
}

/// Handles resolved once, so the hot paths do not hash label sets.
struct Handles {
    connections: [Gauge; 2],
    handshakes: [Counter; 2],
    bytes_received: [Counter; 2],
    bytes_sent: [Counter; 2],
    events_received: Counter,
    packets_sent: Counter,
    broadcast_recipients: Histogram,
    delivery: Histogram,
    ack: Histogram,
    dropped_volatile: Counter,
    dropped_slow: Counter,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let by_transport = |f: &dyn Fn(&'static str) -> Counter| [f("polling"), f("websocket")];
        Handles {
            connections: [
                metrics::gauge!("ferrio_connections", "transport" => "polling"),
                metrics::gauge!("ferrio_connections", "transport" => "websocket"),
            ],
            handshakes: by_transport(&|t| metrics::counter!("ferrio_handshakes_total", "transport" => t)),
            bytes_received: by_transport(
                &|t| metrics::counter!("ferrio_bytes_received_total", "transport" => t),
            ),
            bytes_sent: by_transport(&|t| metrics::counter!("ferrio_bytes_sent_total", "transport" => t)),
            events_received: metrics::counter!("ferrio_events_received_total"),
            packets_sent: metrics::counter!("ferrio_packets_sent_total"),
            broadcast_recipients: metrics::histogram!("ferrio_broadcast_recipients"),
            delivery: metrics::histogram!("ferrio_delivery_seconds"),
            ack: metrics::histogram!("ferrio_ack_seconds"),
            dropped_volatile: metrics::counter!("ferrio_dropped_packets_total", "reason" => "volatile"),
            dropped_slow: metrics::counter!("ferrio_dropped_packets_total", "reason" => "slow_consumer"),
        }
    })
}

fn idx(t: TransportKind) -> usize {
    match t {
        TransportKind::Polling => 0,
        TransportKind::WebSocket => 1,
    }
}

pub(crate) fn connection_opened(t: TransportKind) {
    let h = handles();
    h.handshakes[idx(t)].increment(1);
    h.connections[idx(t)].increment(1.0);
}

pub(crate) fn connection_upgraded() {
    let h = handles();
    h.connections[0].decrement(1.0);
    h.connections[1].increment(1.0);
}

pub(crate) fn connection_closed(t: TransportKind, reason: CloseReason) {
    handles().connections[idx(t)].decrement(1.0);
    metrics::counter!("ferrio_disconnects_total", "reason" => reason.as_str()).increment(1);
    if reason == CloseReason::SlowConsumer {
        handles().dropped_slow.increment(1);
    }
}

/// `namespace` is the namespace's metrics label (its pattern's, for one created on demand).
pub(crate) fn socket_connected(namespace: &str) {
    metrics::gauge!("ferrio_sockets", "namespace" => namespace.to_owned()).increment(1.0);
}

pub(crate) fn socket_disconnected(namespace: &str) {
    metrics::gauge!("ferrio_sockets", "namespace" => namespace.to_owned()).decrement(1.0);
}

pub(crate) fn event_received() {
    handles().events_received.increment(1);
}

pub(crate) fn bytes_received(t: TransportKind, n: usize) {
    handles().bytes_received[idx(t)].increment(n as u64);
}

pub(crate) fn written(t: TransportKind, packets: usize, bytes: usize, oldest_queued: Option<Duration>) {
    let h = handles();
    h.packets_sent.increment(packets as u64);
    h.bytes_sent[idx(t)].increment(bytes as u64);
    if let Some(d) = oldest_queued {
        h.delivery.record(d.as_secs_f64());
    }
}

pub(crate) fn broadcast(recipients: usize) {
    handles().broadcast_recipients.record(recipients as f64);
}

pub(crate) fn ack_round_trip(d: Duration) {
    handles().ack.record(d.as_secs_f64());
}

pub(crate) fn volatile_dropped() {
    handles().dropped_volatile.increment(1);
}

/// A polling POST body refused for `reason` (`timed_out`, `too_slow`, `busy`, `unreadable`).
pub(crate) fn body_refused(reason: &'static str) {
    metrics::counter!("ferrio_bodies_refused_total", "reason" => reason).increment(1);
}

/// Namespaces that exist now (declared and created on demand).
pub(crate) fn namespaces(n: usize) {
    metrics::gauge!("ferrio_namespaces").set(n as f64);
}

/// A protocol violation by a peer: `kind` is the label of the
/// [`ProtocolError`](ferrio_proto::ProtocolError) or [`WsError`](ferrio_proto::ws::WsError).
/// A client got its session back with every packet it missed.
pub(crate) fn recovered(namespace: &str) {
    metrics::counter!("ferrio_recovery_total", "result" => "recovered", "reason" => "none").increment(1);
    tracing::debug!(ns = namespace, "session recovered");
}

/// A client asked for its session and was told `recovered: false`.
pub(crate) fn recovery_failed(namespace: &str, reason: &'static str) {
    metrics::counter!("ferrio_recovery_total", "result" => "failed", "reason" => reason).increment(1);
    // Unknown sessions and offsets are what anyone can send: counted, not worth a line each.
    if matches!(reason, "unknown_session" | "unknown_offset") {
        tracing::debug!(
            ns = namespace,
            reason,
            "session not recovered; the client starts afresh"
        );
    } else {
        tracing::info!(
            ns = namespace,
            reason,
            "session not recovered; the client starts afresh"
        );
    }
}

pub(crate) fn protocol_error(kind: &'static str) {
    metrics::counter!("ferrio_protocol_errors_total", "kind" => kind).increment(1);
}

/// The label of a transport, for applications that export their own metrics.
pub fn transport_name(t: TransportKind) -> &'static str {
    transport_label(t)
}
