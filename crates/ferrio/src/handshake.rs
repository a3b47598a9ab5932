//! What a connection's first request looked like, as sockets and connect hooks see it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Request};

/// The HTTP request that opened an Engine.IO session (`socket.handshake` in the reference).
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw query string (without `?`).
    pub query: String,
    /// The request path and query.
    pub url: String,
    /// The peer's address, when the HTTP stack provided it.
    pub address: Option<SocketAddr>,
    /// Whether the request came over TLS (as far as the server can tell).
    pub secure: bool,
    /// Whether the request carried an `Origin` header (a browser on another page).
    pub xdomain: bool,
    /// When the session opened, in milliseconds since the Unix epoch.
    pub issued: u64,
}

/// A copy of `headers` that owns its bytes. hyper parses headers as slices of its
/// connection read buffer (8 KB and more); a plain clone would keep that whole buffer alive
/// for as long as the connection lasts.
fn detached_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        out.append(name, value);
    }
    out
}

impl Handshake {
    pub(crate) fn from_request<B>(req: &Request<B>, query: &str) -> Self {
        let issued = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            headers: detached_headers(req.headers()),
            query: query.to_owned(),
            url: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            address: crate::engine::remote_of(req),
            secure: req.uri().scheme_str() == Some("https"),
            xdomain: req.headers().contains_key(http::header::ORIGIN),
            issued,
        }
    }

    /// When the session opened, as text (the reference's `handshake.time`).
    pub fn time(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_millis(self.issued))
    }

    /// The first value of a query parameter, percent-decoding not applied.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}
