//! [`Io`], the server: namespaces (declared, or created on demand from a pattern), the
//! adapter of each, and the Engine.IO engine underneath.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Right after [`ConnectionObserver::on_open`]: a handle that can close the connection
    /// later (to evict a client that has not authenticated, say).
    fn on_handle(&self, _handshake: &Handshake, _connection: &ConnectionHandle) {}
    /// A WebSocket handshake was answered but its upgrade never completed (the client went
    /// away, or spoke HTTP/1.0): no connection opened for it.
    fn on_abandoned(&self, _handshake: &Handshake) {}
    /// The connection's first namespace CONNECT succeeded (its socket is registered): from
    /// here on it is no longer a client that has not identified itself.
    fn on_established(&self, _handshake: &Handshake) {}
    /// A connection closed.
    fn on_close(&self, _handshake: &Handshake, _reason: CloseReason) {}
}

pub(crate) struct IoShared {
    pub(crate) config: Config,
    pub(crate) observers: Vec<Arc<dyn ConnectionObserver>>,
    namespaces: RwLock<HashMap<Arc<str>, Namespace>>,
    dynamic: Vec<(Matcher, Arc<Handlers>)>,
    /// Namespaces created on demand that exist now (changed under the `namespaces` lock).
    dynamic_count: AtomicUsize,
    /// Whether the task that removes empty namespaces created on demand runs.
    sweeping: AtomicBool,
    adapter_factory: AdapterFactory,
}

/// Where a CONNECT is headed before its hook has run.
pub(crate) enum NamespaceTarget {
    /// A namespace that exists.
    Existing(Namespace),
    /// A name a pattern matches, with that pattern's handlers: the namespace is created only
    /// once a CONNECT to it succeeds.
    OnDemand(Arc<Handlers>),
}

impl NamespaceTarget {
    pub(crate) fn handlers(&self) -> &Handlers {
        match self {
            Self::Existing(ns) => ns.handlers(),
            Self::OnDemand(handlers) => handlers,
        }
    }
}

/// Why an accepted CONNECT found no namespace to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinRefusal {
    /// No namespace has this name and no pattern matches it.
    Invalid,
    /// `max_dynamic_namespaces` exist already.
    TooMany,
}

/// A namespace with one CONNECT joining it: it is not removed while this lives.
pub(crate) struct Joining(Namespace);

impl Joining {
    pub(crate) fn namespace(&self) -> &Namespace {
        &self.0
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        self.0.end_join();
    }
}

