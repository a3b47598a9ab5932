//! Redis failing under a running cluster: killed and restarted during a continuous
//! broadcast, and paused (SIGSTOP) for 5 s. No node exits or blocks, local delivery has no
//! gap, cross-node delivery resumes, what is delivered keeps the sender's order, and memory
//! stays bounded.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{Config, Io, Namespace};
use ferrio_redis::{Mode, RedisAdapter};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{Client, Node, Redis, WAIT, eventually, have_redis, node, serve, settle};

/// Broadcasts `tick(n)` to room `r` every `every` until stopped; returns how many it sent
/// and the longest a single broadcast call took.
fn ticker(ns: Namespace, every: Duration, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, Duration)> {
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut slowest = Duration::ZERO;
        let mut interval = tokio::time::interval(every);
        while !stop.load(Ordering::Relaxed) {
            interval.tick().await;
            let t0 = Instant::now();
            let _ = ns.to("r").emit("tick", json!(n));
            slowest = slowest.max(t0.elapsed());
            n += 1;
        }
        (n, slowest)
    })
}

/// Reads ticks into a list of (sequence, arrival) until `total` is known and reached, or
/// the client goes quiet.
async fn collect(mut client: Client, total: Arc<AtomicU64>) -> Vec<(u64, Instant)> {
    let mut got = Vec::new();
    loop {
        let Some(ev) = client.next(Duration::from_secs(3)).await else {
            return got;
        };
        if ev.name == "tick" {
            let n = ev.args[0].as_u64().expect("seq");
            got.push((n, Instant::now()));
            let t = total.load(Ordering::Acquire);
            if t > 0 && n + 1 >= t {
                return got;
            }
        }
    }
}

