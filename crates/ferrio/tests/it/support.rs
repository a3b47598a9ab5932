//! A raw test client: an in-process server, a WebSocket client that speaks Engine.IO and
//! Socket.IO by hand, and a long-polling client over plain HTTP/1.1. Every wait on the
//! network has a timeout, so a server bug fails a test instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ferrio::{Config, Io, NamespaceBuilder};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The longest any single network wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut`, failing the test after `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `cond` every 5 ms until it holds, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "never became true: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Default options with a given heartbeat.
pub fn config_with_ping(interval_ms: u64, timeout_ms: u64) -> Config {
    Config {
        ping_interval: Duration::from_millis(interval_ms),
        ping_timeout: Duration::from_millis(timeout_ms),
        ..Config::default()
    }
}

/// Adds `echo`: acknowledges with the event's own arguments.
pub fn with_echo(ns: NamespaceBuilder) -> NamespaceBuilder {
    ns.on("echo", |_, mut event| {
        let payload = event.payload().clone();
        event.ack(payload);
    })
}

/// A server listening on an ephemeral port, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    pub io: Io,
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Serves `io` on `127.0.0.1:0` with [`ferrio::serve`].
pub async fn start(io: Io) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = io.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let _ = ferrio::serve(listener, service, shutdown, Duration::from_millis(100)).await;
    });
    Server {
        io,
        addr,
        _stop: stop,
    }
}

// ------------------------------------------------------------------------------------------
// WebSocket

pub type Ws = WebSocketStream<TcpStream>;

/// A message from the server other than an Engine.IO ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
}

/// What waiting for a frame can end with besides a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvEnd {
    /// Nothing arrived in time.
    Silent,
    /// The connection ended (close frame, EOF or error); the text says how.
    Closed(String),
}

/// Opens a raw WebSocket to `/socket.io/?{query}` with extra request headers.
pub async fn ws_open(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    ws_open_with(addr, query, headers, None).await
}

/// Like [`ws_open`], with a client WebSocket configuration.
pub async fn ws_open_with(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
    config: Option<WebSocketConfig>,
) -> Result<Ws, tungstenite::Error> {
    within("websocket connect", async {
        let stream = TcpStream::connect(addr).await.map_err(tungstenite::Error::Io)?;
        stream.set_nodelay(true).map_err(tungstenite::Error::Io)?;
        let mut request = format!("ws://{addr}/socket.io/?{query}").into_client_request()?;
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, config).await?;
        Ok(ws)
    })
    .await
}

/// A WebSocket client that did the Engine.IO handshake.
#[derive(Debug)]
pub struct WsClient {
    pub ws: Ws,
    /// The Engine.IO session id.
    pub sid: String,
    /// The handshake's JSON.
    pub open: Value,
    /// Answer Engine.IO pings (`2` → `3`) while reading.
    pub auto_pong: bool,
    /// Pings seen so far.
    pub pings: usize,
    /// Whether the server sent a close frame.
    pub close_frame: bool,
    /// The code of the close frame the server sent, if it had one.
    pub close_code: Option<u16>,
}

