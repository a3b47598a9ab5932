//! Races and bounds of connection-state recovery: broadcasts from other nodes while a
//! recovering socket's connect hook runs, rooms changed after the client's last packet, an
//! observer that emits when a recovered connection is established, and a replay larger than
//! the connection's queue.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrio::proto::socket::Packet;
use ferrio::{Accepted, BroadcastOptions, Config, Io, RecoveryConfig, Room};
use serde_json::{Value, json};

use crate::support::*;

fn rec_config(skip_hook: bool) -> Config {
    Config {
        recovery: Some(RecoveryConfig {
            skip_connect_hook: skip_hook,
            ..RecoveryConfig::default()
        }),
        ..Config::default()
    }
}

/// Reads frames until the CONNECT reply; returns (events before it, reply json).
async fn until_connect(c: &mut WsClient) -> (Vec<String>, Value) {
    let mut before = Vec::new();
    loop {
        let t = c.recv_text().await;
        if let Some(rest) = t.strip_prefix("40") {
            return (before, serde_json::from_str(rest).unwrap());
        }
        before.push(t);
    }
}

async fn drain(c: &mut WsClient, d: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Frame::Text(t)) = c.next_frame(d).await {
        out.push(t);
    }
    out
}

/// A first connection to `/`: the client, its socket id and its private id.
async fn first_connect(server: &Server) -> (WsClient, String, String) {
    let mut c = WsClient::connect(server.addr).await;
    c.send("40").await;
    let (_, reply) = until_connect(&mut c).await;
    let id = |key: &str| reply[key].as_str().unwrap().to_owned();
    let (sid, pid) = (id("sid"), id("pid"));
    (c, sid, pid)
}

fn last_offset(frame: &str) -> String {
    let v: Value = serde_json::from_str(&frame[2..]).unwrap();
    v.as_array().unwrap().last().unwrap().as_str().unwrap().to_owned()
}

/// Broadcasts from another node (`deliver_from_cluster`) that arrive while a claimed session
/// waits for its connect hook are kept for it: recovered, with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_broadcasts_during_the_connect_hook_are_replayed() {
    let io = Io::builder(rec_config(false))
        .ns("/", |ns| {
            ns.connect_hook(|_req| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(Accepted::new())
            })
            .on_connect(|s| s.join("r"))
        })
        .build();
    let server = start(io).await;
    let ns = server.io.of("/").unwrap();
    let (mut c, sid, pid) = first_connect(&server).await;
    eventually("joined", || {
        ns.socket(sid.parse().unwrap())
            .is_some_and(|s| s.rooms().len() == 2)
    })
    .await;
    ns.to("r").emit("m", 0).unwrap();
    let f = c.recv_text().await;
    let offset = last_offset(&f);
    drop(c);
    eventually("gone", || ns.socket(sid.parse().unwrap()).is_none()).await;

    let mut c = WsClient::connect(server.addr).await;
    c.send(format!("40{}", json!({"pid": pid, "offset": offset})))
        .await;
    // While the hook runs: a broadcast to room r and a direct emit to the sid, from "another node".
    tokio::time::sleep(Duration::from_millis(150)).await;
    let opts_r = BroadcastOptions {
        rooms: smallvec::smallvec![Room::from("r")],
        ..Default::default()
    };
    let n1 = ns.deliver_from_cluster(
        Packet::event("/", json!(["from-b-room", 1]), vec![], None),
        &opts_r,
    );
    let opts_s = BroadcastOptions {
        rooms: smallvec::smallvec![Room::from(sid.as_str())],
        ..Default::default()
    };
    let n2 = ns.deliver_from_cluster(
        Packet::event("/", json!(["from-b-direct", 2]), vec![], None),
        &opts_s,
    );
    // A local broadcast at the same time, for comparison: this one is replayed.
    ns.to("r").emit("local", 3).unwrap();
    let (before, reply) = until_connect(&mut c).await;
    let after = drain(&mut c, Duration::from_millis(300)).await;
    let _ = (n1, n2);
    assert_eq!(reply["sid"], sid, "recovered (same sid)");
    let all = format!("{before:?}{after:?}");
    assert!(all.contains("local"), "local one replayed");
    assert!(
        all.contains("from-b-room") && all.contains("from-b-direct"),
        "recovered, so the cluster broadcasts sent during the hook are there: {all}"
    );
}

