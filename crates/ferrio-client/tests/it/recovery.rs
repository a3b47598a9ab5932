//! The client side of connection-state recovery, against the Node reference with
//! `connectionStateRecovery` on (`tests/interop/client/recovery-server.js`): the client keeps
//! the `pid` of the CONNECT reply and the offset of the last event, sends both on
//! reconnection, and receives what it missed, once, in order, before `Connected`.

use std::sync::Arc;
use std::time::Duration;

use ferrio_client::{Client, ConnectionState, Socket, Transport};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::proxy::Proxy;
use crate::support::{connected, init_tracing, next_state, node_server, within};

async fn publish(publisher: &Socket, text: &str) {
    let answer = within("publish", publisher.emit_with_ack("publish", text))
        .await
        .unwrap();
    assert_eq!(answer.args, vec![json!({"ok": true})]);
}

async fn whoami(socket: &Socket) -> Value {
    within("whoami", socket.emit_with_ack("whoami", ()))
        .await
        .unwrap()
        .args
        .remove(0)
}

async fn recovers_missed_events(transports: &[Transport]) {
    init_tracing();
    let Some(server) = node_server("client/recovery-server.js", &["--listen", "127.0.0.1:0"]).await else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;
    let received = Arc::new(Mutex::new(Vec::<(String, Option<String>)>::new()));
    let r = received.clone();
    let client = Client::builder(&proxy.url())
        .transports(transports)
        .reconnection_delay(Duration::from_millis(20))
        .reconnection_delay_max(Duration::from_millis(50))
        .build()
        .unwrap();
    let socket = client
        .socket("/")
        .auth(json!({"token": "t"}))
        .on("news", move |event| {
            // The server appends the packet's offset as the last argument.
            let text: String = event.arg(0).unwrap();
            let offset = event.args().get(1).and_then(Value::as_str).map(str::to_owned);
            r.lock().push((text, offset));
        })
        .connect();
    let publisher_client = Client::new(&server.url()).unwrap();
    let publisher = publisher_client.socket("/").connect();
    connected(&socket).await;
    connected(&publisher).await;
    assert!(!socket.recovered(), "a first connection is not a recovery");
    let first_id = socket.id().unwrap();

    publish(&publisher, "m0").await;
    within("m0", async {
        while received.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let offset0 = received.lock()[0].1.clone();
    assert!(offset0.is_some(), "events carry an offset when recovery is on");

    // Cut the link and keep it down while the publisher goes on.
    let mut changes = socket.state_changes();
    proxy.set_open(false);
    proxy.cut_all();
    next_state(&mut changes, "link cut", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    for i in 1..=5 {
        publish(&publisher, &format!("m{i}")).await;
    }
    proxy.set_open(true);
    next_state(&mut changes, "reconnected", |s| *s == ConnectionState::Connected).await;

    assert!(socket.recovered(), "the session was recovered");
    assert_eq!(socket.id().unwrap(), first_id, "same socket id");
    // Missed events were delivered before the state became Connected.
    let texts: Vec<String> = received.lock().iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(
        texts,
        ["m0", "m1", "m2", "m3", "m4", "m5"],
        "each missed event once, in order"
    );
    let me = whoami(&socket).await;
    assert_eq!(me["recovered"], json!(true));
    assert_eq!(me["id"], json!(first_id));
    assert!(
        me["rooms"].as_array().unwrap().contains(&json!("news")),
        "rooms kept: {me}"
    );
    // The CONNECT carried pid and offset merged into the auth payload.
    let auth = &me["auth"];
    assert_eq!(auth["token"], json!("t"));
    assert!(auth["pid"].is_string(), "{auth}");
    assert_eq!(
        auth["offset"],
        json!(offset0.unwrap()),
        "the offset of the last event seen"
    );

    // New events keep flowing after the recovery.
    publish(&publisher, "m6").await;
    within("m6", async {
        while received.lock().len() < 7 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(received.lock()[6].0, "m6");
    client.close();
    publisher_client.close();
}

#[tokio::test]
async fn recovery_over_websocket() {
    recovers_missed_events(&[Transport::WebSocket]).await;
}

#[tokio::test]
async fn recovery_over_polling_with_upgrade() {
    recovers_missed_events(&[Transport::Polling, Transport::WebSocket]).await;
}

#[tokio::test]
async fn an_expired_session_is_not_recovered() {
    let Some(server) = node_server(
        "client/recovery-server.js",
        &["--listen", "127.0.0.1:0", "--max-disconnection", "200"],
    )
    .await
    else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let r = received.clone();
    let client = Client::builder(&proxy.url())
        .transports(&[Transport::WebSocket])
        .reconnection_delay(Duration::from_millis(20))
        .reconnection_delay_max(Duration::from_millis(50))
        .build()
        .unwrap();
    let socket = client
        .socket("/")
        .on("news", move |event| r.lock().push(event.arg(0).unwrap()))
        .connect();
    let publisher_client = Client::new(&server.url()).unwrap();
    let publisher = publisher_client.socket("/").connect();
    connected(&socket).await;
    connected(&publisher).await;
    let first_id = socket.id().unwrap();
    publish(&publisher, "m0").await;
    within("m0", async {
        while received.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut changes = socket.state_changes();
    proxy.set_open(false);
    proxy.cut_all();
    next_state(&mut changes, "link cut", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    publish(&publisher, "stale").await;
    // Longer than maxDisconnectionDuration.
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.set_open(true);
    next_state(&mut changes, "reconnected", |s| *s == ConnectionState::Connected).await;
    assert!(!socket.recovered());
    assert_ne!(socket.id().unwrap(), first_id, "a new session");
    assert_eq!(*received.lock(), ["m0"], "nothing stale is replayed");
    client.close();
    publisher_client.close();
}
