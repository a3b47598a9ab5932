//! `failover-clients`: N Socket.IO clients (WebSocket only, raw Engine.IO v4 / Socket.IO v5)
//! with connection-state recovery as `socket.io-client` ≥ 4.6 does it: each keeps the `pid`
//! of its CONNECT answer and the offset (the last string argument) of the last event it got,
//! and reconnects after a lost connection with `{pid, offset}` as its auth payload and
//! `socket.io-client`'s backoff (1 s doubling to 5 s, ±50 % jitter). The CONNECT answer
//! carrying the same `pid` again means `recovered`.
//!
//! Every client joins `--room` (again after a reconnection that did not recover) and checks
//! the `seq` of every `--event` it receives: the publisher starts at 0 once all clients are
//! connected, so each client must see 0, 1, 2, ... exactly once. A number seen twice is a
//! duplicate; a number skipped is a gap, except across a reconnection that did not recover
//! (the client knows its session is new and counts those as `lost_unrecovered`).
//!
//! Progress goes to `--status` every 500 ms as one line of `key=value` pairs. When the file
//! `--control` appears it holds the last sequence number published: each client then waits
//! (at most `--drain` seconds) for it, and the process prints one JSON line per client and a
//! summary line, and exits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{Ws, now_us, report};

#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Where the clients connect (nginx in front of the nodes).
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// 127.0.0.x source addresses the clients are spread over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    #[arg(long, default_value_t = 10)]
    first_source: u8,
    #[arg(long, default_value = "feed")]
    room: String,
    #[arg(long, default_value = "tick")]
    event: String,
    /// Progress file, rewritten every 500 ms.
    #[arg(long)]
    status: PathBuf,
    /// Appears at the end, holding the last sequence number published.
    #[arg(long)]
    control: PathBuf,
    /// Initial connections opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[arg(long, default_value_t = 1000)]
    reconnect_delay_ms: u64,
    #[arg(long, default_value_t = 5000)]
    reconnect_delay_max_ms: u64,
    #[arg(long, default_value_t = 0.5)]
    randomization: f64,
    /// Seconds the clients wait for the last message once `--control` appeared.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Seconds this process runs at most.
    #[arg(long, default_value_t = 900)]
    deadline: u64,
}

/// Counters every client adds to, for the status line.
#[derive(Default)]
struct Shared {
    ready: AtomicUsize,
    initial_failed: AtomicUsize,
    connected: AtomicUsize,
    got_first: AtomicUsize,
    /// Clients that lost their connection at least once.
    dropped: AtomicUsize,
    /// Clients that lost their connection and are connected again.
    back: AtomicUsize,
    recovered: AtomicUsize,
    not_recovered: AtomicUsize,
    connect_errors: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    by_port: Mutex<HashMap<u16, usize>>,
    /// Connections kept open until the process ends, once their client is done.
    parked: Mutex<Vec<Ws>>,
    over: AtomicBool,
}

impl Shared {
    fn port_delta(&self, port: u16, up: bool) {
        let mut m = self.by_port.lock();
        let n = m.entry(port).or_default();
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
    }

    fn status_line(&self) -> String {
        let mut ports: Vec<_> = self.by_port.lock().iter().map(|(p, n)| (*p, *n)).collect();
        ports.sort_unstable();
        let ports: Vec<String> = ports.iter().map(|(p, n)| format!("{p}:{n}")).collect();
        format!(
            "ready={} initial_failed={} connected={} got_first={} dropped={} back={} recovered={} not_recovered={} connect_errors={} gaps={} duplicates={} by_port={}\n",
            self.ready.load(Ordering::Relaxed),
            self.initial_failed.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
            self.got_first.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.back.load(Ordering::Relaxed),
            self.recovered.load(Ordering::Relaxed),
            self.not_recovered.load(Ordering::Relaxed),
            self.connect_errors.load(Ordering::Relaxed),
            self.gaps.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            if ports.is_empty() {
                "-".to_owned()
            } else {
                ports.join(",")
            },
        )
    }
}

