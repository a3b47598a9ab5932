//! Server options, with the reference's defaults.

use std::sync::Arc;
use std::time::Duration;

/// The transports a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    pub polling: bool,
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Self {
            polling: true,
            websocket: true,
        }
    }
}

impl Transports {
    /// Parses a comma-separated list such as `polling,websocket`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut t = Self {
            polling: false,
            websocket: false,
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "polling" => t.polling = true,
                "websocket" => t.websocket = true,
                other => return Err(format!("unknown transport {other:?}")),
            }
        }
        if !t.polling && !t.websocket {
            return Err("at least one transport is required".into());
        }
        Ok(t)
    }
}

/// Cross-origin policy for HTTP long-polling (WebSocket upgrades are not subject to CORS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers (the reference's default).
    #[default]
    Off,
    /// `Access-Control-Allow-Origin: *` (credentials cannot be combined with it).
    Any,
    /// Echo the request's Origin when it matches an entry of this list (exact origins and
    /// patterns, see [`origin_matches`]).
    Origins { allowed: Vec<String>, credentials: bool },
    /// Echo the request's Origin when `check` accepts it, asked at every request (for a
    /// policy that changes while the server runs).
    Checked { check: OriginCheck, credentials: bool },
}

impl Cors {
    /// Whether a page from `origin` (a request's `Origin` header) may read responses.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::Off => false,
            Cors::Any => true,
            Cors::Origins { allowed, .. } => allowed.iter().any(|p| origin_matches(p, origin)),
            Cors::Checked { check, .. } => (check.0)(origin),
        }
    }
}

/// Decides whether an origin may read responses; see [`Cors::Checked`]. Two checks are equal
/// when they are the same function.
#[derive(Clone)]
pub struct OriginCheck(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl OriginCheck {
    pub fn new(check: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }
}

impl PartialEq for OriginCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OriginCheck {}

impl std::fmt::Debug for OriginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginCheck")
    }
}

/// Whether a request's `Origin` matches one entry of an allowlist:
///
/// * `https://app.example.com`: that origin exactly (scheme, host and port),
/// * `https://*.example.com`: any subdomain of `example.com` (not `example.com` itself), on the
///   scheme's default port,
/// * `http://localhost:*`: any port (or none),
/// * `*`: any origin.
///
/// Scheme and host compare case-insensitively. `null`, and anything that is not
/// `scheme://host[:port]`, never matches.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    let Some(o) = OriginParts::parse(origin, false) else {
        return false;
    };
    if pattern == "*" {
        return true;
    }
    let Some(p) = OriginParts::parse(pattern, true) else {
        return false;
    };
    if !p.scheme.eq_ignore_ascii_case(o.scheme) {
        return false;
    }
    let host_ok = match p.host.strip_prefix('*') {
        Some(suffix) => {
            // `suffix` starts with '.': the origin needs at least one label in front of it.
            o.host.len() > suffix.len()
                && o.host.is_char_boundary(o.host.len() - suffix.len())
                && o.host[o.host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && !o.host.starts_with('.')
                && !o.host[..o.host.len() - suffix.len()].contains("..")
        }
        None => p.host.eq_ignore_ascii_case(o.host),
    };
    let port_ok = match (p.port, o.port) {
        (Some(Port::Any), _) => true,
        (None, None) => true,
        (Some(Port::Number(a)), Some(Port::Number(b))) => a == b,
        _ => false,
    };
    host_ok && port_ok
}

/// Checks an allowlist entry: `*`, or `scheme://host[:port]` where the host may start with
/// `*.` and the port may be `*`.
pub fn is_origin_pattern(pattern: &str) -> bool {
    pattern == "*" || OriginParts::parse(pattern, true).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Number(u16),
    Any,
}

struct OriginParts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<Port>,
}

impl<'a> OriginParts<'a> {
    fn parse(s: &'a str, pattern: bool) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme_ok = scheme.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
        if !scheme_ok {
            return None;
        }
        let (host, port) = if rest.starts_with('[') {
            let end = rest.find(']')?;
            let (host, after) = rest.split_at(end + 1);
            let inner = &host[1..host.len() - 1];
            if inner.is_empty()
                || !inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let body = if pattern {
                host.strip_prefix("*.").unwrap_or(host)
            } else {
                host
            };
            let labels_ok = !body.is_empty()
                && body.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !labels_ok {
                return None;
            }
            (host, port)
        };
        let port = match port {
            None => None,
            Some("*") if pattern => Some(Port::Any),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Port::Number(p.parse().ok()?))
            }
            Some(_) => return None,
        };
        Some(Self { scheme, host, port })
    }
}

