//! The client against Node's reference server (`socket.io` 4.8 from npm,
//! `tests/interop/reference-server.js`): proof that it is a real Socket.IO client and not
//! one that only talks to ferrio. Skipped, saying so, when `node` is not installed.

use std::time::Duration;

use ferrio_client::{Client, ConnectionState, DisconnectReason, Payload, Transport};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{connected, init_tracing, next_state, node_reference, within};

async fn events_acks_and_binary(transports: &[Transport]) {
    init_tracing();
    let Some(server) = node_reference(&[]).await else {
        return;
    };
    let client = Client::builder(&server.url())
        .transports(transports)
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let auth_tx = tx.clone();
    let socket = client
        .socket("/")
        .auth(json!({"token": "abc"}))
        .on("auth", move |event| {
            let _ = auth_tx.send(("auth".to_owned(), event.payload().clone()));
        })
        .on("message-back", move |event| {
            let _ = tx.send(("message-back".to_owned(), event.payload().clone()));
        })
        .connect();
    connected(&socket).await;
    // The server emits the auth payload it received on connect.
    let (name, auth) = within("auth event", rx.recv()).await.unwrap();
    assert_eq!(name, "auth");
    assert_eq!(auth.args, vec![json!({"token": "abc"})]);

    let answer = within(
        "message-with-ack",
        socket.emit_with_ack(
            "message-with-ack",
            Payload::new().arg(1).arg("2").arg(json!({"3": [false]})),
        ),
    )
    .await
    .unwrap();
    assert_eq!(answer.args, vec![json!(1), json!("2"), json!({"3": [false]})]);

    socket
        .emit(
            "message",
            Payload::new()
                .arg("bin")
                .binary(vec![1u8, 2, 3])
                .binary(vec![4u8]),
        )
        .unwrap();
    let (name, back) = within("message-back", rx.recv()).await.unwrap();
    assert_eq!(name, "message-back");
    assert_eq!(back.arg_as::<String>(0).unwrap(), "bin");
    assert_eq!(back.binary_arg(1).unwrap().as_ref(), &[1u8, 2, 3]);
    assert_eq!(back.binary_arg(2).unwrap().as_ref(), &[4u8]);

    // A binary ack.
    let answer = within(
        "binary ack",
        socket.emit_with_ack("message-with-ack", Payload::new().binary(vec![9u8; 300])),
    )
    .await
    .unwrap();
    assert_eq!(answer.binary_arg(0).unwrap().len(), 300);
}

#[tokio::test]
async fn node_reference_over_websocket() {
    events_acks_and_binary(&[Transport::WebSocket]).await;
}

#[tokio::test]
async fn node_reference_over_polling() {
    events_acks_and_binary(&[Transport::Polling]).await;
}

#[tokio::test]
async fn node_reference_with_upgrade() {
    events_acks_and_binary(&[Transport::Polling, Transport::WebSocket]).await;
}

#[tokio::test]
async fn node_reference_server_asks_the_client() {
    let Some(server) = node_reference(&[]).await else {
        return;
    };
    let client = Client::new(&server.url()).unwrap();
    let socket = client
        .socket("/")
        .on("question", |mut event| {
            let n: i64 = event.arg(0).unwrap();
            event.ack(Payload::new().arg(n + 1).binary(vec![5u8]));
        })
        .connect();
    connected(&socket).await;
    let answer = within(
        "call-client",
        socket.emit_with_ack("call-client", Payload::new().arg("question").arg(41)),
    )
    .await
    .unwrap();
    assert_eq!(answer.args[0], json!(42));
    assert_eq!(answer.binary_arg(1).unwrap().as_ref(), &[5u8]);
}

#[tokio::test]
async fn node_reference_namespaces_and_refusals() {
    let Some(server) = node_reference(&[]).await else {
        return;
    };
    let client = Client::builder(&server.url())
        .transports(&[Transport::WebSocket])
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let custom_tx = tx.clone();
    let custom = client
        .socket("/custom")
        .auth(json!({"who": "custom"}))
        .on("auth", move |event| {
            let _ = custom_tx.send(event.args().to_vec());
        })
        .connect();
    let refused = client.socket("/private").auth(json!({"token": "nope"})).connect();
    let private = client.socket("/dyn-abc").connect();
    connected(&custom).await;
    assert_eq!(
        within("custom auth", rx.recv()).await.unwrap(),
        vec![json!({"who": "custom"})]
    );
    let reason = within("refused", refused.wait_connected()).await.unwrap_err();
    assert_eq!(
        reason,
        DisconnectReason::ConnectError {
            message: "not authorized".into(),
            data: Some(json!({"reason": "no token"})),
        }
    );
    connected(&private).await;
    let who = within("whoami", private.emit_with_ack("whoami", ()))
        .await
        .unwrap();
    assert_eq!(who.args, vec![json!("/dyn-abc")]);
    let unknown = client.socket("/nowhere").connect();
    let reason = within("invalid namespace", unknown.wait_connected())
        .await
        .unwrap_err();
    assert!(
        matches!(&reason, DisconnectReason::ConnectError { message, .. } if message == "Invalid namespace"),
        "{reason:?}"
    );
    // A good token on a second try, over the same connection.
    let welcome_tx = tx;
    let accepted = client
        .socket("/private")
        .on("welcome", move |event| {
            let _ = welcome_tx.send(event.args().to_vec());
        })
        .connect();
    // The first builder's options stay: the token is still wrong.
    let reason = within("still refused", accepted.wait_connected())
        .await
        .unwrap_err();
    assert!(matches!(reason, DisconnectReason::ConnectError { .. }));
    let other = Client::new(&server.url()).unwrap();
    let ok = other
        .socket("/private")
        .auth(json!({"token": "secret"}))
        .on("welcome", |_| {})
        .connect();
    connected(&ok).await;
    let custom_answer = within("custom ack", custom.emit_with_ack("message-with-ack", "x"))
        .await
        .unwrap();
    assert_eq!(custom_answer.args, vec![json!("x")]);
}

#[tokio::test]
async fn node_reference_server_disconnect_ends_reconnection() {
    let Some(server) = node_reference(&[]).await else {
        return;
    };
    let client = Client::builder(&server.url())
        .reconnection_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let socket = client.socket("/").connect();
    connected(&socket).await;
    let mut changes = socket.state_changes();
    socket.emit("disconnect-me", false).unwrap();
    let change = next_state(&mut changes, "io server disconnect", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    assert_eq!(
        change.state,
        ConnectionState::Disconnected {
            reason: DisconnectReason::ServerDisconnect
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), changes.next())
            .await
            .is_err(),
        "no reconnection after a server-side namespace disconnect"
    );

    // `disconnect-me` with close=true: the reference sends DISCONNECT, then closes the
    // connection. Final as well.
    let other = Client::builder(&server.url())
        .reconnection_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let socket = other.socket("/").connect();
    connected(&socket).await;
    let mut changes = socket.state_changes();
    socket.emit("disconnect-me", true).unwrap();
    let change = next_state(&mut changes, "disconnected", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    assert_eq!(
        change.state,
        ConnectionState::Disconnected {
            reason: DisconnectReason::ServerDisconnect
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), changes.next())
            .await
            .is_err(),
        "no reconnection"
    );
}
