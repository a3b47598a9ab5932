//! Operations endpoints of a running `ferrio serve`: `/metrics` checked by `promtool`,
//! `/healthz` and `/readyz`, SIGTERM draining 1,000 connected clients within the deadline,
//! and SIGHUP reloading API keys, origins and limits without dropping connections.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{API_KEY, api_config, call, join, next_event, user};
use crate::support::*;

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_count_what_happened() {
    let server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    join(&mut alice, "chat:lobby").await;
    alice
        .send(Message::text("42[\"publish\",\"chat:lobby\",1]"))
        .await
        .unwrap();
    // An authentication refusal and an API call to count.
    let mut anon = ws_from(&server, 1, &[]).await.unwrap();
    let refused = sio_connect(&mut anon, Some(json!({ "token": "nope" }))).await;
    assert_eq!(connect_error_reason(&refused), "token_malformed");
    call(&server, "GET", "/api/stats", "").await;

    let res = get(&server, 1, "/metrics", &[]).await.unwrap();
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("text/plain"));
    let text = res.body;
    for needle in [
        "ferrio_connections{transport=\"websocket\"} 2",
        "ferrio_handshakes_total{transport=\"websocket\"}",
        "ferrio_events_received_total",
        "ferrio_bytes_received_total{transport=\"websocket\"}",
        "ferrio_delivery_seconds_bucket{le=",
        "ferrio_rejections_total{kind=\"auth\",reason=\"token_malformed\"} 1",
        "ferrio_rejections_total{kind=\"limits\",reason=\"event_rate\"} 0",
        "ferrio_api_requests_total{endpoint=\"stats\",status=\"200\"} 1",
        "ferrio_adapter_healthy 1",
        "ferrio_sockets{namespace=\"/\"} 1",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }

    let dir = TempDir::new("metrics");
    let file = dir.write("metrics.txt", &text);
    let checked = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (Debian package `prometheus`) is needed to check the metrics format");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start("").await;
    let res = get(&server, 1, "/healthz", &[]).await.unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"));
    let res = get(&server, 1, "/readyz", &[]).await.unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "ready\n"));
}