impl IoShared {
    /// Where a CONNECT to `name` goes, creating nothing: a client that is refused leaves no
    /// namespace behind.
    pub(crate) fn find_namespace(&self, name: &str) -> Option<NamespaceTarget> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return Some(NamespaceTarget::Existing(ns.clone()));
        }
        self.pattern_for(name).map(NamespaceTarget::OnDemand)
    }

    fn pattern_for(&self, name: &str) -> Option<Arc<Handlers>> {
        self.dynamic
            .iter()
            .find(|(matches, _)| matches(name))
            .map(|(_, h)| h.clone())
    }

    /// The namespace an accepted CONNECT joins: the existing one, or one created now from the
    /// first pattern that matches, within `max_dynamic_namespaces`.
    pub(crate) fn join_namespace(self: &Arc<Self>, name: &str) -> Result<Joining, JoinRefusal> {
        {
            let namespaces = self.namespaces.read();
            if let Some(ns) = namespaces.get(name) {
                // Under the lock the sweeper needs to remove it, so it stays.
                ns.begin_join();
                return Ok(Joining(ns.clone()));
            }
        }
        let handlers = self.pattern_for(name).ok_or(JoinRefusal::Invalid)?;
        let mut namespaces = self.namespaces.write();
        if let Some(ns) = namespaces.get(name) {
            ns.begin_join();
            return Ok(Joining(ns.clone()));
        }
        let max = self.config.max_dynamic_namespaces;
        if max > 0 && self.dynamic_count.load(Ordering::Acquire) >= max {
            return Err(JoinRefusal::TooMany);
        }
        let name: Arc<str> = Arc::from(name);
        let ns = self.new_namespace(name.clone(), true, handlers);
        ns.begin_join();
        namespaces.insert(name, ns.clone());
        self.dynamic_count.fetch_add(1, Ordering::AcqRel);
        crate::metrics::namespaces(namespaces.len());
        drop(namespaces);
        self.start_sweeper();
        Ok(Joining(ns))
    }

    fn new_namespace(&self, name: Arc<str>, dynamic: bool, handlers: Arc<Handlers>) -> Namespace {
        Namespace::new(
            name,
            dynamic,
            handlers,
            &self.adapter_factory,
            self.config.ack_timeout,
            self.config.recovery.clone(),
        )
    }

    /// How long an empty namespace created on demand stays: its recovery sessions live as long.
    fn dynamic_grace(&self) -> Duration {
        let recovery = self
            .config
            .recovery
            .as_ref()
            .map_or(Duration::ZERO, |r| r.max_disconnection_duration);
        self.config.dynamic_namespace_grace.max(recovery)
    }

    /// Starts (once) the task that removes namespaces created on demand once they have been
    /// empty for the grace period. It ends with the server.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let grace = self.dynamic_grace();
        let every = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut empty_since: HashMap<Arc<str>, tokio::time::Instant> = HashMap::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else { return };
                shared.sweep(&mut empty_since, grace);
            }
        });
    }

    fn sweep(&self, empty_since: &mut HashMap<Arc<str>, tokio::time::Instant>, grace: Duration) {
        let now = tokio::time::Instant::now();
        let idle = |ns: &Namespace| ns.is_dynamic() && ns.socket_count() == 0 && !ns.has_joining();
        let mut due = Vec::new();
        {
            let namespaces = self.namespaces.read();
            empty_since.retain(|name, _| namespaces.get(name).is_some_and(idle));
            for (name, _) in namespaces.iter().filter(|(_, ns)| idle(ns)) {
                let since = *empty_since.entry(name.clone()).or_insert(now);
                if now.duration_since(since) >= grace {
                    due.push(name.clone());
                }
            }
        }
        if due.is_empty() {
            return;
        }
        let mut namespaces = self.namespaces.write();
        for name in due {
            // Checked again under the write lock: a CONNECT joining it takes the read lock.
            if namespaces.get(&name).is_some_and(idle) {
                namespaces.remove(&name);
                self.dynamic_count.fetch_sub(1, Ordering::AcqRel);
                empty_since.remove(&name);
                tracing::debug!(ns = ?name, "empty namespace removed");
            }
        }
        crate::metrics::namespaces(namespaces.len());
    }
}

/// Closes one connection from outside its task; does nothing once it has ended.
#[derive(Clone)]
pub struct ConnectionHandle(std::sync::Weak<Connection>);

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionHandle")
            .field(&self.0.upgrade().map(|c| c.sid))
            .finish()
    }
}

impl ConnectionHandle {
    /// Closes the connection as the server (`forced close`).
    pub fn close(&self) {
        if let Some(conn) = self.0.upgrade() {
            conn.close(CloseReason::ForcedClose);
        }
    }
}

impl SessionFactory for Arc<IoShared> {
    type Handler = Client;

    fn open(&self, conn: &Arc<Connection>, handshake: Arc<Handshake>) -> Client {
        let handle = ConnectionHandle(Arc::downgrade(conn));
        for observer in &self.observers {
            observer.on_open(&handshake, conn.transport());
            observer.on_handle(&handshake, &handle);
        }
        Client::new(self.clone(), handshake)
    }

    fn abandoned(&self, handshake: &Handshake) {
        for observer in &self.observers {
            observer.on_abandoned(handshake);
        }
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

    /// Declares namespaces created on demand: the first client whose CONNECT to a name for
    /// which `matches` is true succeeds (its connect hook accepted it) creates it, with these
    /// handlers. A refused CONNECT creates nothing. At most `max_dynamic_namespaces` exist at
    /// once (further CONNECTs get a CONNECT_ERROR); one that has been empty for
    /// `dynamic_namespace_grace` is removed.
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
            dynamic_count: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
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
                let ns = shared.new_namespace(name.clone(), false, builder.into_handlers());
                namespaces.insert(name, ns);
            }
            crate::metrics::namespaces(namespaces.len());
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
