//! `ferrio serve`: puts the configuration, authentication, origin policy, limits and room
//! permissions together on the library's hooks, and runs the HTTP server until a signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{
    Accepted, ConnectError, ConnectOutcome, ConnectRequest, Io, NamespaceBuilder, Payload, ServeOptions,
    Socket,
};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::auth::lifetime::{self, ExpiryScheduler, LifetimeSettings};
use crate::auth::{AuthSession, Authenticator};
use crate::config::{Loaded, Settings};
use crate::events::{EventRules, ServerEvents};
use crate::limits::connections::LimitsObserver;
use crate::limits::events::Verdict;
use crate::limits::namespaces::{ConnectionKey, SlotsObserver};
use crate::limits::{ConnectionLimits, EventLimiter, EventLimits, Gate, NamespaceSlots};
use crate::origin::OriginPolicy;
use crate::presence::{Announcer, user_of};
use crate::rooms::{RoomPermissions, user_room};
use crate::stats::{Rejection, Stats};
use crate::webhooks::Webhooks;

/// Kept back from the shutdown deadline when flushing webhooks, for the exit itself.
const FLUSH_MARGIN: Duration = Duration::from_millis(500);

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
    event_limits: Arc<EventLimits>,
    /// `limits.max_rooms_per_socket` (0: no limit), reloaded on SIGHUP.
    max_rooms: AtomicUsize,
    rules: EventRules,
    presence_query: bool,
    announcer: Option<Arc<Announcer>>,
    webhooks: Option<Arc<Webhooks>>,
    /// `webhooks.rpc_per_socket`.
    rpc_per_socket: usize,
    proxies: crate::limits::ProxyList,
    /// Connection counts: a CONNECT that authenticates promotes its connection.
    limits: Arc<ConnectionLimits>,
    stats: Arc<Stats>,
}

/// A client event for the backend: `event`, `args` and, when it carried binary data,
/// `attachments` (base64, in the order the `{"_placeholder":true,"num":N}` arguments name).
fn event_fields(socket: &Socket, event: &ferrio::Event) -> Map<String, Value> {
    use base64::Engine as _;
    let mut fields = about(socket);
    fields.insert("event".into(), event.name().into());
    fields.insert("args".into(), Value::Array(event.args().to_vec()));
    let attachments = &event.payload().attachments;
    if !attachments.is_empty() {
        let encoded = attachments
            .iter()
            .map(|b| Value::from(base64::engine::general_purpose::STANDARD.encode(b)))
            .collect();
        fields.insert("attachments".into(), Value::Array(encoded));
    }
    fields
}

/// The RPCs one socket has in flight.
#[derive(Debug, Default)]
struct RpcSlots(AtomicUsize);

/// One RPC in flight; gives its slot back when dropped.
struct RpcSlot(Arc<RpcSlots>);

impl RpcSlots {
    fn take(self: Arc<Self>, limit: usize) -> Option<RpcSlot> {
        let taken = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| RpcSlot(self))
    }
}

impl Drop for RpcSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The fields every webhook about `socket` carries: `socket`, `ns` and, when known, `user`.
fn about(socket: &Socket) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("socket".into(), socket.id().as_str().into());
    fields.insert("ns".into(), socket.ns().name().into());
    if let Some(user) = user_of(socket) {
        fields.insert("user".into(), user.into());
    }
    fields
}