/// The socket leaves and joins rooms after the client's last packet: what it was sent in
/// between cannot be told from the rooms it has now, so recovery is refused (neither a packet
/// queued while in the room it left is lost, nor one sent to the room it joined later added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_changed_after_the_offset_refuses_recovery() {
    let io = Io::builder(rec_config(true))
        .ns("/", |ns| ns.on_connect(|s| s.join("r")))
        .build();
    let server = start(io).await;
    let ns = server.io.of("/").unwrap();
    let (mut c, sid, pid) = first_connect(&server).await;
    eventually("joined", || {
        ns.socket(sid.parse().unwrap())
            .is_some_and(|s| s.rooms().len() == 2)
    })
    .await;
    ns.emit("a", 0).unwrap();
    let offset = last_offset(&c.recv_text().await);
    // Queued to the socket (it is in r) ...
    ns.to("r").emit("b-in-r", 1).unwrap();
    // ... then it leaves r, and it joins q after a broadcast to q it did not get.
    ns.to("q").emit("c-to-q-before-join", 2).unwrap();
    let s = ns.socket(sid.parse().unwrap()).unwrap();
    s.leave("r");
    s.join("q");
    drop(s);
    drop(c); // the client never read b-in-r
    eventually("gone", || ns.socket(sid.parse().unwrap()).is_none()).await;
    let mut c = WsClient::connect(server.addr).await;
    c.send(format!("40{}", json!({"pid": pid, "offset": offset})))
        .await;
    let (before, reply) = until_connect(&mut c).await;
    assert_ne!(reply["sid"], sid, "not recovered");
    assert!(before.is_empty(), "nothing replayed: {before:?}");
}

/// A `ConnectionObserver` that emits when a recovered connection is established: observers
/// run after the recovery lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_may_emit_when_a_recovered_connection_is_established() {
    struct Obs(Arc<OnceLock<Io>>);
    impl ferrio::ConnectionObserver for Obs {
        fn on_established(&self, _h: &ferrio::Handshake) {
            if let Some(io) = self.0.get() {
                let _ = io.of("/").unwrap().emit("hello-everyone", 1);
            }
        }
    }
    let cell: Arc<OnceLock<Io>> = Arc::default();
    let io = Io::builder(rec_config(true))
        .observer(Obs(cell.clone()))
        .ns("/", |ns| ns)
        .build();
    cell.set(io.clone()).unwrap();
    let server = start(io).await;
    let ns = server.io.of("/").unwrap();
    let (mut c, sid, pid) = first_connect(&server).await;
    // The observer's emit reaches the socket after its CONNECT answer.
    let offset = last_offset(&c.recv_text().await);
    drop(c);
    eventually("gone", || ns.socket(sid.parse().unwrap()).is_none()).await;
    let mut c = WsClient::connect(server.addr).await;
    c.send(format!("40{}", json!({"pid": pid, "offset": offset})))
        .await;
    let answered = tokio::time::timeout(Duration::from_secs(3), until_connect(&mut c)).await;
    let (_, reply) = answered.expect("the recovered CONNECT is answered");
    assert_eq!(reply["sid"], sid, "recovered");
}

/// A replay larger than half the connection's queue is refused at once (recovered: false,
/// nothing replayed) instead of overflowing the queue before the CONNECT answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_queue_is_refused() {
    let io = Io::builder(rec_config(true)).ns("/", |ns| ns).build();
    let server = start(io).await;
    let ns = server.io.of("/").unwrap();
    let (mut c, sid, pid) = first_connect(&server).await;
    ns.emit("a", 0).unwrap();
    let offset = last_offset(&c.recv_text().await);
    drop(c);
    eventually("gone", || ns.socket(sid.parse().unwrap()).is_none()).await;
    let big = "x".repeat(12_000);
    for i in 0..900 {
        ns.emit("big", json!([i, big])).unwrap();
    }
    let mut c = WsClient::connect(server.addr).await;
    c.send(format!("40{}", json!({"pid": pid, "offset": offset})))
        .await;
    let (before, reply) = until_connect(&mut c).await;
    assert!(before.is_empty(), "{} frames replayed", before.len());
    assert_ne!(reply["sid"], sid, "not recovered");
}