/// One lost connection and what followed.
#[derive(Debug, Clone)]
struct Loss {
    at_us: u64,
    reason: String,
    /// When the next CONNECT was answered.
    back_us: Option<u64>,
    recovered: Option<bool>,
    attempts: u32,
    port: Option<u16>,
    /// Missed packets replayed before the CONNECT answer.
    replayed: u64,
    /// When the attempt that got through started (after its backoff delay), and when its
    /// Engine.IO session was open (the WebSocket upgraded through the proxy).
    attempt_us: Option<u64>,
    opened_us: Option<u64>,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Client {
    pid: Option<String>,
    offset: Option<String>,
    /// Next sequence number expected.
    next: u64,
    ticks: u64,
    gaps: u64,
    gap_events: u64,
    duplicates: u64,
    /// The next tick starts a new baseline (the session is new: what it skipped is lost, not a
    /// gap).
    resync: bool,
    lost_unrecovered: u64,
    first_port: Option<u16>,
    port: Option<u16>,
    drops: Vec<Loss>,
    connect_errors: u32,
    last_error: Option<String>,
}

impl Client {
    fn on_event(&mut self, text: &str, event: &str, sh: &Shared) {
        let Some(body) = text.strip_prefix("42") else {
            return;
        };
        let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) else {
            return;
        };
        if args.first().and_then(Value::as_str) != Some(event) {
            return;
        }
        if self.pid.is_some()
            && let Some(Value::String(offset)) = args.last()
            && args.len() > 1
        {
            self.offset = Some(offset.clone());
        }
        let Some(seq) = args.get(1).and_then(|d| d.get("seq")).and_then(Value::as_u64) else {
            return;
        };
        if self.ticks == 0 {
            sh.got_first.fetch_add(1, Ordering::Relaxed);
        }
        self.ticks += 1;
        if let Some(d) = self.drops.last_mut()
            && d.back_us.is_none()
        {
            d.replayed += 1;
        }
        if seq == self.next {
            self.next += 1;
            self.resync = false;
        } else if seq > self.next {
            if self.resync {
                self.lost_unrecovered += seq - self.next;
                self.resync = false;
            } else {
                self.gaps += seq - self.next;
                self.gap_events += 1;
                sh.gaps.fetch_add(seq - self.next, Ordering::Relaxed);
            }
            self.next = seq + 1;
        } else {
            self.duplicates += 1;
            sh.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// xorshift64*, for the reconnection jitter.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Params {
    args: FailoverArgs,
    start: Instant,
    /// The last sequence number published, once known.
    last: watch::Receiver<Option<u64>>,
}

impl Params {
    fn out_of_time(&self) -> bool {
        self.start.elapsed() > Duration::from_secs(self.args.deadline)
    }
}

enum End {
    /// The connection could not be opened or the namespace was refused.
    Failed(String),
    /// It was open and got lost.
    Lost(String),
    /// The run is over.
    Done,
}

/// Opens the Engine.IO session: the heartbeat bound (ping interval + timeout).
async fn open(target: SocketAddr, source: u8) -> Result<(Ws, Duration), String> {
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
    // tungstenite zeroes its whole read buffer (128 KiB by default) before every read: with
    // thousands of connections in one process that memset is most of the load generator's CPU.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let open = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => return Err(format!("no open packet: {other:?}")),
    };
    let info: Value = open
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| format!("bad open packet {open}"))?;
    let ms = |k: &str| info.get(k).and_then(Value::as_u64).unwrap_or(25_000);
    Ok((ws, Duration::from_millis(ms("pingInterval") + ms("pingTimeout"))))
}

