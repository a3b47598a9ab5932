//! Backpressure: the per-connection queue bound (packets and bytes), the slow-consumer
//! disconnect, volatile packets, and that other clients are not affected.
//!
//! These tests run on tokio's current-thread runtime: between two awaits no other task runs,
//! so a loop of emits without an await sees the queue exactly as the emits left it.

use std::time::Duration;

use ferrio::{Config, Io, SendError, Sid, Socket};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{WsClient, assert_healthy, start, with_echo, within};

type Disconnects = mpsc::UnboundedReceiver<(Sid, &'static str)>;

fn io_with(config: Config) -> (Io, Disconnects) {
    let (tx, rx) = mpsc::unbounded_channel();
    let io = Io::builder(config)
        .ns("/", move |ns| {
            with_echo(ns).on_disconnect(move |socket, reason| {
                let _ = tx.send((socket.id(), reason.as_str()));
            })
        })
        .build();
    (io, rx)
}

async fn connected(io: &Io, addr: std::net::SocketAddr) -> (WsClient, Socket) {
    let mut c = WsClient::connect(addr).await;
    let sid = c.connect_ns("/").await;
    let socket = io
        .of("/")
        .expect("namespace")
        .socket(sid.parse::<Sid>().expect("sid"))
        .expect("socket");
    // Let the driver write the CONNECT reply and go idle: the queue is empty from here.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (c, socket)
}

#[tokio::test]
async fn packet_bound_is_exact_then_slow_consumer_then_closed() {
    let (io, mut disconnects) = io_with(Config {
        max_queued_packets: 8,
        ..Config::default()
    });
    let server = start(io).await;
    let (mut c, socket) = connected(&server.io, server.addr).await;

    for i in 0..8 {
        assert_eq!(socket.emit("n", json!(i)), Ok(()), "emit {i} fits the bound");
    }
    assert_eq!(socket.emit("n", json!(8)), Err(SendError::SlowConsumer));
    assert_eq!(socket.emit("n", json!(9)), Err(SendError::Closed));
    assert_eq!(socket.emit_volatile("n", json!(10)), Err(SendError::Closed));

    let (sid, reason) = within("disconnect", disconnects.recv()).await.expect("reason");
    assert_eq!((sid, reason), (socket.id(), "slow consumer"));
    assert!(!socket.connected());
    c.expect_closed().await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn byte_bound_is_exact() {
    let (io, mut disconnects) = io_with(Config {
        max_queued_bytes: 1000,
        ..Config::default()
    });
    let server = start(io).await;
    let (mut c, socket) = connected(&server.io, server.addr).await;

    // `42["e","<90 x>"]` is exactly 100 bytes.
    let text = "x".repeat(90);
    for i in 0..10 {
        assert_eq!(socket.emit("e", text.as_str()), Ok(()), "emit {i} fits the bound");
    }
    assert_eq!(socket.emit("e", text.as_str()), Err(SendError::SlowConsumer));
    let (_, reason) = within("disconnect", disconnects.recv()).await.expect("reason");
    assert_eq!(reason, "slow consumer");
    c.expect_closed().await;
}

#[tokio::test]
async fn volatile_emit_to_a_busy_client_is_dropped_without_disconnecting() {
    let (io, _disconnects) = io_with(Config::default());
    let server = start(io).await;
    let ns = server.io.of("/").expect("namespace");
    let (mut busy, busy_socket) = connected(&server.io, server.addr).await;
    let (mut idle, idle_socket) = connected(&server.io, server.addr).await;

    // Idle: a volatile packet goes out.
    assert_eq!(busy_socket.emit_volatile("v", json!(1)), Ok(()));
    busy.expect(r#"42["v",1]"#).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Busy (a packet is queued and not written yet): the volatile one is dropped.
    assert_eq!(busy_socket.emit("n", json!(1)), Ok(()));
    assert_eq!(busy_socket.emit_volatile("v", json!(2)), Err(SendError::Dropped));
    // A volatile broadcast skips the busy client only.
    assert_eq!(ns.broadcast().volatile().emit("vb", json!(3)), Ok(1));
    assert!(busy_socket.connected());
    assert!(idle_socket.connected());

    busy.expect(r#"42["n",1]"#).await;
    idle.expect(r#"42["vb",3]"#).await;
    assert_eq!(ns.emit("after", ()), Ok(2));
    busy.expect(r#"42["after"]"#).await;
    idle.expect(r#"42["after"]"#).await;
    busy.send(r#"421["echo","still connected"]"#).await;
    busy.expect(r#"431["still connected"]"#).await;
}

#[tokio::test]
async fn client_that_stops_reading_is_disconnected_as_a_slow_consumer() {
    let (io, mut disconnects) = io_with(Config {
        max_queued_packets: 64,
        max_queued_bytes: 512 * 1024,
        ..Config::default()
    });
    let server = start(io).await;
    let (slow, slow_socket) = connected(&server.io, server.addr).await;
    let (mut healthy, healthy_socket) = connected(&server.io, server.addr).await;

    // The slow client keeps its TCP connection open and never reads again.
    let big = "y".repeat(16 * 1024);
    let mut accepted = 0usize;
    let mut volatile_dropped = 0usize;
    let outcome = loop {
        match slow_socket.emit("flood", big.as_str()) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        match slow_socket.emit_volatile("v", ()) {
            Ok(()) => {}
            Err(SendError::Dropped) => volatile_dropped += 1,
            Err(e) => panic!("a volatile emit must not fail with {e:?}"),
        }
        // Other clients keep receiving normally meanwhile.
        if accepted.is_multiple_of(64) {
            healthy_socket
                .emit("tick", json!(accepted))
                .expect("healthy emit");
            healthy.expect(&format!(r#"42["tick",{accepted}]"#)).await;
        }
        tokio::task::yield_now().await;
        assert!(
            accepted < 20_000,
            "320 MB accepted for a client that reads nothing"
        );
    };
    assert_eq!(outcome, SendError::SlowConsumer, "after {accepted} packets");
    assert!(volatile_dropped > 0);
    assert_eq!(slow_socket.emit("flood", "late"), Err(SendError::Closed));

    let (sid, reason) = within("disconnect", disconnects.recv()).await.expect("reason");
    assert_eq!((sid, reason), (slow_socket.id(), "slow consumer"));

    healthy_socket.emit("tick", json!("after")).expect("healthy emit");
    healthy.expect(r#"42["tick","after"]"#).await;
    healthy.send(r#"421["echo",1]"#).await;
    healthy.expect("431[1]").await;
    drop(slow);
    // The healthy connection is the only one left.
    crate::support::eventually("slow session removed", || server.io.connection_count() == 1).await;
}
