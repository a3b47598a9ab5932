//! `cluster-bench`: measures delivery across the nodes of a cluster, which needs a
//! publisher on one node and receivers on others (see `bench/cluster`).
//!
//! * `latency`: N subscribers on one node join a room; a publisher on another node sends
//!   M messages through the built-in `publish` event, each stamped with its send time; every
//!   delivery is timed and checked for loss, duplication and order.
//! * `receive`: holds N connections to a node and counts what `broadcast` sends to
//!   everyone; prints `ready` once all are connected, then waits for K messages per
//!   connection. Run one per node (a process may hold at most 20,000 files here).
//! * `broadcast`: sends K messages to everyone (`io.emit`, the node's `broadcast` event,
//!   which `redis-cluster-node --cluster-events` offers).
//! * `publish`, `sessions`, `feed`: load for the streams-mode benchmarks (see
//!   `cluster-bench/streams.rs`).
//! * `failover-clients`: Socket.IO clients with connection-state recovery that check every
//!   message of a steady feed across the loss of their node (see `cluster-bench/failover.rs`).
//!
//! Times are wall-clock microseconds, so processes on one machine compare them. The last
//! line of output is one JSON object.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

#[path = "cluster-bench/failover.rs"]
mod failover;
#[path = "cluster-bench/streams.rs"]
mod streams;

type Ws = WebSocketStream<TcpStream>;

#[derive(Parser, Debug)]
#[command(name = "cluster-bench", about = "Cross-node delivery of a Socket.IO cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publisher on one node, subscribers on another; delivery latency.
    Latency {
        #[arg(long)]
        publish: SocketAddr,
        #[arg(long)]
        subscribe: SocketAddr,
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Microseconds between two publishes.
        #[arg(long, default_value_t = 2000)]
        interval_us: u64,
        #[arg(long, default_value_t = 4)]
        sources: u8,
    },
    /// Hold connections and count what is broadcast to everyone.
    Receive {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// First 127.0.0.x source address.
        #[arg(long, default_value_t = 1)]
        first_source: u8,
        /// Messages each connection should get.
        #[arg(long, default_value_t = 10)]
        expect: u64,
        /// Seconds to wait for them once connected.
        #[arg(long, default_value_t = 120)]
        deadline: u64,
        /// The node's PID, for its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Broadcast K messages to everyone.
    Broadcast {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 10)]
        messages: u64,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Publish N events to a room as fast as a window allows (answers from Redis counted).
    Publish(streams::PublishArgs),
    /// Hold N connections that joined some rooms (their sessions stay in Redis).
    Sessions(streams::SessionsArgs),
    /// Publish `{seq, t}` to a room at a steady rate until a stop file appears.
    Feed(streams::FeedArgs),
    /// Clients with connection-state recovery that check a feed across a node's death.
    FailoverClients(failover::FailoverArgs),
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn connect(target: SocketAddr, source: u8) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), 0))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{target}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async(url, stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    next_text(&mut ws).await?;
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        let t = next_text(&mut ws).await?;
        if t.starts_with("40") {
            return Ok(ws);
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err("timeout".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}")),
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// `42["name",{"seq":n,"t":us}]` → (seq, t).
fn stamp(text: &str, name: &str) -> Option<(u64, u64)> {
    let body = text.strip_prefix("42")?;
    let v: Value = serde_json::from_str(body).ok()?;
    let arr = v.as_array()?;
    if arr.first()?.as_str()? != name {
        return None;
    }
    let d = arr.get(1)?;
    Some((d.get("seq")?.as_u64()?, d.get("t")?.as_u64()?))
}

/// Latencies in µs; counts of complete, duplicated and out-of-order.
#[derive(Default)]
struct Tally {
    latencies: Mutex<Vec<u64>>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    complete: AtomicUsize,
}

impl Tally {
    fn percentile_ms(&self, q: f64) -> f64 {
        let mut v = self.latencies.lock().clone();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i] as f64 / 1000.0
    }
}

/// Reads `name` messages on `ws` until `expect` arrived (or the connection ends).
async fn count(mut ws: Ws, name: &'static str, expect: u64, tally: Arc<Tally>) {
    let mut next = 0u64;
    let mut seen = 0u64;
    let mut local = Vec::with_capacity(expect as usize);
    while seen < expect {
        let Some(Ok(msg)) = ws.next().await else { break };
        let Message::Text(t) = msg else { continue };
        if t.as_str() == "2" {
            let _ = ws.send(Message::text("3")).await;
            continue;
        }
        let Some((seq, sent)) = stamp(t.as_str(), name) else {
            continue;
        };
        local.push(now_us().saturating_sub(sent));
        seen += 1;
        tally.deliveries.fetch_add(1, Ordering::Relaxed);
        match seq.cmp(&next) {
            std::cmp::Ordering::Equal => next += 1,
            std::cmp::Ordering::Greater => {
                tally.gaps.fetch_add(1, Ordering::Relaxed);
                next = seq + 1;
            }
            std::cmp::Ordering::Less => {
                tally.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally.latencies.lock().extend(local);
    if seen == expect && next == expect {
        tally.complete.fetch_add(1, Ordering::Relaxed);
    }
    // Keep the connection open (answering pings) so other counts are not disturbed.
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg
            && t.as_str() == "2"
            && ws.send(Message::text("3")).await.is_err()
        {
            break;
        }
    }
}

async fn open_many(target: SocketAddr, n: usize, sources: u8, first_source: u8) -> (Vec<Ws>, usize) {
    let gate = Arc::new(Semaphore::new(256));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let source = first_source + (i % sources.max(1) as usize) as u8;
        set.spawn(async move {
            let _p = gate.acquire_owned().await;
            connect(target, source).await
        });
    }
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ws)) => out.push(ws),
            _ => failed += 1,
        }
    }
    (out, failed)
}