/// What [`Config::allow_request`] sees of a handshake request.
#[derive(Debug)]
pub struct HandshakeRequest<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    /// The peer's address, when the HTTP stack provided it.
    pub remote: Option<std::net::SocketAddr>,
}

/// Decides whether a new session may open: `Err(message)` refuses it with 403
/// `{"code":4,"message":...}`.
pub type AllowRequest = std::sync::Arc<dyn Fn(&HandshakeRequest<'_>) -> Result<(), String> + Send + Sync>;

/// Options of a ferrio server. Defaults match the reference server.
#[derive(Clone)]
pub struct Config {
    /// The path prefix, with leading and trailing slash (default `/socket.io/`).
    pub path: String,
    /// How often the server pings (default 25 s).
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the session closes (default 20 s).
    pub ping_timeout: Duration,
    /// Largest WebSocket message or polling body, in bytes (default 1,000,000).
    pub max_payload: usize,
    /// How long a session may stay without a connected namespace (default 45 s).
    pub connect_timeout: Duration,
    /// How long a polling to WebSocket upgrade may take (default 10 s).
    pub upgrade_timeout: Duration,
    /// Which transports are accepted.
    pub transports: Transports,
    /// Whether polling sessions may upgrade to WebSocket (default true).
    pub allow_upgrades: bool,
    /// Most binary attachments per packet (default 10).
    pub max_attachments: usize,
    /// Outgoing queue bound per connection, in packets (default 4096).
    pub max_queued_packets: usize,
    /// Outgoing queue bound per connection, in bytes (default 8 MiB).
    pub max_queued_bytes: usize,
    /// Default timeout of emits that wait for an ack (default 10 s).
    pub ack_timeout: Duration,
    /// CORS policy for long-polling.
    pub cors: Cors,
    /// Runs on every handshake (a request without a session id, on either transport) after
    /// the protocol checks; the reference's `allowRequest`.
    pub allow_request: Option<AllowRequest>,
    /// Connection-state recovery (off by default, as in the reference).
    pub recovery: Option<crate::RecoveryConfig>,
    /// Largest WebSocket message or polling body before the session's first namespace CONNECT
    /// succeeded (default 64 KiB, never more than `max_payload`): what an unauthenticated
    /// client can make the server buffer.
    pub max_payload_before_connect: usize,
    /// A polling POST body must arrive whole within this long (default 10 s).
    pub body_timeout: Duration,
    /// ...and, after its first two seconds, at no less than this many bytes per second on
    /// average (default 1,024; 0 turns the minimum off).
    pub body_min_rate: usize,
    /// The bytes all polling POST bodies in flight hold together, at most (default 64 MiB);
    /// a body that would pass it is answered 503.
    pub max_inflight_body_bytes: usize,
    /// Namespaces created on demand ([`crate::IoBuilder::dynamic_ns`]) that may exist at once
    /// (default 10,000; 0: no limit); a CONNECT that would create one more is refused.
    pub max_dynamic_namespaces: usize,
    /// How long a namespace created on demand stays once its last socket left (default 60 s,
    /// and never less than recovery's `max_disconnection_duration`, whose sessions it keeps).
    pub dynamic_namespace_grace: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_payload", &self.max_payload)
            .field("connect_timeout", &self.connect_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("transports", &self.transports)
            .field("allow_upgrades", &self.allow_upgrades)
            .field("max_attachments", &self.max_attachments)
            .field("max_queued_packets", &self.max_queued_packets)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("ack_timeout", &self.ack_timeout)
            .field("cors", &self.cors)
            .field("allow_request", &self.allow_request.is_some())
            .field("recovery", &self.recovery)
            .field("max_payload_before_connect", &self.max_payload_before_connect)
            .field("body_timeout", &self.body_timeout)
            .field("body_min_rate", &self.body_min_rate)
            .field("max_inflight_body_bytes", &self.max_inflight_body_bytes)
            .field("max_dynamic_namespaces", &self.max_dynamic_namespaces)
            .field("dynamic_namespace_grace", &self.dynamic_namespace_grace)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: "/socket.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            connect_timeout: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
            transports: Transports::default(),
            allow_upgrades: true,
            max_attachments: 10,
            max_queued_packets: 4096,
            max_queued_bytes: 8 << 20,
            ack_timeout: Duration::from_secs(10),
            cors: Cors::Off,
            allow_request: None,
            recovery: None,
            max_payload_before_connect: 64 << 10,
            body_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
            max_inflight_body_bytes: 64 << 20,
            max_dynamic_namespaces: 10_000,
            dynamic_namespace_grace: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Normalises `path` to `/segment/` form.
    pub(crate) fn normalized(mut self) -> Self {
        let trimmed = self.path.trim_matches('/');
        self.path = if trimmed.is_empty() {
            "/".into()
        } else {
            format!("/{trimmed}/")
        };
        self
    }
}
