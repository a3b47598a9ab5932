//! Thousands of connect / join / disconnect cycles, ended every way a socket can end, leave
//! no session, socket, room or pending ack behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferrio::{AckError, Io, NamespaceBuilder, Payload, Sid, Socket};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::support::{Frame, WsClient, config_with_ping, eventually, nsp_prefix, start, within};

const WORKERS: usize = 8;
const CYCLES_PER_WORKER: usize = 260;

#[derive(Default)]
struct State {
    sockets: Mutex<Vec<Socket>>,
    reasons: Mutex<HashMap<Sid, &'static str>>,
    ack_outcomes: Mutex<Vec<Result<Payload, AckError>>>,
}

fn declare(state: Arc<State>) -> impl FnOnce(NamespaceBuilder) -> NamespaceBuilder {
    move |ns| {
        let (s1, s2, s3) = (state.clone(), state.clone(), state);
        ns.on_connect(move |socket| {
            s1.sockets.lock().push(socket.clone());
            socket.join("everyone");
        })
        .on_disconnect(move |socket, reason| {
            s2.reasons.lock().insert(socket.id(), reason.as_str());
        })
        .on("join", |socket, mut event| {
            let rooms: Vec<String> = event
                .args()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            socket.join(rooms);
            event.ack(());
        })
        .on("kick", |socket, _| socket.disconnect(true))
        .on("kick-soft", |socket, _| socket.disconnect(false))
        .on("ask", move |socket, _| {
            let socket = socket.clone();
            let state = s3.clone();
            tokio::spawn(async move {
                let outcome = socket
                    .emit_with_ack_timeout("pending", (), Duration::from_secs(30))
                    .await;
                state.ack_outcomes.lock().push(outcome);
            });
        })
    }
}

fn io(config: ferrio::Config, state: &Arc<State>) -> Io {
    Io::builder(config)
        .ns("/", declare(state.clone()))
        .ns("/chat", declare(state.clone()))
        .build()
}

/// What each cycle expects the server to report, by socket id.
type Expected = Vec<(String, &'static [&'static str])>;

const TRANSPORT_CLOSE: &[&str] = &["transport close"];
/// An abrupt TCP close; `abrupt_tcp_close_is_reported_as_transport_close` pins the wording.
const ABRUPT: &[&str] = &["transport close", "transport error"];

async fn join(c: &mut WsClient, nsp: &str, rooms: &[String]) {
    let mut data = vec![Value::from("join")];
    data.extend(rooms.iter().map(|r| Value::from(r.as_str())));
    let prefix = nsp_prefix(nsp);
    c.send(format!("42{prefix}1{}", Value::Array(data))).await;
    c.expect(&format!("43{prefix}1[]")).await;
}

