//! `ferrio serve`: puts the configuration, authentication, origin policy, limits and room
//! permissions together on the library's hooks, and runs the HTTP server until a signal.

use std::sync::Arc;
use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{
    Accepted, ConnectError, ConnectOutcome, ConnectRequest, Io, NamespaceBuilder, Payload, ServeOptions,
    Socket,
};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::auth::lifetime::{self, ExpiryScheduler, LifetimeSettings};
use crate::auth::{AuthSession, Authenticator};
use crate::config::{Loaded, Settings};
use crate::limits::connections::LimitsObserver;
use crate::limits::events::{EventQuota, Verdict};
use crate::limits::namespaces::{ConnectionKey, SlotsObserver};
use crate::limits::{ConnectionLimits, EventLimiter, Gate, NamespaceSlots};
use crate::origin::OriginPolicy;
use crate::rooms::{RoomPermissions, user_room};
use crate::stats::{Rejection, Stats};

/// How often the summary line (connections, refusals) is logged when something changed.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

fn refusal(error: &str) -> Payload {
    json!({ "ok": false, "error": error }).into()
}

/// What every namespace's hooks share.
#[derive(Debug)]
struct Hooks {
    auth: Option<Arc<Authenticator>>,
    rooms: Option<Arc<RoomPermissions>>,
    expiry: ExpiryScheduler,
    refresh_event: String,
    user_room: bool,
    slots: Arc<NamespaceSlots>,
    event_quota: Option<EventQuota>,
    max_rooms: usize,
    stats: Arc<Stats>,
}

impl Hooks {
    /// Runs before a socket exists: namespace slots, then the token.
    async fn admit(&self, req: ConnectRequest) -> ConnectOutcome {
        let key = ConnectionKey::of(&req.handshake);
        if !self.slots.reserve(key) {
            self.stats.count(Rejection::TooManyNamespaces);
            return Err(ConnectError::new("forbidden").with_data(json!({ "reason": "too_many_namespaces" })));
        }
        let mut accepted = Accepted::new().extension(key);
        if let Some(quota) = &self.event_quota {
            accepted = accepted.extension(Arc::new(EventLimiter::new(quota)));
        }
        if let Some(auth) = &self.auth {
            let verified = match auth.token_from(&req.auth, &req.handshake) {
                Ok(token) => auth.verify(token).await,
                Err(failure) => Err(failure),
            };
            match verified {
                Ok(identity) => {
                    let data = json!({ "sub": identity.sub });
                    accepted = accepted.extension(AuthSession::new(identity)).data(data);
                }
                Err(failure) => {
                    self.slots.release(key);
                    self.stats.count(failure);
                    tracing::debug!(ns = %req.nsp, reason = failure.reason(), "connect refused");
                    return Err(failure.connect_error());
                }
            }
        }
        Ok(accepted)
    }

    fn on_connect(&self, socket: &Socket) {
        match socket.extension::<Arc<AuthSession>>() {
            Some(session) => {
                let identity = session.identity();
                if self.user_room {
                    socket.join(user_room(&identity.sub));
                }
                tracing::debug!(sub = %identity.sub, ns = %socket.ns().name(), transport = ?socket.transport(), "connected");
                self.expiry.watch(socket, identity.exp);
            }
            None => tracing::debug!(ns = %socket.ns().name(), transport = ?socket.transport(), "connected"),
        }
    }

    fn on_disconnect(&self, socket: &Socket, reason: ferrio::DisconnectReason) {
        if let Some(key) = socket.extension::<ConnectionKey>() {
            self.slots.release(key);
        }
        if self.auth.is_some() {
            self.expiry.forget(socket);
        }
        tracing::debug!(ns = %socket.ns().name(), %reason, "disconnected");
    }

