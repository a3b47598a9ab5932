//! The configuration of `ferrio serve`: a TOML file, `FERRIO_…` environment variables and
//! flags (in that order of precedence), checked into [`Settings`] with errors that name the key
//! and its source.

pub mod layers;
pub mod ops;
pub mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use layers::{ConfigError, Layers, Source};
pub use values::{List, Millis, Secs};

use layers::{UnknownEnv, classify_env, closest};

/// Everything `ferrio serve` can be told. Every key has a default; see `ferrio.example.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` without authentication.
    pub insecure: bool,
    /// URL path of the Socket.IO endpoint.
    #[serde(deserialize_with = "values::text")]
    pub path: String,
    /// Transports to accept: `polling`, `websocket`.
    pub transports: List,
    /// Namespaces offered (`/chat`; a trailing `*` declares a pattern such as `/tenant-*`).
    pub namespaces: List,
    pub ping_interval: Millis,
    pub ping_timeout: Millis,
    /// How long a connection may take to join a namespace.
    pub connect_timeout: Millis,
    /// Largest message or polling body, in bytes.
    pub max_payload: usize,
    /// How long clients get to leave on shutdown.
    pub shutdown_timeout: Secs,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    pub auth: AuthSettings,
    pub origin: OriginSettings,
    pub rooms: RoomSettings,
    pub limits: LimitSettings,
    pub api: ops::ApiSettings,
    pub metrics: ops::MetricsSettings,
    pub drain: ops::DrainSettings,
    pub cluster: ops::ClusterSettings,
    pub recovery: ops::RecoverySettings,
    pub history: ops::HistorySettings,
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Per client event: a payload schema, webhook forwarding or RPC.
    pub events: std::collections::BTreeMap<String, crate::events::EventSettings>,
    pub presence: crate::presence::PresenceSettings,
    pub dashboard: crate::dashboard::DashboardSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            insecure: false,
            path: "/socket.io/".into(),
            transports: List::of(&["polling", "websocket"]),
            namespaces: List::of(&["/"]),
            ping_interval: Millis(Duration::from_millis(25_000)),
            ping_timeout: Millis(Duration::from_millis(20_000)),
            connect_timeout: Millis(Duration::from_millis(45_000)),
            max_payload: 1_000_000,
            shutdown_timeout: Secs(Duration::from_secs(10)),
            log_format: LogFormat::Text,
            auth: AuthSettings::default(),
            origin: OriginSettings::default(),
            rooms: RoomSettings::default(),
            limits: LimitSettings::default(),
            api: ops::ApiSettings::default(),
            metrics: ops::MetricsSettings::default(),
            drain: ops::DrainSettings::default(),
            cluster: ops::ClusterSettings::default(),
            recovery: ops::RecoverySettings::default(),
            history: ops::HistorySettings::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            events: Default::default(),
            presence: crate::presence::PresenceSettings::default(),
            dashboard: crate::dashboard::DashboardSettings::default(),
        }
    }
}

