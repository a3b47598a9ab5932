//! `/dashboard`: a live page of connections, message rates and rooms, behind an admin
//! credential, fed over ferrio itself.
//!
//! `GET /dashboard` asks for HTTP Basic credentials and answers a self-contained page (no
//! external script, a strict Content-Security-Policy with a per-response nonce). The page
//! carries a short-lived token signed with a key drawn at start; its script opens a WebSocket
//! to the server's own Socket.IO path and joins the admin namespace with that token. A task
//! publishes a snapshot of this node to that namespace every `interval`.

mod publisher;
mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferrio::engine::ResponseBody;
use ferrio::{Accepted, ConnectError, HandshakeRequest, Io, IoBuilder};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::Settings;
use crate::config::values::{self, Millis, Secs};
use crate::stats::{Rejection, Stats};

pub use publisher::Publisher;
pub use token::{Signer, TokenRefusal};

/// The page, with `{{nonce}}`, `{{token}}`, `{{path}}`, `{{namespace}}` and `{{interval}}`
/// filled in per response.
const PAGE: &str = include_str!("page.html");

/// The query parameter that carries the page's token on its WebSocket handshake.
pub const TOKEN_PARAM: &str = "dashboard";

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// `[dashboard]`: off unless a password is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardSettings {
    /// The admin password (HTTP Basic); unset turns the dashboard off (`/dashboard` is 404).
    #[serde(
        deserialize_with = "values::opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
    /// The HTTP Basic user name.
    #[serde(deserialize_with = "values::text")]
    pub user: String,
    /// The namespace the page joins to receive snapshots (no user token reaches it).
    #[serde(deserialize_with = "values::text")]
    pub namespace: String,
    /// How often a snapshot is published.
    pub interval: Millis,
    /// How long the token in a served page may be used to connect.
    pub token_lifetime: Secs,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            password: None,
            user: "admin".into(),
            namespace: "/ferrio-admin".into(),
            interval: Millis(Duration::from_secs(1)),
            token_lifetime: Secs(Duration::from_secs(60)),
        }
    }
}

/// The events the page gets, on the admin namespace only (through the HTTP API, a backend
/// could otherwise show it made-up numbers).
pub fn declare_events(d: &DashboardSettings, events: &mut crate::events::ServerEvents) {
    if d.password.is_some() {
        for name in [publisher::HISTORY_EVENT, publisher::SNAPSHOT_EVENT] {
            events.emits_in(&d.namespace, name);
        }
    }
}

