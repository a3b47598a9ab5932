//! Test harness: runs the `ferrio` binary with a configuration file on a free port, captures
//! its output, and kills it by PID when dropped; raw HTTP, WebSocket and Socket.IO clients
//! bound to chosen 127.0.0.x source addresses; token minting.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const STEP: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A scratch directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ferrio-it-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ferrio() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrio"));
    // Only what a test sets: no FERRIO_ variables of the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRIO_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "debug");
    cmd
}

/// Runs `ferrio` with arguments and returns (exit success, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = ferrio();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `ferrio serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// Set once the server's stderr reached its end.
    drained: Arc<std::sync::atomic::AtomicBool>,
    _dir: TempDir,
}

impl Server {
    /// Starts `ferrio serve -c <config>` (the config gets `listen = "127.0.0.1:0"` first).
    pub async fn start(config: &str) -> Server {
        Self::start_with(config, &[]).await
    }

    pub async fn start_with(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("server");
        let path = dir.write(
            "ferrio.toml",
            &format!("listen = \"127.0.0.1:0\"\nshutdown_timeout = \"1s\"\n{config}"),
        );
        let mut cmd = ferrio();
        cmd.arg("serve").arg("--config").arg(&path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = drained.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock();
                s.push_str(&line);
                s.push('\n');
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let out_pipe = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferrio did not start:\n{}", stderr.lock());
            }
        };
        Server {
            child,
            addr,
            stderr,
            drained,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }

    /// The server's process id (for reading `/proc/<pid>/`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file the server was started with (rewrite it, then SIGHUP).
    pub fn config_path(&self) -> PathBuf {
        self._dir.0.join("ferrio.toml")
    }

    /// Sends a signal (`"HUP"`, `"TERM"`) by PID.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([&format!("-{name}"), &pid]).status();
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it did not.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    /// Waits (bounded) until the log has a line containing `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.stderr().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with SIGTERM (by PID) and returns everything it logged.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The reader thread may still be draining the pipe.
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.drained.load(std::sync::atomic::Ordering::Acquire)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stderr()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn local(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection from 127.0.0.`source`.
pub async fn tcp_from(source: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local(source), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads one response (headers, then `Content-Length` bytes or until close).
pub async fn read_response(stream: &mut TcpStream) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(STEP, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut res = HttpResponse {
        status,
        head,
        body: String::new(),
    };
    let len: usize = res
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(STEP, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    res.body = String::from_utf8_lossy(&body).into_owned();
    Some(res)
}

/// One request from 127.0.0.`source` with extra header lines (`"Origin: x"`).
pub async fn request(
    server: &Server,
    source: u8,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> Option<HttpResponse> {
    let mut stream = tcp_from(source, server.addr).await;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.ok()?;
    read_response(&mut stream).await
}

/// One GET from 127.0.0.`source` with extra header lines.
pub async fn get(server: &Server, source: u8, target: &str, headers: &[&str]) -> Option<HttpResponse> {
    request(server, source, "GET", target, headers, "").await
}

pub const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

pub type Ws = WebSocketStream<TcpStream>;

/// A WebSocket handshake from 127.0.0.`source` with extra headers. `Err(status)` when the
/// server answered with an HTTP error instead of upgrading.
pub async fn ws_from(server: &Server, source: u8, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = server.ws_url().into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let stream = tcp_from(source, server.addr).await;
    match tokio::time::timeout(STEP, client_async(req, stream)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(res))) => Err(res.status().as_u16()),
        Ok(Err(e)) => panic!("websocket handshake failed: {e}"),
        Err(_) => panic!("websocket handshake timed out"),
    }
}

/// The next text frame, answering pings; `None` when the connection closed.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no frame in time")?;
        match msg.ok()? {
            Message::Text(t) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.ok()?;
            }
            Message::Text(t) => return Some(t.as_str().to_owned()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Engine.IO open, then a Socket.IO CONNECT to `/` with `auth`; returns the server's answer
/// packet (`40{...}` or `44{...}`).
pub async fn sio_connect(ws: &mut Ws, auth: Option<Value>) -> String {
    let open = next_text(ws).await.expect("no open packet");
    assert!(open.starts_with('0'), "expected an open packet, got {open}");
    let connect = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".into(),
    };
    ws.send(Message::text(connect)).await.unwrap();
    loop {
        let packet = next_text(ws).await.expect("closed before the CONNECT answer");
        if packet.starts_with("40") || packet.starts_with("44") {
            return packet;
        }
    }
}

/// The `data.reason` of a CONNECT_ERROR packet (`44{...}`).
pub fn connect_error_reason(packet: &str) -> String {
    assert!(packet.starts_with("44"), "expected CONNECT_ERROR, got {packet}");
    let v: Value = serde_json::from_str(&packet[2..]).unwrap();
    assert_eq!(v["message"], "unauthorized", "{packet}");
    v["data"]["reason"].as_str().unwrap_or_default().to_owned()
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs `claims` with `alg` and `key`, with an optional `kid`.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

pub fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

/// Claims of a valid token for `sub`, valid for an hour.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600, "iat": now() })
}

pub fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture_bytes(name)).unwrap()
}

pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.signature` from raw JSON parts (for tokens no library would sign).
pub fn raw_token(header: Value, claims: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

pub fn hs_config() -> String {
    format!("[auth]\nsecret = \"{SECRET}\"\n[origin]\nallow_missing = true\n")
}
