//! `ferrio-bench`: measures a Socket.IO v4 server from the outside, over WebSocket.
//!
//! * `hold`: opens N idle connections (each joined to namespace `/`, answering pings) spread
//!   over several 127.0.0.x source addresses, and reports the server's RSS per connection.
//! * `fanout`: N subscribers join a room; a publisher uses the `publish` event (`{room,
//!   event, data}`) that `ferrio serve` and the reference test server both offer, and every
//!   delivery is counted and checked for loss, duplication and order.
//!
//! The last line of output is one JSON object with every figure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

type Ws = WebSocketStream<tokio::net::TcpStream>;

#[derive(Parser, Debug)]
#[command(name = "ferrio-bench", about = "Load generator for Socket.IO v4 servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hold N idle connections and report the server's memory per connection.
    Hold {
        /// Server address (host:port).
        #[arg(long)]
        target: SocketAddr,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// How many 127.0.0.x source addresses to spread connections over.
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Connection attempts in flight at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to hold the connections once all are open.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// The server's PID, to read its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// JSON auth payload sent with every CONNECT (e.g. '{"token":"..."}').
        #[arg(long)]
        auth: Option<String>,
    },
    /// N subscribers in a room, one publisher, as fast as a window of acks allows.
    Fanout {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Messages to publish.
        #[arg(long, default_value_t = 200)]
        messages: u64,
        /// Publishes awaiting their ack at once.
        #[arg(long, default_value_t = 10)]
        window: usize,
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Seconds to wait for the last deliveries.
        #[arg(long, default_value_t = 30)]
        deadline: u64,
    },
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn raise_nofile() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

/// Opens one WebSocket session and connects namespace `/`.
async fn connect(target: SocketAddr, source: u8) -> Result<Ws, String> {
    connect_with(target, source, None).await
}

/// Opens one WebSocket session and connects namespace `/` with an auth payload.
async fn connect_with(target: SocketAddr, source: u8, auth: Option<&str>) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), 0);
    socket.bind(local).map_err(|e| format!("bind: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{target}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async(url, stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("unexpected first packet {open:?}"));
    }
    let connect = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_owned(),
    };
    ws.send(Message::text(connect))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        let packet = next_text(&mut ws).await?;
        if packet.starts_with("40") {
            return Ok(ws);
        }
        if packet.starts_with("44") {
            return Err(format!("refused: {packet}"));
        }
        if packet == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match timeout(Duration::from_secs(20), ws.next()).await {
            Err(_) => return Err("timeout".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Answers pings until the connection ends or `stop` is set.
async fn idle(mut ws: Ws, dropped: Arc<AtomicUsize>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) if t.as_str() == "2" => {
                if ws.send(Message::text("3")).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    dropped.fetch_add(1, Ordering::Relaxed);
}

fn percentile_ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn hold(
    target: SocketAddr,
    connections: usize,
    sources: u8,
    concurrency: usize,
    hold_secs: u64,
    pid: Option<u32>,
    auth: Option<String>,
) {
    let auth: Option<Arc<str>> = auth.map(Arc::from);
    let before = pid.and_then(rss_kb);
    let gate = Arc::new(Semaphore::new(concurrency));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut handshakes = hdrhistogram::Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    let started = Instant::now();
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..connections {
        let gate = gate.clone();
        let auth = auth.clone();
        let source = 1 + (i % sources.max(1) as usize) as u8;
        attempts.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            connect_with(target, source, auth.as_deref())
                .await
                .map(|ws| (ws, t0.elapsed()))
        });
    }
    let mut held = Vec::with_capacity(connections);
    while let Some(result) = attempts.join_next().await {
        match result {
            Ok(Ok((ws, took))) => {
                let _ = handshakes.record(took.as_micros() as u64);
                held.push(tokio::spawn(idle(ws, dropped.clone())));
            }
            Ok(Err(e)) => {
                *failures
                    .entry(e.split(':').next().unwrap_or("").to_owned())
                    .or_default() += 1
            }
            Err(_) => *failures.entry("panic".into()).or_default() += 1,
        }
    }
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let after = pid.and_then(rss_kb);
    let connected = held.len();
    let per_conn_kb = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => Some((a.saturating_sub(b)) as f64 / connected as f64),
        _ => None,
    };
    eprintln!(
        "hold: {connected}/{connections} connected in {:.1}s, failures {failures:?}, dropped during hold {}",
        ramp.as_secs_f64(),
        dropped.load(Ordering::Relaxed)
    );
    eprintln!(
        "handshake p50 {:.2} ms, p99 {:.2} ms; server RSS {:?} KB -> {:?} KB; {} KB per connection",
        percentile_ms(&handshakes, 0.5),
        percentile_ms(&handshakes, 0.99),
        before,
        after,
        per_conn_kb.map_or("?".into(), |k| format!("{k:.2}"))
    );
    let report = json!({
        "scenario": "hold",
        "connections": connections,
        "connected": connected,
        "failures": failures,
        "dropped_during_hold": dropped.load(Ordering::Relaxed),
        "ramp_s": ramp.as_secs_f64(),
        "handshakes_per_s": connected as f64 / ramp.as_secs_f64().max(1e-9),
        "handshake_p50_ms": percentile_ms(&handshakes, 0.5),
        "handshake_p99_ms": percentile_ms(&handshakes, 0.99),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_connection": per_conn_kb,
    });
    #[allow(clippy::print_stdout)] // the machine-readable result line
    {
        println!("{report}");
    }
    for h in held {
        h.abort();
    }
}

