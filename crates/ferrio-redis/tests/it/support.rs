//! Test fixtures: a `redis-server` (or a Redis Cluster) of the test's own on free ports,
//! killed by PID when dropped (also when the test fails); ferrio nodes served in-process;
//! and a raw WebSocket Socket.IO client. Every wait has a deadline.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrio::{Config, Io, NamespaceBuilder};
use ferrio_redis::{Mode, RedisAdapter, RedisAdapterFactory};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The longest a single wait may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Polls `cond` until it holds, failing after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "never became true: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a Redis server answers PING at `addr` (not just something accepting connections).
async fn answers_ping(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
    else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn redis_bin(name: &str) -> PathBuf {
    PathBuf::from(format!("/usr/bin/{name}"))
}

/// Whether the Redis binaries are installed (tests are skipped loudly otherwise).
pub fn have_redis() -> bool {
    let ok = redis_bin("redis-server").exists() && redis_bin("redis-cli").exists();
    if !ok {
        eprintln!("!!! SKIPPED: /usr/bin/redis-server or redis-cli not found (apt-get install redis-server)");
    }
    ok
}

/// One `redis-server` on a free port, no persistence. Killed (by PID) when dropped.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut redis = Self {
            port,
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        // A free port can be taken between the check and redis-server's bind (load tests on
        // this machine use thousands of ports): then try another one.
        for attempt in 0..5 {
            if attempt > 0 {
                self.port = free_port();
            }
            if self.try_spawn().await {
                return;
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        panic!("redis-server did not start on five ports in a row");
    }

    /// Starts redis-server on `self.port`; true once it answers PING.
    async fn try_spawn(&mut self) -> bool {
        let dir = std::env::temp_dir().join(format!("ferrio-redis-{}", self.port));
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new(redis_bin("redis-server"))
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &dir.to_string_lossy()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && !matches!(child.try_wait(), Ok(None))
            {
                return false;
            }
            if answers_ping(addr).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        // Same port: the nodes must find Redis where it was.
        assert!(
            self.try_spawn().await,
            "redis-server did not restart on {}",
            self.port
        );
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig}");
    }

    /// Runs `redis-cli` against this server; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(redis_bin("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server would not die of SIGTERM; SIGKILL works either way.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A Redis Cluster of three masters, made with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            nodes.push(
                Redis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        // Each node got a port of its own when started; tell them apart by that.
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(redis_bin("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"));
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster never became ok");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}

/// A ferrio node serving on `127.0.0.1:0`, stopped when dropped.
#[derive(Debug)]
pub struct Node {
    pub io: Io,
    pub addr: SocketAddr,
    pub redis: RedisAdapterFactory,
    _stop: oneshot::Sender<()>,
}

pub async fn serve(io: Io, redis: RedisAdapterFactory) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = io.clone();
    tokio::spawn(async move {
        let _ = ferrio::serve(
            listener,
            service,
            async move { drop(stopped.await) },
            Duration::from_millis(100),
        )
        .await;
    });
    Node {
        io,
        addr,
        redis,
        _stop: stop,
    }
}