    fn check_rate(&self, socket: &Socket) -> Result<(), Payload> {
        let Some(limiter) = socket.extension::<Arc<EventLimiter>>() else {
            return Ok(());
        };
        match limiter.check() {
            Verdict::Allow => Ok(()),
            Verdict::Refuse => {
                self.stats.count(Rejection::EventRateLimited);
                Err(refusal("rate_limited"))
            }
            Verdict::Flooding => {
                self.stats.count(Rejection::EventFloodClosed);
                let ip = socket.handshake().address.map(|a| a.ip());
                warn!(ip = ?ip, ns = %socket.ns().name(), "event flood; closing the connection");
                socket.disconnect(true);
                Err(refusal("rate_limited"))
            }
        }
    }

    fn check_expiry(&self, socket: &Socket) -> Result<(), Payload> {
        let (Some(auth), Some(session)) = (&self.auth, socket.extension::<Arc<AuthSession>>()) else {
            return Ok(());
        };
        if session.expired(auth.leeway()) {
            return Err(refusal("token_expired"));
        }
        Ok(())
    }

    fn check_room_count(&self, socket: &Socket, event: &ferrio::Event) -> Result<(), Payload> {
        if event.name() != "join" {
            return Ok(());
        }
        let Some(Value::String(room)) = event.args().first() else {
            return Ok(());
        };
        let rooms = socket.rooms();
        if rooms.iter().any(|r| r.as_ref() == room.as_str()) {
            return Ok(());
        }
        let own = socket.id();
        let user = socket
            .extension::<Arc<AuthSession>>()
            .filter(|_| self.user_room)
            .map(|s| user_room(&s.identity().sub));
        let counted = rooms
            .iter()
            .filter(|r| r.as_ref() != own.as_str() && Some(r.as_ref()) != user.as_deref())
            .count();
        if counted >= self.max_rooms {
            self.stats.count(Rejection::TooManyRooms);
            return Err(refusal("too_many_rooms"));
        }
        Ok(())
    }

    /// The behaviour of every namespace `ferrio serve` offers.
    fn declare(self: &Arc<Self>, ns: NamespaceBuilder) -> NamespaceBuilder {
        let hooks = self.clone();
        let mut ns = ns.connect_hook(move |req| {
            let hooks = hooks.clone();
            async move { hooks.admit(req).await }
        });
        if self.event_quota.is_some() {
            let hooks = self.clone();
            ns = ns.guard(move |socket, _| hooks.check_rate(socket));
        }
        if self.auth.is_some() {
            let hooks = self.clone();
            ns = ns.guard(move |socket, _| hooks.check_expiry(socket));
        }
        if self.max_rooms > 0 {
            let hooks = self.clone();
            ns = ns.guard(move |socket, event| hooks.check_room_count(socket, event));
        }
        ns = match &self.rooms {
            Some(rooms) => RoomEvents::new(RoomPermissions::clone(rooms)).install(ns),
            None => RoomEvents::default().install(ns),
        };
        if let (Some(auth), Some(rooms)) = (&self.auth, &self.rooms) {
            let (auth, rooms, stats) = (auth.clone(), rooms.clone(), self.stats.clone());
            let expiry = self.expiry.clone();
            ns = ns.on_async(&self.refresh_event, move |socket, event| {
                lifetime::refresh(
                    socket,
                    event,
                    auth.clone(),
                    rooms.clone(),
                    expiry.clone(),
                    stats.clone(),
                )
            });
        }
        let (on_connect, on_disconnect) = (self.clone(), self.clone());
        ns.on_connect(move |socket| on_connect.on_connect(socket))
            .on_disconnect(move |socket, reason| on_disconnect.on_disconnect(socket, reason))
    }
}

/// The refusal to start a server that anyone could reach without credentials.
pub fn check_exposure(settings: &Settings) -> Result<(), String> {
    if !settings.auth_enabled() && !settings.listen.ip().is_loopback() && !settings.insecure {
        return Err(format!(
            "refusing to listen on {} without authentication: configure [auth] (see ferrio.example.toml), \
             listen on a loopback address, or pass --insecure",
            settings.listen
        ));
    }
    Ok(())
}