/// How log lines are written to stderr (the level comes from `RUST_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// JWT authentication. Configuring any key source (`secret`, `secret_file`,
/// `public_key_file`, `jwks_file`, `jwks_url`) turns it on for every namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// Shared secret for HS256/HS384/HS512 (at least 32 bytes).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// A file holding the shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// A PEM public key: RSA (RS256/384/512, PS256/384/512), EC P-256/P-384 (ES256/ES384) or
    /// Ed25519 (EdDSA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document over HTTP(S).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub jwks_url: Option<String>,
    /// Accepted `alg` values; empty means those the configured keys can verify.
    pub algorithms: List,
    /// Required `iss`, if set.
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub issuer: Option<String>,
    /// Accepted `aud` values, if any (the token must then carry one of them).
    pub audience: List,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Secs,
    /// Also read the token from an `Authorization: Bearer` header of the handshake.
    pub bearer_header: bool,
    /// How often the JWKS document is fetched again.
    pub jwks_refresh: Secs,
    /// Least time between two fetches triggered by an unknown `kid`.
    pub jwks_cooldown: Secs,
    /// How long one JWKS fetch may take.
    pub jwks_timeout: Millis,
    /// How long before `exp` the server emits `expiring_event`.
    pub expiry_warning: Secs,
    #[serde(deserialize_with = "values::text")]
    pub expiring_event: String,
    /// Emitted (with the reason) just before a socket whose token ran out is disconnected.
    #[serde(deserialize_with = "values::text")]
    pub expired_event: String,
    /// The event a client sends with a new token.
    #[serde(deserialize_with = "values::text")]
    pub refresh_event: String,
    /// Namespaces (exact names or `*` patterns) a token without a `namespaces` claim may
    /// connect to (default `["*"]`: every namespace the server offers).
    pub namespaces: List,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            algorithms: List::default(),
            issuer: None,
            audience: List::default(),
            leeway: Secs(Duration::from_secs(30)),
            bearer_header: true,
            jwks_refresh: Secs(Duration::from_secs(600)),
            jwks_cooldown: Secs(Duration::from_secs(30)),
            jwks_timeout: Millis(Duration::from_secs(5)),
            expiry_warning: Secs(Duration::from_secs(60)),
            expiring_event: "token:expiring".into(),
            expired_event: "token:expired".into(),
            refresh_event: "refresh".into(),
            namespaces: List::of(&["*"]),
        }
    }
}

impl AuthSettings {
    /// Whether any key source is configured.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
            || self.secret_file.is_some()
            || self.public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }
}

/// Which web pages may connect. Unset keys take the mode's defaults (see [`Settings::resolve`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OriginSettings {
    /// Allowed origins: exact (`https://app.example.com`), subdomains
    /// (`https://*.example.com`), any port (`http://localhost:*`) or `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<List>,
    /// Whether requests without an `Origin` header (non-browser clients) are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_missing: Option<bool>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies on cross-origin polling).
    pub credentials: bool,
}

/// Room permissions beyond what each token grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomSettings {
    /// Rooms (or patterns) every authenticated user may join.
    pub join: List,
    /// Rooms (or patterns) every authenticated user may publish to.
    pub publish: List,
    /// Put each socket in `user:<sub>`.
    pub user_room: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            join: List::default(),
            publish: List::default(),
            user_room: true,
        }
    }
}

/// Limits on connections, events and requests. A zero turns a limit off. The per-client
/// limits left unset are off in development mode on a loopback address (every client is this
/// machine) and take their defaults otherwise (see [`Settings::resolve`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Connections this node holds at most.
    pub max_connections: usize,
    /// Connections one client address holds at most (default 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// New connections per second from one address, sustained (default 50)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_rate_per_ip: Option<u32>,
    /// ...and in a burst (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_burst_per_ip: Option<u32>,
    /// Namespaces one connection may join.
    pub max_namespaces_per_connection: usize,
    /// Rooms one socket may be in (besides its own and its user room).
    pub max_rooms_per_socket: usize,
    /// Events per second one socket may send, sustained (default 100)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_rate: Option<u32>,
    /// ...and in a burst (default 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_burst: Option<u32>,
    /// Refused events within `event_strike_window` after which the connection is closed.
    pub event_strikes: u32,
    pub event_strike_window: Secs,
    /// How long a client may take to send a request's headers.
    pub handshake_timeout: Millis,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges).
    pub trusted_proxies: List,
    /// Largest message or polling body before a connection's first namespace CONNECT
    /// succeeded (what a client without a token can make the server buffer).
    pub max_payload_before_connect: usize,
    /// A request body (polling POST, API) must arrive whole within this long.
    pub body_timeout: Secs,
    /// ...and, after its first two seconds, at no less than this many bytes per second on
    /// average (0: no minimum).
    pub body_min_rate: usize,
    /// The bytes all polling bodies in flight may hold together; past it a POST gets 503.
    pub max_inflight_body_bytes: usize,
    /// ...and those from one client address (past it the POST fails and its session ends).
    pub max_inflight_body_bytes_per_ip: usize,
    /// Namespaces created on demand (from `namespaces` patterns) that may exist at once.
    pub max_namespaces: usize,
    /// How long an empty namespace created on demand stays before it is removed.
    pub namespace_grace: Secs,
    /// A connection that has not completed a namespace CONNECT (authenticated) within this
    /// long is closed (`connect_timeout` applies too; the shorter wins).
    pub pending_timeout: Secs,
    /// Connections that have not authenticated yet, on this node. They do not count against
    /// `max_connections`.
    pub max_pending_sessions: usize,
    /// ...and from one client address (default 100; off on loopback in development mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_sessions_per_ip: Option<usize>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_ip: None,
            connection_rate_per_ip: None,
            connection_burst_per_ip: None,
            max_namespaces_per_connection: 8,
            max_rooms_per_socket: 100,
            event_rate: None,
            event_burst: None,
            event_strikes: 100,
            event_strike_window: Secs(Duration::from_secs(10)),
            handshake_timeout: Millis(Duration::from_secs(10)),
            max_header_bytes: 16 * 1024,
            trusted_proxies: List::default(),
            max_payload_before_connect: 64 * 1024,
            body_timeout: Secs(Duration::from_secs(10)),
            body_min_rate: 1024,
            max_inflight_body_bytes: 64 << 20,
            max_inflight_body_bytes_per_ip: 4 << 20,
            max_namespaces: 10_000,
            namespace_grace: Secs(Duration::from_secs(60)),
            pending_timeout: Secs(Duration::from_secs(10)),
            max_pending_sessions: 10_000,
            max_pending_sessions_per_ip: None,
        }
    }
}

