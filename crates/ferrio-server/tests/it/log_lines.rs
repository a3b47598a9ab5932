//! Untrusted strings in the log: a namespace, a token's `sub` and a room holding a line break,
//! a carriage return or an escape sequence stay inside their own log line, in the text format
//! and in `log_format = "json"` (one JSON object per line).

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Each client string ends in a line that would pass for one of the server's own.
const NS: &str = "/tenant-\nFORGED-NS ERROR ferrio: admin logged in\r\u{1b}[2K";
const SUB: &str = "alice\nFORGED-SUB\r\u{1b}[31m";
const ROOM: &str = "chat:\nFORGED-ROOM\r\u{1b}]0;x\u{7}";

fn config() -> String {
    format!(
        "namespaces = [\"/\", \"/tenant-*\"]\n{}[rooms]\njoin = [\"chat:*\"]\npublish = [\"chat:*\"]\n\
         [presence]\nannounce = [\"chat:*\"]\n",
        hs_config()
    )
}

/// The next packet that starts with `prefix`.
async fn next_packet(ws: &mut Ws, prefix: &str) -> String {
    loop {
        let text = next_text(ws).await.expect("closed");
        if text.starts_with(prefix) {
            return text;
        }
    }
}

/// Connects (as `SUB`), is refused on `NS` without a token and accepted with one, joins and
/// publishes to `ROOM` in both namespaces, and leaves.
async fn exercise(server: &Server) {
    let token = hs(claims(SUB));
    let mut ws = ws_from(server, 1, &[]).await.expect("upgrade");
    let answer = sio_connect(&mut ws, Some(json!({ "token": token }))).await;
    assert!(answer.starts_with("40"), "{answer}");

    let ns_prefix = format!("{NS},");
    ws.send(Message::text(format!("40{ns_prefix}{{}}")))
        .await
        .unwrap();
    let refused = next_packet(&mut ws, "4").await;
    assert!(refused.starts_with(&format!("44{ns_prefix}")), "{refused:?}");
    ws.send(Message::text(format!(
        "40{ns_prefix}{}",
        json!({ "token": token })
    )))
    .await
    .unwrap();
    let accepted = next_packet(&mut ws, "4").await;
    assert!(accepted.starts_with(&format!("40{ns_prefix}")), "{accepted:?}");

    for (i, nsp) in [("1", ""), ("2", ns_prefix.as_str())].map(|(i, n)| (i, n.to_owned())) {
        let join = json!(["join", ROOM]);
        ws.send(Message::text(format!("42{nsp}{i}{join}"))).await.unwrap();
        let ack = next_packet(&mut ws, &format!("43{nsp}{i}")).await;
        assert!(ack.ends_with(r#"[{"ok":true}]"#), "{ack:?}");
        let publish = json!(["publish", { "room": ROOM, "event": "m", "data": SUB }]);
        ws.send(Message::text(format!("42{nsp}1{i}{publish}")))
            .await
            .unwrap();
        let ack = next_packet(&mut ws, &format!("43{nsp}1{i}")).await;
        assert!(ack.ends_with(r#"[{"ok":true}]"#), "{ack:?}");
    }
    ws.send(Message::text(format!("41{ns_prefix}"))).await.unwrap();
    ws.close(None).await.unwrap();
}

/// No line holds a raw control character, or starts with text a client chose.
fn assert_one_line_each(log: &str) {
    for line in log.lines() {
        assert!(
            !line.chars().any(char::is_control),
            "a raw control character in {line:?}\n{log}"
        );
        assert!(
            !line.trim_start().starts_with("FORGED"),
            "a forged line {line:?}\n{log}"
        );
    }
}

#[tokio::test]
async fn client_strings_stay_inside_their_text_log_line() {
    let server = Server::start_with(&config(), &[("RUST_LOG", "debug")]).await;
    exercise(&server).await;
    let log = server.stop().await;
    assert_one_line_each(&log);
    // They are there, escaped: the namespace both refused and connected, the user connected.
    let ns = format!("ns={NS:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("connect refused") && l.contains(&ns)),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("connected") && l.contains(&ns)),
        "{log}"
    );
    let sub = format!("sub={SUB:?}");
    assert!(
        log.lines().any(|l| l.contains("connected") && l.contains(&sub)),
        "{log}"
    );
}

#[tokio::test]
async fn client_strings_stay_inside_their_json_log_line() {
    let config = format!("log_format = \"json\"\n{}", config());
    let server = Server::start_with(&config, &[("RUST_LOG", "debug")]).await;
    exercise(&server).await;
    let log = server.stop().await;
    assert_one_line_each(&log);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}")))
        .collect();
    for line in &lines {
        assert!(
            line.is_object() && line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    // The strings come back exactly as the client sent them.
    let logged = |message: &str, field: &str, value: &str| {
        lines.iter().any(|l| l["message"] == message && l[field] == value)
    };
    assert!(logged("connect refused", "ns", NS), "{log}");
    assert!(logged("connected", "ns", NS), "{log}");
    assert!(logged("connected", "sub", SUB), "{log}");
    assert!(logged("disconnected", "ns", NS), "{log}");
}

#[tokio::test]
async fn log_format_comes_from_the_file_the_environment_or_a_flag() {
    let dir = TempDir::new("log-format");
    let file = dir.write("ferrio.toml", "log_format = \"json\"\n");
    let file = file.to_str().unwrap();
    let (ok, out, err) = run(&["check-config"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("log_format = \"text\""), "{out}");
    let (ok, out, err) = run(&["check-config", "-c", file], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("log_format = \"json\""), "{out}");
    let (ok, out, err) = run(&["check-config", "-c", file, "--log-format", "text"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("log_format = \"text\""), "{out}");
    // An ignored variable is warned about in the chosen format.
    let (ok, out, err) = run(
        &["check-config"],
        &[("FERRIO_LOG_FORMAT", "json"), ("FERRIO_SOMETHING_ELSE", "1")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("log_format = \"json\""), "{out}");
    let lines: Vec<Value> = err
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["variable"] == "FERRIO_SOMETHING_ELSE"),
        "{err}"
    );

    let (ok, _, err) = run(&["check-config"], &[("FERRIO_LOG_FORMAT", "xml")]);
    assert!(!ok);
    assert!(
        err.contains("`log_format` (environment variable FERRIO_LOG_FORMAT)") && err.contains("json"),
        "{err}"
    );
}