impl WsClient {
    /// A WebSocket-only session (`/socket.io/?EIO=4&transport=websocket`).
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, "", &[]).await
    }

    /// A WebSocket-only session with extra query text (starting with `&`) and headers.
    pub async fn connect_with(addr: SocketAddr, extra_query: &str, headers: &[(&str, &str)]) -> Self {
        let ws = ws_open(addr, &format!("EIO=4&transport=websocket{extra_query}"), headers)
            .await
            .expect("websocket upgrade");
        let mut client = Self {
            ws,
            sid: String::new(),
            open: Value::Null,
            auto_pong: true,
            pings: 0,
            close_frame: false,
            close_code: None,
        };
        let first = client.recv_text().await;
        let json = first
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("expected an open packet, got {first:?}"));
        client.open = serde_json::from_str(json).expect("open packet JSON");
        client.sid = client.open["sid"].as_str().expect("sid").to_owned();
        client
    }

    /// Wraps a WebSocket opened for an existing (polling) session.
    pub fn from_upgrade(ws: Ws, sid: &str) -> Self {
        Self {
            ws,
            sid: sid.to_owned(),
            open: Value::Null,
            auto_pong: true,
            pings: 0,
            close_frame: false,
            close_code: None,
        }
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        let text = text.into();
        within("websocket send", self.ws.send(Message::text(text)))
            .await
            .expect("websocket send");
    }

    pub async fn send_binary(&mut self, bytes: impl Into<Bytes>) {
        within("websocket send", self.ws.send(Message::binary(bytes.into())))
            .await
            .expect("websocket send");
    }

    /// The next frame within `limit` (Engine.IO pings are answered or skipped).
    pub async fn next_frame(&mut self, limit: Duration) -> Result<Frame, RecvEnd> {
        let deadline = Instant::now() + limit;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(RecvEnd::Silent),
                Ok(None) => return Err(RecvEnd::Closed("end of stream".into())),
                Ok(Some(Err(e))) => return Err(RecvEnd::Closed(format!("error: {e}"))),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(t) if t.as_str() == "2" => {
                    self.pings += 1;
                    if self.auto_pong {
                        self.send("3").await;
                    }
                }
                Message::Text(t) => return Ok(Frame::Text(t.as_str().to_owned())),
                Message::Binary(b) => return Ok(Frame::Binary(b)),
                Message::Close(c) => {
                    self.close_frame = true;
                    self.close_code = c.as_ref().map(|f| u16::from(f.code));
                    return Err(RecvEnd::Closed(format!("close frame {c:?}")));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next frame; fails the test on timeout or close.
    pub async fn recv(&mut self) -> Frame {
        match self.next_frame(WAIT).await {
            Ok(frame) => frame,
            Err(end) => panic!("expected a frame, got {end:?}"),
        }
    }

    /// The next frame, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Frame::Text(t) => t,
            Frame::Binary(b) => panic!("expected text, got binary {b:?}"),
        }
    }

    /// The next frame, which must be binary.
    pub async fn recv_binary(&mut self) -> Bytes {
        match self.recv().await {
            Frame::Binary(b) => b,
            Frame::Text(t) => panic!("expected binary, got text {t:?}"),
        }
    }

    /// The next frame must be exactly this text.
    pub async fn expect(&mut self, expected: &str) {
        let got = self.recv_text().await;
        assert_eq!(got, expected, "unexpected frame");
    }

    /// Connects a namespace (`40` or `40/nsp,`) and returns the socket id from the reply.
    pub async fn connect_ns(&mut self, nsp: &str) -> String {
        self.connect_ns_auth(nsp, None).await
    }

    /// Connects a namespace with an auth payload.
    pub async fn connect_ns_auth(&mut self, nsp: &str, auth: Option<&Value>) -> String {
        let prefix = nsp_prefix(nsp);
        let auth = auth.map(Value::to_string).unwrap_or_default();
        self.send(format!("40{prefix}{auth}")).await;
        let reply = self.recv_text().await;
        parse_connect_reply(&reply, nsp)
    }

    /// Reads until the connection ends; returns the frames that came before.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        self.expect_closed_within(WAIT).await
    }

    pub async fn expect_closed_within(&mut self, limit: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Ok(frame) => before.push(frame),
                Err(RecvEnd::Closed(_)) => return before,
                Err(RecvEnd::Silent) => {
                    panic!("connection still open after {limit:?}; frames meanwhile: {before:?}")
                }
            }
        }
    }

    /// Nothing but pings arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        match self.next_frame(d).await {
            Err(RecvEnd::Silent) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Closes with a close frame and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = within("websocket close", self.ws.close(None)).await;
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// `""` for `/`, `/nsp,` otherwise.
pub fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// Checks a CONNECT reply `40[/nsp,]{"sid":"<20 chars>"}` and returns the sid.
pub fn parse_connect_reply(reply: &str, nsp: &str) -> String {
    let head = format!("40{}", nsp_prefix(nsp));
    let json = reply
        .strip_prefix(head.as_str())
        .unwrap_or_else(|| panic!("expected a CONNECT reply for {nsp}, got {reply:?}"));
    let value: Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("bad CONNECT reply {reply:?}"));
    let obj = value.as_object().expect("CONNECT reply object");
    assert_eq!(obj.len(), 1, "CONNECT reply has only sid: {reply}");
    let sid = obj["sid"].as_str().expect("sid string").to_owned();
    assert_eq!(sid.len(), 20, "socket id length");
    sid
}

/// A fresh client can connect and get an ack from `echo` (the server declares
/// [`with_echo`] on `/`).
pub async fn assert_healthy(addr: SocketAddr) {
    let mut c = WsClient::connect(addr).await;
    c.connect_ns("/").await;
    c.send(r#"4277["echo","still here"]"#).await;
    c.expect(r#"4377["still here"]"#).await;
    c.close().await;
}

// ------------------------------------------------------------------------------------------
// HTTP long-polling

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    within(&format!("HTTP {method} {target}"), async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("write request");
        let mut raw = Vec::new();
        // A reset after the response was written still leaves the response readable.
        let read = stream.read_to_end(&mut raw).await;
        if raw.is_empty() {
            panic!("no HTTP response ({read:?})");
        }
        parse_response(&raw)
    })
    .await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = std::str::from_utf8(&raw[..split]).expect("response head UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&data[..eol]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
}

/// A long-polling Engine.IO session driven by hand.
#[derive(Debug, Clone)]
pub struct PollClient {
    pub addr: SocketAddr,
    pub sid: String,
    pub open: Value,
}

impl PollClient {
    /// The handshake GET.
    pub async fn open(addr: SocketAddr) -> Self {
        let res = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", &[], b"").await;
        assert_eq!(res.status, 200, "handshake: {}", res.text());
        let text = res.text();
        let json = text
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("expected an open packet, got {text:?}"));
        let open: Value = serde_json::from_str(json).expect("open JSON");
        let sid = open["sid"].as_str().expect("sid").to_owned();
        Self { addr, sid, open }
    }

    pub fn target(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    pub async fn get(&self) -> HttpResponse {
        http(self.addr, "GET", &self.target(), &[], b"").await
    }

    /// A successful poll, split into records.
    pub async fn get_records(&self) -> Vec<String> {
        let res = self.get().await;
        assert_eq!(res.status, 200, "poll: {}", res.text());
        res.text().split('\x1e').map(str::to_owned).collect()
    }

    pub async fn post(&self, body: &str) -> HttpResponse {
        http(
            self.addr,
            "POST",
            &self.target(),
            &[("Content-Type", "text/plain;charset=UTF-8")],
            body.as_bytes(),
        )
        .await
    }

    /// A POST that must be answered `200 ok`.
    pub async fn post_ok(&self, body: &str) {
        let res = self.post(body).await;
        assert_eq!((res.status, res.text().as_str()), (200, "ok"), "POST {body:?}");
    }
}
