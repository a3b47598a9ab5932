//! Bad input, each answered like the reference; afterwards the server still serves a
//! healthy client.

use std::time::Duration;

use ferrio::{Config, Io};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::support::{
    PollClient, WsClient, assert_healthy, config_with_ping, eventually, http, start, with_echo, ws_open,
};

fn io(config: Config) -> Io {
    Io::builder(config).ns("/", with_echo).build()
}

/// The polling session is over: within a few polls (packets queued before the error are
/// still delivered first, as the reference flushes them) a poll gets `1` (close) or 400.
async fn assert_poll_session_closed(p: &PollClient) {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let res = p.get().await;
        if res.status == 400 || res.text() == "1" || res.text().ends_with("\u{1e}1") {
            return;
        }
        seen.push((res.status, res.text()));
    }
    panic!("expected the session closed, got {seen:?}");
}

#[tokio::test]
async fn malformed_engine_io_packets_close_the_session() {
    let server = start(io(Config::default())).await;
    for bad in ["abc", "9", "b!!!"] {
        let mut c = WsClient::connect(server.addr).await;
        c.connect_ns("/").await;
        c.send(bad).await;
        c.expect_closed().await;
    }
    let p = PollClient::open(server.addr).await;
    let res = p.post("abc").await;
    assert!(res.status == 200 || res.status == 400, "{res:?}");
    assert_poll_session_closed(&p).await;
    eventually("sessions gone", || server.io.connection_count() == 0).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn malformed_socket_io_packets_close_the_connection() {
    let server = start(io(Config::default())).await;
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["x"]"#,
        "4",
        r#"42["disconnect"]"#,
        "42[]",
        "43{}",
    ] {
        let mut c = WsClient::connect(server.addr).await;
        c.connect_ns("/").await;
        c.send(bad).await;
        let before = c.expect_closed().await;
        assert!(before.is_empty(), "{bad}: nothing is answered: {before:?}");
    }
    eventually("sessions gone", || server.io.connection_count() == 0).await;
    assert_eq!(server.io.of("/").expect("ns").socket_count(), 0);
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn socket_io_decode_error_disconnects_sockets_with_forced_close() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            ns.on_disconnect(move |_, reason| {
                let _ = tx.send(reason.as_str());
            })
        })
        .build();
    let server = start(io).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send("42{}").await;
    c.expect_closed().await;
    let reason = crate::support::within("disconnect", rx.recv()).await;
    assert_eq!(reason, Some("forced close"));
}

