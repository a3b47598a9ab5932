//! The HTTP API with raw Socket.IO clients: emit to rooms and users, rooms join/leave,
//! disconnect, presence, stats; every bad input; and the OpenAPI description checked
//! against what the server answers.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

pub const API_KEY: &str = "api-key-0123456789abcdef";

pub fn api_config(extra: &str) -> String {
    format!(
        "{}[rooms]\njoin = [\"chat:*\"]\n[api]\nkeys = [\"{API_KEY}\"]\nmax_body = 4096\n{extra}",
        hs_config()
    )
}

pub async fn call(server: &Server, method: &str, path: &str, body: &str) -> HttpResponse {
    let auth = format!("Authorization: Bearer {API_KEY}");
    request(
        server,
        1,
        method,
        path,
        &[&auth, "Content-Type: application/json"],
        body,
    )
    .await
    .expect("no response")
}

/// A socket of `sub` on `/`, connected.
pub async fn user(server: &Server, sub: &str) -> Ws {
    let mut ws = ws_from(server, 1, &[]).await.expect("upgrade");
    let answer = sio_connect(&mut ws, Some(json!({ "token": hs(claims(sub)) }))).await;
    assert!(answer.starts_with("40"), "{answer}");
    ws
}

pub async fn join(ws: &mut Ws, room: &str) {
    ws.send(Message::text(format!("421[\"join\",\"{room}\"]")))
        .await
        .unwrap();
    let ack = next_text(ws).await.expect("closed");
    assert_eq!(ack, "431[{\"ok\":true}]");
}

/// Sends event `name` with `args` and ack id `id`; returns the ack's first argument.
pub async fn ask(ws: &mut Ws, id: u32, name: &str, args: Value) -> Value {
    let mut packet = vec![Value::from(name)];
    packet.extend(args.as_array().cloned().unwrap_or_default());
    ws.send(Message::text(format!("42{id}{}", Value::Array(packet))))
        .await
        .unwrap();
    loop {
        let text = next_text(ws).await.expect("closed before the ack");
        if let Some(body) = text.strip_prefix(&format!("43{id}")) {
            let args: Value = serde_json::from_str(body).unwrap();
            return args[0].clone();
        }
    }
}

