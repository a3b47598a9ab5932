//! The server-driven heartbeat with short settings (100 ms interval, 100 ms timeout).

use std::time::Duration;

use ferrio::{Io, Sid};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::{PollClient, WsClient, config_with_ping, start, with_echo, within};

const INTERVAL: u64 = 100;
const TIMEOUT: u64 = 100;
/// Scheduling slack allowed after `interval + timeout` (the close must not come before).
const SLACK: Duration = Duration::from_millis(500);

fn io() -> (Io, mpsc::UnboundedReceiver<(Sid, &'static str)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let io = Io::builder(config_with_ping(INTERVAL, TIMEOUT))
        .ns("/", move |ns| {
            with_echo(ns).on_disconnect(move |socket, reason| {
                let _ = tx.send((socket.id(), reason.as_str()));
            })
        })
        .build();
    (io, rx)
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected() {
    let (io, mut disconnects) = io();
    let server = start(io).await;
    let mut c = WsClient::connect(server.addr).await;
    assert_eq!(c.open["pingInterval"], INTERVAL);
    assert_eq!(c.open["pingTimeout"], TIMEOUT);
    c.connect_ns("/").await;

    // Seven intervals; every ping is answered while waiting.
    c.expect_silence(Duration::from_millis(700)).await;
    assert!(c.pings >= 4, "only {} pings in 700 ms", c.pings);
    assert!(c.pings <= 7, "{} pings in 700 ms with a 100 ms interval", c.pings);
    c.send(r#"421["echo","alive"]"#).await;
    c.expect(r#"431["alive"]"#).await;
    assert!(disconnects.try_recv().is_err(), "nobody disconnected");
    assert_eq!(server.io.connection_count(), 1);
}

#[tokio::test]
async fn silent_client_is_closed_with_ping_timeout_on_time() {
    let (io, mut disconnects) = io();
    let server = start(io).await;
    // Taken before the handshake, so the server's clock started later than this.
    let started = Instant::now();
    let mut c = WsClient::connect(server.addr).await;
    c.auto_pong = false;
    let sid = c.connect_ns("/").await;

    c.expect_closed_within(Duration::from_millis(INTERVAL + TIMEOUT) + SLACK)
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(INTERVAL + TIMEOUT),
        "closed after {elapsed:?}, before interval + timeout"
    );
    assert_eq!(c.pings, 1, "one ping, then the timeout");
    let (gone, reason) = within("disconnect", disconnects.recv()).await.expect("reason");
    assert_eq!((gone.as_str(), reason), (sid.as_str(), "ping timeout"));
    assert_eq!(server.io.connection_count(), 0);
}

#[tokio::test]
async fn silent_polling_session_is_gone_at_interval_plus_timeout() {
    // What the conformance suite checks: sleep exactly interval + timeout after the
    // handshake, then the sid is unknown.
    let (io, _disconnects) = io();
    let server = start(io).await;
    let p = PollClient::open(server.addr).await;
    tokio::time::sleep(Duration::from_millis(INTERVAL + TIMEOUT)).await;
    let res = p.get().await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
}

#[tokio::test]
async fn polling_client_that_answers_pings_stays_connected() {
    let (io, _disconnects) = io();
    let server = start(io).await;
    let p = PollClient::open(server.addr).await;
    p.post_ok("40").await;
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(600) {
        for record in p.get_records().await {
            if record == "2" {
                pings += 1;
                p.post_ok("3").await;
            }
        }
    }
    assert!(pings >= 3, "{pings} pings");
    p.post_ok(r#"421["echo","alive"]"#).await;
    // A ping may come first.
    let mut got = Vec::new();
    while !got.iter().any(|r: &String| r.starts_with("43")) {
        got.extend(p.get_records().await);
    }
    assert!(got.contains(&r#"431["alive"]"#.to_owned()), "{got:?}");
}
