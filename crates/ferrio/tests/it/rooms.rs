//! Rooms and broadcast: membership, selections (`to`, `except`, `local`, own rooms), the
//! sender exclusion of `socket.broadcast()`, broadcasts with acks, and the operations on a
//! selection (`fetch_sockets`, `sockets_join`, `sockets_leave`, `disconnect_sockets`).

use std::collections::HashSet;
use std::time::Duration;

use ferrio::{Config, Io, Namespace, Sid, Socket};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{WsClient, eventually, start, with_echo, within};

struct Member {
    client: WsClient,
    socket: Socket,
}

async fn members(io: &Io, addr: std::net::SocketAddr, n: usize) -> Vec<Member> {
    let ns = io.of("/").expect("namespace");
    let mut out = Vec::new();
    for _ in 0..n {
        let mut client = WsClient::connect(addr).await;
        let sid = client.connect_ns("/").await;
        let socket = ns.socket(sid.parse::<Sid>().expect("sid")).expect("socket");
        out.push(Member { client, socket });
    }
    out
}

/// Each client gets exactly what `expected` says (or nothing), and then the marker: a
/// duplicate or a stray delivery shows up in place of the marker.
async fn check(ns: &Namespace, all: &mut [Member], expected: &[Option<&str>]) {
    assert_eq!(ns.emit("marker", ()), Ok(all.len()));
    for (i, (m, want)) in all.iter_mut().zip(expected).enumerate() {
        if let Some(want) = want {
            let got = m.client.recv_text().await;
            assert_eq!(&got, want, "client {i}");
        }
        let got = m.client.recv_text().await;
        assert_eq!(got, r#"42["marker"]"#, "client {i} got more than expected");
    }
}

/// `42<id><rest>` → id.
fn ack_id(text: &str, rest: &str) -> u64 {
    let inner = text
        .strip_prefix("42")
        .and_then(|t| t.strip_suffix(rest))
        .unwrap_or_else(|| panic!("expected 42<id>{rest}, got {text:?}"));
    inner.parse().unwrap_or_else(|_| panic!("bad ack id in {text:?}"))
}

fn room_set(socket: &Socket) -> HashSet<String> {
    socket.rooms().iter().map(|r| r.to_string()).collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn selections_reach_exactly_their_sockets_once() {
    let server = start(Io::builder(Config::default()).ns("/", with_echo).build()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 4).await;
    let (a, b, c, d) = (
        m[0].socket.clone(),
        m[1].socket.clone(),
        m[2].socket.clone(),
        m[3].socket.clone(),
    );
    a.join(["r1", "r2"]);
    b.join("r1");
    c.join("r2".to_owned());
    assert_eq!(room_set(&a), set(&["r1", "r2", a.id().as_str()]));
    assert_eq!(room_set(&d), set(&[d.id().as_str()]), "own room only");
    assert!(ns.adapter().local().has_room("r1"));
    assert_eq!(ns.adapter().local().room_count(), 2);
    let largest = |n| {
        let rooms = ns.adapter().local().largest_rooms(n);
        rooms
            .into_iter()
            .map(|(r, s)| (r.to_string(), s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        largest(5),
        [("r1".to_owned(), 2), ("r2".to_owned(), 2)],
        "ties by name"
    );
    assert_eq!(largest(1), [("r1".to_owned(), 2)]);
    assert!(largest(0).is_empty());

    // `to` one room.
    assert_eq!(ns.to("r1").emit("m", json!(1)), Ok(2));
    check(
        &ns,
        &mut m,
        &[Some(r#"42["m",1]"#), Some(r#"42["m",1]"#), None, None],
    )
    .await;

    // Several rooms: a socket in both gets it once.
    assert_eq!(ns.to(["r1", "r2"]).emit("m", json!(2)), Ok(3));
    check(
        &ns,
        &mut m,
        &[
            Some(r#"42["m",2]"#),
            Some(r#"42["m",2]"#),
            Some(r#"42["m",2]"#),
            None,
        ],
    )
    .await;

    // `except` takes precedence over `to`.
    assert_eq!(ns.to("r1").except("r2").emit("m", json!(3)), Ok(1));
    check(&ns, &mut m, &[None, Some(r#"42["m",3]"#), None, None]).await;
    assert_eq!(ns.broadcast().except(["r1", "r2"]).emit("m", json!(4)), Ok(1));
    check(&ns, &mut m, &[None, None, None, Some(r#"42["m",4]"#)]).await;

    // `socket.broadcast()` and `socket.to()` leave the sender out.
    assert_eq!(a.broadcast().emit("m", json!(5)), Ok(3));
    check(
        &ns,
        &mut m,
        &[
            None,
            Some(r#"42["m",5]"#),
            Some(r#"42["m",5]"#),
            Some(r#"42["m",5]"#),
        ],
    )
    .await;
    assert_eq!(a.to("r2").emit("m", json!(6)), Ok(1));
    check(&ns, &mut m, &[None, None, Some(r#"42["m",6]"#), None]).await;

    // Namespace-wide, and `local()`.
    assert_eq!(ns.emit("m", json!(7)), Ok(4));
    check(&ns, &mut m, &[Some(r#"42["m",7]"#); 4]).await;
    assert_eq!(ns.broadcast().local().emit("m", json!(8)), Ok(4));
    check(&ns, &mut m, &[Some(r#"42["m",8]"#); 4]).await;

    // Each socket's own room.
    assert_eq!(ns.to(b.id()).emit("m", json!(9)), Ok(1));
    check(&ns, &mut m, &[None, Some(r#"42["m",9]"#), None, None]).await;
    assert_eq!(ns.to(d.id().as_str()).except("r1").emit("m", json!(10)), Ok(1));
    check(&ns, &mut m, &[None, None, None, Some(r#"42["m",10]"#)]).await;
    // A room named like a socket id holds that socket (its own room) and anyone who joined
    // it by name; with another room that both are in, each still gets it once.
    a.join(c.id().as_str());
    assert_eq!(ns.to(c.id()).emit("m", json!(11)), Ok(2));
    check(
        &ns,
        &mut m,
        &[Some(r#"42["m",11]"#), None, Some(r#"42["m",11]"#), None],
    )
    .await;
    assert_eq!(ns.to([c.id().as_str(), "r2"]).emit("m", json!(12)), Ok(2));
    check(
        &ns,
        &mut m,
        &[Some(r#"42["m",12]"#), None, Some(r#"42["m",12]"#), None],
    )
    .await;
    a.leave(c.id().as_str());

    // Leaving.
    a.leave("r1");
    assert_eq!(room_set(&a), set(&["r2", a.id().as_str()]));
    assert_eq!(ns.to("r1").emit("m", json!(13)), Ok(1));
    check(&ns, &mut m, &[None, Some(r#"42["m",13]"#), None, None]).await;
    b.leave("r1");
    assert!(!ns.adapter().local().has_room("r1"), "an empty room is deleted");
    assert_eq!(ns.to("r1").emit("m", json!(14)), Ok(0));
    check(&ns, &mut m, &[None, None, None, None]).await;
}

#[tokio::test]
async fn broadcast_with_acks_collects_one_answer_per_recipient() {
    let server = start(Io::builder(Config::default()).ns("/", with_echo).build()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 4).await;
    m[0].socket.join("r2");
    m[2].socket.join("r2");

    // Everyone in the selection answers.
    let op = ns.to("r2").timeout(Duration::from_secs(4));
    let task = tokio::spawn(async move { op.emit_with_ack("q", json!(1)).await });
    for i in [0, 2] {
        let text = m[i].client.recv_text().await;
        let id = ack_id(&text, r#"["q",1]"#);
        m[i].client.send(format!(r#"43{id}["answer-{i}"]"#)).await;
    }
    let acks = within("broadcast acks", task).await.expect("task").expect("acks");
    assert_eq!(acks.expected, 2);
    assert!(!acks.timed_out());
    let mut got: Vec<(Sid, serde_json::Value)> = acks
        .responses
        .iter()
        .map(|(sid, p)| (*sid, p.args[0].clone()))
        .collect();
    got.sort_by_key(|(sid, _)| *sid);
    let mut want = vec![
        (m[0].socket.id(), json!("answer-0")),
        (m[2].socket.id(), json!("answer-2")),
    ];
    want.sort_by_key(|(sid, _)| *sid);
    assert_eq!(got, want);

    // One recipient stays silent: the others' answers, then timed_out().
    let op = ns.broadcast().timeout(Duration::from_millis(300));
    let started = Instant::now();
    let task = tokio::spawn(async move { op.emit_with_ack("q", json!(2)).await });
    for (i, member) in m.iter_mut().enumerate() {
        let text = member.client.recv_text().await;
        let id = ack_id(&text, r#"["q",2]"#);
        if i != 3 {
            member.client.send(format!(r#"43{id}[{i}]"#)).await;
        }
    }
    let acks = within("broadcast acks", task).await.expect("task").expect("acks");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(acks.expected, 4);
    assert_eq!(acks.responses.len(), 3);
    assert!(acks.timed_out());
    let answered: HashSet<Sid> = acks.responses.iter().map(|(sid, _)| *sid).collect();
    assert!(!answered.contains(&m[3].socket.id()));
}

#[tokio::test]
async fn broadcast_ack_timeout_releases_the_silent_sockets_pending_ack() {
    let server = start(Io::builder(Config::default()).ns("/", with_echo).build()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 1).await;
    let acks = within(
        "broadcast acks",
        ns.broadcast()
            .timeout(Duration::from_millis(100))
            .emit_with_ack("q", ()),
    )
    .await
    .expect("acks");
    assert!(acks.timed_out());
    m[0].client.recv_text().await;
    assert_eq!(
        m[0].socket.pending_acks(),
        0,
        "nobody waits for this ack any more"
    );
}

#[tokio::test]
async fn operations_on_a_selection() {
    let server = start(Io::builder(Config::default()).ns("/", with_echo).build()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 4).await;
    let ids: Vec<Sid> = m.iter().map(|x| x.socket.id()).collect();
    m[0].socket.join(["r1", "r2"]);
    m[1].socket.join("r1");
    m[2].socket.join("r2");
    m[3].socket.set_data(json!({"name": "d"}));

    // fetch_sockets
    let found = ns.to("r2").fetch_sockets().await.expect("fetch");
    let found_ids: HashSet<Sid> = found.iter().map(|s| s.id).collect();
    assert_eq!(found_ids, HashSet::from([ids[0], ids[2]]));
    for info in &found {
        let rooms: HashSet<String> = info.rooms.iter().map(|r| r.to_string()).collect();
        assert!(
            rooms.contains("r2") && rooms.contains(info.id.as_str()),
            "{rooms:?}"
        );
        assert_eq!(info.local.as_ref().map(Socket::id), Some(info.id));
    }
    let everyone = ns.broadcast().fetch_sockets().await.expect("fetch");
    assert_eq!(everyone.len(), 4);
    let d = ns.to(ids[3]).fetch_sockets().await.expect("fetch");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].data, json!({"name": "d"}));

    // sockets_join: members of r1 join r3.
    ns.to("r1").sockets_join("r3").await.expect("join");
    assert_eq!(ns.to("r3").emit("m", json!(1)), Ok(2));
    check(
        &ns,
        &mut m,
        &[Some(r#"42["m",1]"#), Some(r#"42["m",1]"#), None, None],
    )
    .await;
    ns.to(ids[3]).sockets_join(["r3", "r4"]).await.expect("join");
    assert!(room_set(&m[3].socket).contains("r4"));

    // sockets_leave: everyone leaves r3.
    ns.broadcast().sockets_leave("r3").await.expect("leave");
    assert!(!ns.adapter().local().has_room("r3"));
    assert_eq!(ns.to("r3").emit("m", json!(2)), Ok(0));

    // disconnect_sockets(false): the sockets go, their connections stay.
    ns.to("r2").disconnect_sockets(false).await.expect("disconnect");
    for i in [0, 2] {
        m[i].client.expect("41").await;
        assert!(!m[i].socket.connected());
    }
    assert_eq!(ns.socket_count(), 2);
    assert_eq!(server.io.connection_count(), 4);
    assert!(!ns.adapter().local().has_room("r2"));

    // disconnect_sockets(true): the connection closes too.
    ns.to(ids[1]).disconnect_sockets(true).await.expect("disconnect");
    let before = m[1].client.expect_closed().await;
    assert!(m[1].client.close_frame, "a graceful close");
    assert_eq!(
        before,
        vec![crate::support::Frame::Text("41".into())],
        "DISCONNECT goes out before the close"
    );
    eventually("session removed", || server.io.connection_count() == 3).await;
    assert_eq!(ns.socket_count(), 1);

    // The others keep working.
    m[3].client.send(r#"421["echo","d"]"#).await;
    m[3].client.expect(r#"431["d"]"#).await;
}

#[tokio::test]
async fn client_can_reconnect_a_namespace_the_server_disconnected_it_from() {
    // The reference removes the namespace from the client on a server-side disconnect, so a
    // later CONNECT on the same Engine.IO session is a fresh connection.
    let server = start(Io::builder(Config::default()).ns("/", with_echo).build()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 1).await;
    m[0].socket.disconnect(false);
    m[0].client.expect("41").await;
    assert_eq!(ns.socket_count(), 0);

    m[0].client.send("40").await;
    let frame = m[0].client.next_frame(Duration::from_secs(2)).await;
    let crate::support::Frame::Text(reply) = frame.expect("a CONNECT reply, not a closed connection") else {
        panic!("binary frame");
    };
    let sid = crate::support::parse_connect_reply(&reply, "/");
    assert_ne!(sid, m[0].socket.id().as_str());
    assert_eq!(ns.socket_count(), 1);
    m[0].client.send(r#"421["echo","again"]"#).await;
    m[0].client.expect(r#"431["again"]"#).await;
}

/// Every membership change is reported once, whatever caused it: the socket's own join and
/// leave (repeats included), a selection's `sockets_join`/`sockets_leave`, and the
/// disconnection, which reports every room left before the disconnect callbacks run.
#[tokio::test]
async fn room_changes_are_reported_once_each() {
    use ferrio::RoomChange;
    use parking_lot::Mutex;
    use std::sync::Arc;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (log, on_disc) = (seen.clone(), seen.clone());
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            with_echo(ns)
                .on_room_change(move |_, room, change| {
                    let sign = if change == RoomChange::Joined { '+' } else { '-' };
                    log.lock().push(format!("{sign}{room}"));
                })
                .on_disconnect(move |_, _| on_disc.lock().push("disconnect".into()))
        })
        .build();
    let server = start(io).await;
    let ns = server.io.of("/").expect("namespace");
    let mut m = members(&server.io, server.addr, 1).await;
    let socket = m[0].socket.clone();
    let take = || std::mem::take(&mut *seen.lock());

    socket.join(["a", "b", "a"]);
    socket.join("a");
    socket.join(socket.id().as_str());
    assert_eq!(take(), ["+a", "+b"], "new rooms only, own room never");
    socket.leave("a");
    socket.leave("a");
    socket.leave("never-joined");
    assert_eq!(take(), ["-a"]);
    ns.to("b").sockets_join("c").await.expect("sockets_join");
    ns.to("c").sockets_leave("b").await.expect("sockets_leave");
    assert_eq!(take(), ["+c", "-b"]);

    let member = m.pop().expect("member");
    member.client.close().await;
    eventually("disconnect reported", || {
        seen.lock().last().map(String::as_str) == Some("disconnect")
    })
    .await;
    assert_eq!(
        take(),
        ["-c", "disconnect"],
        "rooms left before the disconnect callbacks"
    );
}

/// A recovered session gets its rooms back, reported as joins after the connect callbacks (as
/// if joined then), and the earlier disconnection had reported them left.
#[tokio::test]
async fn a_recovered_session_reports_its_rooms_after_connecting() {
    use ferrio::{RecoveryConfig, RoomChange};
    use parking_lot::Mutex;
    use std::sync::Arc;

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (log, on_conn, on_disc) = (seen.clone(), seen.clone(), seen.clone());
    let config = Config {
        recovery: Some(RecoveryConfig::default()),
        ..Config::default()
    };
    let io = Io::builder(config)
        .ns("/", move |ns| {
            with_echo(ns)
                .on_room_change(move |_, room, change| {
                    let sign = if change == RoomChange::Joined { '+' } else { '-' };
                    log.lock().push(format!("{sign}{room}"));
                })
                .on_connect(move |s| {
                    s.join("r");
                    on_conn.lock().push("connect".into());
                })
                .on_disconnect(move |_, _| on_disc.lock().push("disconnect".into()))
        })
        .build();
    let server = start(io).await;
    let mut client = WsClient::connect(server.addr).await;
    client.send("40").await;
    let reply: serde_json::Value = serde_json::from_str(&client.recv_text().await[2..]).unwrap();
    let pid = reply["pid"].as_str().expect("pid").to_owned();
    let sid = reply["sid"].as_str().expect("sid").to_owned();
    let socket = server.io.of("/").unwrap().socket(sid.parse().unwrap()).unwrap();
    socket.join("extra");
    // A broadcast carries its offset, where the recovered session resumes.
    server.io.of("/").unwrap().to("extra").emit("x", ()).unwrap();
    let packet: serde_json::Value = serde_json::from_str(&client.recv_text().await[2..]).unwrap();
    let offset = packet[1].as_str().expect("offset").to_owned();
    // The connection drops without a goodbye: a recoverable disconnection.
    drop(client);
    eventually("disconnect reported", || {
        seen.lock().last().map(String::as_str) == Some("disconnect")
    })
    .await;
    let first = std::mem::take(&mut *seen.lock());
    assert_eq!(first[..2], ["+r", "connect"]);
    let mut left: Vec<&str> = first[3..first.len() - 1].iter().map(String::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["-extra", "-r"]);

    let mut again = WsClient::connect(server.addr).await;
    again
        .send(format!("40{}", json!({ "pid": pid, "offset": offset })))
        .await;
    let reply: serde_json::Value = serde_json::from_str(&again.recv_text().await[2..]).unwrap();
    assert_eq!(reply["sid"], sid, "recovered");
    eventually("rooms reported", || seen.lock().len() >= 3).await;
    let second = std::mem::take(&mut *seen.lock());
    assert_eq!(second[0], "connect", "connect callbacks first: {second:?}");
    let mut joined: Vec<&str> = second[1..].iter().map(String::as_str).collect();
    joined.sort_unstable();
    assert_eq!(joined, ["+extra", "+r"], "each restored room once: {second:?}");
}