impl Hooks {
    /// Runs before a socket exists: namespace slots, then the token.
    async fn admit(&self, req: ConnectRequest) -> ConnectOutcome {
        let key = ConnectionKey::of(&req.handshake);
        if !self.slots.reserve(key) {
            self.stats.count(Rejection::TooManyNamespaces);
            return Err(ConnectError::new("forbidden").with_data(json!({ "reason": "too_many_namespaces" })));
        }
        let mut accepted = Accepted::new()
            .extension(key)
            .extension(Arc::new(EventLimiter::new(self.event_limits.clone())));
        if !self.rules.rpcs().is_empty() {
            accepted = accepted.extension(Arc::new(RpcSlots::default()));
        }
        if let Some(auth) = &self.auth {
            let verified = match auth.token_from(&req.auth, &req.handshake) {
                Ok(token) => auth.verify(token).await,
                Err(failure) => Err(failure),
            };
            let verified =
                verified.and_then(|identity| auth.check_namespace(&identity, &req.nsp).map(|()| identity));
            match verified {
                Ok(identity) => {
                    let data = json!({ "sub": identity.sub });
                    accepted = accepted.extension(AuthSession::new(identity)).data(data);
                }
                Err(failure) => {
                    self.slots.release(key);
                    self.stats.count(failure);
                    tracing::debug!(ns = &*req.nsp, reason = failure.reason(), "connect refused");
                    return Err(failure.connect_error());
                }
            }
        }
        // Authenticated (or no authentication configured): the connection leaves the budget of
        // those that have not identified themselves, if the node has room for it.
        if let Err(refusal) = self.limits.promote(&req.handshake) {
            self.slots.release(key);
            return Err(ConnectError::new(refusal.message()).with_data(json!({ "reason": "server_full" })));
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
                tracing::debug!(sub = identity.sub.as_str(), ns = socket.ns().name(), transport = ?socket.transport(), "connected");
                self.expiry.watch(socket, identity.exp);
            }
            None => tracing::debug!(ns = socket.ns().name(), transport = ?socket.transport(), "connected"),
        }
        if let Some(webhooks) = self.webhooks.as_ref().filter(|w| w.wants("connection")) {
            let mut fields = about(socket);
            fields.insert(
                "transport".into(),
                ferrio::metrics::transport_name(socket.transport()).into(),
            );
            let handshake = socket.handshake();
            if handshake.address.is_some() {
                let ip = self.proxies.client_ip(handshake.address, &handshake.headers);
                fields.insert("address".into(), ip.to_string().into());
            }
            webhooks.send("connection", fields);
        }
    }

    fn on_disconnect(&self, socket: &Socket, reason: ferrio::DisconnectReason) {
        if let Some(key) = socket.extension::<ConnectionKey>() {
            self.slots.release(key);
        }
        if self.auth.is_some() {
            self.expiry.forget(socket);
        }
        tracing::debug!(ns = socket.ns().name(), reason = reason.as_str(), "disconnected");
        if let Some(webhooks) = self.webhooks.as_ref().filter(|w| w.wants("disconnection")) {
            let mut fields = about(socket);
            fields.insert("reason".into(), reason.as_str().into());
            webhooks.send("disconnection", fields);
        }
    }

    /// `join` / `leave` webhooks. The automatic `user:<sub>` room is implied by the connection
    /// and not reported.
    fn on_room_change(&self, socket: &Socket, room: &ferrio::Room, change: ferrio::RoomChange) {
        if let Some(announcer) = &self.announcer {
            announcer.on_room_change(socket, room, change);
        }
        let kind = match change {
            ferrio::RoomChange::Joined => "join",
            ferrio::RoomChange::Left => "leave",
        };
        let Some(webhooks) = self.webhooks.as_ref().filter(|w| w.wants(kind)) else {
            return;
        };
        let mut fields = about(socket);
        if self.user_room
            && fields
                .get("user")
                .and_then(Value::as_str)
                .map(user_room)
                .as_deref()
                == Some(room)
        {
            return;
        }
        fields.insert("room".into(), room.as_ref().into());
        webhooks.send(kind, fields);
    }

    /// Queues an `event` webhook for a client event; false when the queue is full.
    fn forward(&self, socket: &Socket, event: &ferrio::Event) -> bool {
        let Some(webhooks) = &self.webhooks else {
            return false;
        };
        webhooks.send("event", event_fields(socket, event))
    }

    /// An RPC event: takes one of the socket's slots in the order events arrive, then asks
    /// the backend on a task of its own; the reply is the ack.
    fn start_rpc(self: &Arc<Self>, socket: &Socket, mut event: ferrio::Event) {
        let slot = socket
            .extension::<Arc<RpcSlots>>()
            .and_then(|slots| slots.take(self.rpc_per_socket));
        match slot {
            Some(slot) => {
                tokio::spawn(self.clone().rpc(socket.clone(), event, slot));
            }
            None => event.ack(json!({ "ok": false, "error": "rpc_busy" })),
        }
    }

    async fn rpc(self: Arc<Self>, socket: Socket, mut event: ferrio::Event, _slot: RpcSlot) {
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        let answer = match webhooks.rpc(Value::Object(event_fields(&socket, &event))).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(event = event.name(), error = %e, "rpc failed");
                json!({ "ok": false, "error": e.code() })
            }
        };
        event.ack(answer);
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
                warn!(ip = ?ip, ns = socket.ns().name(), "event flood; closing the connection");
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
        let max_rooms = self.max_rooms.load(Ordering::Relaxed);
        if max_rooms == 0 {
            return Ok(());
        }
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
        if counted >= max_rooms {
            self.stats.count(Rejection::TooManyRooms);
            return Err(refusal("too_many_rooms"));
        }
        Ok(())
    }

    fn check_schema(&self, event: &ferrio::Event) -> Result<(), Payload> {
        self.rules.check(event.name(), event.args()).inspect_err(|_| {
            self.stats.count(Rejection::InvalidPayload);
        })
    }

    /// The `presence` event: `room` → who is in it, if the socket may see it.
    async fn presence(self: Arc<Self>, socket: Socket, mut event: ferrio::Event) {
        let room = match ferrio::builtins::room_name(event.args().first()) {
            Ok(room) => room.to_owned(),
            Err(_) => return event.ack(json!({ "ok": false, "error": "room must be a non-empty string" })),
        };
        if let Some(rooms) = &self.rooms
            && !rooms.may_view(&socket, &room)
        {
            self.stats.count(Rejection::PresenceForbidden);
            return event.ack(json!({ "ok": false, "error": "forbidden" }));
        }
        let answer = match crate::presence::snapshot(socket.ns(), &room).await {
            Ok(Value::Object(mut found)) => {
                found.insert("ok".into(), Value::Bool(true));
                Value::Object(found)
            }
            Ok(_) | Err(_) => json!({ "ok": false, "error": "unavailable" }),
        };
        event.ack(answer);
    }

    /// The behaviour of every namespace `ferrio serve` offers. `publish` refuses the names in
    /// `reserved`.
    fn declare(self: &Arc<Self>, ns: NamespaceBuilder, reserved: &Arc<ServerEvents>) -> NamespaceBuilder {
        let hooks = self.clone();
        let mut ns = ns.connect_hook(move |req| {
            let hooks = hooks.clone();
            async move { hooks.admit(req).await }
        });
        // The rate and room-count limits can be turned on by a reload, so their guards are
        // always there.
        let hooks = self.clone();
        ns = ns.guard(move |socket, _| hooks.check_rate(socket));
        if self.auth.is_some() {
            let hooks = self.clone();
            ns = ns.guard(move |socket, _| hooks.check_expiry(socket));
        }
        let hooks = self.clone();
        ns = ns.guard(move |socket, event| hooks.check_room_count(socket, event));
        if self.rules.has_schemas() {
            let hooks = self.clone();
            ns = ns.guard(move |_, event| hooks.check_schema(event));
        }
        if self.presence_query {
            let hooks = self.clone();
            ns = ns.on_async("presence", move |socket, event| {
                hooks.clone().presence(socket, event)
            });
        }
        let room_webhooks = self
            .webhooks
            .as_ref()
            .is_some_and(|w| w.wants("join") || w.wants("leave"));
        if self.announcer.is_some() || room_webhooks {
            let hooks = self.clone();
            ns = ns.on_room_change(move |socket, room, change| hooks.on_room_change(socket, room, change));
        }
        if self.webhooks.is_some() {
            // After every check (limits, schema): a refused event goes nowhere. The ack says
            // whether the event was queued for the backend.
            for name in self.rules.forwarded() {
                let hooks = self.clone();
                ns = ns.on(name, move |socket, mut event| {
                    let answer = if hooks.forward(socket, &event) {
                        json!({ "ok": true })
                    } else {
                        json!({ "ok": false, "error": "backend_unavailable" })
                    };
                    event.ack(answer);
                });
            }
            for name in self.rules.rpcs() {
                let hooks = self.clone();
                ns = ns.on(name, move |socket, event| hooks.start_rpc(socket, event));
            }
        }
        let room_events = match &self.rooms {
            Some(rooms) => RoomEvents::new(RoomPermissions::clone(rooms)),
            None => RoomEvents::default(),
        };
        let reserved = reserved.clone();
        ns = room_events
            .reserve_events(move |socket, name| reserved.is_reserved(socket.ns().name(), name))
            .install(ns);
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
        warn!(
            variable = name.as_str(),
            "ignoring an environment variable that names no configuration key"
        );
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
    let dashboard = crate::dashboard::Dashboard::new(&settings, stats.clone());
    if let Some(dashboard) = &dashboard {
        dashboard.admit_own_page(&mut config);
    }

    let limits = Arc::new(ConnectionLimits::new(&settings.limits, stats.clone()));
    let node_id = settings.cluster.node_id.clone().unwrap_or_else(node_name);
    // After the metrics recorder: the webhook meters are taken when it starts.
    let webhooks = Webhooks::start(&settings.webhooks, node_id.clone())?;
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
        event_limits: EventLimits::new(&settings.limits),
        max_rooms: AtomicUsize::new(settings.limits.max_rooms_per_socket),
        rules: EventRules::new(&settings, &layers)?,
        presence_query: settings.presence.query,
        announcer: Announcer::new(&settings),
        webhooks: webhooks.clone(),
        rpc_per_socket: settings.webhooks.rpc_per_socket,
        proxies: limits.proxies().clone(),
        limits: limits.clone(),
        stats: stats.clone(),
    });

    let redis = match &settings.cluster.redis_url {
        Some(url) => {
            let mode = match settings.cluster.mode.as_str() {
                "sharded" => ferrio_redis::Mode::Sharded,
                "streams" => ferrio_redis::Mode::Streams,
                _ => ferrio_redis::Mode::Classic,
            };
            let redis = ferrio_redis::RedisAdapter::builder(url.as_str())
                .key(settings.cluster.key.as_str())
                .mode(mode)
                .stream_name(settings.cluster.stream_name.as_str())
                .stream_max_len(settings.cluster.stream_max_len)
                // Kept in Redis, so any node answers `history` with every node's messages.
                .history(
                    settings
                        .recovery
                        .library_config(&settings.history)
                        .map(|r| r.rooms)
                        .unwrap_or_default(),
                )
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
    // Neither a client's `publish` nor the HTTP API may send what the server emits itself.
    let server_events = Arc::new(ServerEvents::of(&settings));
    for name in settings.namespaces.iter() {
        let hooks = hooks.clone();
        builder = match name.strip_suffix('*') {
            Some(prefix) => {
                let prefix = prefix.to_owned();
                // Metrics carry the pattern, never a client-chosen name.
                builder.dynamic_ns(
                    move |n| n.starts_with(&prefix),
                    |ns| hooks.declare(ns, &server_events).metrics_label(name),
                )
            }
            None => builder.ns(name, |ns| hooks.declare(ns, &server_events)),
        };
    }
    if let Some(dashboard) = &dashboard {
        builder = dashboard.declare(builder);
    }
    let io = builder.build();

    let signals = crate::drain::Signals::install();
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
        .and_then(|a| a.jwks())
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
        body_limits: ferrio::body::BodyLimits {
            max_bytes: settings.api.max_body,
            timeout: settings.limits.body_timeout.0,
            min_rate: settings.limits.body_min_rate,
        },
        bodies: ferrio::body::BodyBudget::new(settings.limits.max_inflight_body_bytes),
        node_id,
        clustered: redis.is_some(),
        internal_namespace: dashboard.as_ref().map(|d| d.namespace().to_owned()),
        reserved: server_events,
    });
    if api_keys.any() {
        info!("HTTP API on /api/");
    }
    let dashboard_task = dashboard.as_ref().map(|d| {
        info!(namespace = d.namespace(), "dashboard on /dashboard");
        d.start(io.clone(), prometheus.clone(), api.node_id.clone())
    });
    let front = crate::front::Front::new(
        Gate::new(
            io.clone(),
            limits.clone(),
            crate::limits::bodies::BodyBytesPerIp::new(settings.limits.max_inflight_body_bytes_per_ip),
        ),
        api,
        readiness.clone(),
        prometheus,
        dashboard,
    );
    let reloader = Reloader {
        running: settings.clone(),
        api_keys,
        origin: origin.clone(),
        limits: limits.clone(),
        hooks: hooks.clone(),
    };
    let reload_config = move || {
        let Some(reload) = &reload else {
            return;
        };
        match reload() {
            Ok(fresh) => reloader.apply(fresh),
            Err(e) => warn!(
                error = e.to_string(),
                "reload failed; keeping the running configuration"
            ),
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
            signals.until_stop(reload_config).await;
            let stop_by = tokio::time::Instant::now() + grace;
            info!(connections = closing.connection_count(), "shutting down");
            let left = crate::drain::drain(&closing, &readiness, drain_delay, drain_window, grace).await;
            info!(left, "connections closed");
            if let Some(webhooks) = &webhooks {
                // The disconnections of the drain go out too, within what is left.
                let unsent = webhooks
                    .flush(stop_by.checked_sub(FLUSH_MARGIN).unwrap_or(stop_by))
                    .await;
                if unsent > 0 {
                    warn!(unsent, "webhook events not delivered by the shutdown deadline");
                } else {
                    info!("webhook events flushed");
                }
            }
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

/// What SIGHUP changes in the running server: API keys, JWT keys and claim rules, origins and
/// limits.
struct Reloader {
    /// The configuration the server started with.
    running: Settings,
    api_keys: Arc<crate::api::ApiKeys>,
    origin: OriginPolicy,
    limits: Arc<ConnectionLimits>,
    hooks: Arc<Hooks>,
}

impl Reloader {
    fn apply(&self, loaded: Loaded) {
        let fresh = &loaded.settings;
        self.api_keys.replace(fresh.api.keys.iter());
        self.origin.reload(fresh);
        self.limits.reload(&fresh.limits);
        self.hooks.event_limits.reload(&fresh.limits);
        self.hooks
            .max_rooms
            .store(fresh.limits.max_rooms_per_socket, Ordering::Relaxed);
        info!(
            api_keys = fresh.api.keys.0.len(),
            origins = fresh.origin.allowed.as_ref().map_or(0, |l| l.0.len()),
            "configuration reloaded (API keys, origins, limits)"
        );
        // Everything else needs a restart: say so rather than pretend.
        let mut unapplied = fresh.clone();
        unapplied.api.keys = self.running.api.keys.clone();
        unapplied.origin.allowed = self.running.origin.allowed.clone();
        unapplied.origin.allow_missing = self.running.origin.allow_missing;
        let limits = &mut unapplied.limits;
        let running = &self.running.limits;
        limits.max_connections = running.max_connections;
        limits.max_connections_per_ip = running.max_connections_per_ip;
        limits.connection_rate_per_ip = running.connection_rate_per_ip;
        limits.connection_burst_per_ip = running.connection_burst_per_ip;
        limits.event_rate = running.event_rate;
        limits.event_burst = running.event_burst;
        limits.event_strikes = running.event_strikes;
        limits.event_strike_window = running.event_strike_window;
        limits.max_rooms_per_socket = running.max_rooms_per_socket;
        let reload_auth = self.hooks.auth.clone().filter(|_| fresh.auth_enabled());
        if reload_auth.is_some() {
            let (auth, running) = (&mut unapplied.auth, &self.running.auth);
            auth.secret = running.secret.clone();
            auth.secret_file = running.secret_file.clone();
            auth.public_key_file = running.public_key_file.clone();
            auth.algorithms = running.algorithms.clone();
            auth.issuer = running.issuer.clone();
            auth.audience = running.audience.clone();
            auth.bearer_header = running.bearer_header;
        }
        // Compared with their secrets (never printed): a rotated secret needs a restart too.
        if toml::to_string(&unapplied).ok() != toml::to_string(&self.running).ok() {
            warn!("the configuration file changed keys that SIGHUP does not apply; restart to apply them");
        }
        // The keys are read (and a JWKS fetched) off the signal loop.
        if let Some(auth) = reload_auth {
            tokio::spawn(async move {
                match auth.reload(&loaded.settings, &loaded.layers).await {
                    Ok(()) => info!(algorithms = ?auth.algorithms(), "authentication keys reloaded"),
                    Err(e) => warn!(
                        error = e.to_string(),
                        "authentication keys not reloaded; keeping the running ones"
                    ),
                }
            });
        }
    }
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
