//! Event names the server emits itself (token lifetime, presence, the dashboard's) cannot be
//! sent by anyone else: a client's `publish` and the HTTP API's emit refuse them with
//! `reserved event name`, and nothing is delivered; other names still go through.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{API_KEY, call, join, next_event, user};
use crate::support::*;

/// The token warning renamed: the configured name is reserved, the default one is not.
fn config() -> String {
    format!(
        "{}[rooms]\njoin = [\"chat:*\"]\npublish = [\"chat:*\"]\n[api]\nkeys = [\"{API_KEY}\"]\n\
         [dashboard]\npassword = \"dashboard-password-0123\"\n",
        hs_config().replace("[auth]\n", "[auth]\nexpiring_event = \"session:ending\"\n")
    )
}

/// Every name the server emits on user namespaces with this configuration, and a protocol one.
const SERVER_OWNED: [&str; 6] = [
    "session:ending",
    "token:expired",
    "refresh",
    "presence:join",
    "presence:leave",
    "disconnect",
];

async fn publish(ws: &mut Ws, id: u32, event: &str) -> Value {
    let msg = json!(["publish", { "room": "chat:1", "event": event, "data": id }]);
    ws.send(Message::text(format!("42{id}{msg}"))).await.unwrap();
    loop {
        let text = next_text(ws).await.expect("closed before the ack");
        if let Some(body) = text.strip_prefix(&format!("43{id}")) {
            return serde_json::from_str::<Value>(body).unwrap()[0].clone();
        }
    }
}

#[tokio::test]
async fn clients_cannot_publish_what_the_server_emits() {
    let server = Server::start(&config()).await;
    let mut sender = user(&server, "mallory").await;
    let mut reader = user(&server, "alice").await;
    join(&mut reader, "chat:1").await;

    for (id, name) in (1..).zip(SERVER_OWNED) {
        let answer = publish(&mut sender, id, name).await;
        assert_eq!(
            answer,
            json!({ "ok": false, "error": "reserved event name" }),
            "{name}"
        );
    }
    // Names the server does not emit here: the default warning (renamed away) and the
    // dashboard's, which it emits only on its own namespace.
    for (id, name) in [(10, "token:expiring"), (11, "snapshot"), (12, "m")] {
        assert_eq!(
            publish(&mut sender, id, name).await,
            json!({ "ok": true }),
            "{name}"
        );
        // The first events the reader gets: none of the refused ones came before.
        assert_eq!(next_event(&mut reader).await, json!([name, id]));
    }
    server.stop().await;
}

#[tokio::test]
async fn the_http_api_cannot_emit_what_the_server_emits() {
    let server = Server::start(&config()).await;
    let mut reader = user(&server, "alice").await;
    join(&mut reader, "chat:1").await;

    let emit = |namespace: &str, event: &str| {
        json!({ "namespace": namespace, "rooms": ["chat:1"], "event": event, "data": 1 }).to_string()
    };
    let mut refused: Vec<(&str, &str)> = SERVER_OWNED.iter().map(|name| ("/", *name)).collect();
    refused.extend([("/ferrio-admin", "snapshot"), ("/ferrio-admin", "history")]);
    for (namespace, name) in refused {
        let res = call(&server, "POST", "/api/emit", &emit(namespace, name)).await;
        assert_eq!(res.status, 400, "{namespace} {name}: {}", res.body);
        let body = res.json();
        assert_eq!(body["error"], "invalid_body", "{name}");
        assert_eq!(body["message"], "`event` is a reserved event name", "{name}");
    }
    for name in ["token:expiring", "snapshot", "m"] {
        let res = call(&server, "POST", "/api/emit", &emit("/", name)).await;
        assert_eq!(res.status, 200, "{name}: {}", res.body);
        assert_eq!(next_event(&mut reader).await, json!([name, 1]));
    }
    server.stop().await;
}