/// The next event packet's `[name, args...]`.
pub async fn next_event(ws: &mut Ws) -> Value {
    let text = next_text(ws).await.expect("closed before the event");
    let body = text
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("not an event: {text}"));
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn emit_reaches_rooms_users_and_everyone() {
    let server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    join(&mut alice, "chat:lobby").await;

    let res = call(
        &server,
        "POST",
        "/api/emit",
        r#"{"rooms":["chat:lobby"],"event":"news","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json(), json!({ "ok": true, "local_recipients": 1 }));
    assert_eq!(next_event(&mut alice).await, json!(["news", { "n": 1 }]));

    // A user room reaches that user only: bob's next event is this one, not the news.
    let res = call(
        &server,
        "POST",
        "/api/emit",
        r#"{"rooms":["user:bob"],"event":"dm","data":"hi"}"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(next_event(&mut bob).await, json!(["dm", "hi"]));

    // No rooms: everyone, minus `except`; no data: no argument.
    let res = call(
        &server,
        "POST",
        "/api/emit",
        r#"{"event":"all","except":["user:alice"]}"#,
    )
    .await;
    assert_eq!(res.json()["local_recipients"], 1);
    assert_eq!(next_event(&mut bob).await, json!(["all"]));
    let res = call(&server, "POST", "/api/emit", r#"{"event":"all","data":null}"#).await;
    assert_eq!(res.json()["local_recipients"], 2);
    assert_eq!(next_event(&mut alice).await, json!(["all", null]));
    assert_eq!(next_event(&mut bob).await, json!(["all", null]));
}

#[tokio::test]
async fn rooms_join_leave_disconnect_presence_and_stats() {
    let server = Server::start(&api_config("")).await;
    let mut alice = user(&server, "alice").await;
    let mut alice2 = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    join(&mut alice, "chat:lobby").await;
    join(&mut alice2, "chat:lobby").await;
    join(&mut bob, "chat:lobby").await;

    let res = call(&server, "GET", "/api/presence/chat%3Alobby", "").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.json(),
        json!({
            "ok": true, "namespace": "/", "room": "chat:lobby",
            "users": [{ "user": "alice", "connections": 2 }, { "user": "bob", "connections": 1 }],
            "anonymous": 0, "sockets": 3,
        })
    );

    // bob joins "vip" by user; an emit to vip reaches him.
    let res = call(
        &server,
        "POST",
        "/api/rooms/join",
        r#"{"user":"bob","rooms":["vip"]}"#,
    )
    .await;
    assert_eq!(res.json(), json!({ "ok": true }), "{}", res.body);
    call(
        &server,
        "POST",
        "/api/emit",
        r#"{"rooms":["vip"],"event":"v","data":1}"#,
    )
    .await;
    assert_eq!(next_event(&mut bob).await, json!(["v", 1]));
    // Leaves it by room selector; the next vip emit reaches nobody.
    let res = call(
        &server,
        "POST",
        "/api/rooms/leave",
        r#"{"room":"chat:lobby","rooms":["vip"]}"#,
    )
    .await;
    assert_eq!(res.json(), json!({ "ok": true }), "{}", res.body);
    let res = call(
        &server,
        "POST",
        "/api/emit",
        r#"{"rooms":["vip"],"event":"v","data":2}"#,
    )
    .await;
    assert_eq!(res.json()["local_recipients"], 0);

    let res = call(&server, "GET", "/api/stats", "").await;
    let stats = res.json();
    assert_eq!(stats["ok"], true);
    assert_eq!(stats["connections"], 3);
    assert_eq!(stats["clustered"], false);
    assert_eq!(stats["namespaces"][0]["name"], "/");
    assert_eq!(stats["namespaces"][0]["sockets"], 3);

    // Disconnect alice from the namespace: both her sockets get a DISCONNECT packet.
    let res = call(&server, "POST", "/api/disconnect", r#"{"user":"alice"}"#).await;
    assert_eq!(res.json(), json!({ "ok": true }), "{}", res.body);
    assert_eq!(next_text(&mut alice).await.as_deref(), Some("41"));
    assert_eq!(next_text(&mut alice2).await.as_deref(), Some("41"));
    // bob's whole connection closes with `close`.
    let res = call(
        &server,
        "POST",
        "/api/disconnect",
        r#"{"user":"bob","close":true}"#,
    )
    .await;
    assert_eq!(res.status, 200);
    let mut seen = Vec::new();
    while let Some(frame) = next_text(&mut bob).await {
        seen.push(frame);
        assert!(seen.len() < 10, "bob's connection stays open: {seen:?}");
    }
    let res = call(&server, "GET", "/api/presence/chat%3Alobby", "").await;
    assert_eq!(res.json()["sockets"], 0, "{}", res.body);
}

#[tokio::test]
async fn bad_input_is_refused_with_clear_errors() {
    let server = Server::start(&api_config("")).await;
    let post = |path: &'static str, body: &'static str| {
        let server = &server;
        async move { call(server, "POST", path, body).await }
    };

    // Missing or wrong key: 401, no detail.
    for headers in [
        vec![],
        vec!["Authorization: Bearer wrong-key-0123456789abcdef"],
        vec!["Authorization: Bearer api-key-0123456789abcde"],
        vec!["X-Api-Key: api-key-0123456789abcdeF"],
        vec!["Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l"],
    ] {
        let res = request(&server, 1, "POST", "/api/emit", &headers, r#"{"event":"x"}"#)
            .await
            .unwrap();
        assert_eq!(res.status, 401, "{headers:?}");
        assert_eq!(res.json(), json!({ "ok": false, "error": "unauthorized" }));
    }
    let res = request(
        &server,
        1,
        "GET",
        "/api/stats",
        &[&format!("X-Api-Key: {API_KEY}")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200, "X-Api-Key works too");

    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("/api/emit", r#"{"event":"x""#, 400, "malformed_json", ""),
        (
            "/api/emit",
            r#"{"event":"x"} trailing"#,
            400,
            "malformed_json",
            "",
        ),
        ("/api/emit", "", 400, "malformed_json", ""),
        ("/api/emit", r#"{"event":42}"#, 400, "invalid_body", "event"),
        (
            "/api/emit",
            r#"{"event":"x","rooms":"lobby"}"#,
            400,
            "invalid_body",
            "rooms",
        ),
        (
            "/api/emit",
            r#"{"event":"x","rooms":["a",7]}"#,
            400,
            "invalid_body",
            "rooms[1]",
        ),
        (
            "/api/emit",
            r#"{"event":"x","volatile":"yes"}"#,
            400,
            "invalid_body",
            "volatile",
        ),
        (
            "/api/emit",
            r#"{"event":"x","colour":1}"#,
            400,
            "invalid_body",
            "colour",
        ),
        ("/api/emit", r#"{"data":1}"#, 400, "invalid_body", "event"),
        (
            "/api/emit",
            r#"{"event":""}"#,
            400,
            "invalid_body",
            "`event` must not be empty",
        ),
        (
            "/api/emit",
            r#"{"event":"disconnect"}"#,
            400,
            "invalid_body",
            "reserved",
        ),
        (
            "/api/emit",
            r#"{"event":"x","rooms":[""]}"#,
            400,
            "invalid_body",
            "rooms[0]",
        ),
        (
            "/api/emit",
            r#"{"event":"x","namespace":"/nope"}"#,
            404,
            "unknown_namespace",
            "/nope",
        ),
        ("/api/emit", r#"[1,2]"#, 400, "invalid_body", ""),
        (
            "/api/rooms/join",
            r#"{"rooms":["a"]}"#,
            400,
            "invalid_body",
            "exactly one",
        ),
        (
            "/api/rooms/join",
            r#"{"user":"a","room":"b","rooms":["a"]}"#,
            400,
            "invalid_body",
            "exactly one",
        ),
        (
            "/api/rooms/join",
            r#"{"user":"a","rooms":[]}"#,
            400,
            "invalid_body",
            "rooms",
        ),
        (
            "/api/rooms/leave",
            r#"{"user":"","rooms":["a"]}"#,
            400,
            "invalid_body",
            "user",
        ),
        ("/api/disconnect", r#"{}"#, 400, "invalid_body", "exactly one"),
        (
            "/api/disconnect",
            r#"{"socket":"x","close":1}"#,
            400,
            "invalid_body",
            "close",
        ),
        (
            "/api/disconnect",
            r#"{"user":"a","namespace":"/nope"}"#,
            404,
            "unknown_namespace",
            "",
        ),
    ];
    for &(path, body, status, code, mention) in cases {
        let res = post(path, body).await;
        assert_eq!(res.status, status, "{path} {body}: {}", res.body);
        let answer = res.json();
        assert_eq!(answer["ok"], false, "{body}");
        assert_eq!(answer["error"], code, "{body}: {}", res.body);
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(mention),
            "{body}: {message:?} should mention {mention:?}"
        );
    }

    // Oversize, declared or not (max_body = 4096).
    let big = format!(r#"{{"event":"x","data":"{}"}}"#, "a".repeat(5000));
    let res = call(&server, "POST", "/api/emit", &big).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["error"], "body_too_large");
    let res = chunked_post(&server, "/api/emit", &big).await;
    assert_eq!(res.status, 413, "a chunked body is counted as it arrives");

    let res = call(&server, "GET", "/api/emit", "").await;
    assert_eq!(res.status, 405);
    let res = call(&server, "GET", "/api/nothing", "").await;
    assert_eq!(res.status, 404);
    let res = call(&server, "GET", "/api/presence/%ff", "").await;
    assert_eq!(res.status, 400);
    let res = call(&server, "GET", "/api/presence/x?namespace=%2Fnope", "").await;
    assert_eq!(res.json()["error"], "unknown_namespace");
}

async fn chunked_post(server: &Server, path: &str, body: &str) -> HttpResponse {
    use tokio::io::AsyncWriteExt;
    let mut stream = tcp_from(1, server.addr).await;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(1000) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    req.push_str("0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    read_response(&mut stream).await.expect("no response")
}

#[tokio::test]
async fn without_keys_the_api_is_off() {
    let server = Server::start("").await;
    let res = get(
        &server,
        1,
        "/api/stats",
        &["Authorization: Bearer anything-at-all-really"],
    )
    .await
    .unwrap();
    assert_eq!(res.status, 404);
}

/// The subset of JSON Schema the description uses: `$ref`, `type`, `required`,
/// `properties`, `additionalProperties: false`, `items`, `const`, `enum`, `minLength`,
/// `minimum`, `minItems`.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = spec
            .pointer(r.trim_start_matches('#'))
            .ok_or(format!("bad $ref {r}"))?;
        return conforms(spec, target, value, at);
    }
    let fail = |what: &str| Err(format!("{at}: {what} (got {value})"));
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            return fail(&format!("not a {t}"));
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return fail(&format!("not {c}"));
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(value)
    {
        return fail("not in the enum");
    }
    if let (Some(min), Some(s)) = (schema["minLength"].as_u64(), value.as_str())
        && (s.chars().count() as u64) < min
    {
        return fail("too short");
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), value.as_i64())
        && n < min
    {
        return fail("too small");
    }
    if let Some(a) = value.as_array() {
        if let Some(min) = schema["minItems"].as_u64()
            && (a.len() as u64) < min
        {
            return fail("too few items");
        }
        for (i, item) in a.iter().enumerate() {
            if schema.get("items").is_some() {
                conforms(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(o) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(key.as_str().unwrap_or_default()) {
                return fail(&format!("missing {key}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, v) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(spec, s, v, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == false => return fail(&format!("unexpected {k}")),
                None => {}
            }
        }
    }
    Ok(())
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => spec.pointer(r.trim_start_matches('#')).unwrap(),
        None => v,
    }
}

#[tokio::test]
async fn openapi_description_matches_the_server() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();
    // History on, so every documented endpoint has something to answer.
    let server = Server::start(&api_config(
        "[recovery]\nenabled = true\n[[history.rooms]]\npattern = \"chat:*\"\n",
    ))
    .await;
    let mut alice = user(&server, "alice").await;
    join(&mut alice, "chat:lobby").await;

    let paths = spec["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.replace("{room}", "chat%3Alobby");
            let mut exchanges = Vec::new();
            // The documented example must succeed and answer the documented 200 schema.
            let example = &op["requestBody"]["content"]["application/json"]["example"];
            if let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema") {
                conforms(&spec, schema, example, &format!("{path} example"))
                    .unwrap_or_else(|e| panic!("the example does not match its own schema: {e}"));
            }
            let body = if example.is_null() {
                String::new()
            } else {
                example.to_string()
            };
            exchanges.push((
                call(&server, &method.to_uppercase(), &concrete, &body).await,
                Some(200),
            ));
            // Without a key: the documented 401.
            let res = request(&server, 1, &method.to_uppercase(), &concrete, &[], &body)
                .await
                .unwrap();
            exchanges.push((res, Some(401)));
            // A wrong type for a POST body: a documented 400.
            if method == "post" {
                exchanges.push((
                    call(&server, "POST", &concrete, r#"{"namespace":7}"#).await,
                    Some(400),
                ));
            }
            for (res, expected) in exchanges {
                if let Some(expected) = expected {
                    assert_eq!(res.status, expected, "{method} {path}: {}", res.body);
                }
                let documented = op["responses"].get(res.status.to_string()).unwrap_or_else(|| {
                    panic!("{method} {path} answered {} which is not documented", res.status)
                });
                let documented = resolve(&spec, documented);
                let schema = &documented["content"]["application/json"]["schema"];
                conforms(
                    &spec,
                    schema,
                    &res.json(),
                    &format!("{method} {path} {}", res.status),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 16, "checked {checked} exchanges");
    // Every endpoint the server routes is documented.
    for route in [
        "/api/emit",
        "/api/rooms/join",
        "/api/rooms/leave",
        "/api/disconnect",
        "/api/presence/{room}",
        "/api/history/{room}",
        "/api/stats",
    ] {
        assert!(paths.contains_key(route), "{route} is not in docs/openapi.json");
    }
}