/// Origins, connection limits and event limits change with SIGHUP; open connections stay and
/// follow the new event limits; a key SIGHUP cannot apply is named in the log.
#[tokio::test]
async fn sighup_reloads_origins_and_limits_and_keeps_connections() {
    const POLLING: &str = "/socket.io/?EIO=4&transport=polling";
    let config = |origin: &str, limits: &str| {
        api_config(&format!("[limits]\n{limits}")).replace(
            "allow_missing = true",
            &format!("allow_missing = true\nallowed = [\"{origin}\"]"),
        )
    };
    let server = Server::start(&config("https://old.example.com", "max_connections_per_ip = 3\n")).await;
    let mut alice = user(&server, "alice").await;
    let old = get(&server, 2, POLLING, &["Origin: https://old.example.com"])
        .await
        .unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(
        old.header("access-control-allow-origin").as_deref(),
        Some("https://old.example.com")
    );
    assert_eq!(
        get(&server, 2, POLLING, &["Origin: https://new.example.com"])
            .await
            .unwrap()
            .status,
        403
    );

    let after = config(
        "https://new.example.com",
        "max_connections_per_ip = 1\nevent_rate = 1\nevent_burst = 2\nevent_strikes = 0\n",
    );
    let path = server.config_path();
    std::fs::write(&path, &after).unwrap();
    server.signal("HUP");
    server.wait_log("configuration reloaded").await;

    let new = get(&server, 3, POLLING, &["Origin: https://new.example.com"])
        .await
        .unwrap();
    assert_eq!(new.status, 200, "{}", new.body);
    assert_eq!(
        new.header("access-control-allow-origin").as_deref(),
        Some("https://new.example.com")
    );
    let gone = get(&server, 4, POLLING, &["Origin: https://old.example.com"])
        .await
        .unwrap();
    assert_eq!(gone.status, 403, "the old origin is refused");
    assert_eq!(gone.header("access-control-allow-origin"), None);

    // Alice's connection stayed, and now follows the new event rate: a burst of 2, then refusals.
    let mut answers = Vec::new();
    for id in 1..=4 {
        alice
            .send(Message::text(format!("42{id}[\"join\",\"chat:{id}\"]")))
            .await
            .unwrap();
        answers.push(next_text(&mut alice).await.expect("still connected"));
    }
    assert_eq!(answers[0], r#"431[{"ok":true}]"#);
    assert!(answers[3].contains("rate_limited"), "{answers:?}");
    // One connection per address now: alice's (from 127.0.0.1) leaves no room for a second.
    assert!(
        ws_from(&server, 1, &[]).await.is_err(),
        "max_connections_per_ip = 1 applies"
    );

    // A key SIGHUP cannot change is reported, not silently ignored.
    std::fs::write(&path, after.replace("[api]", "[drain]\nwindow = \"1s\"\n[api]")).unwrap();
    server.signal("HUP");
    server.wait_log("restart to apply them").await;
    server.stop().await;
}

/// A rotated JWT secret applies to new connections at once; sockets already connected stay;
/// keys that do not load leave the running ones in place.
#[tokio::test]
async fn sighup_rotates_the_jwt_secret_without_dropping_anyone() {
    const NEW_SECRET: &str = "the-rotated-secret-0123456789abcdef-0123";
    let new_token = |sub: &str| {
        sign(
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(NEW_SECRET.as_bytes()),
            None,
            claims(sub),
        )
    };
    let server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    let path = server.config_path();
    let rotated = std::fs::read_to_string(&path)
        .unwrap()
        .replace(SECRET, NEW_SECRET);
    std::fs::write(&path, &rotated).unwrap();
    server.signal("HUP");
    server.wait_log("authentication keys reloaded").await;

    let mut old = ws_from(&server, 1, &[]).await.unwrap();
    let refused = sio_connect(&mut old, Some(json!({ "token": hs(claims("bob")) }))).await;
    assert_eq!(
        connect_error_reason(&refused),
        "signature_invalid",
        "the old secret is gone"
    );
    let mut new = ws_from(&server, 1, &[]).await.unwrap();
    let answer = sio_connect(&mut new, Some(json!({ "token": new_token("bob") }))).await;
    assert!(answer.starts_with("40"), "{answer}");
    join(&mut alice, "chat:still-here").await;

    // A secret file that is not there: the reload is refused and the rotated secret stays.
    let broken = rotated.replace(
        &format!("secret = \"{NEW_SECRET}\""),
        "secret_file = \"/nonexistent/secret\"",
    );
    std::fs::write(&path, broken).unwrap();
    server.signal("HUP");
    server.wait_log("authentication keys not reloaded").await;
    let mut again = ws_from(&server, 1, &[]).await.unwrap();
    let answer = sio_connect(&mut again, Some(json!({ "token": new_token("carol") }))).await;
    assert!(answer.starts_with("40"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_api_keys_and_keeps_connections() {
    let mut server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    let new_key = "the-new-key-0123456789";
    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(API_KEY, new_key);
    std::fs::write(&path, text).unwrap();
    server.signal("HUP");
    server.wait_log("configuration reloaded").await;

    assert_eq!(
        call(&server, "GET", "/api/stats", "").await.status,
        401,
        "the old key is gone"
    );
    let res = request(
        &server,
        1,
        "POST",
        "/api/emit",
        &[&format!("Authorization: Bearer {new_key}")],
        r#"{"rooms":["user:alice"],"event":"still","data":"here"}"#,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(next_event(&mut alice).await, json!(["still", "here"]));

    // A broken file is refused and the running keys stay.
    std::fs::write(&path, "listen = 12").unwrap();
    server.signal("HUP");
    server.wait_log("reload failed").await;
    let res = request(
        &server,
        1,
        "GET",
        "/api/stats",
        &[&format!("X-Api-Key: {new_key}")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    assert!(
        server.wait_exit(Duration::from_millis(1)).await.is_none(),
        "still running"
    );
}

#[tokio::test]
async fn sigterm_drains_a_thousand_clients_within_the_deadline() {
    const CLIENTS: usize = 1000;
    let deadline = Duration::from_secs(4);
    let mut server = Server::start_with(
        "",
        &[
            ("FERRIO_SHUTDOWN_TIMEOUT", "4s"),
            ("FERRIO_DRAIN__DELAY", "300ms"),
        ],
    )
    .await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for batch in 0..CLIENTS / 100 {
        let opened = futures_util::future::join_all((0..100).map(|i| {
            let server = &server;
            async move {
                let mut ws = ws_from(server, 2 + ((batch * 100 + i) % 50) as u8, &[])
                    .await
                    .expect("upgrade");
                assert!(sio_connect(&mut ws, None).await.starts_with("40"));
                ws
            }
        }))
        .await;
        clients.extend(opened);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                // Every frame until the connection ends; a namespace DISCONNECT ("41") would
                // stop the official client from reconnecting.
                let mut frames = Vec::new();
                while let Some(frame) = next_text(&mut ws).await {
                    frames.push(frame);
                    assert!(frames.len() < 10, "too many frames: {frames:?}");
                }
                frames
            })
        })
        .collect();

    let started = tokio::time::Instant::now();
    server.signal("TERM");
    // Readiness turns false while the listener still answers probes.
    let mut ready_false = false;
    for _ in 0..50 {
        match get(&server, 1, "/readyz", &[]).await {
            Some(res) if res.status == 503 => {
                assert_eq!(res.body, "draining\n");
                ready_false = true;
                break;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            None => break,
        }
    }
    assert!(ready_false, "/readyz never said draining");
    let refused = get(&server, 1, POLLING, &[]).await;
    if let Some(res) = refused {
        assert_eq!(res.status, 503, "new handshakes are refused while draining");
    }

    for reader in readers {
        let frames = tokio::time::timeout(deadline + STEP, reader)
            .await
            .expect("a client hung")
            .expect("reader panicked");
        assert!(!frames.iter().any(|f| f.starts_with("41")), "{frames:?}");
    }
    let status = server
        .wait_exit(deadline + Duration::from_secs(3))
        .await
        .expect("the server did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < deadline + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
