//! Two and three ferrio nodes on one Redis, in classic and sharded mode: every cluster-wide
//! operation reaches every node, and every client gets each message exactly once.

use std::collections::HashSet;
use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{NamespaceBuilder, Sid};
use ferrio_redis::{Emitter, Mode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::support::{Client, Node, Redis, WAIT, eventually, node, settle, within};

/// The namespace of every test node: room events, and server events recorded.
fn declare(heard: Arc<Mutex<Vec<Value>>>) -> impl FnOnce(NamespaceBuilder) -> NamespaceBuilder {
    move |ns| {
        RoomEvents::default()
            .install(ns)
            .on_server_event("hello", move |_, mut event| {
                heard.lock().push(Value::Array(event.args.clone()));
                if event.wants_ack() {
                    event.ack(json!("pong"));
                }
            })
    }
}

struct Cluster {
    _redis: Redis,
    nodes: Vec<Node>,
    heard: Vec<Arc<Mutex<Vec<Value>>>>,
}

async fn cluster(n: usize, mode: Mode) -> Cluster {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    let mut heard = Vec::new();
    for _ in 0..n {
        let h = Arc::new(Mutex::new(Vec::new()));
        nodes.push(node(&redis.url(), mode, declare(h.clone())).await);
        heard.push(h);
    }
    // Each node counts the others before the test starts.
    for node in &nodes {
        let ns = node.io.of("/").expect("ns");
        let deadline = tokio::time::Instant::now() + WAIT;
        while ns.adapter().server_count().await.unwrap_or(0) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "servers never saw each other"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Cluster {
        _redis: redis,
        nodes,
        heard,
    }
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod classic {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if crate::support::have_redis() {
                    super::$name(ferrio_redis::Mode::Classic).await;
                }
            })*
        }
        mod sharded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if crate::support::have_redis() {
                    super::$name(ferrio_redis::Mode::Sharded).await;
                }
            })*
        }
    };
}

both_modes!(
    room_broadcasts_reach_each_member_once,
    broadcast_acks_come_from_every_node,
    fetch_join_leave_disconnect_cross_nodes,
    server_side_emit_reaches_the_other_nodes,
    binary_and_socket_ids_cross_nodes,
    rust_emitter_drives_the_cluster,
);

/// Marks the end of what a client should get: anything unexpected before it fails.
async fn marker(node: &Node, clients: &mut [&mut Client]) {
    node.io.of("/").expect("ns").emit("marker", ()).expect("marker");
    for c in clients.iter_mut() {
        c.expect("marker").await;
    }
}

async fn room_broadcasts_reach_each_member_once(mode: Mode) {
    let c = cluster(3, mode).await;
    let mut a = Client::connect(c.nodes[0].addr).await;
    let mut b = Client::connect(c.nodes[1].addr).await;
    let mut b2 = Client::connect(c.nodes[1].addr).await;
    let mut d = Client::connect(c.nodes[2].addr).await;
    for client in [&mut a, &mut b, &mut d] {
        client.join("r").await;
    }
    b2.join("other").await;
    b.join("vip").await;
    settle(&c.nodes).await;
    let ns0 = c.nodes[0].io.of("/").expect("ns");
    for i in 0..5 {
        ns0.to("r").emit("m", json!(i)).expect("emit");
    }
    ns0.to("r").except("vip").emit("no-vip", json!(1)).expect("emit");
    ns0.to(["r", "other"]).emit("multi", json!(1)).expect("emit");
    for client in [&mut a, &mut b, &mut d] {
        for i in 0..5 {
            assert_eq!(client.expect("m").await, vec![json!(i)]);
        }
    }
    a.expect("no-vip").await;
    d.expect("no-vip").await;
    for client in [&mut a, &mut b, &mut d, &mut b2] {
        client.expect("multi").await;
    }
    // Sent by a client through another node's built-in publish (the sender is excluded).
    let (ok, _) = d
        .call(
            "publish",
            vec![json!({"room": "r", "event": "chat", "data": "hi"})],
        )
        .await;
    assert_eq!(ok, vec![json!({"ok": true})]);
    assert_eq!(a.expect("chat").await, vec![json!("hi")]);
    assert_eq!(b.expect("chat").await, vec![json!("hi")]);
    marker(&c.nodes[2], &mut [&mut a, &mut b, &mut b2, &mut d]).await;
    d.expect_silence(Duration::from_millis(50)).await;
}

