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

/// Time kept back from the deadline for the last connections to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often a batch of connections is closed during the window.
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// Drains the node within `deadline`: readiness off at once, `delay` for load balancers to
/// notice, then connections closed in batches spread over `window`; returns how many were
/// still open at the end.
pub async fn drain(
    io: &Io,
    readiness: &Arc<Readiness>,
    delay: Duration,
    window: Duration,
    deadline: Duration,
) -> usize {
    let start = tokio::time::Instant::now();
    readiness.start_draining();
    info!(
        connections = io.connection_count(),
        ?delay,
        ?window,
        ?deadline,
        "draining"
    );
    let delay = delay.min(deadline);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let window = window.min(
        deadline
            .saturating_sub(start.elapsed())
            .saturating_sub(CLOSE_GRACE),
    );
    let batches = (window.as_millis() / BATCH_EVERY.as_millis()).max(1) as usize;
    let batch = io.connection_count().div_ceil(batches).max(1);
    let window_end = tokio::time::Instant::now() + window;
    while io.connection_count() > 0 && tokio::time::Instant::now() < window_end {
        io.close_connections(batch);
        tokio::time::sleep(BATCH_EVERY).await;
    }
    let left = deadline.saturating_sub(start.elapsed());
    let open = io.close(left).await;
    if open > 0 {
        warn!(open, "connections still open at the drain deadline");
    }
    open
}