#[allow(clippy::print_stdout)] // the machine-readable result line
fn report(v: Value) {
    println!("{v}");
}

async fn latency(
    publish: SocketAddr,
    subscribe: SocketAddr,
    subscribers: usize,
    messages: u64,
    interval_us: u64,
    sources: u8,
) {
    let (subs, failed) = open_many(subscribe, subscribers, sources, 1).await;
    let tally = Arc::new(Tally::default());
    let mut joined = Vec::new();
    for mut ws in subs {
        let _ = ws.send(Message::text(r#"420["join","lat"]"#)).await;
        loop {
            match next_text(&mut ws).await {
                Ok(t) if t.starts_with("430") => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        joined.push(ws);
    }
    let n = joined.len();
    let readers: Vec<_> = joined
        .into_iter()
        .map(|ws| tokio::spawn(count(ws, "lat", messages, tally.clone())))
        .collect();
    // Room subscriptions reach Redis before the first publish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = match connect(publish, 1).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("publisher: {e}");
            return;
        }
    };
    let mut interval = tokio::time::interval(Duration::from_micros(interval_us.max(1)));
    for seq in 0..messages {
        interval.tick().await;
        let data = json!({"room": "lat", "event": "lat", "data": {"seq": seq, "t": now_us()}});
        if publisher
            .send(Message::text(format!(r#"42["publish",{data}]"#)))
            .await
            .is_err()
        {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.deliveries.load(Ordering::Relaxed) < n as u64 * messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Drain acks and pings on the publisher.
        while let Ok(Some(Ok(msg))) = timeout(Duration::from_millis(1), publisher.next()).await {
            if let Message::Text(t) = msg
                && t.as_str() == "2"
            {
                let _ = publisher.send(Message::text("3")).await;
            }
        }
    }
    for r in readers {
        r.abort();
    }
    let out = json!({
        "scenario": "latency",
        "subscribers": n,
        "failed_connections": failed,
        "messages": messages,
        "deliveries": tally.deliveries.load(Ordering::Relaxed),
        "expected": n as u64 * messages,
        "duplicates": tally.duplicates.load(Ordering::Relaxed),
        "gaps": tally.gaps.load(Ordering::Relaxed),
        "p50_ms": tally.percentile_ms(0.5),
        "p99_ms": tally.percentile_ms(0.99),
        "max_ms": tally.percentile_ms(1.0),
    });
    eprintln!("latency: {out}");
    report(out);
}

async fn receive(
    target: SocketAddr,
    connections: usize,
    sources: u8,
    first_source: u8,
    expect: u64,
    deadline: u64,
    pid: Option<u32>,
) {
    let before = pid.and_then(rss_kb);
    let t0 = Instant::now();
    let (conns, failed) = open_many(target, connections, sources, first_source).await;
    let n = conns.len();
    let ramp = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(rss_kb);
    let tally = Arc::new(Tally::default());
    let readers: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(count(ws, "all", expect, tally.clone())))
        .collect();
    eprintln!("ready {n} (failed {failed}) in {:.1}s", ramp.as_secs_f64());
    let end = Instant::now() + Duration::from_secs(deadline);
    while tally.complete.load(Ordering::Relaxed) < n && Instant::now() < end {
        if tally.deliveries.load(Ordering::Relaxed) >= n as u64 * expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    let out = json!({
        "scenario": "receive",
        "target": target.to_string(),
        "connected": n,
        "failed_connections": failed,
        "ramp_s": ramp.as_secs_f64(),
        "expected_per_connection": expect,
        "deliveries": tally.deliveries.load(Ordering::Relaxed),
        "complete_connections": tally.complete.load(Ordering::Relaxed),
        "duplicates": tally.duplicates.load(Ordering::Relaxed),
        "gaps": tally.gaps.load(Ordering::Relaxed),
        "p50_ms": tally.percentile_ms(0.5),
        "p99_ms": tally.percentile_ms(0.99),
        "max_ms": tally.percentile_ms(1.0),
        "server_rss_before_kb": before,
        "server_rss_after_kb": after,
        "server_kb_per_connection": per_conn,
    });
    eprintln!("receive: {out}");
    report(out);
    for r in readers {
        r.abort();
    }
}

async fn broadcast(target: SocketAddr, messages: u64, interval_ms: u64) {
    let mut ws = match connect(target, 1).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("broadcaster: {e}");
            return;
        }
    };
    let mut ok = 0;
    for seq in 0..messages {
        let data = json!({"seq": seq, "t": now_us()});
        let _ = ws
            .send(Message::text(format!(r#"42{seq}["broadcast","all",{data}]"#)))
            .await;
        loop {
            match next_text(&mut ws).await {
                Ok(t) if t.starts_with(&format!("43{seq}")) => {
                    ok += 1;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    report(json!({"scenario": "broadcast", "messages": messages, "acked": ok}));
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Latency {
            publish,
            subscribe,
            subscribers,
            messages,
            interval_us,
            sources,
        } => latency(publish, subscribe, subscribers, messages, interval_us, sources).await,
        Command::Receive {
            target,
            connections,
            sources,
            first_source,
            expect,
            deadline,
            server_pid,
        } => {
            receive(
                target,
                connections,
                sources,
                first_source,
                expect,
                deadline,
                server_pid,
            )
            .await
        }
        Command::Broadcast {
            target,
            messages,
            interval_ms,
        } => broadcast(target, messages, interval_ms).await,
        Command::Publish(args) => streams::publish(args).await,
        Command::Sessions(args) => streams::sessions(args).await,
        Command::Feed(args) => streams::feed(args).await,
        Command::FailoverClients(args) => failover::run(args).await,
    }
}