impl LimitSettings {
    /// Fills the per-client limits left unset: off when `relaxed`, the defaults otherwise.
    fn resolve(&mut self, relaxed: bool) {
        let pick = |n: u32| if relaxed { 0 } else { n };
        self.max_connections_per_ip
            .get_or_insert(if relaxed { 0 } else { 500 });
        self.max_pending_sessions_per_ip
            .get_or_insert(if relaxed { 0 } else { 100 });
        // A rate set without its burst in development mode gets a burst of one second's worth.
        let rate = *self.connection_rate_per_ip.get_or_insert(pick(50));
        self.connection_burst_per_ip
            .get_or_insert(if relaxed { rate } else { 100 });
        let rate = *self.event_rate.get_or_insert(pick(100));
        self.event_burst.get_or_insert(if relaxed { rate } else { 200 });
    }
}

/// Origins allowed when no list is configured and authentication is off: pages served from
/// this machine.
pub const DEV_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
];

const REDACTED: &str = "<redacted>";

/// Where the configuration comes from.
#[derive(Debug, Default)]
pub struct Inputs {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `(key path, value, flag name)`.
    pub flags: Vec<(Vec<&'static str>, toml::Value, &'static str)>,
}

/// A checked configuration, and what loading it had to say.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// Variables with the `FERRIO_` prefix that name no key (another program's).
    pub ignored_env: Vec<String>,
    pub layers: Layers,
}