/// Loads the configuration again (on SIGHUP).
pub type Reload = Box<dyn Fn() -> Result<Loaded, crate::config::ConfigError> + Send + Sync>;

/// Runs `ferrio serve` until SIGTERM or Ctrl-C.
pub async fn serve(loaded: Loaded) -> Result<(), Box<dyn std::error::Error>> {
    serve_reloadable(loaded, None).await
}

/// [`serve`], reloading what SIGHUP can change with `reload`.
pub async fn serve_reloadable(
    loaded: Loaded,
    reload: Option<Reload>,
) -> Result<(), Box<dyn std::error::Error>> {
    let Loaded {
        settings,
        ignored_env,
        layers,
    } = loaded;
    for name in &ignored_env {
        warn!(variable = %name, "ignoring an environment variable that names no configuration key");
    }
    check_exposure(&settings)?;
    let prometheus = if settings.metrics.enabled {
        crate::metrics::install()
    } else {
        None
    };
    let stats = Arc::new(Stats::default());
    let auth = if settings.auth_enabled() {
        Some(Arc::new(Authenticator::new(&settings, &layers).await?))
    } else {
        None
    };

    let origin = OriginPolicy::new(&settings);
    let mut config = settings.library_config();
    config.cors = origin.cors();
    config.allow_request = Some(origin.clone().allow_request(stats.clone()));
    // `/dashboard` (off unless `dashboard.password` is set): its page's own handshake passes
    // the origin policy with a valid page token.
    let dashboard = crate::dashboard::Dashboard::new(&settings);
    if let Some(dashboard) = &dashboard {
        dashboard.admit_own_page(&mut config);
    }

    let limits = Arc::new(ConnectionLimits::new(&settings.limits, stats.clone()));
    let slots = Arc::new(NamespaceSlots::new(settings.limits.max_namespaces_per_connection));
    let hooks = Arc::new(Hooks {
        rooms: auth
            .as_ref()
            .map(|_| Arc::new(RoomPermissions::new(&settings, stats.clone()))),
        auth: auth.clone(),
        expiry: ExpiryScheduler::start(
            Arc::new(LifetimeSettings {
                warning: settings.auth.expiry_warning.0,
                leeway: settings.auth.leeway.0,
                expiring_event: settings.auth.expiring_event.clone(),
                expired_event: settings.auth.expired_event.clone(),
            }),
            stats.clone(),
        ),
        refresh_event: settings.auth.refresh_event.clone(),
        user_room: settings.rooms.user_room,
        slots: slots.clone(),
        event_quota: EventQuota::new(&settings.limits),
        max_rooms: settings.limits.max_rooms_per_socket,
        stats: stats.clone(),
    });

    let redis = match &settings.cluster.redis_url {
        Some(url) => {
            let mode = match settings.cluster.mode.as_str() {
                "sharded" => ferrio_redis::Mode::Sharded,
                _ => ferrio_redis::Mode::Classic,
            };
            let redis = ferrio_redis::RedisAdapter::builder(url.as_str())
                .key(settings.cluster.key.as_str())
                .mode(mode)
                .connect()
                .await?;
            info!(mode = ?mode, key = %settings.cluster.key, "cluster: Redis adapter connected");
            Some(Arc::new(redis))
        }
        None => None,
    };
    let mut builder = Io::builder(config);
    if let Some(redis) = &redis {
        builder = builder.adapter(redis.factory());
    }
    let mut builder = builder
        .observer(LimitsObserver(limits.clone()))
        .observer(SlotsObserver(slots));
    for name in settings.namespaces.iter() {
        let hooks = hooks.clone();
        builder = match name.strip_suffix('*') {
            Some(prefix) => {
                let prefix = prefix.to_owned();
                builder.dynamic_ns(move |n| n.starts_with(&prefix), |ns| hooks.declare(ns))
            }
            None => builder.ns(name, |ns| hooks.declare(ns)),
        };
    }
    if let Some(dashboard) = &dashboard {
        builder = dashboard.declare(builder);
    }
    let io = builder.build();

    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)] // scripts and tests wait for this line
    {
        println!("listening on {addr}");
    }
    info!(%addr, path = %io.config().path, "ferrio serving");
    match &auth {
        None => warn!(
            "development mode: no authentication configured; every client is trusted and only \
             loopback addresses may listen (configure [auth] to change this)"
        ),
        Some(auth) => {
            info!(algorithms = ?auth.algorithms(), "authentication: JWT required on every namespace")
        }
    }
    if !settings.auth_enabled() && settings.insecure && !addr.ip().is_loopback() {
        warn!(%addr, "--insecure: listening beyond loopback without authentication");
    }
    if origin.allowed().is_empty() {
        info!("no origin is allowed: browser pages cannot connect (set origin.allowed)");
    }

    let jwks_task = auth
        .as_ref()
        .and_then(|a| a.keys().jwks().cloned())
        .map(|jwks| jwks.spawn_refresh(settings.auth.jwks_refresh.0));
    let reporter = {
        let (io, stats, limits) = (io.clone(), stats.clone(), limits.clone());
        tokio::spawn(async move {
            let mut last = (usize::MAX, String::new());
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
            loop {
                tick.tick().await;
                limits.housekeeping();
                let now = (io.connection_count(), stats.summary());
                if now != last {
                    info!(connections = now.0, refused = %now.1, "summary");
                    last = now;
                }
            }
        })
    };

    let readiness = crate::health::Readiness::new(redis.clone().map(|r| {
        let healthy: Box<dyn Fn() -> bool + Send + Sync> = Box::new(move || r.is_healthy());
        healthy
    }));
    let api_keys = Arc::new(crate::api::ApiKeys::new(settings.api.keys.iter()));
    let api = Arc::new(crate::api::Api {
        io: io.clone(),
        keys: api_keys.clone(),
        max_body: settings.api.max_body,
        node_id: settings.cluster.node_id.clone().unwrap_or_else(node_name),
        clustered: redis.is_some(),
    });
    if api_keys.any() {
        info!("HTTP API on /api/");
    }
    let dashboard_task = dashboard.as_ref().map(|d| {
        info!(namespace = d.namespace(), "dashboard on /dashboard");
        d.start(io.clone(), prometheus.clone(), api.node_id.clone())
    });
    let front = crate::front::Front::new(
        Gate::new(io.clone(), limits),
        api,
        readiness.clone(),
        prometheus,
        dashboard,
    );
    let reload_keys = move || {
        let Some(reload) = &reload else {
            return;
        };
        match reload() {
            Ok(fresh) => {
                api_keys.replace(fresh.settings.api.keys.iter());
                info!(
                    api_keys = fresh.settings.api.keys.0.len(),
                    "configuration reloaded (API keys)"
                );
            }
            Err(e) => warn!(error = %e, "reload failed; keeping the running configuration"),
        }
    };

    let closing = io.clone();
    let grace = settings.shutdown_timeout.0;
    let drain_delay = settings.drain.delay.0;
    let drain_window = settings.drain.window.0;
    let options = ServeOptions {
        header_read_timeout: settings.limits.handshake_timeout.0,
        max_header_bytes: settings.limits.max_header_bytes,
        drain: Duration::from_secs(2),
    };
    ferrio::serve_with(
        listener,
        front,
        async move {
            crate::drain::until_stop(reload_keys).await;
            info!(connections = closing.connection_count(), "shutting down");
            let left = crate::drain::drain(&closing, &readiness, drain_delay, drain_window, grace).await;
            info!(left, "connections closed");
        },
        options,
    )
    .await?;
    reporter.abort();
    if let Some(task) = dashboard_task {
        task.abort();
    }
    if let Some(task) = jwks_task {
        task.abort();
    }
    info!(refused = %stats.summary(), "stopped");
    Ok(())
}

/// This machine's name, for `/api/stats` when `cluster.node_id` is unset.
fn node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferrio".into())
}