async fn broadcast_acks_come_from_every_node(mode: Mode) {
    let c = cluster(3, mode).await;
    let mut clients = Vec::new();
    for n in &c.nodes {
        let mut client = Client::connect(n.addr).await;
        client.join("r").await;
        clients.push(client);
    }
    settle(&c.nodes).await;
    let ns = c.nodes[0].io.of("/").expect("ns");
    let op = ns.to("r").timeout(Duration::from_secs(3));
    let pending = tokio::spawn(async move { op.emit_with_ack("question", json!("?")).await });
    for (i, client) in clients.iter_mut().enumerate() {
        let got = client.recv().await;
        assert_eq!(got.name, "question");
        client
            .ack(got.ack.expect("ack id"), vec![json!(format!("answer {i}"))])
            .await;
    }
    let acks = within("acks", pending).await.expect("join").expect("acks");
    assert_eq!(acks.expected, 3);
    let answers: HashSet<String> = acks
        .responses
        .iter()
        .map(|(_, p)| p.args[0].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        answers,
        ["answer 0", "answer 1", "answer 2"].map(String::from).into()
    );
}

async fn fetch_join_leave_disconnect_cross_nodes(mode: Mode) {
    let c = cluster(2, mode).await;
    let mut a = Client::connect(c.nodes[0].addr).await;
    let mut b = Client::connect(c.nodes[1].addr).await;
    a.join("r").await;
    b.join("r").await;
    let b_sid: Sid = b.id.parse().expect("sid");
    c.nodes[1]
        .io
        .of("/")
        .expect("ns")
        .socket(b_sid)
        .expect("socket")
        .set_data(json!({"user": "bob"}));
    let ns0 = c.nodes[0].io.of("/").expect("ns");
    let sockets = ns0.to("r").fetch_sockets().await.expect("fetch");
    let ids: HashSet<String> = sockets.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, [a.id.clone(), b.id.clone()].into());
    let remote = sockets.iter().find(|s| s.id == b_sid).expect("remote socket");
    assert!(remote.local.is_none());
    assert_eq!(remote.data, json!({"user": "bob"}));
    assert!(remote.rooms.iter().any(|r| r.as_ref() == "r"));
    assert!(
        remote.handshake.get("headers").is_some(),
        "handshake: {}",
        remote.handshake
    );
    assert_eq!(ns0.adapter().server_count().await, Ok(2));
    let rooms = ns0.adapter().all_rooms().await.expect("rooms");
    assert!(rooms.contains("r"));

    // Remote join: everyone in "r" joins "new"; a broadcast to "new" reaches both.
    ns0.to("r").sockets_join("new").await.expect("join");
    let node1 = c.nodes[1].io.of("/").expect("ns");
    eventually("remote join", WAIT, || {
        node1
            .socket(b_sid)
            .is_some_and(|s| s.rooms().iter().any(|r| r.as_ref() == "new"))
    })
    .await;
    settle(&c.nodes).await;
    ns0.to("new").emit("in-new", ()).expect("emit");
    a.expect("in-new").await;
    b.expect("in-new").await;

    // Remote leave.
    ns0.broadcast().sockets_leave("new").await.expect("leave");
    eventually("remote leave", WAIT, || {
        node1
            .socket(b_sid)
            .is_some_and(|s| !s.rooms().iter().any(|r| r.as_ref() == "new"))
    })
    .await;
    ns0.to("new").emit("in-new", ()).expect("emit");
    marker(&c.nodes[0], &mut [&mut a, &mut b]).await;

    // Remote disconnect of one socket by id.
    ns0.to(b_sid).disconnect_sockets(false).await.expect("disconnect");
    let got = b.recv().await;
    assert_eq!(got.name, "<disconnect>");
    eventually("remote socket gone", WAIT, || node1.socket(b_sid).is_none()).await;
    let left = ns0.broadcast().fetch_sockets().await.expect("fetch");
    assert_eq!(left.len(), 1);
}