impl Settings {
    /// Reads the layers, checks every key and value, and fills the mode's defaults.
    pub fn load(inputs: Inputs) -> Result<Loaded, ConfigError> {
        let mut layers = Layers::default();
        if let Some(file) = &inputs.file {
            layers.add_file(file)?;
        }
        layers.add_env(inputs.env);
        for (path, value, flag) in inputs.flags {
            layers.add_flag(&path, value, flag);
        }

        let mut unknown = Vec::new();
        let value = toml::Value::Table(layers.table.clone());
        let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut note_unknown);
        let parsed: Result<Settings, _> = serde_path_to_error::deserialize(de);
        let top_level = top_level_keys();
        let mut ignored_env = Vec::new();
        for key in &unknown {
            let source = layers.source_of(key);
            if let Source::Env(name) = &source
                && classify_env(key, &top_level) == UnknownEnv::Ignore
            {
                ignored_env.push(name.clone());
                continue;
            }
            return Err(unknown_key(&layers, key));
        }
        let mut settings = parsed.map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // The message alone: the key is named already.
            let message = e.into_inner().to_string();
            let message = message.lines().next().unwrap_or("invalid value").to_owned();
            layers.error(&key, message)
        })?;
        settings.resolve();
        settings.validate(&layers)?;
        Ok(Loaded {
            settings,
            ignored_env,
            layers,
        })
    }

    /// Fills the keys whose default depends on whether authentication is on.
    pub fn resolve(&mut self) {
        let dev = !self.auth.enabled();
        if self.origin.allowed.is_none() {
            self.origin.allowed = Some(if dev {
                List::of(DEV_ORIGINS)
            } else {
                List::default()
            });
        }
        if self.origin.allow_missing.is_none() {
            self.origin.allow_missing = Some(dev);
        }
        self.limits.resolve(dev && self.listen.ip().is_loopback());
        self.path = {
            let trimmed = self.path.trim_matches('/');
            if trimmed.is_empty() {
                "/".into()
            } else {
                format!("/{trimmed}/")
            }
        };
    }

    /// Checks what types alone cannot.
    fn validate(&self, layers: &Layers) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(layers.error(key, msg));
        for (key, d) in [
            ("ping_interval", self.ping_interval.0),
            ("ping_timeout", self.ping_timeout.0),
            ("connect_timeout", self.connect_timeout.0),
            ("limits.handshake_timeout", self.limits.handshake_timeout.0),
            ("limits.body_timeout", self.limits.body_timeout.0),
            ("limits.pending_timeout", self.limits.pending_timeout.0),
            ("auth.jwks_timeout", self.auth.jwks_timeout.0),
        ] {
            if d.is_zero() {
                return err(key, "must be positive".into());
            }
        }
        if self.max_payload == 0 {
            return err("max_payload", "must be positive".into());
        }
        if let Err(e) = ferrio::Transports::parse(&self.transports.0.join(",")) {
            return err("transports", e);
        }
        if self.namespaces.is_empty() {
            return err("namespaces", "at least one namespace is required".into());
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !ns.starts_with('/') || ns.len() > 256 || (ns.contains('*') && !ns.ends_with('*')) {
                return err(
                    &format!("namespaces[{i}]"),
                    format!("{ns:?} must start with `/`; `*` may only end it"),
                );
            }
        }
        if self.limits.max_header_bytes < 1024 {
            return err("limits.max_header_bytes", "must be at least 1024".into());
        }
        for (rate, burst, rate_key, burst_key) in [
            (
                self.limits.connection_rate_per_ip.unwrap_or(0),
                self.limits.connection_burst_per_ip.unwrap_or(0),
                "limits.connection_rate_per_ip",
                "limits.connection_burst_per_ip",
            ),
            (
                self.limits.event_rate.unwrap_or(0),
                self.limits.event_burst.unwrap_or(0),
                "limits.event_rate",
                "limits.event_burst",
            ),
        ] {
            if rate > 0 && burst == 0 {
                return err(burst_key, format!("must be positive when `{rate_key}` is set"));
            }
        }
        for (i, proxy) in self.limits.trusted_proxies.iter().enumerate() {
            if crate::limits::ProxyList::parse_one(proxy).is_none() {
                return err(
                    &format!("limits.trusted_proxies[{i}]"),
                    format!("{proxy:?} is not an IP address or CIDR range"),
                );
            }
        }
        crate::origin::OriginPolicy::validate(self, layers)?;
        crate::rooms::validate(self, layers)?;
        crate::auth::validate(self, layers)?;
        crate::events::validate(self, layers)?;
        crate::presence::validate(self, layers)?;
        if let Err((key, message)) = crate::webhooks::validate(&self.webhooks) {
            return err(key, message);
        }
        if let Err((key, message)) = ops::validate(&self.cluster, &self.api) {
            return err(key, message);
        }
        if let Err((key, message)) = ops::validate_history(&self.history, &self.recovery) {
            return err(key, message);
        }
        if let Err((key, message)) = crate::dashboard::validate(self) {
            return err(key, message);
        }
        Ok(())
    }

    /// Whether authentication is configured (otherwise the server runs in development mode).
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled()
    }

    /// The configuration as TOML, secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.auth.secret.is_some() {
            shown.auth.secret = Some(REDACTED.into());
        }
        if let Some(url) = &shown.auth.jwks_url {
            shown.auth.jwks_url = Some(redact_url(url));
        }
        shown.api.keys = List(shown.api.keys.iter().map(|_| REDACTED.to_owned()).collect());
        if shown.webhooks.secret.is_some() {
            shown.webhooks.secret = Some(REDACTED.into());
        }
        if let Some(url) = &shown.webhooks.url {
            shown.webhooks.url = Some(redact_url(url));
        }
        if let Some(url) = &shown.webhooks.rpc_url {
            shown.webhooks.rpc_url = Some(redact_url(url));
        }
        if shown.dashboard.password.is_some() {
            shown.dashboard.password = Some(REDACTED.into());
        }
        if let Some(url) = &shown.cluster.redis_url {
            shown.cluster.redis_url = Some(redact_url(url));
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The library options these settings describe.
    pub fn library_config(&self) -> ferrio::Config {
        ferrio::Config {
            path: self.path.clone(),
            ping_interval: self.ping_interval.0,
            ping_timeout: self.ping_timeout.0,
            max_payload: self.max_payload,
            connect_timeout: self.connect_timeout.0.min(self.limits.pending_timeout.0),
            transports: ferrio::Transports::parse(&self.transports.0.join(",")).unwrap_or_default(),
            recovery: self.recovery.library_config(&self.history),
            max_payload_before_connect: self.limits.max_payload_before_connect,
            body_timeout: self.limits.body_timeout.0,
            body_min_rate: self.limits.body_min_rate,
            max_inflight_body_bytes: self.limits.max_inflight_body_bytes,
            max_dynamic_namespaces: self.limits.max_namespaces,
            dynamic_namespace_grace: self.limits.namespace_grace.0,
            ..ferrio::Config::default()
        }
    }
}

