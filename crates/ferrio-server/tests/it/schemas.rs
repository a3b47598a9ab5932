//! Per-event JSON Schemas: a payload that does not match is answered with `invalid_payload`
//! and goes nowhere; one that matches is delivered; broken schemas stop the server at start.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{API_KEY, join, next_event, user};
use crate::support::*;

const PUBLISH_SCHEMA: &str = r#"
[events.publish.schema]
type = "object"
required = ["room", "event", "data"]
[events.publish.schema.properties.data]
type = "object"
required = ["text"]
additionalProperties = false
[events.publish.schema.properties.data.properties.text]
type = "string"
maxLength = 20
"#;

fn config() -> String {
    format!(
        "{}[rooms]\njoin = [\"chat:*\"]\npublish = [\"chat:*\"]\n[api]\nkeys = [\"{API_KEY}\"]\n{PUBLISH_SCHEMA}",
        hs_config()
    )
}

async fn publish(ws: &mut Ws, id: u32, data: Value) -> Value {
    let msg = json!(["publish", { "room": "chat:1", "event": "msg", "data": data }]);
    ws.send(Message::text(format!("42{id}{msg}"))).await.unwrap();
    loop {
        let text = next_text(ws).await.expect("closed before the ack");
        if let Some(body) = text.strip_prefix(&format!("43{id}")) {
            return serde_json::from_str::<Value>(body).unwrap()[0].clone();
        }
    }
}

#[tokio::test]
async fn payloads_that_break_the_schema_are_refused_and_not_delivered() {
    let server = Server::start(&config()).await;
    let mut sender = user(&server, "alice").await;
    let mut reader = user(&server, "bob").await;
    join(&mut reader, "chat:1").await;

    for (id, data, path) in [
        (1, json!({ "text": 5 }), "/data/text"),
        (2, json!({ "text": "x".repeat(21) }), "/data/text"),
        (3, json!({ "text": "hi", "extra": true }), "/data"),
        (4, json!(null), "/data"),
    ] {
        let answer = publish(&mut sender, id, data.clone()).await;
        assert_eq!(answer["ok"], false, "{data}");
        assert_eq!(answer["error"], "invalid_payload", "{data}");
        let details = answer["details"].as_array().expect("details");
        assert!(!details.is_empty() && details.len() <= 5, "{answer}");
        assert_eq!(details[0]["path"], path, "{answer}");
        assert!(details[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // No argument at all is checked as null.
    sender.send(Message::text(r#"429["publish"]"#)).await.unwrap();
    let answer = next_text(&mut sender).await.unwrap();
    assert!(
        answer.starts_with("439[") && answer.contains(r#""error":"invalid_payload""#),
        "{answer}"
    );

    // A valid one goes through, and it is the first thing the reader gets: none of the
    // refused ones reached it.
    let answer = publish(&mut sender, 10, json!({ "text": "hello" })).await;
    assert_eq!(answer, json!({ "ok": true }));
    assert_eq!(next_event(&mut reader).await, json!(["msg", { "text": "hello" }]));

    let metrics = get(&server, 1, "/metrics", &[]).await.expect("metrics").body;
    assert!(
        metrics.contains(r#"ferrio_rejections_total{kind="events",reason="invalid_payload"} 5"#),
        "{metrics}"
    );
    server.stop().await;
}

#[test]
fn broken_schemas_and_event_rules_are_refused_at_start() {
    let dir = TempDir::new("schemas");
    let not_json = dir.write("bad.json", "{ nope");
    let cases = [
        (
            "[events.chat]\nschema = { type = \"no-such-type\" }\n",
            "events.\"chat\".schema",
        ),
        (
            &format!("[events.chat]\nschema_file = \"{}\"\n", not_json.display()),
            "is not JSON",
        ),
        (
            "[events.chat]\nschema_file = \"/nonexistent/s.json\"\n",
            "cannot read",
        ),
        ("[events.chat]\nwebhook = true\n", "needs `webhooks.url`"),
        (
            "[events.connect]\nschema = { type = \"object\" }\n",
            "reserved event name",
        ),
        (
            "[webhooks]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef0123\"\n[events.join]\nrpc = true\n",
            "handles this event itself",
        ),
        ("[events.chat]\nschemma = { type = \"object\" }\n", "unknown key"),
    ];
    for (extra, expected) in cases {
        let file = dir.write("ferrio.toml", extra);
        let (ok, _, stderr) = run(&["check-config", "--config", file.to_str().unwrap()], &[]);
        assert!(!ok, "accepted: {extra}");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
    }
    let file = dir.write("ferrio.toml", PUBLISH_SCHEMA);
    let (ok, _, stderr) = run(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
}
