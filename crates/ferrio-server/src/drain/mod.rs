//! Signals: SIGTERM and SIGINT drain the node (readiness off, new handshakes refused, then
//! every connection closed with a transport close, which official clients answer by
//! reconnecting, to another node behind a load balancer); SIGHUP reloads what can change
//! without dropping connections.

use std::sync::Arc;
use std::time::Duration;

use ferrio::Io;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use crate::health::Readiness;

/// SIGTERM, SIGINT and SIGHUP, taken over from their default (which ends the process).
#[derive(Debug)]
pub struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
    hup: Option<Signal>,
}

async fn next(signal: &mut Option<Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl Signals {
    /// Installs the handlers now, before the server says it listens: a signal sent right
    /// after that line must not find the default handler.
    pub fn install() -> Self {
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Waits for SIGTERM or SIGINT, running `reload` on every SIGHUP meanwhile.
    pub async fn until_stop(mut self, mut reload: impl FnMut()) {
        loop {
            tokio::select! {
                _ = next(&mut self.term) => return,
                _ = next(&mut self.int) => return,
                _ = next(&mut self.hup) => reload(),
            }
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
