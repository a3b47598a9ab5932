//! The edge under attack, each against a real `ferrio serve` with authentication: stalled
//! polling bodies, CONNECTs that would create namespaces without a token, tokens scoped to
//! namespaces, and handshakes that never authenticate. Each test reproduces an attack that
//! held memory, descriptors or slots before the bounds existed.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Authentication on, every connection limit off but those given.
fn edge_config(extra_limits: &str, extra: &str) -> String {
    format!(
        "{extra}{}[rooms]\njoin = [\"chat:*\"]\n[limits]\nconnection_rate_per_ip = 0\n{extra_limits}\n",
        hs_config()
    )
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A polling handshake from 127.0.0.`source`: the session id, or the refusal's status.
async fn polling_session(server: &Server, source: u8) -> Result<String, u16> {
    let res = get(server, source, POLLING, &[]).await.expect("no answer");
    if res.status != 200 {
        return Err(res.status);
    }
    let open: Value = serde_json::from_str(&res.body[1..]).unwrap();
    Ok(open["sid"].as_str().unwrap().to_owned())
}

/// Starts a POST on session `sid` that declares `declared` bytes and sends `sent`, then stops.
async fn stalled_post(server: &Server, source: u8, sid: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = tcp_from(source, server.addr).await;
    let head = format!(
        "POST {POLLING}&sid={sid} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {declared}\r\n\r\n",
        server.addr
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let body = vec![b'4'; sent];
    // The server may refuse midway and close; what matters is what it holds.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
    stream
}

/// Whether the server ended the request on `stream` (an answer or a close) within `limit`.
async fn ended_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    // Any answer (408, 400, ...) ends the request; a close or reset too.
    tokio::time::timeout(limit, stream.read(&mut buf)).await.is_ok()
}

/// A client with a token on `nsp`: its WebSocket after the CONNECT answer.
async fn member(server: &Server, source: u8, nsp: &str, token: &str) -> (Ws, String) {
    let mut ws = ws_from(server, source, &[]).await.expect("upgrade");
    let open = next_text(&mut ws).await.expect("open");
    assert!(open.starts_with('0'));
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    ws.send(Message::text(format!("40{prefix}{}", json!({ "token": token }))))
        .await
        .unwrap();
    let answer = next_text(&mut ws).await.expect("CONNECT answer");
    (ws, answer)
}

/// One `join` round trip with ack id `id`: how long it took.
async fn round_trip(ws: &mut Ws, id: u32) -> Duration {
    let started = Instant::now();
    ws.send(Message::text(format!("42{id}[\"join\",\"chat:{id}\"]")))
        .await
        .unwrap();
    let answer = next_text(ws).await.expect("closed");
    assert_eq!(answer, format!("43{id}[{{\"ok\":true}}]"));
    started.elapsed()
}

#[tokio::test]
async fn stalled_polling_bodies_are_bounded_in_memory_and_time() {
    let server = Server::start(&edge_config(
        "body_timeout = \"3s\"\nmax_pending_sessions_per_ip = 400",
        "",
    ))
    .await;
    let pid = server.pid();
    let (mut legit, answer) = member(&server, 30, "/", &hs(claims("alice"))).await;
    assert!(answer.starts_with("40"), "{answer}");
    round_trip(&mut legit, 1).await;
    let (rss_before, files_before) = (rss_kib(pid), open_files(pid));

    // 300 sessions from one address, each with a POST that stops short: half declare ~1 MB
    // (refused at once: a session without a namespace may send 64 KiB), half 60 KB (held
    // until the deadline, within the address's share of body bytes).
    let started = Instant::now();
    let mut stalled = Vec::new();
    let mut slowest = Duration::ZERO;
    let (mut peak_rss, mut peak_files) = (rss_before, files_before);
    for i in 0..300u32 {
        let sid = polling_session(&server, 20).await.expect("a session");
        let (declared, sent) = if i % 2 == 0 {
            (1_000_000, 998_000)
        } else {
            (60_000, 59_000)
        };
        stalled.push(stalled_post(&server, 20, &sid, declared, sent).await);
        if i == 150 {
            // A new client connects in the middle of it.
            let joined = Instant::now();
            let (_late, answer) = member(&server, 31, "/", &hs(claims("bob"))).await;
            assert!(answer.starts_with("40"), "{answer}");
            slowest = slowest.max(joined.elapsed());
        }
        if i % 25 == 0 {
            slowest = slowest.max(round_trip(&mut legit, 100 + i).await);
            peak_rss = peak_rss.max(rss_kib(pid));
            peak_files = peak_files.max(open_files(pid));
        }
    }
    peak_rss = peak_rss.max(rss_kib(pid));
    eprintln!(
        "stalled bodies: RSS {rss_before} KiB -> peak {peak_rss} KiB, open files {files_before} -> peak {peak_files}, sent in {:?}",
        started.elapsed()
    );
    assert!(
        peak_rss < rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {peak_rss} KiB"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "a legitimate round trip took {slowest:?}"
    );

    // Every stalled request ends by its deadline (3 s after it started) + 2 s.
    let deadline = started + Duration::from_secs(3) + Duration::from_secs(2) + Duration::from_secs(1);
    for (i, stream) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(ended_within(stream, left).await, "stalled request {i} still open");
    }
    drop(stalled);
    assert!(round_trip(&mut legit, 999).await < Duration::from_millis(100));
    // What the server holds goes back down once they have ended.
    let settle = Instant::now() + STEP;
    while open_files(pid) > files_before + 5 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_files(pid) <= files_before + 5,
        "{} open files, {files_before} before",
        open_files(pid)
    );
    let metrics = get(&server, 30, "/metrics", &[]).await.unwrap().body;
    assert!(
        metrics.contains("ferrio_bodies_refused_total{reason=\"timed_out\"}"),
        "the refused bodies are counted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_outlives_its_session_ends_with_it() {
    let server = Server::start(&edge_config(
        "body_timeout = \"30s\"\nbody_min_rate = 0\npending_timeout = \"1s\"",
        "",
    ))
    .await;
    let sid = polling_session(&server, 21).await.unwrap();
    let mut stream = stalled_post(&server, 21, &sid, 10_000, 100).await;
    // The session never connects a namespace: it closes after 1 s, and the POST with it.
    let ended = ended_within(&mut stream, Duration::from_secs(4)).await;
    let log = server.stop().await;
    assert!(ended, "the POST outlived its session:\n{log}");
}

