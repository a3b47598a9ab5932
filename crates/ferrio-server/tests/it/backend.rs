//! `ferrio serve` with a real HTTP backend: lifecycle and client-event webhooks from real
//! connections, RPC events whose reply is the ack (and every way an RPC fails), a backend that
//! is down while messages keep flowing, and the webhooks of a drain flushed before the exit.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{api_config, join, next_event, user};
use crate::support::*;
use crate::webhooks::{Backend, OK, Reply, SECRET};

fn config(backend: &Backend, extra: &str) -> String {
    api_config(&format!(
        "[webhooks]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nretry_backoff = \"20ms\"\nretry_backoff_max = \"100ms\"\n\
         rpc_timeout = \"500ms\"\n{extra}\
         [events.\"chat:message\"]\nwebhook = true\n\
         [events.\"chat:message\".schema]\ntype = \"object\"\nrequired = [\"text\"]\n\
         [events.\"order:create\"]\nrpc = true\n",
        backend.url()
    ))
}

/// Sends `[name, arg]` with ack id `id`; returns the ack's first argument.
async fn call_event(ws: &mut Ws, id: u32, name: &str, arg: Value) -> Value {
    ws.send(Message::text(format!("42{id}{}", json!([name, arg]))))
        .await
        .unwrap();
    loop {
        let text = next_text(ws).await.expect("closed before the ack");
        if let Some(body) = text.strip_prefix(&format!("43{id}")) {
            return serde_json::from_str::<Value>(body).unwrap()[0].clone();
        }
    }
}

/// The events the backend took (a batch sent again after a failure counts once), once `n`
/// have arrived.
async fn events(backend: &Backend, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let mut seen = std::collections::HashSet::new();
        let events: Vec<Value> = backend
            .events()
            .into_iter()
            .filter(|e| seen.insert(e["seq"].as_u64()))
            .collect();
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events, not {n}: {events:#?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_rooms_and_client_events_reach_the_backend_signed() {
    let backend = Backend::start().await;
    // The first delivery fails: the batch comes again (at least once).
    backend.reply_next([Reply::With(500, "{}")]);
    let server = Server::start(&config(&backend, "")).await;
    let mut alice = user(&server, "alice").await;
    join(&mut alice, "chat:1").await;
    let ack = call_event(&mut alice, 1, "chat:message", json!({ "text": "hi" })).await;
    assert_eq!(ack, json!({ "ok": true }));
    // A payload that breaks the schema is refused and not forwarded.
    let ack = call_event(&mut alice, 2, "chat:message", json!({ "txt": "hi" })).await;
    assert_eq!(ack["error"], "invalid_payload");
    alice.close(None).await.unwrap();

    let got = events(&backend, 5).await;
    backend.wait_requests(2).await;
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "in order, no gap, none twice: {got:#?}");
    let sid = got[0]["socket"].as_str().expect("socket id").to_owned();
    let strip = |mut e: Value| {
        let o = e.as_object_mut().unwrap();
        assert!(
            o.remove("time")
                .and_then(|t| t.as_u64())
                .is_some_and(|t| t > 1_700_000_000_000)
        );
        o.remove("seq");
        e
    };
    let got: Vec<Value> = got.into_iter().map(strip).collect();
    let common = |kind: &str, extra: Value| {
        let mut e = json!({ "type": kind, "socket": sid, "ns": "/", "user": "alice" });
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    };
    assert_eq!(
        got,
        [
            common(
                "connection",
                json!({ "transport": "websocket", "address": "127.0.0.1" })
            ),
            common("join", json!({ "room": "chat:1" })),
            common(
                "event",
                json!({ "event": "chat:message", "args": [{ "text": "hi" }] })
            ),
            common("leave", json!({ "room": "chat:1" })),
            common("disconnection", json!({ "reason": "transport close" })),
        ],
        "the user room is implied by the connection and not reported"
    );
    {
        let requests = backend.requests();
        assert!(requests.iter().all(|r| r.signed), "every request is signed");
        assert_eq!(requests[0].body["events"][0]["seq"], 1);
        assert_eq!(
            requests[1].body["events"][0]["seq"], 1,
            "the failed batch is sent again"
        );
        assert!(
            requests
                .iter()
                .all(|r| r.body["type"] == "events" && r.body["instance"].is_string())
        );
    }

    let metrics = get(&server, 1, "/metrics", &[]).await.expect("metrics").body;
    assert!(
        metrics.contains(r#"ferrio_webhook_events_total{result="delivered"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ferrio_webhook_requests_total{result="retryable"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_rpc_reply_is_the_ack_and_each_failure_has_its_code() {
    let mut backend = Backend::start().await;
    let server = Server::start(&config(&backend, "events = []\n")).await;
    let mut alice = user(&server, "alice").await;

    backend.reply_next([Reply::With(200, r#"{"ok":true,"order":991}"#)]);
    let ack = call_event(&mut alice, 1, "order:create", json!({ "item": 7 })).await;
    assert_eq!(ack, json!({ "ok": true, "order": 991 }));
    {
        let requests = backend.requests();
        let rpc = &requests.last().expect("the rpc").body;
        assert_eq!(rpc["type"], "rpc");
        assert_eq!(rpc["event"], "order:create");
        assert_eq!(rpc["args"], json!([{ "item": 7 }]));
        assert_eq!(rpc["user"], "alice");
        assert!(requests.last().unwrap().signed);
    }

    // Binary data goes along as base64, where the placeholders point.
    backend.reply_next([OK]);
    alice
        .send(Message::text(
            r#"451-9["order:create",{"scan":{"_placeholder":true,"num":0}}]"#,
        ))
        .await
        .unwrap();
    alice
        .send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef]))
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice).await.unwrap(), r#"439[{"ok":true}]"#);
    {
        let requests = backend.requests();
        let rpc = &requests.last().expect("the rpc").body;
        assert_eq!(
            rpc["args"],
            json!([{ "scan": { "_placeholder": true, "num": 0 } }])
        );
        assert_eq!(rpc["attachments"], json!(["3q2+7w=="]));
    }

    for (id, reply, code) in [
        (2, Reply::With(500, "{}"), "rpc_failed"),
        (3, Reply::With(200, "not json"), "rpc_bad_reply"),
        (4, Reply::Stall, "rpc_timeout"),
    ] {
        backend.reply_next([reply]);
        let ack = call_event(&mut alice, id, "order:create", json!({})).await;
        assert_eq!(ack, json!({ "ok": false, "error": code }));
    }
    backend.stop();
    let ack = call_event(&mut alice, 5, "order:create", json!({})).await;
    assert_eq!(ack, json!({ "ok": false, "error": "rpc_unavailable" }));
    // The socket is fine throughout, and the backend is back.
    backend.up().await;
    backend.reply_always(OK);
    let ack = call_event(&mut alice, 6, "order:create", json!({})).await;
    assert_eq!(ack, json!({ "ok": true }));
    server.stop().await;
}

#[tokio::test]
async fn a_down_backend_never_holds_up_delivery() {
    let mut backend = Backend::down().await;
    let config = config(&backend, "queue_capacity = 10\n").replace(
        "join = [\"chat:*\"]",
        "join = [\"chat:*\"]\npublish = [\"chat:*\"]",
    );
    let server = Server::start(&config).await;
    let mut reader = user(&server, "bob").await;
    join(&mut reader, "chat:1").await;
    let mut writer = user(&server, "alice").await;

    // 150 messages through the room while every webhook fails: all delivered, in order.
    for i in 0..150 {
        let msg = json!(["publish", { "room": "chat:1", "event": "m", "data": i }]);
        writer.send(Message::text(format!("42{msg}"))).await.unwrap();
    }
    for i in 0..150 {
        assert_eq!(next_event(&mut reader).await, json!(["m", i]));
    }
    // The queue is full by now: a forwarded event says so instead of pretending.
    let mut full = false;
    for id in 1..=20 {
        let ack = call_event(&mut writer, id, "chat:message", json!({ "text": "x" })).await;
        if ack == json!({ "ok": false, "error": "backend_unavailable" }) {
            full = true;
            break;
        }
        assert_eq!(ack, json!({ "ok": true }));
    }
    assert!(full, "a queue of 10 overflows");

    // Back up: the queued events arrive, and the numbering shows the dropped ones.
    backend.up().await;
    let got = events(&backend, 10).await;
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let metrics = get(&server, 1, "/metrics", &[]).await.expect("metrics").body;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ferrio_webhook_events_total{result="dropped"} "#))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_drain_flushes_the_disconnection_webhooks_before_exiting() {
    const CLIENTS: usize = 50;
    let backend = Backend::start().await;
    let config = config(&backend, "events = [\"disconnection\"]\n")
        .replace("[api]", "[drain]\nwindow = \"500ms\"\n[api]");
    let mut server = Server::start_with(&config, &[("FERRIO_SHUTDOWN_TIMEOUT", "5s")]).await;
    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        sockets.push(user(&server, &format!("u{i}")).await);
    }
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10)).await.expect("exited");
    assert!(status.success(), "{status:?}");
    let got = backend.events();
    let reasons: Vec<&str> = got
        .iter()
        .filter(|e| e["type"] == "disconnection")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(
        reasons.len(),
        CLIENTS,
        "every disconnection delivered before the exit: {got:#?}"
    );
    assert!(
        server.stderr().contains("webhook events flushed"),
        "{}",
        server.stderr()
    );
}

