//! [`Io`], the server: namespaces (declared, or created on demand from a pattern), the
//! adapter of each, and the Engine.IO engine underneath.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::client::Client;
use crate::engine::{CloseReason, Connection, Engine, EngineConfig, SessionFactory, TransportKind};
use crate::namespace::{AdapterFactory, Handlers, local_adapter_factory};
use crate::{Config, Handshake, Namespace, NamespaceBuilder};

type Matcher = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Hears about every Engine.IO connection of a server: for connection limits, metrics, logs.
/// Both methods run on the connection's own task and must not block.
pub trait ConnectionObserver: Send + Sync + 'static {
    /// A connection opened (before any namespace is joined).
    fn on_open(&self, _handshake: &Handshake, _transport: TransportKind) {}
    /// A connection closed.
    fn on_close(&self, _handshake: &Handshake, _reason: CloseReason) {}
}

pub(crate) struct IoShared {
    pub(crate) config: Config,
    pub(crate) observers: Vec<Arc<dyn ConnectionObserver>>,
    namespaces: RwLock<HashMap<Arc<str>, Namespace>>,
    dynamic: Vec<(Matcher, Arc<Handlers>)>,
    adapter_factory: AdapterFactory,
}

impl IoShared {
    /// The namespace a client asked for: a declared one, or a new child of the first pattern
    /// that matches the name.
    pub(crate) fn namespace_for(&self, name: &str) -> Option<Namespace> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return Some(ns.clone());
        }
        let handlers = self
            .dynamic
            .iter()
            .find(|(matches, _)| matches(name))
            .map(|(_, h)| h.clone())?;
        let mut namespaces = self.namespaces.write();
        let ns = namespaces
            .entry(Arc::from(name))
            .or_insert_with_key(|name| self.new_namespace(name.clone(), handlers));
        Some(ns.clone())
    }

    fn new_namespace(&self, name: Arc<str>, handlers: Arc<Handlers>) -> Namespace {
        Namespace::new(
            name,
            handlers,
            &self.adapter_factory,
            self.config.ack_timeout,
            self.config.recovery.clone(),
        )
    }
}

impl SessionFactory for Arc<IoShared> {
    type Handler = Client;

    fn open(&self, conn: &Arc<Connection>, handshake: Arc<Handshake>) -> Client {
        for observer in &self.observers {
            observer.on_open(&handshake, conn.transport());
        }
        Client::new(self.clone(), handshake)
    }
}

/// Declares a server: its options, namespaces and adapter.
pub struct IoBuilder {
    config: Config,
    namespaces: Vec<(String, NamespaceBuilder)>,
    dynamic: Vec<(Matcher, NamespaceBuilder)>,
    adapter_factory: AdapterFactory,
    observers: Vec<Arc<dyn ConnectionObserver>>,
}

impl fmt::Debug for IoBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuilder")
            .field("config", &self.config)
            .field(
                "namespaces",
                &self.namespaces.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl IoBuilder {
    /// Declares a namespace (`"/"`, `"/admin"`, ...).
    pub fn ns(mut self, name: &str, declare: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        let name = normalize_nsp(name);
        self.namespaces.push((name, declare(NamespaceBuilder::default())));
        self
    }

    /// Declares namespaces created on demand: the first client that connects to a name for
    /// which `matches` is true creates it, with these handlers.
    pub fn dynamic_ns(
        mut self,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
        declare: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder,
    ) -> Self {
        self.dynamic
            .push((Box::new(matches), declare(NamespaceBuilder::default())));
        self
    }

    /// Uses another adapter (a cluster adapter) for every namespace.
    pub fn adapter(
        mut self,
        factory: impl Fn(&crate::AdapterContext) -> Arc<dyn crate::Adapter> + Send + Sync + 'static,
    ) -> Self {
        self.adapter_factory = Arc::new(factory);
        self
    }

    /// Adds an observer of every connection's open and close.
    pub fn observer(mut self, observer: impl ConnectionObserver) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Builds the server.
    pub fn build(self) -> Io {
        let config = self.config.normalized();
        let shared = Arc::new(IoShared {
            config: config.clone(),
            observers: self.observers,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: self
                .dynamic
                .into_iter()
                .map(|(m, b)| (m, b.into_handlers()))
                .collect(),
            adapter_factory: self.adapter_factory,
        });
        {
            let mut namespaces = shared.namespaces.write();
            for (name, builder) in self.namespaces {
                let name: Arc<str> = Arc::from(name);
                let ns = shared.new_namespace(name.clone(), builder.into_handlers());
                namespaces.insert(name, ns);
            }
        }
        let engine = Arc::new(Engine::new(EngineConfig::from(&config), shared.clone()));
        Io(Arc::new(IoInner { shared, engine }))
    }
}

fn normalize_nsp(name: &str) -> String {
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    }
}

pub(crate) struct IoInner {
    pub(crate) shared: Arc<IoShared>,
    pub(crate) engine: Arc<Engine<Arc<IoShared>>>,
}

/// A Socket.IO server. Cheap to clone; every clone is the same server.
///
/// Mount it with [`crate::serve`], as a tower service, or as a layer in front of an app
/// (see [`crate::service`]).
#[derive(Clone)]
pub struct Io(pub(crate) Arc<IoInner>);

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("path", &self.0.shared.config.path)
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl Io {
    /// Starts declaring a server with these options.
    pub fn builder(config: Config) -> IoBuilder {
        IoBuilder {
            config,
            namespaces: Vec::new(),
            dynamic: Vec::new(),
            adapter_factory: local_adapter_factory(),
            observers: Vec::new(),
        }
    }

    /// The server's options.
    pub fn config(&self) -> &Config {
        &self.0.shared.config
    }

    /// A namespace that exists (declared, or created on demand earlier).
    pub fn of(&self, name: &str) -> Option<Namespace> {
        self.0.shared.namespaces.read().get(name).cloned()
    }

    /// Every namespace that exists now.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.0.shared.namespaces.read().values().cloned().collect()
    }

    /// Open Engine.IO connections.
    pub fn connection_count(&self) -> usize {
        self.0.engine.session_count()
    }

    /// Closes up to `n` connections as the server going away (clients see a transport close
    /// and reconnect, to another node behind a load balancer) without waiting; returns how
    /// many it closed. For draining a node in batches.
    pub fn close_connections(&self, n: usize) -> usize {
        self.0.engine.close_some(n, CloseReason::ServerShuttingDown)
    }

    /// Waits until every connection is gone or `deadline` passes; returns how many are left.
    pub async fn wait_closed(&self, deadline: Duration) -> usize {
        self.0.engine.wait_empty(deadline).await
    }

    /// Closes every connection (clients see a transport close and reconnect elsewhere) and
    /// waits up to `deadline` for them to finish. Returns how many were still open.
    pub async fn close(&self, deadline: Duration) -> usize {
        self.0
            .engine
            .close_all(CloseReason::ServerShuttingDown, deadline)
            .await
    }
}
