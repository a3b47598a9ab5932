//! The client against a ferrio server in this process: transports, events, acks both ways,
//! binary, namespaces, auth, refusals, and the disconnections that end reconnection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrio::{Accepted, Config, ConnectError, ConnectRequest, Io, Payload as ServerPayload};
use ferrio_client::{
    AckError, Client, ConnectionState, DisconnectReason, EmitError, Overflow, Payload, QueueLimits, Transport,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::{FerrioServer, connected, init_tracing, next_state, with_echo, within};

fn test_io() -> Io {
    Io::builder(Config::default())
        .ns("/", |ns| {
            with_echo(ns)
                .on("whoami", |socket, mut event| {
                    event.ack(json!({
                        "id": socket.id().as_str(),
                        "engine": socket.engine_sid().as_str(),
                        "auth": socket.auth().clone(),
                    }));
                })
                .on("kick", |socket, _| socket.disconnect(false))
                .on_async("ask", |socket, mut event| async move {
                    // The server asks the client, and acks the client's answer back.
                    let answer = socket
                        .emit_with_ack("question", event.payload().clone())
                        .await
                        .map(|p| Value::Array(p.args))
                        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                    event.ack(answer);
                })
        })
        .ns("/admin", |ns| {
            with_echo(ns).on("whoami", |socket, mut event| {
                event.ack(json!({
                    "id": socket.id().as_str(),
                    "engine": socket.engine_sid().as_str(),
                }));
            })
        })
        .ns("/private", |ns| {
            with_echo(ns).connect_hook(|req: ConnectRequest| async move {
                if req.auth.get("token") == Some(&json!("secret")) {
                    Ok(Accepted::new())
                } else {
                    Err(ConnectError::new("not authorized").with_data(json!({"reason": "no token"})))
                }
            })
        })
        .build()
}

async fn echo_round_trip(transports: &[Transport]) {
    init_tracing();
    let server = FerrioServer::start(test_io()).await;
    let client = Client::builder(&server.url())
        .transports(transports)
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    assert!(socket.id().is_some());
    let answer = within(
        "echo ack",
        socket.emit_with_ack("echo", Payload::new().arg(1).arg("two")),
    )
    .await
    .unwrap();
    assert_eq!(answer.args, vec![json!(1), json!("two")]);
    // A large payload crosses polling and WebSocket alike.
    let big = "x".repeat(200_000);
    let answer = within("big echo", socket.emit_with_ack("echo", big.as_str()))
        .await
        .unwrap();
    assert_eq!(answer.arg_as::<String>(0).unwrap(), big);
}

#[tokio::test]
async fn websocket_only() {
    echo_round_trip(&[Transport::WebSocket]).await;
}

#[tokio::test]
async fn polling_only() {
    echo_round_trip(&[Transport::Polling]).await;
}

#[tokio::test]
async fn polling_upgrades_to_websocket_without_losing_order() {
    init_tracing();
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = client
        .socket("/")
        .on("message-back", move |event| {
            let _ = tx.send(event.arg::<u64>(0).unwrap());
        })
        .connect();
    connected(&socket).await;
    // Emits straddle the upgrade; every one comes back, in order.
    for i in 0..300u64 {
        socket.emit("message", i).unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for i in 0..300u64 {
        assert_eq!(within("message-back", rx.recv()).await, Some(i));
    }
    let id = socket.id().unwrap();
    let ws_sockets = within("upgraded", async {
        loop {
            let sock = server.io.of("/").unwrap().socket(id.parse().unwrap());
            if let Some(s) = sock
                && s.transport() == ferrio::TransportKind::WebSocket
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(ws_sockets.id().as_str(), id);
}

#[tokio::test]
async fn binary_arguments_round_trip() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = client
        .socket("/")
        .on("message-back", move |event| {
            let _ = tx.send(event.payload().clone());
        })
        .connect();
    connected(&socket).await;
    let mut payload = Payload::new().arg("file").binary(vec![0u8, 1, 2, 255]);
    let nested = payload.attach(vec![9u8; 1000]);
    payload = payload.arg(json!({"inner": nested}));
    let answer = within("binary echo", socket.emit_with_ack("echo", payload.clone()))
        .await
        .unwrap();
    assert_eq!(answer.binary_arg(1).unwrap().as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(answer.attachment(&answer.args[2]["inner"]).unwrap().len(), 1000);
    socket.emit("message", payload).unwrap();
    let back = within("message-back", rx.recv()).await.unwrap();
    assert_eq!(back.arg_as::<String>(0).unwrap(), "file");
    assert_eq!(back.binary_arg(1).unwrap().as_ref(), &[0u8, 1, 2, 255]);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    from: String,
    text: String,
}

#[tokio::test]
async fn typed_events_via_serde() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = client
        .socket("/")
        .on_typed("message-back", move |chat: Chat| {
            let _ = tx.send(chat);
        })
        .connect();
    connected(&socket).await;
    let chat = Chat {
        from: "ann".into(),
        text: "hé".into(),
    };
    socket.emit_typed("message", &chat).unwrap();
    assert_eq!(within("typed event", rx.recv()).await, Some(chat.clone()));
    let answer = within(
        "typed ack",
        socket.emit_with_ack("echo", Payload::json(&chat).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(answer.arg_as::<Chat>(0).unwrap(), chat);
}

#[tokio::test]
async fn server_acks_and_client_acks() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let socket = client
        .socket("/")
        .on("question", |mut event| {
            let n: u64 = event.arg(0).unwrap();
            event.ack(Payload::new().arg(n * 2).binary(vec![7u8]));
        })
        .connect();
    connected(&socket).await;
    let answer = within("server asked the client", socket.emit_with_ack("ask", 21))
        .await
        .unwrap();
    assert_eq!(answer.args[0][0], json!(42));
}

#[tokio::test]
async fn namespaces_share_one_connection() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::builder(&server.url())
        .transports(&[Transport::WebSocket])
        .build()
        .unwrap();
    let main = client.socket("/").connect();
    let admin = client.socket("admin").connect();
    connected(&main).await;
    connected(&admin).await;
    assert_eq!(admin.namespace(), "/admin");
    let a = within("whoami /", main.emit_with_ack("whoami", ()))
        .await
        .unwrap();
    let b = within("whoami /admin", admin.emit_with_ack("whoami", ()))
        .await
        .unwrap();
    assert_eq!(a.args[0]["engine"], b.args[0]["engine"], "one Engine.IO session");
    assert_ne!(a.args[0]["id"], b.args[0]["id"]);
    assert_eq!(server.io.connection_count(), 1);
    // Leaving one namespace keeps the other.
    admin.disconnect();
    assert_eq!(
        admin.state(),
        ConnectionState::Disconnected {
            reason: DisconnectReason::ClientDisconnect
        }
    );
    within("echo after leaving /admin", main.emit_with_ack("echo", 1))
        .await
        .unwrap();
    // The same namespace asked again is the same socket, connected again.
    let again = client.socket("/admin").connect();
    connected(&again).await;
    assert!(admin.connected());
}

#[tokio::test]
async fn auth_payloads_and_refusals() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let refused = client
        .socket("/private")
        .auth(json!({"token": "wrong"}))
        .connect();
    let reason = within("refused", refused.wait_connected()).await.unwrap_err();
    assert_eq!(
        reason,
        DisconnectReason::ConnectError {
            message: "not authorized".into(),
            data: Some(json!({"reason": "no token"})),
        }
    );
    assert!(refused.state().is_final());

    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let main = client
        .socket("/")
        .auth_with(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move { json!({ "token": format!("t{n}") }) }
        })
        .connect();
    connected(&main).await;
    let who = within("whoami", main.emit_with_ack("whoami", ())).await.unwrap();
    assert_eq!(who.args[0]["auth"], json!({"token": "t0"}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_disconnect_is_final() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::builder(&server.url())
        .reconnection_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    let mut changes = socket.state_changes();
    socket.emit("kick", ()).unwrap();
    let change = next_state(&mut changes, "server disconnect", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    assert_eq!(
        change.state,
        ConnectionState::Disconnected {
            reason: DisconnectReason::ServerDisconnect
        }
    );
    // No reconnection: the connection closes, and nothing comes back.
    within("connection closed", async {
        while server.io.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), changes.next())
            .await
            .is_err(),
        "no state change after a server disconnect"
    );
    assert_eq!(server.io.connection_count(), 0);
    // Emits after it are held (they would go out on an explicit connect()).
    socket.emit("echo", 1).unwrap();
    assert_eq!(socket.queued(), 1);
    socket.connect();
    connected(&socket).await;
    within("queue flushed", async {
        while socket.queued() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn client_disconnect_and_close_end_everything() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    socket.disconnect();
    within("server saw the close", async {
        while server.io.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(socket.state().is_final());

    // close(): acks waiting in the offline queue fail with Closed.
    let pending = socket.emit_with_ack("echo", 1);
    client.close();
    assert_eq!(within("closed", pending).await.unwrap_err(), AckError::Closed);
}

#[tokio::test]
async fn reserved_names_volatile_and_queue_policies() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::builder(&server.url())
        .transports(&[Transport::WebSocket])
        .build()
        .unwrap();
    assert_eq!(
        client.socket("/").connect().emit("connect", ()),
        Err(EmitError::ReservedEvent("connect".into()))
    );
    let socket = client.socket("/").connect();
    connected(&socket).await;
    assert_eq!(socket.emit_volatile("echo", 1), Ok(true));
    socket.disconnect();
    // Not connected: volatile emits are dropped, never queued.
    assert_eq!(socket.emit_volatile("echo", 1), Ok(false));
    assert_eq!(socket.queued(), 0);

    for (overflow, expect_err, kept) in [
        (Overflow::Error, true, vec![0, 1]),
        (Overflow::DropNewest, false, vec![0, 1]),
        (Overflow::DropOldest, false, vec![1, 2]),
    ] {
        let client = Client::new(&server.url()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let socket = client
            .socket("/")
            .queue(QueueLimits {
                capacity: 2,
                overflow,
            })
            .on("message-back", move |event| {
                s.lock().push(event.arg::<u64>(0).unwrap())
            })
            .connect();
        socket.disconnect();
        let first = socket.emit_with_ack("echo", 0);
        socket.emit("message", 1).unwrap();
        let third = socket.emit("message", 2);
        assert_eq!(third.is_err(), expect_err, "{overflow:?}");
        if expect_err {
            assert_eq!(third, Err(EmitError::QueueFull));
        }
        socket.connect();
        connected(&socket).await;
        if overflow == Overflow::DropOldest {
            assert_eq!(within("evicted ack", first).await.unwrap_err(), AckError::Dropped);
        } else {
            within("first ack", first).await.unwrap();
        }
        let expected: Vec<u64> = kept.into_iter().filter(|n| *n != 0).collect();
        within("queued messages", async {
            while seen.lock().len() < expected.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(*seen.lock(), expected, "{overflow:?}");
    }
}

#[tokio::test]
async fn ack_timeout_and_late_answers() {
    let io = Io::builder(Config::default())
        .ns("/", |ns| {
            ns.on_async("slow", |_, mut event| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                event.ack(ServerPayload::new().arg("late"));
            })
        })
        .build();
    let server = FerrioServer::start(io).await;
    let client = Client::new(&server.url()).unwrap();
    let socket = client
        .socket("/")
        .ack_timeout(Duration::from_millis(50))
        .connect();
    connected(&socket).await;
    assert_eq!(
        within("timeout", socket.emit_with_ack("slow", ()))
            .await
            .unwrap_err(),
        AckError::Timeout
    );
    let answer = within(
        "longer timeout",
        socket.emit_with_ack_timeout("slow", (), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(answer.args, vec![json!("late")]);
}

#[tokio::test]
async fn stays_on_polling_behind_a_proxy_that_blocks_websocket() {
    let server = FerrioServer::start(test_io()).await;
    let proxy = crate::proxy::Proxy::start(server.addr).await;
    proxy.set_block_websocket(true);
    let client = Client::new(&proxy.url()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = client
        .socket("/")
        .on("message-back", move |event| {
            let _ = tx.send(event.arg::<u64>(0).unwrap());
        })
        .connect();
    connected(&socket).await;
    // The refused probe does not disturb the session: traffic keeps flowing over polling.
    for i in 0..50u64 {
        socket.emit("message", i).unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for i in 0..50u64 {
        assert_eq!(within("message-back", rx.recv()).await, Some(i));
    }
    let id: ferrio::Sid = socket.id().unwrap().parse().unwrap();
    let on_server = server.io.of("/").unwrap().socket(id).unwrap();
    assert_eq!(on_server.transport(), ferrio::TransportKind::Polling);
    assert!(socket.connected());
    assert_eq!(proxy.blocked(), 1, "the upgrade was tried once and refused");
    // A WebSocket-only client cannot connect through it at all.
    let ws_only = Client::builder(&proxy.url())
        .transports(&[Transport::WebSocket])
        .reconnection(false)
        .build()
        .unwrap();
    let refused = ws_only.socket("/").connect();
    let reason = within("refused", refused.wait_connected()).await.unwrap_err();
    assert!(
        matches!(reason, DisconnectReason::TransportError(_)),
        "{reason:?}"
    );
}

#[tokio::test]
async fn a_panicking_auth_callback_fails_the_connection_cleanly() {
    let server = FerrioServer::start(test_io()).await;
    let client = Client::new(&server.url()).unwrap();
    let socket = client
        .socket("/")
        .auth_with(|| async { panic!("deliberate panic: an auth callback that fails") })
        .connect();
    let reason = within("refused", socket.wait_connected()).await.unwrap_err();
    assert!(
        matches!(reason, DisconnectReason::ConnectError { .. }),
        "{reason:?}"
    );
    // The client goes on working for other namespaces.
    let admin = client.socket("/admin").connect();
    connected(&admin).await;
}
