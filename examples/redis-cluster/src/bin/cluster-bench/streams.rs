//! Helpers of the streams-mode benchmarks (`bench/cluster memory` and `failover`):
//!
//! * `publish`: N `publish` events (the built-in `{room, event, data}`) as fast as a window
//!   of unanswered ones allows; each answer says whether Redis took it.
//! * `sessions`: N connections, each joining some rooms, held until killed (their sessions
//!   stay in Redis).
//! * `feed`: a steady publish of `{seq, t}` at a rate, until a stop file appears.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, connect, next_text, now_us, open_many, report};

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[arg(long)]
    target: std::net::SocketAddr,
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    #[arg(long, default_value = "r1")]
    room: String,
    #[arg(long, default_value = "msg")]
    event: String,
    /// The event's argument (JSON).
    #[arg(long, default_value = r#"{"text":"hello world","user":"u1"}"#)]
    data: String,
    /// Publishes not yet answered, at most.
    #[arg(long, default_value_t = 64)]
    window: u64,
    #[arg(long, default_value_t = 1)]
    source: u8,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
}

/// `43<id>[answer]` → (id, answer).
fn ack(text: &str) -> Option<(u64, Value)> {
    let rest = text.strip_prefix("43")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok()?;
    let v: Value = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, v.get(0).cloned().unwrap_or(Value::Null)))
}

pub async fn publish(a: PublishArgs) {
    let data: Value = match serde_json::from_str(&a.data) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("--data is not JSON: {e}");
            std::process::exit(2);
        }
    };
    let mut ws = match connect(a.target, a.source).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("publisher: {e}");
            std::process::exit(1);
        }
    };
    let end = Instant::now() + Duration::from_secs(a.deadline);
    let t0 = Instant::now();
    let (mut sent, mut answered, mut ok) = (0u64, 0u64, 0u64);
    let mut first_error: Option<Value> = None;
    while answered < a.messages && Instant::now() < end {
        while sent < a.messages && sent - answered < a.window.max(1) {
            sent += 1;
            let msg = json!(["publish", {"room": a.room, "event": a.event, "data": data}]);
            if ws.send(Message::text(format!("42{sent}{msg}"))).await.is_err() {
                eprintln!("publisher: connection lost");
                break;
            }
        }
        match next_text(&mut ws).await {
            Ok(t) => {
                if let Some((_, v)) = ack(&t) {
                    answered += 1;
                    if v.get("ok") == Some(&Value::Bool(true)) {
                        ok += 1;
                    } else if first_error.is_none() {
                        first_error = Some(v);
                    }
                }
            }
            Err(e) => {
                eprintln!("publisher: {e}");
                break;
            }
        }
    }
    report(json!({
        "scenario": "publish",
        "messages": a.messages,
        "sent": sent,
        "answered": answered,
        "ok": ok,
        "first_error": first_error,
        "seconds": t0.elapsed().as_secs_f64(),
    }));
}

#[derive(clap::Args, Debug)]
pub struct SessionsArgs {
    #[arg(long)]
    target: std::net::SocketAddr,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, default_value_t = 8)]
    sources: u8,
    #[arg(long, default_value_t = 10)]
    first_source: u8,
    /// Rooms each connection joins; `{i}` is replaced by the connection's number.
    #[arg(long, value_delimiter = ',', default_value = "lobby,user:{i}")]
    rooms: Vec<String>,
    /// Seconds to hold the connections (the benchmark kills the process before).
    #[arg(long, default_value_t = 600)]
    hold: u64,
}

async fn join_all(ws: &mut Ws, rooms: &[String], i: usize) -> Result<(), String> {
    for (n, room) in rooms.iter().enumerate() {
        let room = room.replace("{i}", &i.to_string());
        let id = n + 1;
        ws.send(Message::text(format!("42{id}{}", json!(["join", room]))))
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            let t = next_text(ws).await?;
            if let Some((got, v)) = ack(&t)
                && got == id as u64
            {
                if v.get("ok") != Some(&Value::Bool(true)) {
                    return Err(format!("join refused: {v}"));
                }
                break;
            }
        }
    }
    Ok(())
}

pub async fn sessions(a: SessionsArgs) {
    let (conns, failed) = open_many(a.target, a.connections, a.sources, a.first_source).await;
    let joined = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let n = conns.len();
    let rooms = Arc::new(a.rooms.clone());
    for (i, mut ws) in conns.into_iter().enumerate() {
        let (joined, refused, rooms) = (joined.clone(), refused.clone(), rooms.clone());
        tokio::spawn(async move {
            match join_all(&mut ws, &rooms, i).await {
                Ok(()) => joined.fetch_add(1, Ordering::Relaxed),
                Err(_) => refused.fetch_add(1, Ordering::Relaxed),
            };
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg
                    && t.as_str() == "2"
                    && ws.send(Message::text("3")).await.is_err()
                {
                    break;
                }
            }
        });
    }
    let end = Instant::now() + Duration::from_secs(120);
    while joined.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "ready connected={n} failed={failed} joined={} refused={}",
        joined.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
}

#[derive(clap::Args, Debug)]
pub struct FeedArgs {
    #[arg(long)]
    target: std::net::SocketAddr,
    #[arg(long, default_value = "feed")]
    room: String,
    #[arg(long, default_value = "tick")]
    event: String,
    /// Messages per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Publishing stops when this file appears.
    #[arg(long)]
    stop: PathBuf,
    /// Seconds to publish at most.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    #[arg(long, default_value_t = 2)]
    source: u8,
}

#[derive(Default)]
struct Answers {
    answered: u64,
    ok: u64,
    first_error: Option<Value>,
}

impl Answers {
    /// Counts an answer; true for a ping (to be answered).
    fn on_text(&mut self, t: &str) -> bool {
        if t == "2" {
            return true;
        }
        if let Some((_, v)) = ack(t) {
            self.answered += 1;
            if v.get("ok") == Some(&Value::Bool(true)) {
                self.ok += 1;
            } else if self.first_error.is_none() {
                self.first_error = Some(v);
            }
        }
        false
    }
}

pub async fn feed(a: FeedArgs) {
    let mut ws = match connect(a.target, a.source).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("feed: {e}");
            std::process::exit(1);
        }
    };
    let end = Instant::now() + Duration::from_secs(a.max_seconds);
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(0.01)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut answers = Answers::default();
    let mut lost = false;
    loop {
        if Instant::now() >= end || a.stop.exists() {
            break;
        }
        tokio::select! {
            _ = every.tick() => {
                let data = json!({"seq": sent, "t": now_us()});
                let msg = json!(["publish", {"room": a.room, "event": a.event, "data": data}]);
                if ws.send(Message::text(format!("42{}{msg}", sent + 1))).await.is_err() {
                    lost = true;
                    break;
                }
                sent += 1;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let pong = answers.on_text(t.as_str());
                    if pong && ws.send(Message::text("3")).await.is_err() {
                        lost = true;
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    lost = true;
                    break;
                }
            }
        }
    }
    // The last answers.
    let drain = Instant::now() + Duration::from_secs(5);
    while !lost && answers.answered < sent && Instant::now() < drain {
        match timeout(Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                answers.on_text(t.as_str());
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            _ => break,
        }
    }
    report(json!({
        "scenario": "feed",
        "published": sent,
        "last_seq": sent.checked_sub(1),
        "answered": answers.answered,
        "ok": answers.ok,
        "first_error": answers.first_error,
        "connection_lost": lost,
    }));
}