/// Checks the `[dashboard]` keys: `Err((key, message))`.
pub fn validate(settings: &Settings) -> Result<(), (&'static str, String)> {
    let d = &settings.dashboard;
    if let Some(password) = &d.password
        && password.chars().count() < MIN_PASSWORD
    {
        return Err((
            "dashboard.password",
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    if d.user.is_empty() || d.user.contains(':') {
        return Err(("dashboard.user", "must be non-empty and contain no `:`".into()));
    }
    let ns = d.namespace.as_str();
    if !ns.starts_with('/') || ns == "/" || ns.len() > 256 || ns.contains(['*', ',', '?']) {
        return Err((
            "dashboard.namespace",
            format!("{ns:?} must start with `/`, not be `/`, and contain no `*`, `,` or `?`"),
        ));
    }
    if settings.namespaces.iter().any(|n| n == ns) {
        return Err((
            "dashboard.namespace",
            format!("{ns:?} is also in `namespaces`; the dashboard needs a namespace of its own"),
        ));
    }
    let interval = d.interval.0;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(60) {
        return Err(("dashboard.interval", "must be between 100ms and 60s".into()));
    }
    let lifetime = d.token_lifetime.0;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(3600) {
        return Err(("dashboard.token_lifetime", "must be between 1s and 1h".into()));
    }
    Ok(())
}

/// Wrong credentials one address may send within [`LOCKOUT`] before it is locked out.
const MAX_FAILURES: u32 = 10;
/// How long an address that guessed too often waits (and the window its failures count in).
const LOCKOUT: Duration = Duration::from_secs(60);

/// Addresses sending wrong credentials: a password cannot be guessed faster than
/// [`MAX_FAILURES`] a minute per address.
#[derive(Debug, Default)]
struct Lockout {
    /// Address → (when its window opened, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Lockout {
    fn locked(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures.lock();
        let now = Instant::now();
        failures.retain(|_, (since, _)| now.duration_since(*since) < LOCKOUT);
        failures.get(&ip).is_some_and(|(_, n)| *n >= MAX_FAILURES)
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock();
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        entry.1 += 1;
    }
}

/// The running dashboard: its credential, token signer and the numbers it publishes.
pub struct Dashboard {
    stats: Arc<Stats>,
    lockout: Lockout,
    user: [u8; 32],
    password: [u8; 32],
    signer: Signer,
    token_lifetime: Duration,
    namespace: String,
    path: String,
    interval: Duration,
    publisher: Publisher,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("namespace", &self.namespace)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

fn escape_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn plain(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
}

impl Dashboard {
    /// The dashboard these settings describe, or `None` when it is off.
    pub fn new(settings: &Settings, stats: Arc<Stats>) -> Option<Arc<Self>> {
        let d = &settings.dashboard;
        let password = d.password.as_ref()?;
        Some(Arc::new(Self {
            stats,
            lockout: Lockout::default(),
            user: digest(d.user.as_bytes()),
            password: digest(password.as_bytes()),
            signer: Signer::random(),
            token_lifetime: d.token_lifetime.0,
            namespace: d.namespace.clone(),
            path: settings.path.clone(),
            interval: d.interval.0,
            publisher: Publisher::new(d.namespace.clone(), d.interval.0),
        }))
    }

    /// The admin namespace's name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Declares the admin namespace: only a valid page token gets in (CONNECT_ERROR
    /// `unauthorized` with `data.reason` otherwise); a new viewer gets the recent history and
    /// the latest snapshot at once.
    pub fn declare(self: &Arc<Self>, builder: IoBuilder) -> IoBuilder {
        let (admit, greet) = (self.clone(), self.clone());
        builder.ns(&self.namespace, move |ns| {
            ns.connect_hook(move |req| {
                let verdict = match req.auth.get("token").and_then(Value::as_str) {
                    Some(token) => admit.signer.verify(token),
                    None => Err(TokenRefusal::Missing),
                };
                std::future::ready(match verdict {
                    Ok(()) => Ok(Accepted::new()),
                    Err(refusal) => {
                        admit.stats.count(Rejection::DashboardTokenRefused);
                        tracing::debug!(reason = refusal.reason(), "dashboard connect refused");
                        Err(ConnectError::new("unauthorized")
                            .with_data(json!({ "reason": refusal.reason() })))
                    }
                })
            })
            .on_connect(move |socket| greet.publisher.greet(socket))
        })
    }

    /// Lets the page's own WebSocket handshake past the origin policy: a same-origin request
    /// (its `Origin` names the `Host` it was sent to) carrying a valid page token. Every other
    /// handshake goes to the policy already configured.
    pub fn admit_own_page(self: &Arc<Self>, config: &mut ferrio::Config) {
        let policy = config.allow_request.take();
        let dashboard = self.clone();
        config.allow_request = Some(Arc::new(move |req: &HandshakeRequest<'_>| {
            if dashboard.own_page(req) {
                return Ok(());
            }
            match &policy {
                Some(policy) => policy(req),
                None => Ok(()),
            }
        }));
    }

    fn own_page(&self, req: &HandshakeRequest<'_>) -> bool {
        let Some(token) = req.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix(TOKEN_PARAM)?.strip_prefix('='))
        }) else {
            return false;
        };
        let header = |name| req.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        let (Some(origin), Some(host)) = (header(header::ORIGIN), header(header::HOST)) else {
            return false;
        };
        let Some(origin_host) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        origin_host.eq_ignore_ascii_case(host) && self.signer.verify(token).is_ok()
    }

    /// Starts publishing snapshots of `io` (its counters read from `metrics` when on).
    pub fn start(
        self: &Arc<Self>,
        io: Io,
        metrics: Option<PrometheusHandle>,
        node: String,
    ) -> tokio::task::JoinHandle<()> {
        let dashboard = self.clone();
        tokio::spawn(async move { dashboard.publisher.run(io, metrics, node).await })
    }

    /// Whether the request carries the admin credential (compared in constant time).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = digest(user).ct_eq(&self.user);
        let password_ok = digest(password).ct_eq(&self.password);
        (user_ok & password_ok).into()
    }

    /// Answers `/dashboard`.
    pub fn respond<B>(&self, req: &Request<B>, ip: IpAddr) -> Response<ResponseBody> {
        if req.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET")
                .body(ResponseBody::from("method not allowed\n"))
                .unwrap_or_default();
        }
        if self.lockout.locked(ip) {
            return plain(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, LOCKOUT.as_secs().to_string())
                .body(ResponseBody::from(
                    "too many wrong credentials; try again later\n",
                ))
                .unwrap_or_default();
        }
        if !self.authorized(req.headers()) {
            // A browser's first request carries no credentials: only wrong ones are counted.
            if req.headers().contains_key(header::AUTHORIZATION) {
                self.stats.count(Rejection::DashboardUnauthorized);
                self.lockout.failed(ip);
            }
            tracing::debug!("dashboard: missing or wrong credentials");
            return plain(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, r#"Basic realm="ferrio""#)
                .body(ResponseBody::from("unauthorized\n"))
                .unwrap_or_default();
        }
        let nonce = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>());
        let token = self.signer.issue(self.token_lifetime);
        let page = PAGE
            .replace("{{nonce}}", &nonce)
            .replace("{{token}}", &escape_attr(&token))
            .replace("{{path}}", &escape_attr(&self.path))
            .replace("{{namespace}}", &escape_attr(&self.namespace))
            .replace("{{interval}}", &self.interval.as_millis().to_string());
        let csp = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::CONTENT_SECURITY_POLICY, csp)
            .header(header::X_FRAME_OPTIONS, "DENY")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(ResponseBody::from(page))
            .unwrap_or_default()
    }
}
