//! The built-in room events (`join`, `leave`, `publish`) and a room policy.

use ferrio::builtins::{MAX_NAME_LEN, RoomEvents, RoomPolicy};
use ferrio::{Config, Io, Namespace, Sid, Socket};
use serde_json::{Value, json};

use crate::support::{WsClient, start, with_echo};

struct Policy;

impl RoomPolicy for Policy {
    fn may_join(&self, _socket: &Socket, room: &str) -> bool {
        room != "secret"
    }

    fn may_publish(&self, _socket: &Socket, room: &str) -> bool {
        room != "announcements"
    }
}

struct Client {
    ws: WsClient,
    socket: Socket,
    next_id: u64,
}

impl Client {
    /// Sends `event` with `args` and an ack id; returns the ack's single argument.
    async fn call(&mut self, event: &str, args: &[Value]) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut data = vec![json!(event)];
        data.extend_from_slice(args);
        self.ws.send(format!("42{id}{}", Value::Array(data))).await;
        let reply = self.ws.recv_text().await;
        let prefix = format!("43{id}");
        let json = reply
            .strip_prefix(prefix.as_str())
            .unwrap_or_else(|| panic!("expected an ack {id}, got {reply:?}"));
        let mut args: Vec<Value> = serde_json::from_str(json).expect("ack args");
        assert_eq!(args.len(), 1, "{reply}");
        args.remove(0)
    }
}

async fn clients(io: &Io, addr: std::net::SocketAddr, n: usize) -> Vec<Client> {
    let ns = io.of("/").expect("namespace");
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ws = WsClient::connect(addr).await;
        let sid = ws.connect_ns("/").await;
        let socket = ns.socket(sid.parse::<Sid>().expect("sid")).expect("socket");
        out.push(Client {
            ws,
            socket,
            next_id: 0,
        });
    }
    out
}