/// A node on `url` in `mode` whose `/` is declared by `declare`.
pub async fn node(url: &str, mode: Mode, declare: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Node {
    node_with(url, mode, Config::default(), declare).await
}

/// [`node`] with a configuration of its own.
pub async fn node_with(
    url: &str,
    mode: Mode,
    config: Config,
    declare: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder,
) -> Node {
    let redis = RedisAdapter::builder(url)
        .mode(mode)
        .requests_timeout(Duration::from_secs(2))
        .publish_timeout(Duration::from_millis(500))
        .health_interval(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect()
        .await
        .expect("connect to redis");
    let io = Io::builder(config)
        .adapter(redis.factory())
        .ns("/", declare)
        .build();
    let node = serve(io, redis).await;
    // Every subscription is in place before the test uses the node.
    eventually("node subscribed", WAIT, || {
        node.redis.is_healthy() && node.redis.is_subscribed()
    })
    .await;
    node
}

/// Waits until every node has subscribed to every channel it wants (room channels in
/// sharded mode are subscribed when a room gets its first local member).
pub async fn settle<N: std::borrow::Borrow<Node>>(nodes: &[N]) {
    eventually("nodes subscribed", WAIT, || {
        nodes.iter().all(|n| n.borrow().redis.is_subscribed())
    })
    .await;
}

// ------------------------------------------------------------------------------------------

/// A Socket.IO client over a raw WebSocket (namespace `/`, JSON events, binary attachments).
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The socket id.
    pub id: String,
    next_ack: u64,
}

/// An event as the client received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub name: String,
    pub args: Vec<Value>,
    pub ack: Option<u64>,
    pub attachments: Vec<Vec<u8>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = within("ws handshake", tokio_tungstenite::client_async(url, stream))
            .await
            .expect("websocket");
        let mut c = Self {
            ws,
            id: String::new(),
            next_ack: 1,
        };
        let open = c.raw().await;
        assert!(open.starts_with('0'), "open packet: {open}");
        c.send("40").await;
        let reply = c.raw().await;
        let json: Value =
            serde_json::from_str(reply.strip_prefix("40").expect("CONNECT reply")).expect("json");
        c.id = json["sid"].as_str().expect("sid").to_owned();
        c
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        within("ws send", self.ws.send(Message::text(text.into())))
            .await
            .expect("send");
    }

    /// The next text frame (pings answered), or None on timeout or close.
    async fn next_text(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) if t.as_str() == "2" => self.send("3").await,
                Message::Text(t) => return Some(t.as_str().to_owned()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    async fn raw(&mut self) -> String {
        self.next_text(WAIT).await.expect("a frame")
    }

    async fn binary(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("binary frame in time")
                .expect("open")
                .expect("ok");
            if let Message::Binary(b) = msg {
                return b.to_vec();
            }
        }
    }

    /// The next packet as an event (`42`/`45`) or ack (`43`/`46`), within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Received> {
        let text = self.next_text(limit).await?;
        let body = &text[1..];
        let (kind, rest) = body.split_at(1);
        let (count, rest) = if kind == "5" || kind == "6" {
            let (n, rest) = rest.split_once('-').expect("attachment count");
            (n.parse::<usize>().expect("count"), rest)
        } else {
            (0, rest)
        };
        let split = rest.find(['[', '{']).unwrap_or(rest.len());
        let id = rest[..split].parse::<u64>().ok();
        let data: Value = serde_json::from_str(&rest[split..]).unwrap_or(Value::Null);
        let mut attachments = Vec::new();
        for _ in 0..count {
            attachments.push(self.binary().await);
        }
        let mut args = data.as_array().cloned().unwrap_or_default();
        let name = match kind {
            "2" | "5" => args.remove(0).as_str().unwrap_or_default().to_owned(),
            "1" => "<disconnect>".to_owned(),
            _ => "<ack>".to_owned(),
        };
        Some(Received {
            name,
            args,
            ack: id,
            attachments,
        })
    }

    /// The next event, which must arrive within [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        self.next(WAIT).await.expect("an event")
    }

    /// The next event must be `name`; returns its arguments.
    pub async fn expect(&mut self, name: &str) -> Vec<Value> {
        let got = self.recv().await;
        assert_eq!(got.name, name, "unexpected event {got:?}");
        got.args
    }

    /// Nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(got) = self.next(d).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// Emits and waits for the acknowledgement (events arriving meanwhile are kept).
    pub async fn call(&mut self, name: &str, args: Vec<Value>) -> (Vec<Value>, Vec<Received>) {
        let id = self.next_ack;
        self.next_ack += 1;
        let mut data = vec![Value::from(name)];
        data.extend(args);
        self.send(format!("42{id}{}", Value::Array(data))).await;
        let mut others = Vec::new();
        loop {
            let got = self.recv().await;
            if got.name == "<ack>" && got.ack == Some(id) {
                return (got.args, others);
            }
            others.push(got);
        }
    }

    /// Answers an event that asked for an acknowledgement.
    pub async fn ack(&mut self, id: u64, args: Vec<Value>) {
        self.send(format!("43{id}{}", Value::Array(args))).await;
    }

    pub async fn join(&mut self, room: &str) {
        let (answer, _) = self.call("join", vec![Value::from(room)]).await;
        assert_eq!(answer, vec![serde_json::json!({"ok": true})]);
    }
}
