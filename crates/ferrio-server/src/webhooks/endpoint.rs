//! A backend URL and the signed POST to it: HMAC-SHA256 over `"{timestamp}.{body}"`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::header::CONTENT_TYPE;

/// `v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub const SIGNATURE_HEADER: &str = "X-Ferrio-Signature";
/// Unix seconds when the request was signed.
pub const TIMESTAMP_HEADER: &str = "X-Ferrio-Timestamp";

/// The HTTP client every backend request goes through: pooled, HTTP/1.1, no redirects (a
/// signed body is not re-posted to wherever a 3xx points).
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("ferrio/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// Where requests go and the key they are signed with.
pub struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    key: hmac::Key,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &printable(self.url.as_str()))
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// `None` (logged) for a URL that does not parse; validation refuses those first.
    pub fn new(client: reqwest::Client, url: &str, secret: &[u8]) -> Option<Self> {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(e) => {
                tracing::error!(url = %printable(url), error = %e, "webhooks are off: bad URL");
                return None;
            }
        };
        Some(Self {
            client,
            url,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// POSTs `body` as JSON, signed now, within `timeout` (connecting to reading the reply).
    pub async fn post(&self, body: Bytes, timeout: Duration) -> reqwest::Result<reqwest::Response> {
        let timestamp = unix_time().as_secs().to_string();
        let signature = self.sign(&timestamp, &body);
        self.client
            .post(self.url.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
    }

    fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1={}", hex(ctx.sign().as_ref()))
    }
}

/// Reads a reply body up to `limit` bytes; `Ok(None)` when it is longer.
pub async fn read_body(res: &mut reqwest::Response, limit: usize) -> reqwest::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Time since the Unix epoch (zero for a clock set before it).
pub fn unix_time() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A URL fit for logs: scheme, host and path (no credentials, no query).
pub fn printable(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.path()
            )
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
