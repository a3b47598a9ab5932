//! `[history]`: the `history` client event (for members and those who may join) and
//! `GET /api/history/{room}` read a room's own window; a busy room does not push a quiet room's
//! messages out; the configuration refuses history without recovery.

use serde_json::{Value, json};

use crate::api::{api_config, ask, call, join, user};
use crate::support::*;

fn history_config() -> String {
    api_config(
        "[recovery]\nenabled = true\nmax_packets = 5\n\
         [[history.rooms]]\npattern = \"chat:quiet\"\nsize = 3\nttl = \"10m\"\n\
         [[history.rooms]]\npattern = \"chat:b*\"\nsize = 3\nttl = \"10m\"\n",
    )
}

async fn emit(server: &Server, room: &str, n: u64) {
    let body = json!({ "rooms": [room], "event": "msg", "data": { "n": n } }).to_string();
    let res = call(server, "POST", "/api/emit", &body).await;
    assert_eq!(res.status, 200, "{}", res.body);
}

fn numbers(answer: &Value) -> Vec<u64> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|m| {
            assert_eq!(m["event"], "msg", "{m}");
            assert!(m["offset"].is_string(), "{m}");
            m["args"][0]["n"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn history_event_and_api_read_a_rooms_own_window() {
    let server = Server::start(&history_config()).await;
    let mut alice = user(&server, "alice").await;
    join(&mut alice, "chat:quiet").await;
    emit(&server, "chat:quiet", 0).await;
    // A busy room: its own window, so the quiet room keeps its message.
    for n in 1..=20 {
        emit(&server, "chat:busy", n).await;
    }
    emit(&server, "chat:quiet", 21).await;

    let quiet = ask(&mut alice, 1, "history", json!([{ "room": "chat:quiet" }])).await;
    assert_eq!(quiet["ok"], true, "{quiet}");
    assert_eq!(numbers(&quiet), vec![0, 21]);
    assert_eq!(quiet["complete"], true);
    // Not a member, but may join (chat:*): allowed; the window keeps the last 3.
    let busy = ask(
        &mut alice,
        2,
        "history",
        json!([{ "room": "chat:busy", "limit": 2 }]),
    )
    .await;
    assert_eq!(numbers(&busy), vec![19, 20]);
    let all_busy = ask(&mut alice, 3, "history", json!([{ "room": "chat:busy" }])).await;
    assert_eq!(numbers(&all_busy), vec![18, 19, 20]);
    // After an offset: only newer ones; after a trimmed one: what is left, marked incomplete.
    let since = all_busy["messages"][1]["offset"].as_str().unwrap();
    let newer = ask(
        &mut alice,
        4,
        "history",
        json!([{ "room": "chat:busy", "since": since }]),
    )
    .await;
    assert_eq!(numbers(&newer), vec![20]);
    assert_eq!(newer["complete"], true);
    let first = quiet["messages"][0]["offset"].as_str().unwrap();
    let gone = ask(
        &mut alice,
        5,
        "history",
        json!([{ "room": "chat:busy", "since": first }]),
    )
    .await;
    assert_eq!(gone["complete"], false, "{gone}");

    // Refusals: outside the grants, someone's user room, rooms without history, bad arguments.
    for (id, args, error) in [
        (6, json!([{ "room": "secret" }]), "forbidden"),
        (7, json!([{ "room": "user:bob" }]), "forbidden"),
        (
            8,
            json!([{ "room": "chat:quiet", "limit": 0 }]),
            "limit must be an integer from 1 to 100",
        ),
        (
            9,
            json!([{ "room": "chat:quiet", "limit": 101 }]),
            "limit must be an integer from 1 to 100",
        ),
        (
            10,
            json!([{ "room": "chat:quiet", "since": 5 }]),
            "since must be an offset string",
        ),
        (
            11,
            json!([{ "room": "chat:quiet", "since": "nonsense" }]),
            "unknown offset",
        ),
        (12, json!(["chat:quiet"]), "expected {room, since?, limit?}"),
        (13, json!([{ "room": "" }]), "room must not be empty"),
    ] {
        let refused = ask(&mut alice, id, "history", args.clone()).await;
        assert_eq!(refused, json!({ "ok": false, "error": error }), "{args}");
    }
    join(&mut alice, "chat:other").await;
    let unkept = ask(&mut alice, 14, "history", json!([{ "room": "chat:other" }])).await;
    assert_eq!(unkept, json!({ "ok": false, "error": "not_kept" }));

    // The HTTP API reads the same window.
    let api = call(&server, "GET", "/api/history/chat%3Abusy?limit=2", "").await;
    assert_eq!(api.status, 200, "{}", api.body);
    let api = api.json();
    assert_eq!(numbers(&api), vec![19, 20]);
    assert_eq!(api["messages"], busy["messages"]);
    let path = format!("/api/history/chat%3Abusy?since={since}");
    assert_eq!(numbers(&call(&server, "GET", &path, "").await.json()), vec![20]);
    for (path, status) in [
        ("/api/history/chat%3Aother", 404),
        ("/api/history/chat%3Abusy?limit=500", 400),
        ("/api/history/chat%3Abusy?since=zz", 400),
        ("/api/history/chat%3Abusy?namespace=/nope", 404),
        ("/api/history/", 400),
    ] {
        assert_eq!(call(&server, "GET", path, "").await.status, status, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn history_needs_recovery() {
    let dir = TempDir::new("history");
    let file = dir.write(
        "ferrio.toml",
        "[[history.rooms]]\npattern = \"chat:*\"\nsize = 10\nttl = \"1m\"\n",
    );
    let (ok, _, stderr) = run(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("history.rooms") && stderr.contains("[recovery]"),
        "{stderr}"
    );
}