/// Each client gets what `expected` says (or nothing) before the marker.
async fn check(ns: &Namespace, all: &mut [Client], expected: &[Option<&str>]) {
    assert_eq!(ns.emit("marker", ()), Ok(all.len()));
    for (i, (c, want)) in all.iter_mut().zip(expected).enumerate() {
        if let Some(want) = want {
            assert_eq!(&c.ws.recv_text().await, want, "client {i}");
        }
        assert_eq!(c.ws.recv_text().await, r#"42["marker"]"#, "client {i} got more");
    }
}

fn ok() -> Value {
    json!({"ok": true})
}

fn failure(reason: &str) -> Value {
    json!({"ok": false, "error": reason})
}

fn server_io() -> Io {
    Io::builder(Config::default())
        .ns("/", |ns| RoomEvents::new(Policy).install(with_echo(ns)))
        .build()
}

#[tokio::test]
async fn join_publish_leave() {
    let server = start(server_io()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut c = clients(&server.io, server.addr, 3).await;

    assert_eq!(c[0].call("join", &[json!("r")]).await, ok());
    // Exact wire text of a success.
    c[1].ws.send(r#"4299["join","r"]"#).await;
    c[1].ws.expect(r#"4399[{"ok":true}]"#).await;
    assert_eq!(c[2].call("join", &[json!("other")]).await, ok());
    assert!(c[0].socket.rooms().iter().any(|r| &**r == "r"));

    // Publish reaches the other members only.
    let msg = json!({"room": "r", "event": "msg", "data": {"x": 1}});
    assert_eq!(c[0].call("publish", &[msg]).await, ok());
    check(&ns, &mut c, &[None, Some(r#"42["msg",{"x":1}]"#), None]).await;

    // A non-member may publish (the default policy); both members get it.
    let msg = json!({"room": "r", "event": "msg", "data": [1, 2]});
    assert_eq!(c[2].call("publish", &[msg]).await, ok());
    check(
        &ns,
        &mut c,
        &[Some(r#"42["msg",[1,2]]"#), Some(r#"42["msg",[1,2]]"#), None],
    )
    .await;

    // Without data the event carries null.
    let msg = json!({"room": "other", "event": "bare"});
    assert_eq!(c[0].call("publish", &[msg]).await, ok());
    check(&ns, &mut c, &[None, None, Some(r#"42["bare",null]"#)]).await;

    // After leaving, nothing more.
    assert_eq!(c[0].call("leave", &[json!("r")]).await, ok());
    assert!(!c[0].socket.rooms().iter().any(|r| &**r == "r"));
    let msg = json!({"room": "r", "event": "msg", "data": 3});
    assert_eq!(c[1].call("publish", &[msg]).await, ok());
    check(&ns, &mut c, &[None, None, None]).await;

    // Without an ack id the event still works and nothing is answered.
    c[0].ws.send(r#"42["join","quiet"]"#).await;
    // Events of one socket are handled in order: once this is answered, the join is done.
    assert_eq!(c[0].call("echo", &[json!(1)]).await, json!(1));
    check(&ns, &mut c, &[None, None, None]).await;
    assert!(c[0].socket.rooms().iter().any(|r| &**r == "quiet"));
}

#[tokio::test]
async fn invalid_arguments_are_answered_not_dropped() {
    let server = start(server_io()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut c = clients(&server.io, server.addr, 2).await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        ("join", vec![json!(5)], "room must be a string"),
        ("join", vec![], "room must be a string"),
        ("join", vec![json!("")], "room must not be empty"),
        ("join", vec![json!(long)], "room name too long"),
        ("leave", vec![json!(null)], "room must be a string"),
        ("publish", vec![json!("r")], "expected {room, event, data}"),
        ("publish", vec![], "expected {room, event, data}"),
        ("publish", vec![json!({"event": "e"})], "room must be a string"),
        ("publish", vec![json!({"room": "r"})], "event must be a string"),
        (
            "publish",
            vec![json!({"room": "r", "event": 1})],
            "event must be a string",
        ),
        (
            "publish",
            vec![json!({"room": "r", "event": ""})],
            "event must not be empty",
        ),
        (
            "publish",
            vec![json!({"room": "r", "event": "x".repeat(MAX_NAME_LEN + 1)})],
            "event name too long",
        ),
        (
            "publish",
            vec![json!({"room": "r", "event": "disconnect"})],
            "reserved event name",
        ),
    ];
    assert_eq!(c[1].call("join", &[json!("r")]).await, ok());
    for (event, args, reason) in cases {
        assert_eq!(c[0].call(event, &args).await, failure(reason), "{event} {args:?}");
    }
    // Nothing reached the member of r, and nobody was disconnected.
    check(&ns, &mut c, &[None, None]).await;
    assert_eq!(c[0].socket.rooms().len(), 1, "only its own room");
    assert_eq!(ns.socket_count(), 2);
}

#[tokio::test]
async fn policy_refusals_are_forbidden_and_deliver_nothing() {
    let server = start(server_io()).await;
    let ns = server.io.of("/").expect("namespace");
    let mut c = clients(&server.io, server.addr, 2).await;

    assert_eq!(c[0].call("join", &[json!("secret")]).await, failure("forbidden"));
    assert!(!c[0].socket.rooms().iter().any(|r| &**r == "secret"));
    assert!(!ns.adapter().local().has_room("secret"));

    assert_eq!(c[1].call("join", &[json!("announcements")]).await, ok());
    let msg = json!({"room": "announcements", "event": "news", "data": 1});
    assert_eq!(c[0].call("publish", &[msg]).await, failure("forbidden"));
    check(&ns, &mut c, &[None, None]).await;

    // What is allowed still works.
    let msg = json!({"room": c[1].socket.id().as_str(), "event": "direct", "data": 2});
    assert_eq!(c[0].call("publish", &[msg]).await, ok());
    check(&ns, &mut c, &[None, Some(r#"42["direct",2]"#)]).await;
}

#[tokio::test]
async fn reserved_events_are_refused_before_the_policy() {
    let io = Io::builder(Config::default())
        .ns("/", |ns| {
            RoomEvents::new(Policy)
                .reserve_events(|_, name| name.starts_with("server:"))
                .install(with_echo(ns))
        })
        .build();
    let server = start(io).await;
    let ns = server.io.of("/").expect("namespace");
    let mut c = clients(&server.io, server.addr, 2).await;
    assert_eq!(c[1].call("join", &[json!("r")]).await, ok());
    for (room, event) in [
        ("r", "server:notice"),
        ("announcements", "server:notice"),
        ("r", "disconnect"),
    ] {
        let msg = json!({"room": room, "event": event, "data": 1});
        assert_eq!(
            c[0].call("publish", &[msg]).await,
            failure("reserved event name"),
            "{room} {event}"
        );
    }
    check(&ns, &mut c, &[None, None]).await;
    let msg = json!({"room": "r", "event": "notice", "data": 2});
    assert_eq!(c[0].call("publish", &[msg]).await, ok());
    check(&ns, &mut c, &[None, Some(r#"42["notice",2]"#)]).await;
}
