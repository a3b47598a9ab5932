//! Signals: SIGTERM and SIGINT drain the node (readiness off, new handshakes refused, then
//! every connection closed with a transport close, which official clients answer by
//! reconnecting, to another node behind a load balancer); SIGHUP reloads what can change
//! without dropping connections.

use std::sync::Arc;
use std::time::Duration;

use ferrio::Io;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::health::Readiness;

/// Waits for SIGTERM or SIGINT, running `reload` on every SIGHUP meanwhile.
pub async fn until_stop(mut reload: impl FnMut()) {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending().await,
                }
            } => return,
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending().await,
                }
            } => reload(),
        }
    }
}

/// Drains the node within `deadline`: readiness off at once, `delay` for load balancers to
/// notice, then every connection closed; returns how many were still open at the end.
pub async fn drain(io: &Io, readiness: &Arc<Readiness>, delay: Duration, deadline: Duration) -> usize {
    let start = tokio::time::Instant::now();
    readiness.start_draining();
    info!(connections = io.connection_count(), ?delay, ?deadline, "draining");
    let delay = delay.min(deadline);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let left = deadline.saturating_sub(start.elapsed());
    let open = io.close(left).await;
    if open > 0 {
        warn!(open, "connections still open at the drain deadline");
    }
    open
}