fn strictly_increasing(seq: &[u64]) -> bool {
    seq.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_survives_redis_restart() {
    if have_redis() {
        restart_during_broadcast(Mode::Classic).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_survives_redis_restart() {
    if have_redis() {
        restart_during_broadcast(Mode::Sharded).await;
    }
}

async fn restart_during_broadcast(mode: Mode) {
    let mut redis = Redis::start().await;
    let a = node(&redis.url(), mode, |ns| RoomEvents::default().install(ns)).await;
    let b = node(&redis.url(), mode, |ns| RoomEvents::default().install(ns)).await;
    let mut local = Client::connect(a.addr).await;
    let mut remote = Client::connect(b.addr).await;
    local.join("r").await;
    remote.join("r").await;
    settle(&[&a, &b]).await;

    let total = Arc::new(AtomicU64::new(0));
    let local_rx = tokio::spawn(collect(local, total.clone()));
    let remote_rx = tokio::spawn(collect(remote, total.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = ticker(a.io.of("/").expect("ns"), Duration::from_millis(10), stop.clone());

    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    eventually("node A notices", WAIT, || !a.redis.is_healthy()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart().await;
    let back = Instant::now();
    eventually("node A healthy again", Duration::from_secs(5), || {
        a.redis.is_healthy()
    })
    .await;
    eventually("node B healthy again", Duration::from_secs(5), || {
        b.redis.is_healthy()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, slowest) = sender.await.expect("ticker");
    total.store(sent, Ordering::Release);

    let local_got = local_rx.await.expect("local");
    let remote_got = remote_rx.await.expect("remote");
    let local_seq: Vec<u64> = local_got.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        local_seq,
        (0..sent).collect::<Vec<_>>(),
        "local delivery has no gap"
    );
    let remote_seq: Vec<u64> = remote_got.iter().map(|(n, _)| *n).collect();
    assert!(strictly_increasing(&remote_seq), "per-sender order across nodes");
    assert!(
        remote_seq.first() == Some(&0),
        "cross-node delivery before the outage"
    );
    assert_eq!(
        remote_seq.last(),
        Some(&(sent - 1)),
        "cross-node delivery after the outage"
    );
    let first_after = remote_got
        .iter()
        .find(|(_, at)| *at > back)
        .map(|(_, at)| at.duration_since(back))
        .expect("a tick crossed after Redis came back");
    assert!(
        first_after < Duration::from_secs(3),
        "resumed after {first_after:?}"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a broadcast waited {slowest:?}"
    );
    let stats = a.redis.stats();
    assert!(stats.publish_failed + stats.publish_rejected > 0, "{stats:?}");
    assert!(
        (remote_seq.len() as u64) < sent,
        "some ticks were lost during the outage"
    );
    assert!(b.redis.stats().subscriber_reconnects >= 1);

    // Both nodes still serve, and new clients cross nodes.
    let mut c1 = Client::connect(a.addr).await;
    let mut c2 = Client::connect(b.addr).await;
    c1.join("after").await;
    settle(&[&a, &b]).await;
    let (ok, _) = c2
        .call(
            "publish",
            vec![json!({"room": "after", "event": "hello", "data": 1})],
        )
        .await;
    assert_eq!(ok, vec![json!({"ok": true})]);
    c1.expect("hello").await;
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

const ISOLATED: &str = "FERRIO_REDIS_ISOLATED_TEST";

/// Memory is measured in a process of its own (this test binary, run again with only this
/// test), so other tests running in parallel cannot move the figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_times_out_publishes_and_memory_stays_flat() {
    if !have_redis() {
        return;
    }
    if std::env::var_os(ISOLATED).is_some() {
        return paused_redis().await;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args([
                "--exact",
                "faults::paused_redis_times_out_publishes_and_memory_stays_flat",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ISOLATED, "1")
            .output()
            .expect("run isolated")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "isolated run failed");
    assert!(text.contains("1 passed"), "the isolated test did not run");
}

async fn paused_redis() {
    let redis = Redis::start().await;
    let connect = |url: String| async move {
        RedisAdapter::builder(url)
            .mode(Mode::Classic)
            .publish_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .health_interval(Duration::from_millis(200))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .queue_limits(256, 4 << 20)
            .connect()
            .await
            .expect("connect")
    };
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..2 {
        let redis_f = connect(redis.url()).await;
        let io = Io::builder(Config::default())
            .adapter(redis_f.factory())
            .ns("/", |ns| RoomEvents::default().install(ns))
            .build();
        nodes.push(serve(io, redis_f).await);
    }
    for n in &nodes {
        eventually("healthy", WAIT, || n.redis.is_healthy()).await;
    }
    let mut local = Client::connect(nodes[0].addr).await;
    local.join("r").await;
    let mut remote = Client::connect(nodes[1].addr).await;
    remote.join("r").await;

    // 64 KiB messages at ~100/s: 32 MiB would pile up in 5 s if nothing bounded it.
    let big = "x".repeat(64 << 10);
    let ns = nodes[0].io.of("/").expect("ns");
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(ev) = local.next(Duration::from_secs(2)).await {
            if ev.name == "big" {
                n += 1;
            }
        }
        n
    });
    let remote_reader = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(ev) = remote.next(Duration::from_secs(8)).await {
            if ev.name == "big" {
                n += 1;
            }
        }
        n
    });
    let send_for = |secs: u64, ns: Namespace, big: String| async move {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut slowest = Duration::ZERO;
        let mut sent = 0u64;
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < end {
            interval.tick().await;
            let t0 = Instant::now();
            let _ = ns.to("r").emit("big", json!(big));
            slowest = slowest.max(t0.elapsed());
            sent += 1;
        }
        (sent, slowest)
    };
    let (warm, _) = send_for(1, ns.clone(), big.clone()).await;
    let before = rss_kb();
    let stats_before = nodes[0].redis.stats();
    redis.signal("STOP");
    let (paused, slowest) = send_for(5, ns.clone(), big.clone()).await;
    let during = rss_kb();
    let stats_paused = nodes[0].redis.stats();
    redis.signal("CONT");
    eventually("healthy after the pause", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.redis.is_healthy())
    })
    .await;
    let (after, _) = send_for(1, ns.clone(), big).await;
    let local_got = reader.await.expect("reader");
    let remote_got = remote_reader.await.expect("remote reader");
    eprintln!(
        "paused: rss before {before} kB, at the end of the pause {during} kB; sent {warm}+{paused}+{after}; \
         local got {local_got}, remote got {remote_got}; slowest broadcast {slowest:?}; \
         stats before {stats_before:?}, during {stats_paused:?}"
    );
    assert_eq!(
        local_got,
        warm + paused + after,
        "local delivery never waits on Redis"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a broadcast blocked for {slowest:?}"
    );
    let failed = (stats_paused.publish_failed + stats_paused.publish_rejected)
        - (stats_before.publish_failed + stats_before.publish_rejected);
    assert!(
        failed > paused / 2,
        "publishes during the pause fail and are counted ({failed} of {paused})"
    );
    assert!(
        during < before + 20 * 1024,
        "memory grew from {before} kB to {during} kB"
    );
    assert!(
        remote_got >= warm,
        "the other node got what was sent before the pause"
    );
}