async fn server_side_emit_reaches_the_other_nodes(mode: Mode) {
    let c = cluster(3, mode).await;
    let ns0 = c.nodes[0].io.of("/").expect("ns");
    ns0.server_side_emit("hello", vec![json!("world"), json!(1)])
        .await
        .expect("emit");
    for (i, heard) in c.heard.iter().enumerate().skip(1) {
        eventually(&format!("node {i} heard"), WAIT, || heard.lock().len() == 1).await;
        assert_eq!(heard.lock()[0], json!(["world", 1]));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(c.heard[0].lock().is_empty(), "the sender does not hear itself");
    let answers = ns0
        .server_side_emit_with_ack("hello", vec![json!("ack?")], Duration::from_secs(2))
        .await
        .expect("answers");
    assert_eq!(answers, vec![json!("pong"), json!("pong")]);
}

async fn binary_and_socket_ids_cross_nodes(mode: Mode) {
    let c = cluster(2, mode).await;
    let mut a = Client::connect(c.nodes[0].addr).await;
    let mut b = Client::connect(c.nodes[1].addr).await;
    let ns0 = c.nodes[0].io.of("/").expect("ns");
    // To one remote socket by its id.
    let b_sid: Sid = b.id.parse().expect("sid");
    ns0.to(b_sid).emit("direct", json!({"to": "b"})).expect("emit");
    assert_eq!(b.expect("direct").await, vec![json!({"to": "b"})]);
    // Binary arguments keep their bytes across nodes.
    let payload = ferrio::Payload::new().arg("label").binary(vec![1u8, 2, 3]);
    ns0.emit("bin", payload).expect("emit");
    for client in [&mut a, &mut b] {
        let got = client.recv().await;
        assert_eq!(got.name, "bin");
        assert_eq!(got.args[0], json!("label"));
        assert_eq!(got.args[1], json!({"_placeholder": true, "num": 0}));
        assert_eq!(got.attachments, vec![vec![1u8, 2, 3]]);
    }
    // `local` stays on the node.
    ns0.broadcast().local().emit("local-only", ()).expect("emit");
    a.expect("local-only").await;
    marker(&c.nodes[0], &mut [&mut a, &mut b]).await;
}

async fn rust_emitter_drives_the_cluster(mode: Mode) {
    let c = cluster(2, mode).await;
    let mut a = Client::connect(c.nodes[0].addr).await;
    let mut b = Client::connect(c.nodes[1].addr).await;
    a.join("r").await;
    b.join("r").await;
    b.join("x").await;
    settle(&c.nodes).await;
    let emitter = Emitter::builder(c._redis.url())
        .mode(mode)
        .connect()
        .await
        .expect("emitter");
    emitter
        .to("r")
        .emit("from-emitter", json!(42))
        .await
        .expect("emit");
    for client in [&mut a, &mut b] {
        assert_eq!(client.expect("from-emitter").await, vec![json!(42)]);
    }
    emitter.to("r").except("x").emit("not-x", ()).await.expect("emit");
    a.expect("not-x").await;
    emitter.emit("everyone", ()).await.expect("emit");
    a.expect("everyone").await;
    b.expect("everyone").await;
    emitter.to("x").sockets_join(&["joined"]).await.expect("join");
    let node1 = c.nodes[1].io.of("/").expect("ns");
    let b_sid: Sid = b.id.parse().expect("sid");
    eventually("emitter join", WAIT, || {
        node1
            .socket(b_sid)
            .is_some_and(|s| s.rooms().iter().any(|r| r.as_ref() == "joined"))
    })
    .await;
    emitter
        .server_side_emit("hello", vec![json!("from emitter")])
        .await
        .expect("emit");
    for heard in &c.heard {
        eventually("server event", WAIT, || heard.lock().len() == 1).await;
    }
    emitter
        .to("x")
        .disconnect_sockets(false)
        .await
        .expect("disconnect");
    assert_eq!(b.recv().await.name, "<disconnect>");
    marker(&c.nodes[0], &mut [&mut a]).await;
}