#[tokio::test]
async fn event_before_connect_closes_the_connection() {
    let server = start(io(Config::default())).await;
    let mut c = WsClient::connect(server.addr).await;
    c.send(r#"421["echo","x"]"#).await;
    assert!(c.expect_closed().await.is_empty());

    // For a namespace the client did not connect, on a connection that has another.
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(r#"42/other,1["echo","x"]"#).await;
    assert!(c.expect_closed().await.is_empty());

    let p = PollClient::open(server.addr).await;
    p.post_ok(r#"42["echo"]"#).await;
    assert_poll_session_closed(&p).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn unknown_sid_is_400_code_1() {
    let server = start(io(Config::default())).await;
    let unknown = r#"{"code":1,"message":"Session ID unknown"}"#;
    for sid in ["AAAAAAAAAAAAAAAAAAAA", "nope"] {
        let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let res = http(server.addr, "GET", &target, &[], b"").await;
        assert_eq!((res.status, res.text().as_str()), (400, unknown));
        assert_eq!(res.header("content-type"), Some("application/json"));
        let res = http(server.addr, "POST", &target, &[], b"40").await;
        assert_eq!((res.status, res.text().as_str()), (400, unknown));
    }
    let refused = ws_open(
        server.addr,
        "EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA",
        &[],
    )
    .await;
    match refused {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400),
        other => panic!("expected the upgrade refused with 400, got {other:?}"),
    }
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn overlapping_polls_end_the_session() {
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    let first = {
        let p = p.clone();
        tokio::spawn(async move { p.get().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = p.get().await;
    assert_eq!(second.status, 400, "{second:?}");
    assert!(
        second.body.is_empty(),
        "the reference's overlap answer has no body: {second:?}"
    );
    let first = crate::support::within("first poll", first).await.expect("task");
    assert_eq!((first.status, first.text().as_str()), (200, "1"));
    let third = p.get().await;
    assert_eq!(
        (third.status, third.text().as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn binary_content_type_post_is_400_and_closes_the_session() {
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    let res = http(
        server.addr,
        "POST",
        &p.target(),
        &[("Content-Type", "application/octet-stream")],
        &[0x04, 0x01],
    )
    .await;
    assert_eq!(res.status, 400);
    assert_poll_session_closed(&p).await;
    eventually("session gone", || server.io.connection_count() == 0).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn post_larger_than_max_payload_is_413() {
    let server = start(io(Config {
        max_payload: 1000,
        ..Config::default()
    }))
    .await;
    let p = PollClient::open(server.addr).await;
    assert_eq!(p.open["maxPayload"], 1000);
    let body = format!("4{}", "x".repeat(1999));
    let res = p.post(&body).await;
    assert_eq!(res.status, 413);
    assert!(res.body.is_empty(), "{:?}", res.text());
    // Exactly max_payload is fine.
    p.post_ok("40").await;
    let padded = format!(r#"421["echo","{}"]"#, "x".repeat(1000 - 14));
    assert_eq!(padded.len(), 1000);
    p.post_ok(&padded).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn attachment_limits() {
    let server = start(io(Config::default())).await;
    let placeholders = |n: usize| {
        (0..n)
            .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    };
    // Ten attachments are fine (the reference's default limit).
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(format!(r#"4510-1["echo",{}]"#, placeholders(10))).await;
    for i in 0..10u8 {
        c.send_binary(vec![i]).await;
    }
    c.expect(&format!("4610-1[{}]", placeholders(10))).await;
    for i in 0..10u8 {
        assert_eq!(c.recv_binary().await.as_ref(), &[i]);
    }
    // Eleven close the connection.
    c.send(format!(r#"4511-["echo",{}]"#, placeholders(11))).await;
    assert!(c.expect_closed().await.is_empty());
    // So does a placeholder without its attachment, and an attachment nobody announced.
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(format!(r#"451-["echo",{}]"#, placeholders(2))).await;
    c.expect_closed().await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send_binary(vec![1u8]).await;
    c.expect_closed().await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn attachment_that_never_comes_closes_after_the_ping_timeout() {
    // Interval 1000 ms, timeout 200 ms: the incomplete packet must be dropped at ~200 ms,
    // long before any heartbeat would close the session.
    let server = start(io(config_with_ping(1000, 200))).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    let started = Instant::now();
    c.send(r#"451-["echo",{"_placeholder":true,"num":0}]"#).await;
    c.expect_closed_within(Duration::from_millis(900)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(190), "closed after {elapsed:?}");
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn ack_id_out_of_range_closes_the_connection() {
    let server = start(io(Config::default())).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    // Number.MAX_SAFE_INTEGER is the largest id.
    c.send(r#"429007199254740991["echo"]"#).await;
    c.expect("439007199254740991[]").await;
    c.send(r#"429007199254740992["echo"]"#).await;
    assert!(c.expect_closed().await.is_empty());
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(r#"4299999999999999999999999["echo"]"#).await;
    assert!(c.expect_closed().await.is_empty());
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn json_depth_bomb_closes_the_connection() {
    let server = start(io(Config::default())).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(format!("42{}", "[".repeat(100_000))).await;
    assert!(c.expect_closed().await.is_empty());
    // Deep but complete, over polling.
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    let deep = format!(r#"42["echo",{}{}]"#, "[".repeat(50_000), "]".repeat(50_000));
    let _ = p.post(&deep).await;
    assert_poll_session_closed(&p).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn oversize_websocket_frame_closes_the_connection() {
    let server = start(io(Config {
        max_payload: 1000,
        ..Config::default()
    }))
    .await;
    let mut c = WsClient::connect(server.addr).await;
    assert_eq!(c.open["maxPayload"], 1000);
    c.connect_ns("/").await;
    // Exactly max_payload passes.
    let fits = format!(r#"421["echo","{}"]"#, "x".repeat(1000 - 14));
    assert_eq!(fits.len(), 1000);
    c.send(fits).await;
    let echoed = c.recv_text().await;
    assert!(echoed.starts_with(r#"431["xx"#), "{echoed:.20}");
    c.send(format!(r#"42["echo","{}"]"#, "x".repeat(2000))).await;
    assert!(c.expect_closed().await.is_empty());
    // Like `ws` with maxPayload: close code 1009 (message too big).
    assert_eq!(c.close_code, Some(1009), "{:?}", c.close_code);
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send_binary(vec![0u8; 1001]).await;
    c.expect_closed().await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn second_websocket_for_an_upgraded_session_is_closed() {
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    crate::support::parse_connect_reply(&p.get_records().await[0], "/");
    let query = format!("EIO=4&transport=websocket&sid={}", p.sid);
    let mut w = WsClient::from_upgrade(ws_open(server.addr, &query, &[]).await.expect("upgrade"), &p.sid);
    w.send("2probe").await;
    w.expect("3probe").await;
    w.send("5").await;
    w.send(r#"421["echo","upgraded"]"#).await;
    w.expect(r#"431["upgraded"]"#).await;

    match ws_open(server.addr, &query, &[]).await {
        Ok(second) => {
            let mut second = WsClient::from_upgrade(second, &p.sid);
            let before = second.expect_closed().await;
            assert!(before.is_empty(), "{before:?}");
        }
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400),
        Err(e) => panic!("{e}"),
    }
    // The first one is unaffected.
    w.send(r#"422["echo","still"]"#).await;
    w.expect(r#"432["still"]"#).await;
    assert_eq!(server.io.connection_count(), 1);
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn handshake_errors_use_the_reference_codes() {
    let server = start(io(Config::default())).await;
    let cases: [(&str, &str, u16, &str); 5] = [
        ("GET", "EIO=4", 400, r#"{"code":0,"message":"Transport unknown"}"#),
        (
            "GET",
            "EIO=4&transport=carrier-pigeon",
            400,
            r#"{"code":0,"message":"Transport unknown"}"#,
        ),
        (
            "POST",
            "EIO=4&transport=polling",
            400,
            r#"{"code":2,"message":"Bad handshake method"}"#,
        ),
        (
            "GET",
            "EIO=3&transport=polling",
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
        // A WebSocket handshake sent as plain HTTP.
        (
            "GET",
            "EIO=4&transport=websocket",
            400,
            r#"{"code":3,"message":"Bad request"}"#,
        ),
    ];
    for (method, query, status, body) in cases {
        let res = http(server.addr, method, &format!("/socket.io/?{query}"), &[], b"").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (status, body),
            "{method} {query}"
        );
    }
    assert_eq!(server.io.connection_count(), 0);
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn session_without_a_namespace_is_closed_after_the_connect_timeout() {
    let server = start(io(Config {
        connect_timeout: Duration::from_millis(200),
        ..Config::default()
    }))
    .await;
    let started = Instant::now();
    let mut idle = WsClient::connect(server.addr).await;
    let mut connected = WsClient::connect(server.addr).await;
    connected.connect_ns("/").await;
    idle.expect_closed_within(Duration::from_secs(2)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A session that connected a namespace in time stays.
    connected.expect_silence(Duration::from_millis(100)).await;
    connected.send(r#"421["echo",1]"#).await;
    connected.expect("431[1]").await;
}

#[tokio::test]
async fn duplicate_connect_closes_the_connection() {
    let server = start(io(Config::default())).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send("40").await;
    assert!(c.expect_closed().await.is_empty());
    eventually("socket gone", || {
        server.io.of("/").is_some_and(|ns| ns.socket_count() == 0)
    })
    .await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn allow_request_refuses_handshakes_with_403_code_4() {
    let config = Config {
        allow_request: Some(std::sync::Arc::new(
            |req: &ferrio::HandshakeRequest<'_>| match req.headers.get("x-deny") {
                Some(v) if v == "plain" => Err(String::new()),
                Some(_) => Err("go away".into()),
                None => Ok(()),
            },
        )),
        ..Config::default()
    };
    let server = start(io(config)).await;
    let target = "/socket.io/?EIO=4&transport=polling";
    let res = http(server.addr, "GET", target, &[("x-deny", "plain")], b"").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (403, r#"{"code":4,"message":"Forbidden"}"#)
    );
    let res = http(server.addr, "GET", target, &[("x-deny", "custom")], b"").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (403, r#"{"code":4,"message":"go away"}"#)
    );
    // WebSocket handshakes are checked before the upgrade: no session is created.
    let refused = ws_open(server.addr, "EIO=4&transport=websocket", &[("x-deny", "plain")]).await;
    match refused {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected the upgrade refused with 403, got {other:?}"),
    }
    assert_eq!(server.io.connection_count(), 0);
    assert_healthy(server.addr).await;
}
