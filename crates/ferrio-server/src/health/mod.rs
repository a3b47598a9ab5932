//! `/healthz` (the process answers) and `/readyz` (it takes new clients: not draining, and
//! the cluster adapter, when there is one, is healthy).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this node should get new clients.
pub struct Readiness {
    draining: AtomicBool,
    adapter: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("draining", &self.draining())
            .field("adapter", &self.adapter.is_some())
            .finish()
    }
}

impl Readiness {
    /// `adapter` answers whether the cluster adapter is healthy (`None`: a single node).
    pub fn new(adapter: Option<Box<dyn Fn() -> bool + Send + Sync>>) -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            adapter,
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        crate::metrics::draining(true);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn adapter_healthy(&self) -> bool {
        self.adapter.as_ref().is_none_or(|healthy| healthy())
    }

    /// `(ready, why not)`.
    pub fn check(&self) -> (bool, &'static str) {
        let adapter = self.adapter_healthy();
        crate::metrics::adapter_healthy(adapter);
        if self.draining() {
            (false, "draining")
        } else if !adapter {
            (false, "adapter_unhealthy")
        } else {
            (true, "ready")
        }
    }
}
