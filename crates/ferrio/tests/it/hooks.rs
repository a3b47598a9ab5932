//! Connect hooks: a slow hook and the "invalid state" rule, refusals, what the hook sees, and
//! what it hands to the socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrio::{Accepted, Config, ConnectError, ConnectRequest, Io};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    PollClient, WsClient, assert_healthy, eventually, parse_connect_reply, start, with_echo,
};

#[derive(Debug, Clone, PartialEq)]
struct UserId(u64);

struct Fixture {
    io: Io,
    slow_connects: Arc<AtomicUsize>,
    private_connects: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<ConnectRequest>>>,
}

fn fixture() -> Fixture {
    let slow_connects = Arc::new(AtomicUsize::new(0));
    let private_connects = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sc, pc, sn) = (slow_connects.clone(), private_connects.clone(), seen.clone());
    let io = Io::builder(Config::default())
        .ns("/", with_echo)
        .ns("/slow", move |ns| {
            with_echo(ns)
                .connect_hook(|_req| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(Accepted::new())
                })
                .on_connect(move |_| {
                    sc.fetch_add(1, Ordering::SeqCst);
                })
        })
        .ns("/private", move |ns| {
            with_echo(ns)
                .connect_hook(move |req: ConnectRequest| {
                    sn.lock().push(req.clone());
                    async move {
                        if req.auth.get("token") == Some(&json!("good")) {
                            Ok(Accepted::new().data(json!({"k": 1})).extension(UserId(42)))
                        } else {
                            Err(ConnectError::new("not authorized").with_data(json!({"reason": "no token"})))
                        }
                    }
                })
                .on_connect(move |socket| {
                    pc.fetch_add(1, Ordering::SeqCst);
                    let user = socket.extension::<UserId>().map(|u| u.0);
                    let _ = socket.emit(
                        "ext",
                        ferrio::Payload::args(vec![json!(user), socket.data(), socket.auth().clone()]),
                    );
                })
        })
        .build();
    Fixture {
        io,
        slow_connects,
        private_connects,
        seen,
    }
}

