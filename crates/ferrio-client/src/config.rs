//! Options of a [`Client`](crate::Client) (the connection) and of each
//! [`Socket`](crate::Socket) (a namespace on it), with `socket.io-client`'s defaults.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::queue::QueueLimits;
use ferrio_proto::backoff::Backoff;

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling: works through any HTTP proxy.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::WebSocket => "websocket",
        }
    }
}

/// Where the server is: parsed from an `http://` or `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port`, to connect to and to send as `Host`.
    pub(crate) authority: String,
    /// Extra query pairs from the URL, already encoded (`a=1&b=2`), or empty.
    pub(crate) url_query: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?;
        let default_port = match uri.scheme_str() {
            Some("http" | "ws") => 80,
            Some("https" | "wss") => {
                return Err(Error::InvalidUrl(format!(
                    "{url}: TLS is not built in; connect through a TLS-terminating proxy or use http://"
                )));
            }
            _ => {
                return Err(Error::InvalidUrl(format!(
                    "{url}: the scheme must be http:// or ws://"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::InvalidUrl(format!("{url}: no host")))?;
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            authority,
            url_query: uri.query().unwrap_or_default().to_owned(),
        })
    }
}

/// Options of the connection: where, how, and how to reconnect.
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) endpoint: Endpoint,
    /// The Socket.IO path (default `/socket.io/`).
    pub path: String,
    /// Transports in the order tried: the first opens the session; with `upgrade`, a later
    /// `WebSocket` is probed and switched to. Default: polling, then WebSocket.
    pub transports: Vec<Transport>,
    /// Whether a polling session may upgrade to WebSocket (default true).
    pub upgrade: bool,
    /// Whether to reconnect after a connection is lost (default true).
    pub reconnection: bool,
    /// Backoff between reconnection attempts.
    pub backoff: Backoff,
    /// How long opening a session may take, per attempt (default 20 s, the reference's
    /// `timeout`).
    pub connect_timeout: Duration,
    /// How long a polling to WebSocket upgrade may take before the client stays on polling
    /// (default 10 s).
    pub upgrade_timeout: Duration,
    /// Extra query pairs sent with every request.
    pub query: Vec<(String, String)>,
    /// Extra HTTP headers sent with every request (and the WebSocket handshake).
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("transports", &self.transports)
            .field("upgrade", &self.upgrade)
            .field("reconnection", &self.reconnection)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("query", &self.query)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ClientOptions {
    /// Defaults for a server URL such as `http://127.0.0.1:3000`.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(Self {
            endpoint: Endpoint::parse(url)?,
            path: "/socket.io/".into(),
            transports: vec![Transport::Polling, Transport::WebSocket],
            upgrade: true,
            reconnection: true,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(20),
            upgrade_timeout: Duration::from_secs(10),
            query: Vec::new(),
            headers: Vec::new(),
        })
    }

    /// The path in `/segment/` form.
    pub(crate) fn normalized_path(&self) -> String {
        let trimmed = self.path.trim_matches('/');
        if trimmed.is_empty() {
            "/".into()
        } else {
            format!("/{trimmed}/")
        }
    }

    /// Path and query of an Engine.IO request.
    pub(crate) fn request_target(&self, transport: Transport, sid: Option<&str>) -> String {
        let mut target = format!(
            "{}?EIO=4&transport={}",
            self.normalized_path(),
            transport.as_str()
        );
        if let Some(sid) = sid {
            target.push_str("&sid=");
            target.push_str(&encode_component(sid));
        }
        if !self.endpoint.url_query.is_empty() {
            target.push('&');
            target.push_str(&self.endpoint.url_query);
        }
        for (k, v) in &self.query {
            target.push('&');
            target.push_str(&encode_component(k));
            target.push('=');
            target.push_str(&encode_component(v));
        }
        target
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A future that yields an auth payload.
pub type AuthFuture = Pin<Box<dyn Future<Output = Value> + Send>>;

/// The CONNECT auth payload of a socket: fixed, or fetched anew before every (re)connection.
#[derive(Clone, Default)]
pub enum Auth {
    /// No payload.
    #[default]
    None,
    /// The same object every time.
    Static(Value),
    /// Called before every CONNECT, e.g. to fetch a fresh token. It should return an object.
    Callback(Arc<dyn Fn() -> AuthFuture + Send + Sync>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Static(_) => f.write_str("Static(..)"),
            Self::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

impl Auth {
    pub(crate) async fn fetch(&self) -> Option<Value> {
        match self {
            Self::None => None,
            Self::Static(v) => Some(v.clone()),
            Self::Callback(f) => Some(f().await),
        }
    }
}

/// Options of one socket (namespace).
#[derive(Debug, Clone, Default)]
pub struct SocketOptions {
    /// The CONNECT payload.
    pub auth: Auth,
    /// `retries`: when set above 0, every non-volatile emit goes through the socket's retry
    /// queue: one packet in flight at a time, each sent with an ack id and resent until the
    /// server acknowledges it, at most `retries` more times. As in `socket.io-client`, a try
    /// fails when `ack_timeout` elapses, or (only when `ack_timeout` is set) when the
    /// connection drops; without `ack_timeout` a packet is resent after every reconnection
    /// until acknowledged.
    pub retries: Option<u32>,
    /// `ackTimeout`: the default timeout of emits that wait for an ack (none by default).
    pub ack_timeout: Option<Duration>,
    /// Bounds of the offline queue (and of the retry queue).
    pub queue: QueueLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(e.authority, "127.0.0.1:3000");
        assert_eq!(e.url_query, "");
        let e = Endpoint::parse("ws://example.test/?room=a%20b").unwrap();
        assert_eq!(e.authority, "example.test:80");
        assert_eq!(e.url_query, "room=a%20b");
        let e = Endpoint::parse("http://[::1]:8080").unwrap();
        assert_eq!(e.authority, "[::1]:8080");
        assert!(Endpoint::parse("https://example.test").is_err());
        assert!(Endpoint::parse("ftp://example.test").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn builds_request_targets() {
        let mut o = ClientOptions::new("http://h:1/?x=1").unwrap();
        o.path = "io".into();
        o.query.push(("token".into(), "a b&c".into()));
        assert_eq!(
            o.request_target(Transport::Polling, None),
            "/io/?EIO=4&transport=polling&x=1&token=a%20b%26c"
        );
        assert_eq!(
            o.request_target(Transport::WebSocket, Some("ab-_")),
            "/io/?EIO=4&transport=websocket&sid=ab-_&x=1&token=a%20b%26c"
        );
    }
}
