//! Namespaces per connection. A connection's sockets share one [`ferrio::Handshake`]; its
//! address identifies the connection from its open to its close, so the count lives in a map
//! keyed by it, created by the connection observer and dropped when the connection closes.

use std::collections::HashMap;
use std::sync::Arc;

use ferrio::{CloseReason, ConnectionObserver, Handshake, TransportKind};
use parking_lot::Mutex;

/// Identifies one connection while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionKey(usize);

impl ConnectionKey {
    pub fn of(handshake: &Handshake) -> Self {
        Self(std::ptr::from_ref(handshake) as usize)
    }
}

/// How many namespaces each open connection has joined (or is joining).
#[derive(Debug)]
pub struct NamespaceSlots {
    max: usize,
    joined: Mutex<HashMap<ConnectionKey, usize>>,
}

impl NamespaceSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            joined: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for a namespace connection; `false` when the connection has them all (or
    /// has closed meanwhile).
    pub fn reserve(&self, key: ConnectionKey) -> bool {
        let mut joined = self.joined.lock();
        let Some(n) = joined.get_mut(&key) else {
            return false;
        };
        if self.max > 0 && *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives a slot back (the socket left, or its connect was refused).
    pub fn release(&self, key: ConnectionKey) {
        if let Some(n) = self.joined.lock().get_mut(&key) {
            *n = n.saturating_sub(1);
        }
    }

    pub fn open_connections(&self) -> usize {
        self.joined.lock().len()
    }
}

/// Creates and drops each connection's entry.
#[derive(Debug, Clone)]
pub struct SlotsObserver(pub Arc<NamespaceSlots>);

impl ConnectionObserver for SlotsObserver {
    fn on_open(&self, handshake: &Handshake, _transport: TransportKind) {
        self.0.joined.lock().insert(ConnectionKey::of(handshake), 0);
    }

    fn on_close(&self, handshake: &Handshake, _reason: CloseReason) {
        self.0.joined.lock().remove(&ConnectionKey::of(handshake));
    }
}