/// The next text frame that is not a ping (answered here).
async fn read(ws: &mut Ws, heartbeat: Duration) -> Result<String, String> {
    loop {
        match timeout(heartbeat, ws.next()).await {
            Err(_) => return Err("ping timeout".into()),
            Ok(None) => return Err("transport close".into()),
            Ok(Some(Err(e))) => return Err(format!("transport error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| format!("transport error: {e}"))?;
            }
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Close(_)))) => return Err("transport close".into()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sends `42<id><body>` and waits for its ack, handling events meanwhile.
async fn call(
    ws: &mut Ws,
    heartbeat: Duration,
    c: &mut Client,
    sh: &Shared,
    event: &str,
    id: u64,
    body: &str,
) -> Result<Value, String> {
    ws.send(Message::text(format!("42{id}{body}")))
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let prefix = format!("43{id}");
    loop {
        let t = read(ws, heartbeat).await?;
        if let Some(rest) = t.strip_prefix(&prefix)
            && rest.starts_with('[')
        {
            let v: Value = serde_json::from_str(rest).map_err(|e| format!("bad ack: {e}"))?;
            return Ok(v.get(0).cloned().unwrap_or(Value::Null));
        }
        if t.starts_with("42") {
            c.on_event(&t, event, sh);
        } else if t.starts_with("41") {
            return Err("io server disconnect".into());
        }
    }
}

/// One connection, from opening to its loss (or the end of the run).
/// `permit` (the gate of the first connections) is let go once connected.
async fn session(
    c: &mut Client,
    p: &Params,
    sh: &Shared,
    source: u8,
    first: bool,
    permit: &mut Option<tokio::sync::SemaphorePermit<'_>>,
) -> End {
    let a = &p.args;
    let attempt_us = now_us();
    let opened = timeout(Duration::from_secs(20), open(a.target, source)).await;
    let (mut ws, hb) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return End::Failed(e),
        Err(_) => return End::Failed("connect timeout".into()),
    };
    let opened_us = now_us();
    let connect = match (&c.pid, &c.offset) {
        (Some(pid), Some(offset)) => json!({"pid": pid, "offset": offset}).to_string(),
        (Some(pid), None) => json!({"pid": pid}).to_string(),
        _ => String::new(),
    };
    if ws.send(Message::text(format!("40{connect}"))).await.is_err() {
        return End::Failed("send CONNECT".into());
    }
    // Missed packets come before the CONNECT answer.
    let answer = loop {
        let t = match timeout(Duration::from_secs(20), read(&mut ws, hb)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return End::Failed(e),
            Err(_) => return End::Failed("CONNECT timeout".into()),
        };
        if let Some(body) = t.strip_prefix("40") {
            break serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
        }
        if t.starts_with("44") {
            return End::Failed(format!("connect error {t}"));
        }
        if t.starts_with("42") {
            c.on_event(&t, &a.event, sh);
        }
    };
    let back_us = now_us();
    let pid = answer.get("pid").and_then(Value::as_str).map(str::to_owned);
    let recovered = pid.is_some() && pid == c.pid;
    c.pid = pid;
    if !recovered {
        c.offset = None;
    }
    let mut id = 0;
    if !recovered {
        id += 1;
        let body = json!(["join", a.room]).to_string();
        match call(&mut ws, hb, c, sh, &a.event, id, &body).await {
            Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {}
            Ok(v) => return End::Failed(format!("join refused: {v}")),
            Err(e) => return End::Failed(e),
        }
        if !first {
            c.resync = true;
        }
    }
    id += 1;
    let port = match call(&mut ws, hb, c, sh, &a.event, id, r#"["node-info"]"#).await {
        Ok(v) => v.get("port").and_then(Value::as_u64).map(|p| p as u16),
        Err(e) => return End::Failed(e),
    };
    if let Some(port) = port {
        sh.port_delta(port, true);
    }
    c.port = port;
    permit.take();
    sh.connected.fetch_add(1, Ordering::Relaxed);
    if first {
        c.first_port = port;
        sh.ready.fetch_add(1, Ordering::Relaxed);
    } else if let Some(d) = c.drops.last_mut()
        && d.back_us.is_none()
    {
        d.back_us = Some(back_us);
        d.attempt_us = Some(attempt_us);
        d.opened_us = Some(opened_us);
        d.recovered = Some(recovered);
        d.port = port;
        if c.drops.len() == 1 {
            sh.back.fetch_add(1, Ordering::Relaxed);
            if recovered {
                sh.recovered.fetch_add(1, Ordering::Relaxed);
            } else {
                sh.not_recovered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let lost = |sh: &Shared, why: String| {
        sh.connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(port) = port {
            sh.port_delta(port, false);
        }
        End::Lost(why)
    };
    let mut last = p.last.clone();
    let mut drain_until: Option<Instant> = None;
    loop {
        if let Some(last) = *last.borrow()
            && c.next > last
        {
            sh.parked.lock().push(ws);
            return End::Done;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) || p.out_of_time() {
            sh.parked.lock().push(ws);
            return End::Done;
        }
        let wake = drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = timeout(hb, ws.next()) => match r {
                Err(_) => return lost(sh, "ping timeout".into()),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return lost(sh, "transport close".into()),
                Ok(Some(Err(e))) => return lost(sh, format!("transport error: {e}")),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if t.as_str() == "2" {
                        if ws.send(Message::text("3")).await.is_err() {
                            return lost(sh, "transport error: pong".into());
                        }
                    } else if t.starts_with("42") {
                        c.on_event(t.as_str(), &a.event, sh);
                    } else if t.starts_with("41") {
                        return lost(sh, "io server disconnect".into());
                    }
                }
                Ok(Some(Ok(_))) => {}
            },
            changed = last.changed() => {
                if changed.is_ok() && drain_until.is_none() {
                    drain_until = Some(Instant::now() + Duration::from_secs(a.drain));
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

async fn run_client(i: usize, p: Arc<Params>, sh: Arc<Shared>, gate: Arc<Semaphore>) -> Client {
    let a = &p.args;
    let source = a.first_source + (i % a.sources.max(1) as usize) as u8;
    let mut rng = Rng((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_us() | 1);
    let mut c = Client::default();
    // The first connection, a few at a time (and a few tries: the run needs them all).
    {
        let mut permit = gate.acquire().await.ok();
        let mut tries = 0;
        loop {
            match session(&mut c, &p, &sh, source, true, &mut permit).await {
                End::Failed(e) => {
                    tries += 1;
                    c.connect_errors += 1;
                    sh.connect_errors.fetch_add(1, Ordering::Relaxed);
                    c.last_error = Some(e);
                    if tries >= 5 || p.out_of_time() {
                        sh.initial_failed.fetch_add(1, Ordering::Relaxed);
                        return c;
                    }
                    sleep(Duration::from_millis(500)).await;
                }
                End::Lost(why) => {
                    c.drops.push(Loss {
                        at_us: now_us(),
                        reason: why,
                        back_us: None,
                        recovered: None,
                        attempts: 0,
                        port: None,
                        replayed: 0,
                        attempt_us: None,
                        opened_us: None,
                    });
                    if c.drops.len() == 1 {
                        sh.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                End::Done => return c,
            }
        }
    }
    // Lost: reconnect with socket.io-client's backoff until the run ends.
    let mut attempt: u32 = 0;
    loop {
        if p.out_of_time() || sh.over.load(Ordering::Relaxed) {
            return c;
        }
        let base = (a.reconnect_delay_ms as f64 * 2f64.powi(attempt.min(16) as i32))
            .min(a.reconnect_delay_max_ms as f64);
        let jitter = a.randomization.clamp(0.0, 1.0) * (2.0 * rng.next_f64() - 1.0);
        sleep(Duration::from_millis((base * (1.0 + jitter)).max(0.0) as u64)).await;
        attempt += 1;
        if let Some(d) = c.drops.last_mut() {
            d.attempts = attempt;
        }
        match session(&mut c, &p, &sh, source, false, &mut None).await {
            End::Failed(e) => {
                c.connect_errors += 1;
                sh.connect_errors.fetch_add(1, Ordering::Relaxed);
                c.last_error = Some(e);
            }
            End::Lost(why) => {
                attempt = 0;
                c.drops.push(Loss {
                    at_us: now_us(),
                    reason: why,
                    back_us: None,
                    recovered: None,
                    attempts: 0,
                    port: None,
                    replayed: 0,
                    attempt_us: None,
                    opened_us: None,
                });
            }
            End::Done => return c,
        }
    }
}

fn write_status(path: &PathBuf, line: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, line).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

pub async fn run(args: FailoverArgs) {
    let (tx, rx) = watch::channel(None);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let sh = Arc::new(Shared::default());
    let n = args.clients;
    let status = args.status.clone();
    let control = args.control.clone();
    let p = Arc::new(Params {
        args,
        start: Instant::now(),
        last: rx,
    });
    // Progress, and the end signal.
    let watcher = {
        let sh = sh.clone();
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                write_status(&status, &sh.status_line());
                if tx.borrow().is_none()
                    && let Ok(text) = std::fs::read_to_string(&control)
                    && let Ok(last) = text.trim().parse::<u64>()
                {
                    let _ = tx.send(Some(last));
                }
                if p.out_of_time() {
                    sh.over.store(true, Ordering::Relaxed);
                }
                sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        set.spawn(run_client(i, p.clone(), sh.clone(), gate.clone()));
    }
    // Once the end is known, clients still reconnecting are waited for `drain` seconds.
    let stopper = {
        let sh = sh.clone();
        let p = p.clone();
        tokio::spawn(async move {
            let mut last = p.last.clone();
            while last.borrow().is_none() {
                if last.changed().await.is_err() {
                    return;
                }
            }
            sleep(Duration::from_secs(p.args.drain)).await;
            sh.over.store(true, Ordering::Relaxed);
        })
    };
    let mut clients = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        if let Ok(c) = r {
            clients.push(c);
        }
    }
    stopper.abort();
    write_status(&p.args.status, &sh.status_line());
    watcher.abort();
    let last = *p.last.borrow();
    let mut summary = json!({
        "scenario": "failover-clients",
        "clients": n,
        "finished": clients.len(),
        "last_published": last,
    });
    let (mut gaps, mut dups, mut tail) = (0u64, 0u64, 0u64);
    for (i, c) in clients.iter().enumerate() {
        let missing_tail = last.map_or(0, |l| (l + 1).saturating_sub(c.next));
        gaps += c.gaps;
        dups += c.duplicates;
        tail += missing_tail;
        let drops: Vec<Value> = c
            .drops
            .iter()
            .map(|d| {
                json!({"at_us": d.at_us, "reason": d.reason, "back_us": d.back_us,
                       "recovered": d.recovered, "attempts": d.attempts, "port": d.port,
                       "replayed": d.replayed, "attempt_us": d.attempt_us,
                       "opened_us": d.opened_us})
            })
            .collect();
        report(json!({
            "client": i,
            "first_port": c.first_port,
            "port": c.port,
            "ticks": c.ticks,
            "next": c.next,
            "gaps": c.gaps,
            "gap_events": c.gap_events,
            "duplicates": c.duplicates,
            "lost_unrecovered": c.lost_unrecovered,
            "missing_tail": missing_tail,
            "connect_errors": c.connect_errors,
            "last_error": c.last_error,
            "drops": drops,
        }));
    }
    summary["gaps"] = json!(gaps);
    summary["duplicates"] = json!(dups);
    summary["missing_tail"] = json!(tail);
    summary["status"] = json!(sh.status_line().trim());
    report(summary);
    // Dropping the parked connections closes them as the process ends.
    drop(std::mem::take(&mut *sh.parked.lock()));
}
