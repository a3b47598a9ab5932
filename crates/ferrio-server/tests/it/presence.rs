//! Presence: the `presence` client event (permission-checked, agreeing with the HTTP API) and
//! the `presence:join` / `presence:leave` announcements of configured rooms.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{api_config, ask, call, join, next_event, user};
use crate::support::*;

#[tokio::test]
async fn presence_event_lists_users_and_checks_permissions() {
    let server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    let mut alice2 = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    join(&mut alice, "chat:1").await;
    join(&mut alice2, "chat:1").await;
    join(&mut bob, "chat:1").await;

    let seen = ask(&mut bob, 1, "presence", json!(["chat:1"])).await;
    assert_eq!(seen["ok"], true, "{seen}");
    assert_eq!(
        seen["users"],
        json!([{ "user": "alice", "connections": 2 }, { "user": "bob", "connections": 1 }])
    );
    assert_eq!(seen["sockets"], 3);
    assert_eq!(seen["room"], "chat:1");

    // The HTTP API agrees.
    let api = call(&server, "GET", "/api/presence/chat%3A1", "").await.json();
    assert_eq!(api["users"], seen["users"]);

    // A room the socket may join (chat:*) but is not in: allowed. Someone's user room or a
    // room outside the grants: forbidden, and counted.
    let empty = ask(&mut bob, 2, "presence", json!(["chat:2"])).await;
    assert_eq!(empty["ok"], true);
    assert_eq!(empty["users"], json!([]));
    for (id, room) in [(3, "user:alice"), (4, "secret")] {
        let refused = ask(&mut bob, id, "presence", json!([room])).await;
        assert_eq!(refused, json!({ "ok": false, "error": "forbidden" }), "{room}");
    }
    // Bad arguments get a clear answer and the connection stays.
    for (id, args) in [
        (5, json!([])),
        (6, json!([42])),
        (7, json!([""])),
        (8, json!(["x".repeat(300)])),
    ] {
        let refused = ask(&mut bob, id, "presence", args.clone()).await;
        assert_eq!(refused["ok"], false, "{args}");
        assert_eq!(refused["error"], "room must be a non-empty string");
    }
    let still = ask(&mut bob, 9, "presence", json!(["chat:1"])).await;
    assert_eq!(still["ok"], true);

    let metrics = get(&server, 1, "/metrics", &[]).await.expect("metrics").body;
    assert!(
        metrics.contains(r#"ferrio_rejections_total{kind="rooms",reason="presence_forbidden"} 2"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn presence_can_be_switched_off() {
    let server = Server::start(&api_config("[presence]\nquery = false\n")).await;
    let mut alice = user(&server, "alice").await;
    alice
        .send(Message::text(r#"421["presence","chat:1"]"#))
        .await
        .unwrap();
    // No handler: nothing answers; the next acked event is answered first.
    join(&mut alice, "chat:1").await;
    server.stop().await;
}

#[tokio::test]
async fn announced_rooms_hear_first_arrivals_and_last_departures() {
    let config = api_config("[presence]\nannounce = [\"chat:*\"]\n")
        .replace("join = [\"chat:*\"]", "join = [\"chat:*\", \"lobby\"]");
    let server = Server::start(&config).await;
    let mut watcher = user(&server, "watcher").await;
    join(&mut watcher, "chat:1").await;

    // Alice's first socket is announced; her second is not.
    let mut alice = user(&server, "alice").await;
    join(&mut alice, "chat:1").await;
    let seen = next_event(&mut watcher).await;
    assert_eq!(seen[0], "presence:join");
    assert_eq!(seen[1]["room"], "chat:1");
    assert_eq!(seen[1]["user"], "alice");
    let mut alice2 = user(&server, "alice").await;
    join(&mut alice2, "chat:1").await;

    // Leaving with one socket left: nothing. The last one disconnecting: presence:leave.
    alice
        .send(Message::text(r#"421["leave","chat:1"]"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice).await.unwrap(), r#"431[{"ok":true}]"#);
    // Rooms outside the patterns are never announced.
    join(&mut alice2, "lobby").await;
    alice2.close(None).await.unwrap();
    let seen = next_event(&mut watcher).await;
    assert_eq!(
        seen,
        json!(["presence:leave", { "room": "chat:1", "user": "alice", "socket": seen[1]["socket"] }]),
        "the first event after the join is the departure of her last socket"
    );

    // The announcement went to the room only, not to the joiner itself.
    let mut bob = user(&server, "bob").await;
    join(&mut bob, "chat:1").await;
    assert_eq!(next_event(&mut watcher).await[0], "presence:join");
    let ack = ask(&mut bob, 5, "presence", json!(["chat:1"])).await;
    assert_eq!(
        ack["users"],
        json!([{ "user": "bob", "connections": 1 }, { "user": "watcher", "connections": 1 }])
    );
    server.stop().await;
}