fn top_level_keys() -> Vec<&'static str> {
    vec![
        "listen",
        "insecure",
        "path",
        "transports",
        "namespaces",
        "ping_interval",
        "ping_timeout",
        "connect_timeout",
        "max_payload",
        "shutdown_timeout",
        "log_format",
        "auth",
        "origin",
        "rooms",
        "limits",
        "api",
        "metrics",
        "drain",
        "cluster",
        "recovery",
        "history",
        "webhooks",
        "events",
        "presence",
        "dashboard",
    ]
}

fn unknown_key(layers: &Layers, key: &str) -> ConfigError {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((s, l)) => (Some(s), l),
        None => (None, key),
    };
    let known = known_keys(section);
    let hint = closest(leaf, &known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    layers.error(key, format!("unknown key{hint}"))
}

fn known_keys(section: Option<&str>) -> Vec<String> {
    let mut full = Settings::default();
    // Optional keys are absent from a default printout; give them values to list them.
    full.auth.secret = Some(String::new());
    full.auth.secret_file = Some(PathBuf::new());
    full.auth.public_key_file = Some(PathBuf::new());
    full.auth.jwks_file = Some(PathBuf::new());
    full.auth.jwks_url = Some(String::new());
    full.auth.issuer = Some(String::new());
    full.origin.allowed = Some(List::default());
    full.origin.allow_missing = Some(false);
    full.cluster.redis_url = Some(String::new());
    full.cluster.node_id = Some(String::new());
    full.webhooks.url = Some(String::new());
    full.webhooks.secret = Some(String::new());
    full.webhooks.secret_file = Some(PathBuf::new());
    full.webhooks.rpc_url = Some(String::new());
    full.dashboard.password = Some(String::new());
    full.limits.resolve(false);
    let value = toml::Value::try_from(&full).unwrap_or(toml::Value::Table(Default::default()));
    let table = match section {
        None => value.as_table(),
        Some(s) => value.get(s).and_then(|v| v.as_table()),
    };
    table.map(|t| t.keys().cloned().collect()).unwrap_or_default()
}

/// A URL fit for printing: no user info, no query.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let query = if tail.contains('?') {
        format!("?{REDACTED}")
    } else {
        String::new()
    };
    format!("{scheme}://{host}{path}{query}")
}

/// Reads a file a key names, with an error that names the key.
pub fn read_key_file(layers: &Layers, key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| layers.error(key, format!("cannot read {}: {e}", path.display())))
}