#[tokio::test]
async fn slow_hook_delays_the_connect_reply() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let mut c = WsClient::connect(server.addr).await;
    let started = Instant::now();
    c.send("40/slow,").await;
    let reply = c.recv_text().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the hook ran first"
    );
    parse_connect_reply(&reply, "/slow");
    c.send(r#"42/slow,1["echo","x"]"#).await;
    c.expect(r#"43/slow,1["x"]"#).await;
    assert_eq!(f.slow_connects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn event_before_the_connect_reply_closes_the_connection() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let ns = server.io.of("/slow").expect("namespace");

    let mut c = WsClient::connect(server.addr).await;
    c.send("40/slow,").await;
    c.send(r#"42/slow,["echo","too early"]"#).await;
    let before = c.expect_closed().await;
    assert!(before.is_empty(), "no reply before the close: {before:?}");

    // The same in one polling payload.
    let p = PollClient::open(server.addr).await;
    p.post_ok("40/slow,\x1e42/slow,[\"echo\",\"too early\"]").await;
    let res = p.get().await;
    assert!(
        res.status == 400 || res.text() == "1",
        "the session is closed: {} {:?}",
        res.status,
        res.text()
    );

    // Once the hooks finish there is still nothing: no socket, no connection callback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ns.socket_count(), 0);
    assert_eq!(f.slow_connects.load(Ordering::SeqCst), 0);
    eventually("sessions gone", || server.io.connection_count() == 0).await;
    assert_healthy(server.addr).await;
}

#[tokio::test]
async fn refusing_hook_sends_connect_error_and_creates_no_socket() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let ns = server.io.of("/private").expect("namespace");
    let mut c = WsClient::connect(server.addr).await;

    c.send(r#"40/private,{"token":"bad"}"#).await;
    let reply = c.recv_text().await;
    let json = reply
        .strip_prefix("44/private,")
        .unwrap_or_else(|| panic!("expected CONNECT_ERROR, got {reply:?}"));
    assert_eq!(
        serde_json::from_str::<Value>(json).expect("JSON"),
        json!({"message": "not authorized", "data": {"reason": "no token"}})
    );
    assert_eq!(ns.socket_count(), 0);
    assert_eq!(f.private_connects.load(Ordering::SeqCst), 0);

    // The connection stays, and the namespace can be tried again.
    c.send(r#"40/private,{"token":"good"}"#).await;
    let reply = c.recv_text().await;
    parse_connect_reply(&reply, "/private");
    c.expect(r#"42/private,["ext",42,{"k":1},{"token":"good"}]"#)
        .await;
    assert_eq!(ns.socket_count(), 1);
    assert_eq!(f.private_connects.load(Ordering::SeqCst), 1);

    // An unknown namespace, exactly as the reference words it.
    c.send("40/random,").await;
    c.expect(r#"44/random,{"message":"Invalid namespace"}"#).await;
    c.send(r#"42/private,1["echo",1]"#).await;
    c.expect(r#"43/private,1[1]"#).await;
}

#[tokio::test]
async fn connect_error_members_are_in_the_reference_order() {
    // Observed from the reference: `{"message":...,"data":...}`.
    let f = fixture();
    let server = start(f.io.clone()).await;
    let mut c = WsClient::connect(server.addr).await;
    c.send(r#"40/private,{"token":"bad"}"#).await;
    c.expect(r#"44/private,{"message":"not authorized","data":{"reason":"no token"}}"#)
        .await;
}

#[tokio::test]
async fn hook_sees_auth_headers_and_query_and_socket_sees_the_extension() {
    let f = fixture();
    let server = start(f.io.clone()).await;
    let mut c = WsClient::connect_with(server.addr, "&foo=bar&n=1", &[("x-test", "hello")]).await;
    c.send(r#"40/private,{"token":"good","extra":[1]}"#).await;
    parse_connect_reply(&c.recv_text().await, "/private");
    c.expect(r#"42/private,["ext",42,{"k":1},{"token":"good","extra":[1]}]"#)
        .await;

    let seen = f.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(&*req.nsp, "/private");
    assert_eq!(req.auth, json!({"token": "good", "extra": [1]}));
    assert_eq!(
        req.handshake.headers.get("x-test").and_then(|v| v.to_str().ok()),
        Some("hello")
    );
    assert_eq!(req.handshake.query_param("foo"), Some("bar"));
    assert_eq!(req.handshake.query_param("n"), Some("1"));
    assert_eq!(req.handshake.query_param("EIO"), Some("4"));
    assert!(req.handshake.address.is_some_and(|a| a.ip().is_loopback()));

    // Without auth the hook sees `{}`.
    let mut c2 = WsClient::connect(server.addr).await;
    c2.send("40/private,").await;
    let reply = c2.recv_text().await;
    assert!(reply.starts_with("44/private,"), "{reply}");
    assert_eq!(f.seen.lock()[1].auth, json!({}));
}

#[tokio::test]
async fn dynamic_namespaces_are_created_on_demand() {
    let io = Io::builder(Config::default())
        .ns("/", with_echo)
        .dynamic_ns(|name| name.starts_with("/room-"), with_echo)
        .build();
    let server = start(io).await;
    assert!(server.io.of("/room-1").is_none());
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/room-1").await;
    c.connect_ns("/room-2").await;
    c.send(r#"42/room-2,5["echo","two"]"#).await;
    c.expect(r#"43/room-2,5["two"]"#).await;
    let ns = server.io.of("/room-1").expect("created");
    assert_eq!(ns.socket_count(), 1);
    c.send("40/other,").await;
    c.expect(r#"44/other,{"message":"Invalid namespace"}"#).await;
    c.send("41/room-1,").await;
    eventually("left", || ns.socket_count() == 0).await;
    c.send(r#"42/room-2,6["echo","still"]"#).await;
    c.expect(r#"43/room-2,6["still"]"#).await;
}

#[tokio::test]
async fn a_panicking_connect_hook_refuses_the_client() {
    let io = Io::builder(Config::default())
        .ns("/", |ns| ns)
        .ns("/boom", |ns| {
            ns.connect_hook(|_req| async move {
                if true {
                    panic!("hook failure");
                }
                Ok(ferrio::Accepted::new())
            })
        })
        .build();
    let server = start(io).await;
    let mut c = WsClient::connect(server.addr).await;
    c.send("40/boom,").await;
    c.expect(r#"44/boom,{"message":"server error"}"#).await;
    assert_eq!(server.io.of("/boom").unwrap().socket_count(), 0);
    // The connection itself is still usable.
    c.connect_ns("/").await;
}

#[tokio::test]
async fn guards_stop_events_and_answer_through_the_ack() {
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = handled.clone();
    let io = Io::builder(Config::default())
        .ns("/", move |ns| {
            let seen = seen.clone();
            ns.guard(|_socket, event| {
                if event.name() == "secret" {
                    Err(json!({ "ok": false, "error": "forbidden" }).into())
                } else {
                    Ok(())
                }
            })
            .on_any(move |_socket, mut event| {
                seen.fetch_add(1, Ordering::SeqCst);
                event.ack(json!({ "ok": true }));
            })
        })
        .build();
    let server = start(io).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(r#"421["secret",1]"#).await;
    c.expect(r#"431[{"ok":false,"error":"forbidden"}]"#).await;
    c.send(r#"42["secret",2]"#).await;
    c.send(r#"422["public",3]"#).await;
    c.expect(r#"432[{"ok":true}]"#).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "only the allowed event reached a handler"
    );
}

#[tokio::test]
async fn observers_see_every_connection_open_and_close() {
    #[derive(Default)]
    struct Count {
        open: AtomicUsize,
        closed: Mutex<Vec<&'static str>>,
    }
    #[derive(Clone)]
    struct Observer(Arc<Count>);
    impl ferrio::ConnectionObserver for Observer {
        fn on_open(&self, handshake: &ferrio::Handshake, _t: ferrio::TransportKind) {
            assert!(handshake.address.is_some());
            self.0.open.fetch_add(1, Ordering::SeqCst);
        }
        fn on_close(&self, _handshake: &ferrio::Handshake, reason: ferrio::CloseReason) {
            self.0.closed.lock().push(reason.as_str());
        }
    }
    let count = Arc::new(Count::default());
    let io = Io::builder(Config::default())
        .ns("/", |ns| ns)
        .observer(Observer(count.clone()))
        .build();
    let server = start(io).await;
    let mut a = WsClient::connect(server.addr).await;
    a.connect_ns("/").await;
    let b = WsClient::connect(server.addr).await;
    a.send("1").await;
    drop(b);
    crate::support::eventually("both closes observed", || count.closed.lock().len() == 2).await;
    assert_eq!(count.open.load(Ordering::SeqCst), 2);
    let mut reasons = count.closed.lock().clone();
    reasons.sort();
    assert_eq!(reasons, vec!["transport close", "transport close"]);
}

#[tokio::test]
async fn server_events_reach_their_handler_and_answer() {
    let io = Io::builder(Config::default())
        .ns("/", |ns| {
            ns.on_server_event("ping-node", |ns, mut event| {
                let answer = json!({ "ns": ns.name(), "args": event.args });
                event.ack(answer);
            })
        })
        .build();
    let ns = io.of("/").unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    ns.dispatch_server_event(ferrio::ServerEvent::new(
        "ping-node".into(),
        vec![json!(1)],
        Some(tx),
    ));
    assert_eq!(rx.await.unwrap(), json!({ "ns": "/", "args": [1] }));
    // One node: nobody else to tell, and no answers to wait for.
    ns.server_side_emit("ping-node", vec![json!(2)]).await.unwrap();
    let answers = ns
        .server_side_emit_with_ack("ping-node", vec![], Duration::from_millis(10))
        .await
        .unwrap();
    assert!(answers.is_empty());
    assert_eq!(ns.adapter().server_count().await.unwrap(), 1);
}
