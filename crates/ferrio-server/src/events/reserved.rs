//! The event names the server emits itself (`token:expiring`, `presence:join`, ...): no client
//! `publish` and no HTTP API emit may use them, so a client can trust that such an event came
//! from the server. Each feature adds the names it emits when the server starts.

use std::collections::{BTreeMap, BTreeSet};

use ferrio::proto::socket::RESERVED_EVENTS;

use crate::config::Settings;

/// Every event name the server owns: the protocol's (`connect`, `disconnect`, ...) and those
/// its features emit, on every namespace or on one (the dashboard's).
#[derive(Debug, Default)]
pub struct ServerEvents {
    everywhere: BTreeSet<String>,
    in_namespace: BTreeMap<String, BTreeSet<String>>,
}

impl ServerEvents {
    /// The names the features configured in `settings` emit.
    pub fn of(settings: &Settings) -> Self {
        let mut events = Self::default();
        events.everywhere.extend(RESERVED_EVENTS.map(str::to_owned));
        crate::auth::lifetime::declare_events(&settings.auth, &mut events);
        crate::presence::declare_events(&mut events);
        crate::dashboard::declare_events(&settings.dashboard, &mut events);
        events
    }

    /// A feature emits `name` on every namespace.
    pub fn emits(&mut self, name: &str) {
        self.everywhere.insert(name.to_owned());
    }

    /// A feature emits `name` on `namespace` only.
    pub fn emits_in(&mut self, namespace: &str, name: &str) {
        self.in_namespace
            .entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    /// Whether `name` is the server's own on `namespace`: nobody else may emit it there.
    pub fn is_reserved(&self, namespace: &str, name: &str) -> bool {
        self.everywhere.contains(name)
            || self
                .in_namespace
                .get(namespace)
                .is_some_and(|names| names.contains(name))
    }
}