#[tokio::test]
async fn one_socket_cannot_hold_more_than_its_share_of_rpcs() {
    let backend = Backend::start().await;
    backend.reply_always(Reply::Stall);
    let server = Server::start(&config(&backend, "events = []\nrpc_per_socket = 2\n")).await;
    let mut greedy = user(&server, "greedy").await;
    for id in 1..=3 {
        greedy
            .send(Message::text(format!("42{id}[\"order:create\",{{}}]")))
            .await
            .unwrap();
    }
    // The third is refused at once; the first two wait for the backend and time out.
    let mut acks = Vec::new();
    while acks.len() < 3 {
        let text = next_text(&mut greedy).await.expect("connected");
        if let Some(rest) = text.strip_prefix("43") {
            acks.push(rest.to_owned());
        }
    }
    assert_eq!(acks[0], r#"3[{"ok":false,"error":"rpc_busy"}]"#, "{acks:?}");
    let mut slow = acks[1..].to_vec();
    slow.sort();
    assert_eq!(
        slow,
        [
            r#"1[{"ok":false,"error":"rpc_timeout"}]"#,
            r#"2[{"ok":false,"error":"rpc_timeout"}]"#
        ]
    );
    // Another socket was never held up by the greedy one's share.
    let mut other = user(&server, "other").await;
    backend.reply_always(OK);
    let ack = call_event(&mut other, 1, "order:create", json!({})).await;
    assert_eq!(ack, json!({ "ok": true }));
    // And the greedy one's slots came back.
    let ack = call_event(&mut greedy, 4, "order:create", json!({})).await;
    assert_eq!(ack, json!({ "ok": true }));
    server.stop().await;
}