fn series(metrics: &str, name: &str) -> usize {
    metrics.lines().filter(|l| l.starts_with(name)).count()
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn namespaces_are_created_only_by_authenticated_connects_and_removed_when_empty() {
    let server = Server::start(&edge_config(
        "namespace_grace = \"1s\"\nmax_namespaces = 3",
        "namespaces = [\"/\", \"/tenant-*\"]\n",
    ))
    .await;
    // 400 CONNECTs to new tenant namespaces without a token (or with a forged one), over a
    // few connections. The first hundred register what every connection's metrics need.
    let mut before = String::new();
    for batch in 0..4u32 {
        if batch == 1 {
            before = get(&server, 1, "/metrics", &[]).await.unwrap().body;
            assert_eq!(gauge(&before, "ferrio_namespaces "), 1.0, "{before}");
        }
        let mut ws = ws_from(&server, 22, &[]).await.expect("upgrade");
        assert!(next_text(&mut ws).await.unwrap().starts_with('0'));
        for i in 0..100u32 {
            let auth = if i % 2 == 0 {
                String::new()
            } else {
                json!({ "token": "eyJhbGciOiJIUzI1NiJ9.e30.forged" }).to_string()
            };
            let nsp = format!("/tenant-{batch}-{i}");
            ws.send(Message::text(format!("40{nsp},{auth}"))).await.unwrap();
            let answer = next_text(&mut ws).await.expect("CONNECT answer");
            assert!(answer.starts_with(&format!("44{nsp},")), "{answer}");
        }
    }
    let after = get(&server, 1, "/metrics", &[]).await.unwrap().body;
    assert_eq!(
        gauge(&after, "ferrio_namespaces "),
        1.0,
        "no namespace was created"
    );
    assert_eq!(
        series(&after, "ferrio_sockets{"),
        series(&before, "ferrio_sockets{")
    );
    let names = |m: &str| -> std::collections::BTreeSet<String> {
        m.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect()
    };
    // (A disconnect reason may first appear late: its label values are a fixed set.)
    let new: Vec<String> = names(&after)
        .difference(&names(&before))
        .filter(|n| !n.starts_with("ferrio_disconnects_total"))
        .cloned()
        .collect();
    assert!(new.is_empty(), "new series: {new:?}");
    assert!(
        after.len() < before.len() + 512,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );

    // A token scoped to one tenant is refused on another and accepted on its own.
    let scoped = hs(json!({ "sub": "bob", "exp": now() + 3600, "namespaces": ["/tenant-a"] }));
    let (_refused, answer) = member(&server, 23, "/tenant-b", &scoped).await;
    assert_eq!(
        error_reason(&answer, "/tenant-b"),
        "namespace_forbidden",
        "{answer}"
    );
    let (mut bob, answer) = member(&server, 23, "/tenant-a", &scoped).await;
    assert!(answer.starts_with("40/tenant-a,"), "{answer}");
    let (_root, answer) = member(&server, 23, "/", &scoped).await;
    assert!(
        answer.starts_with("44"),
        "the claim scopes the root namespace too: {answer}"
    );
    let metrics = get(&server, 1, "/metrics", &[]).await.unwrap().body;
    assert_eq!(gauge(&metrics, "ferrio_namespaces "), 2.0);
    assert!(
        metrics.contains("ferrio_sockets{namespace=\"/tenant-*\"} 1"),
        "dynamic namespaces are counted under their pattern"
    );
    assert!(!metrics.contains("namespace=\"/tenant-a\""));

    // The cap counts namespaces made on demand: /tenant-a and two more fit, the next is
    // refused.
    let open = hs(claims("carol"));
    let (_c1, a1) = member(&server, 24, "/tenant-c", &open).await;
    let (_c2, a2) = member(&server, 24, "/tenant-d", &open).await;
    let (_c3, a3) = member(&server, 24, "/tenant-e", &open).await;
    assert!(a1.starts_with("40") && a2.starts_with("40"), "{a1} {a2}");
    assert!(a3.starts_with("44/tenant-e,"), "{a3}");
    assert!(a3.contains("too many namespaces"), "{a3}");

    // Bob leaves /tenant-a: it is gone after the grace period.
    bob.send(Message::text("41/tenant-a,")).await.unwrap();
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = get(&server, 1, "/metrics", &[]).await.unwrap().body;
        if gauge(&metrics, "ferrio_namespaces ") == 3.0 {
            break;
        }
        assert!(Instant::now() < gone_by, "the empty namespace stayed:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// The `data.reason` of a CONNECT_ERROR for `nsp` (`44/nsp,{...}`).
fn error_reason(packet: &str, nsp: &str) -> String {
    let body = packet
        .strip_prefix(&format!("44{nsp},"))
        .unwrap_or_else(|| panic!("expected a CONNECT_ERROR for {nsp}: {packet}"));
    let v: Value = serde_json::from_str(body).unwrap();
    v["data"]["reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn handshakes_without_a_token_cannot_take_the_places_of_authenticated_clients() {
    let server = Server::start(&edge_config(
        "max_connections = 5\nmax_pending_sessions = 50\nmax_pending_sessions_per_ip = 20\npending_timeout = \"2s\"",
        "",
    ))
    .await;
    // Four addresses × 25 handshakes with no token: 20 from each are admitted, the rest
    // refused; past the node's 50 pending places, a new handshake displaces the oldest pending
    // session of the address that holds the most.
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for source in 40..44u8 {
        for _ in 0..25 {
            match polling_session(&server, source).await {
                Ok(sid) => admitted.push((source, sid)),
                Err(status) => refused.push((source, status)),
            }
        }
    }
    assert!(admitted.len() >= 80, "{} admitted: {refused:?}", admitted.len());
    assert!(refused.iter().all(|&(_, s)| s == 429), "per address: {refused:?}");
    // The pending places are all taken and max_connections = 5: five authenticated clients
    // still connect.
    let mut members = Vec::new();
    for source in 50..55u8 {
        let sub = format!("user{source}");
        let (ws, answer) = member(&server, source, "/", &hs(claims(&sub))).await;
        assert!(answer.starts_with("40"), "{answer}");
        members.push(ws);
    }
    // ... and max_connections holds for them.
    assert_eq!(ws_from(&server, 56, &[]).await.err(), Some(503));

    // The pending sessions are closed after pending_timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (source, sid) in admitted.iter().take(10) {
        let res = get(&server, *source, &format!("{POLLING}&sid={sid}"), &[])
            .await
            .unwrap();
        // Closed: its next poll carries the close packet, or the session is gone already.
        assert!(
            (res.status == 200 && res.body == "1") || res.status == 400,
            "session {sid} still open: {} {}",
            res.status,
            res.body
        );
    }
    // Their places are free again (and, once a member leaves, the node has room for one more).
    drop(members.pop());
    let deadline = Instant::now() + STEP;
    loop {
        match polling_session(&server, 40).await {
            Ok(_) => break,
            Err(503) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => panic!("refused: {status}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_api_body_gets_408_at_its_deadline() {
    let server = Server::start(
        &edge_config("body_timeout = \"2s\"\nbody_min_rate = 0", "").replace(
            "[limits]",
            &format!("[api]\nkeys = [\"{}\"]\n[limits]", crate::api::API_KEY),
        ),
    )
    .await;
    let mut stream = tcp_from(25, server.addr).await;
    let head = format!(
        "POST /api/emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event\":",
        crate::api::API_KEY
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let res = read_response(&mut stream).await.expect("an answer");
    assert_eq!(res.status, 408, "{}", res.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.json()["error"], "timed_out");
    server.stop().await;
}

/// The `ferrio_connections{transport="polling"}` gauge.
async fn polling_connections(server: &Server) -> f64 {
    let metrics = get(server, 1, "/metrics", &[]).await.unwrap().body;
    gauge(&metrics, "ferrio_connections{transport=\"polling\"} ")
}

/// A WebSocket handshake over HTTP/1.0: answered, but never upgraded.
async fn abandoned_upgrade(server: &Server, source: u8) -> u16 {
    let mut stream = tcp_from(source, server.addr).await;
    let req = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let status = read_response(&mut stream).await.map_or(0, |r| r.status);
    drop(stream);
    status
}

#[tokio::test]
async fn the_pending_budget_cannot_be_leaked_or_bypassed() {
    let server = Server::start(&edge_config(
        "max_pending_sessions = 4\nmax_pending_sessions_per_ip = 2\nmax_connections_per_ip = 3",
        "",
    ))
    .await;
    // Upgrades answered but never completed give their places back: the budget is not left
    // full of reservations.
    for source in [60, 61, 62, 63] {
        for _ in 0..2 {
            abandoned_upgrade(&server, source).await;
        }
    }
    let (mut ws, answer) = member(&server, 64, "/", &hs(claims("alice"))).await;
    assert!(answer.starts_with("40"), "{answer}");
    round_trip(&mut ws, 1).await;
    drop(ws);

    // A malformed handshake is never counted, so it never evicts anyone.
    let mut first = Vec::new();
    for source in [65, 66] {
        for _ in 0..2 {
            first.push(polling_session(&server, source).await.expect("within the budget"));
        }
    }
    let bad = get(&server, 67, "/socket.io/?EIO=3&transport=polling", &[])
        .await
        .unwrap();
    assert_eq!(bad.status, 400);

    // Handshakes from two addresses in turn, past both budgets: each is admitted by evicting
    // one, or refused (and then evicts nobody). No more sessions stay open than the budget.
    for i in 0..30u8 {
        let _ = polling_session(&server, 68 + i % 2).await;
    }
    // An evicted polling session finishes within its close grace (3 s).
    let settled = Instant::now() + STEP;
    let mut open = polling_connections(&server).await;
    while open > 4.0 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
        open = polling_connections(&server).await;
    }
    assert!(open <= 4.0, "{open} polling sessions open with 4 pending places");
    let log = server.stop().await;
    assert!(
        log.contains("limits.pending_evicted="),
        "evictions are counted: {log}"
    );
}

#[tokio::test]
async fn messages_before_the_first_connect_are_small() {
    let server = Server::start(&edge_config("max_payload_before_connect = 1024", "")).await;
    // Before a CONNECT: a 2 KB message closes the connection with 1009.
    let mut ws = ws_from(&server, 70, &[]).await.unwrap();
    assert!(next_text(&mut ws).await.unwrap().starts_with('0'));
    ws.send(Message::text(format!("4{}", "x".repeat(2048))))
        .await
        .unwrap();
    let closed = loop {
        match tokio::time::timeout(STEP, futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed, Some(1009));
    // After it, max_payload applies: the same size is accepted.
    let (mut member, answer) = member(&server, 71, "/", &hs(claims("alice"))).await;
    assert!(answer.starts_with("40"), "{answer}");
    member
        .send(Message::text(format!("42[\"note\",\"{}\"]", "x".repeat(2048))))
        .await
        .unwrap();
    round_trip(&mut member, 2).await;
    server.stop().await;
}