async fn cycle(addr: std::net::SocketAddr, i: usize) -> (Expected, bool) {
    let mut expected: Expected = Vec::new();
    let mut c = WsClient::connect(addr).await;
    let root = c.connect_ns("/").await;
    join(&mut c, "/", &[format!("r{}", i % 50), "shared".into()]).await;
    let chat = if i.is_multiple_of(3) {
        let sid = c.connect_ns("/chat").await;
        join(&mut c, "/chat", &[format!("c{}", i % 7)]).await;
        Some(sid)
    } else {
        None
    };
    let ask = i.is_multiple_of(7);
    if ask {
        c.send(r#"42["ask"]"#).await;
        let text = c.recv_text().await;
        assert!(
            text.starts_with("42") && text.ends_with(r#"["pending"]"#),
            "{text}"
        );
    }
    match i % 5 {
        0 => {
            c.send("41").await;
            expected.push((root, &["client namespace disconnect"]));
            if let Some(sid) = chat {
                c.send("41/chat,").await;
                expected.push((sid, &["client namespace disconnect"]));
            }
            c.close().await;
        }
        1 => {
            drop(c);
            expected.push((root, ABRUPT));
            if let Some(sid) = chat {
                expected.push((sid, ABRUPT));
            }
        }
        2 => {
            c.send(r#"42["kick"]"#).await;
            let before = c.expect_closed().await;
            // Every namespace is told before the connection closes, as the reference does.
            let mut told = vec![Frame::Text("41".into())];
            expected.push((root, &["server namespace disconnect"]));
            if let Some(sid) = chat {
                told.push(Frame::Text("41/chat,".into()));
                expected.push((sid, &["server namespace disconnect"]));
            }
            assert_eq!(before, told);
        }
        3 => {
            c.send(r#"42["kick-soft"]"#).await;
            c.expect("41").await;
            expected.push((root, &["server namespace disconnect"]));
            if let Some(sid) = chat {
                expected.push((sid, TRANSPORT_CLOSE));
            }
            c.close().await;
        }
        _ => {
            c.close().await;
            expected.push((root, TRANSPORT_CLOSE));
            if let Some(sid) = chat {
                expected.push((sid, TRANSPORT_CLOSE));
            }
        }
    }
    (expected, ask)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_cycles_leave_nothing_behind() {
    let state = Arc::new(State::default());
    let server = start(io(ferrio::Config::default(), &state)).await;
    let ping_state = Arc::new(State::default());
    let ping_server = start(io(config_with_ping(50, 50), &ping_state)).await;

    // A few clients that stop answering pings, on a server with a short heartbeat.
    let mut silent = Vec::new();
    for i in 0..10 {
        let addr = ping_server.addr;
        silent.push(tokio::spawn(async move {
            let mut c = WsClient::connect(addr).await;
            c.connect_ns("/").await;
            join(&mut c, "/", &[format!("p{i}")]).await;
            c.auto_pong = false;
            c.expect_closed_within(Duration::from_secs(2)).await;
        }));
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let addr = server.addr;
        let tx = tx.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..CYCLES_PER_WORKER {
                let _ = tx.send(cycle(addr, w * CYCLES_PER_WORKER + n).await);
            }
        }));
    }
    drop(tx);
    for worker in workers {
        within("worker", async { worker.await.expect("worker") }).await;
    }
    for s in silent {
        s.await.expect("silent client");
    }
    let mut expected = Vec::new();
    let mut asked = 0;
    while let Some((e, ask)) = rx.recv().await {
        expected.extend(e);
        asked += usize::from(ask);
    }
    let cycles = WORKERS * CYCLES_PER_WORKER;
    assert!(cycles >= 2000);
    assert_eq!(
        expected.len(),
        cycles + (0..cycles).filter(|i| i.is_multiple_of(3)).count()
    );

    for (io, what) in [(&server.io, "main"), (&ping_server.io, "ping")] {
        eventually(&format!("{what}: no session left"), || io.connection_count() == 0).await;
        for ns in io.namespaces() {
            eventually(&format!("{what} {}: no socket left", ns.name()), || {
                ns.socket_count() == 0
            })
            .await;
            assert_eq!(
                ns.adapter().local().room_count(),
                0,
                "{what} {}: rooms",
                ns.name()
            );
            assert!(ns.adapter().local().rooms().is_empty());
        }
    }

    // Every in-flight emit_with_ack ended with "disconnected", and nothing is pending.
    eventually("every asked ack resolved", || {
        state.ack_outcomes.lock().len() == asked
    })
    .await;
    for outcome in state.ack_outcomes.lock().iter() {
        assert_eq!(outcome, &Err(AckError::Disconnected));
    }
    for (s, name) in [(&state, "main"), (&ping_state, "ping")] {
        for socket in s.sockets.lock().iter() {
            assert!(!socket.connected(), "{name}: {socket:?} still connected");
            assert_eq!(socket.pending_acks(), 0, "{name}: {socket:?}");
            assert!(socket.rooms().len() == 1, "{name}: only its own id is left");
        }
    }
    assert_eq!(state.sockets.lock().len(), expected.len());

    // Every socket was told why, in the reference's words.
    let reasons = state.reasons.lock();
    assert_eq!(reasons.len(), expected.len());
    for (sid, allowed) in &expected {
        let sid: Sid = sid.parse().expect("sid");
        let got = reasons.get(&sid).copied();
        assert!(
            got.is_some_and(|r| allowed.contains(&r)),
            "{sid}: {got:?}, expected one of {allowed:?}"
        );
    }
    let ping_reasons = ping_state.reasons.lock();
    assert_eq!(ping_reasons.len(), 10);
    assert!(
        ping_reasons.values().all(|r| *r == "ping timeout"),
        "{ping_reasons:?}"
    );
}

#[tokio::test]
async fn abrupt_tcp_close_is_reported_as_transport_close() {
    let state = Arc::new(State::default());
    let server = start(io(ferrio::Config::default(), &state)).await;
    let mut c = WsClient::connect(server.addr).await;
    let sid: Sid = c.connect_ns("/").await.parse().expect("sid");
    drop(c);
    eventually("socket gone", || state.reasons.lock().contains_key(&sid)).await;
    assert_eq!(state.reasons.lock()[&sid], "transport close");
}

#[tokio::test]
async fn kicked_polling_client_gets_disconnect_then_close() {
    let state = Arc::new(State::default());
    let server = start(io(ferrio::Config::default(), &state)).await;
    let p = crate::support::PollClient::open(server.addr).await;
    p.post_ok("40").await;
    let sid: Sid = crate::support::parse_connect_reply(&p.get_records().await[0], "/")
        .parse()
        .expect("sid");
    p.post_ok(r#"42["kick"]"#).await;
    let mut records = Vec::new();
    loop {
        let res = p.get().await;
        if res.status == 400 {
            break;
        }
        let got: Vec<String> = res.text().split('\x1e').map(str::to_owned).collect();
        let closed = got.iter().any(|r| r == "1");
        records.extend(got);
        if closed {
            break;
        }
        assert!(records.len() < 10, "{records:?}");
    }
    assert_eq!(records, vec!["41".to_owned(), "1".to_owned()]);
    eventually("session gone", || server.io.connection_count() == 0).await;
    assert_eq!(
        state.reasons.lock().get(&sid).copied(),
        Some("server namespace disconnect")
    );
}
