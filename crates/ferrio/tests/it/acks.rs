//! Acknowledgements both ways: client asks and a handler answers; the server asks and the
//! client answers, stays silent, or leaves.

use std::time::Duration;

use bytes::Bytes;
use ferrio::{AckError, Config, Io, Payload, Sid, Socket};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{WsClient, start, with_echo, within};

fn server_io() -> Io {
    Io::builder(Config::default())
        .ns("/", |ns| {
            with_echo(ns)
                .on("ev", |_, mut event| {
                    let payload = Payload::args(event.args().to_vec());
                    event.ack(payload);
                })
                .on("bin-ack", |_, mut event| {
                    event.ack(Payload::new().binary(vec![1u8, 2, 3]).arg("x"));
                })
                .on("no-ack-wanted", |socket, mut event| {
                    let wanted = event.wants_ack();
                    event.ack(json!("ignored"));
                    let _ = socket.emit("wanted", json!(wanted));
                })
        })
        .ns("/chat", with_echo)
        .build()
}

fn socket_of(io: &Io, nsp: &str, sid: &str) -> Socket {
    let sid: Sid = sid.parse().expect("socket id");
    io.of(nsp)
        .expect("namespace")
        .socket(sid)
        .expect("socket is registered")
}

#[tokio::test]
async fn handler_answers_client_acks_with_exact_wire_text() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    assert_eq!(
        c.open["upgrades"],
        json!([]),
        "a WebSocket-only session offers no upgrade"
    );
    assert_eq!(c.open["sid"].as_str().map(str::len), Some(20));
    c.connect_ns("/").await;

    // The reference suite's example.
    c.send(r#"42456["ev",1,"2",{"3":[false]}]"#).await;
    c.expect(r#"43456[1,"2",{"3":[false]}]"#).await;

    c.send(r#"425["ev"]"#).await;
    c.expect("435[]").await;

    // A binary ack: BINARY_ACK with the attachment count, then the attachment.
    c.send(r#"425["bin-ack"]"#).await;
    c.expect(r#"461-5[{"_placeholder":true,"num":0},"x"]"#).await;
    assert_eq!(c.recv_binary().await, Bytes::from_static(&[1, 2, 3]));

    // Without an id, no ack goes out even if the handler tries.
    c.send(r#"42["no-ack-wanted"]"#).await;
    c.expect(r#"42["wanted",false]"#).await;

    // In another namespace, the namespace is written before the id. A CONNECT may leave out
    // the comma after the namespace; the reply always has it.
    c.send("40/chat").await;
    crate::support::parse_connect_reply(&c.recv_text().await, "/chat");
    c.send(r#"42/chat,7["echo","x"]"#).await;
    c.expect(r#"43/chat,7["x"]"#).await;
}

#[tokio::test]
async fn server_ack_resolves_with_the_clients_answer_and_leaves_nothing_pending() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    let sid = c.connect_ns("/").await;
    let socket = socket_of(&server.io, "/", &sid);

    let s = socket.clone();
    let task = tokio::spawn(async move {
        s.emit_with_ack_timeout("q", json!(1), Duration::from_secs(4))
            .await
    });
    // Server ack ids come from the namespace's counter, starting at 0.
    c.expect(r#"420["q",1]"#).await;
    assert_eq!(socket.pending_acks(), 1);
    c.send(r#"430["a",{"b":2}]"#).await;
    let answer = within("ack", task).await.expect("task");
    assert_eq!(answer.expect("answered").args, vec![json!("a"), json!({"b": 2})]);
    assert_eq!(socket.pending_acks(), 0);

    // A binary answer.
    let s = socket.clone();
    let task = tokio::spawn(async move {
        s.emit_with_ack_timeout("q", json!(2), Duration::from_secs(4))
            .await
    });
    c.expect(r#"421["q",2]"#).await;
    c.send(r#"461-1[{"_placeholder":true,"num":0}]"#).await;
    c.send_binary(vec![9u8, 9]).await;
    let answer = within("binary ack", task).await.expect("task").expect("answered");
    assert_eq!(answer.binary_arg(0), Some(&Bytes::from_static(&[9, 9])));
    assert_eq!(socket.pending_acks(), 0);
}

#[tokio::test]
async fn server_ack_times_out_when_the_client_is_silent() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    let sid = c.connect_ns("/").await;
    let socket = socket_of(&server.io, "/", &sid);

    let started = Instant::now();
    let result = within(
        "ack timeout",
        socket.emit_with_ack_timeout("q", json!(1), Duration::from_millis(200)),
    )
    .await;
    assert_eq!(result, Err(AckError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(socket.pending_acks(), 0, "a timed-out ack is released");
    c.expect(r#"420["q",1]"#).await;

    // A late answer is ignored and the connection stays usable.
    c.send(r#"430["late"]"#).await;
    c.send(r#"421["echo","ok"]"#).await;
    c.expect(r#"431["ok"]"#).await;
    assert!(socket.connected());
    assert_eq!(socket.pending_acks(), 0);
}

#[tokio::test]
async fn server_ack_in_flight_resolves_disconnected_when_the_socket_leaves() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    let sid = c.connect_ns("/").await;
    let socket = socket_of(&server.io, "/", &sid);

    let s = socket.clone();
    let task = tokio::spawn(async move {
        s.emit_with_ack_timeout("q", json!(1), Duration::from_secs(30))
            .await
    });
    c.expect(r#"420["q",1]"#).await;
    c.send("41").await;
    let result = within("ack after disconnect", task).await.expect("task");
    assert_eq!(result, Err(AckError::Disconnected));
    assert_eq!(socket.pending_acks(), 0);
    assert!(!socket.connected());

    // Asking a socket that is gone fails at once.
    let result = within("ack on a gone socket", socket.emit_with_ack("q", ())).await;
    assert!(
        matches!(result, Err(AckError::Disconnected | AckError::Send(_))),
        "{result:?}"
    );
    assert_eq!(socket.pending_acks(), 0);
}

#[tokio::test]
async fn echoed_objects_keep_their_member_order() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    c.connect_ns("/").await;
    c.send(r#"421["echo",{"b":1,"a":{"z":true,"y":null}}]"#).await;
    c.expect(r#"431[{"b":1,"a":{"z":true,"y":null}}]"#).await;
}

#[tokio::test]
async fn an_ack_for_another_sockets_id_resolves_nothing() {
    let server = start(server_io()).await;
    let mut a = WsClient::connect(server.addr).await;
    let a_socket = socket_of(&server.io, "/", &a.connect_ns("/").await);
    let mut b = WsClient::connect(server.addr).await;
    b.connect_ns("/").await;

    let s = a_socket.clone();
    let task = tokio::spawn(async move {
        s.emit_with_ack_timeout("q", json!(1), Duration::from_millis(300))
            .await
    });
    a.expect(r#"420["q",1]"#).await;
    // B forges A's answer: ack ids are per socket on the receiving side.
    b.send(r#"430["forged"]"#).await;
    b.send(r#"421["echo","b"]"#).await;
    b.expect(r#"431["b"]"#).await;
    assert_eq!(a_socket.pending_acks(), 1);
    let result = within("ack", task).await.expect("task");
    assert_eq!(result, Err(AckError::Timeout));
}

#[tokio::test]
async fn reserved_event_names_are_never_emitted() {
    let server = start(server_io()).await;
    let mut c = WsClient::connect(server.addr).await;
    let socket = socket_of(&server.io, "/", &c.connect_ns("/").await);
    let ns = server.io.of("/").expect("namespace");
    for name in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        let _ = socket.emit(name, ());
        let _ = ns.emit(name, ());
    }
    socket.emit("marker", ()).expect("emit");
    c.expect(r#"42["marker"]"#).await;
}