async fn fanout(
    target: SocketAddr,
    subscribers: usize,
    messages: u64,
    window: usize,
    sources: u8,
    deadline: u64,
) {
    const ROOM: &str = "bench";
    let received = Arc::new(AtomicU64::new(0));
    let lost_order = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let expected = subscribers as u64 * messages;
    let gate = Arc::new(Semaphore::new(200));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..subscribers {
        let gate = gate.clone();
        let source = 1 + (i % sources.max(1) as usize) as u8;
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut ws = connect(target, source).await?;
            ws.send(Message::text(format!(r#"420["join","{ROOM}"]"#)))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let p = next_text(&mut ws).await?;
                if p.starts_with("430") {
                    return Ok::<Ws, String>(ws);
                }
            }
        });
    }
    let mut subs = Vec::new();
    while let Some(r) = joins.join_next().await {
        if let Ok(Ok(ws)) = r {
            subs.push(ws);
        }
    }
    let joined = subs.len();
    let last = Arc::new(parking_lot_free::LastInstant::default());
    for mut ws in subs {
        let (received, lost_order, duplicates, done, last) = (
            received.clone(),
            lost_order.clone(),
            duplicates.clone(),
            done.clone(),
            last.clone(),
        );
        tokio::spawn(async move {
            let mut next_seq = 0u64;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    continue;
                }
                let Some(body) = t.as_str().strip_prefix(r#"42["m","#) else {
                    continue;
                };
                let seq: u64 = body.trim_end_matches(']').parse().unwrap_or(u64::MAX);
                match seq.cmp(&next_seq) {
                    std::cmp::Ordering::Equal => next_seq += 1,
                    std::cmp::Ordering::Greater => {
                        lost_order.fetch_add(1, Ordering::Relaxed);
                        next_seq = seq + 1;
                    }
                    std::cmp::Ordering::Less => {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                last.set(Instant::now());
                if received.fetch_add(1, Ordering::Relaxed) + 1 >= expected {
                    done.notify_one();
                }
            }
        });
    }
    let mut publisher = match connect(target, 1).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("publisher failed: {e}");
            return;
        }
    };
    let t0 = Instant::now();
    let mut in_flight = 0usize;
    let mut sent = 0u64;
    let mut acked = 0u64;
    let expected = joined as u64 * messages;
    while acked < messages {
        while in_flight < window && sent < messages {
            let packet = format!(r#"42{sent}["publish",{{"room":"{ROOM}","event":"m","data":{sent}}}]"#);
            if publisher.send(Message::text(packet)).await.is_err() {
                break;
            }
            sent += 1;
            in_flight += 1;
        }
        match next_text(&mut publisher).await {
            Ok(p) if p.starts_with("43") => {
                acked += 1;
                in_flight -= 1;
            }
            Ok(p) if p == "2" => {
                let _ = publisher.send(Message::text("3")).await;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("publisher: {e}");
                break;
            }
        }
    }
    let _ = timeout(Duration::from_secs(deadline), async {
        while received.load(Ordering::Relaxed) < expected {
            tokio::select! {
                _ = done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await;
    let got = received.load(Ordering::Relaxed);
    let elapsed = last
        .get()
        .unwrap_or_else(Instant::now)
        .duration_since(t0)
        .as_secs_f64();
    let rate = got as f64 / elapsed.max(1e-9);
    eprintln!(
        "fanout: {joined} subscribers, {messages} messages, {got}/{expected} deliveries in {elapsed:.3}s = {rate:.0}/s; out-of-order/lost {}, duplicates {}",
        lost_order.load(Ordering::Relaxed),
        duplicates.load(Ordering::Relaxed)
    );
    let report = json!({
        "scenario": "fanout",
        "subscribers": joined,
        "messages": messages,
        "window": window,
        "deliveries": got,
        "expected": expected,
        "seconds": elapsed,
        "deliveries_per_s": rate,
        "gaps": lost_order.load(Ordering::Relaxed),
        "duplicates": duplicates.load(Ordering::Relaxed),
    });
    #[allow(clippy::print_stdout)] // the machine-readable result line
    {
        println!("{report}");
    }
}

/// The instant of the last delivery, shared by the subscriber tasks without a lock.
mod parking_lot_free {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::time::Instant;

    #[derive(Debug)]
    pub struct LastInstant {
        origin: Instant,
        nanos: AtomicU64,
    }

    impl Default for LastInstant {
        fn default() -> Self {
            Self {
                origin: Instant::now(),
                nanos: AtomicU64::new(0),
            }
        }
    }

    impl LastInstant {
        pub fn set(&self, at: Instant) {
            let n = at.duration_since(self.origin).as_nanos() as u64;
            self.nanos.fetch_max(n, Ordering::Relaxed);
        }

        pub fn get(&self) -> Option<Instant> {
            let n = self.nanos.load(Ordering::Relaxed);
            (n > 0).then(|| self.origin + std::time::Duration::from_nanos(n))
        }
    }
}

#[tokio::main]
async fn main() {
    raise_nofile();
    match Cli::parse().command {
        Command::Hold {
            target,
            connections,
            sources,
            concurrency,
            hold: secs,
            server_pid,
            auth,
        } => hold(target, connections, sources, concurrency, secs, server_pid, auth).await,
        Command::Fanout {
            target,
            subscribers,
            messages,
            window,
            sources,
            deadline,
        } => fanout(target, subscribers, messages, window, sources, deadline).await,
    }
}
