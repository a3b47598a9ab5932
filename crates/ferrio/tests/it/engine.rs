//! Engine.IO session behaviour the other modules do not cover: cancelled polls, client
//! close packets, the upgrade timeout, heartbeat direction and server shutdown.

use std::time::Duration;

use ferrio::{Config, Io};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::{
    PollClient, WsClient, assert_healthy, eventually, parse_connect_reply, start, with_echo, within, ws_open,
};

fn io(config: Config) -> Io {
    Io::builder(config).ns("/", with_echo).build()
}

const UNKNOWN: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

#[tokio::test]
async fn cancelled_poll_closes_the_session() {
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    // A long poll sent by hand, then abandoned.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        p.target(),
        server.addr
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    eventually("session closed", || server.io.connection_count() == 0).await;
    let res = p.get().await;
    assert_eq!((res.status, res.text().as_str()), (400, UNKNOWN));
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn client_close_packet_releases_the_pending_poll_with_a_noop() {
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    let pending = {
        let p = p.clone();
        tokio::spawn(async move { p.get().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.post_ok("1").await;
    let res = within("pending poll", pending).await.expect("task");
    assert_eq!((res.status, res.text().as_str()), (200, "6"));
    eventually("session closed", || server.io.connection_count() == 0).await;
    let res = p.get().await;
    assert_eq!((res.status, res.text().as_str()), (400, UNKNOWN));
}

#[tokio::test]
async fn client_ping_is_the_wrong_heartbeat_direction() {
    let server = start(io(Config::default())).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send("2").await;
    c.expect_closed().await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn unfinished_upgrade_is_abandoned_and_polling_goes_on() {
    let server = start(io(Config {
        upgrade_timeout: Duration::from_millis(200),
        ..Config::default()
    }))
    .await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    parse_connect_reply(&p.get_records().await[0], "/");
    let ws = ws_open(
        server.addr,
        &format!("EIO=4&transport=websocket&sid={}", p.sid),
        &[],
    )
    .await
    .expect("probe");
    let mut probe = WsClient::from_upgrade(ws, &p.sid);
    probe.send("2probe").await;
    probe.expect("3probe").await;
    // No `5`: the probe is closed at the upgrade timeout.
    probe.expect_closed_within(Duration::from_secs(2)).await;
    // Polling still works, and may upgrade later.
    p.post_ok(r#"421["echo","polling"]"#).await;
    let mut records = Vec::new();
    while !records.iter().any(|r: &String| r.starts_with("43")) {
        records.extend(p.get_records().await.into_iter().filter(|r| r != "6"));
    }
    assert_eq!(records, vec![r#"431["polling"]"#.to_owned()]);
}

#[tokio::test]
async fn server_shutdown_says_goodbye_to_every_client() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            with_echo(ns).on_disconnect(move |_, reason| {
                let _ = tx.send(reason.as_str());
            })
        })
        .build();
    let server = start(io).await;
    let mut w = WsClient::connect(server.addr).await;
    w.connect_ns("/").await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    parse_connect_reply(&p.get_records().await[0], "/");
    let pending = {
        let p = p.clone();
        tokio::spawn(async move { p.get().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    let left = within("close", server.io.close(Duration::from_secs(3))).await;
    assert_eq!(left, 0);
    let before = w.expect_closed().await;
    assert!(before.is_empty(), "{before:?}");
    assert!(w.close_frame, "the WebSocket is closed with a close frame");
    let res = within("pending poll", pending).await.expect("task");
    assert_eq!((res.status, res.text().as_str()), (200, "1"));
    for _ in 0..2 {
        let reason = within("disconnect", rx.recv()).await;
        assert_eq!(reason, Some("server shutting down"));
    }
}

#[tokio::test]
async fn overlapping_posts_end_the_session() {
    // The reference allows one POST in flight: a second one gets 400 and ends the session.
    let server = start(io(Config::default())).await;
    let p = PollClient::open(server.addr).await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n40",
        p.target(),
        server.addr
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = p.post("40").await;
    assert_eq!(second.status, 400, "{second:?}");
    drop(slow);
    let res = p.get().await;
    assert_eq!(res.status, 400, "the session is over: {res:?}");
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn close_connections_closes_a_batch_and_wait_closed_sees_the_rest_go() {
    let server = start(Io::builder(Config::default()).ns("/", |ns| ns).build()).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = WsClient::connect(server.addr).await;
        c.connect_ns("/").await;
        clients.push(c);
    }
    assert_eq!(server.io.connection_count(), 10);
    assert_eq!(server.io.close_connections(3), 3);
    crate::support::eventually("three closed", || server.io.connection_count() == 7).await;
    // Closing is idempotent: the three already closing are not picked again.
    assert_eq!(server.io.close_connections(100), 7);
    assert_eq!(server.io.wait_closed(std::time::Duration::from_secs(5)).await, 0);
}
