//! The command line: `check-config`, `token`, the secure defaults of `serve`, and logs that
//! never show a credential.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use crate::support::*;

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let dir = TempDir::new("check");
    let file = dir.write(
        "f.toml",
        &format!(
            "[auth]\nsecret = \"{SECRET}\"\njwks_url = \"https://user:pw@idp.example.com/keys?api_key=abc\"\n"
        ),
    );
    let (ok, out, err) = run(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("# authentication: on"), "{out}");
    assert!(out.contains("secret = \"<redacted>\""), "{out}");
    assert!(
        out.contains("jwks_url = \"https://idp.example.com/keys?<redacted>\""),
        "{out}"
    );
    assert!(out.contains("allow_missing = false"), "{out}");
    for leak in [SECRET, "pw@", "api_key"] {
        assert!(!out.contains(leak) && !err.contains(leak), "{leak} was printed");
    }
    // The printout is a valid configuration itself.
    let printed = dir.write(
        "printed.toml",
        &out.replace("\"<redacted>\"", &format!("\"{SECRET}\"")),
    );
    let (ok, _, err) = run(&["check-config", "--config", printed.to_str().unwrap()], &[]);
    assert!(ok, "{err}");

    let bad = dir.write("bad.toml", "[limits]\nevent_rate = \"fast\"\n");
    let (ok, _, err) = run(&["check-config", "-c", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        err.contains("`limits.event_rate`") && err.contains("bad.toml"),
        "{err}"
    );
    let (ok, _, err) = run(&["check-config"], &[("FERRIO_LIMITS__NOPE", "1")]);
    assert!(!ok);
    assert!(err.contains("FERRIO_LIMITS__NOPE"), "{err}");
    let (ok, _, err) = run(&["check-config", "--ping-interval", "0"], &[]);
    assert!(!ok);
    assert!(err.contains("flag --ping-interval"), "{err}");
}

#[test]
fn token_mints_a_verifiable_dev_token() {
    let env = [
        ("FERRIO_AUTH__SECRET", SECRET),
        ("FERRIO_AUTH__ISSUER", "https://dev.test"),
    ];
    let (ok, out, err) = run(
        &[
            "token",
            "--sub",
            "alice",
            "--rooms",
            "chat:*,news",
            "--publish",
            "chat:lobby",
            "--ttl",
            "15m",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let token = out.trim();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["https://dev.test"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
    let c = data.claims;
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["rooms"], json!(["chat:*", "news"]));
    assert_eq!(c["publish"], json!(["chat:lobby"]));
    let exp = c["exp"].as_u64().unwrap();
    assert!(exp > now() + 800 && exp <= now() + 900, "{exp}");

    let (ok, _, err) = run(&["token", "--sub", "alice"], &[]);
    assert!(!ok);
    assert!(err.contains("auth.secret"), "{err}");
}

#[tokio::test]
async fn development_mode_stays_on_loopback() {
    let (ok, _, err) = run(&["serve", "--listen", "0.0.0.0:0"], &[]);
    assert!(!ok);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{err}"
    );
    let (ok, _, err) = run(&["serve"], &[("FERRIO_LISTEN", "[::]:0")]);
    assert!(!ok, "{err}");

    let server = Server::start("").await;
    server.wait_log("development mode").await;
    let log = server.stop().await;
    assert!(
        log.contains("development mode: no authentication configured"),
        "{log}"
    );

    // With authentication, any address may be used; --insecure allows it without.
    let (ok, _, err) = run(&["check-config", "--listen", "0.0.0.0:0", "--insecure"], &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &["check-config", "--listen", "0.0.0.0:0"],
        &[("FERRIO_AUTH__SECRET", SECRET)],
    );
    assert!(ok, "{err}");
}

#[tokio::test]
async fn logs_never_show_tokens_or_session_ids() {
    let server = Server::start(&hs_config()).await;
    let token = hs(claims("erin"));
    let expired = hs(json!({ "sub": "erin", "exp": now() - 3600 }));

    let mut ws = ws_from(&server, 1, &[]).await.unwrap();
    let first = next_text(&mut ws).await.unwrap();
    let engine_sid = serde_json::from_str::<Value>(&first[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
        "40{}",
        json!({ "token": token })
    )))
    .await
    .unwrap();
    let answer = next_text(&mut ws).await.unwrap();
    let socket_sid = serde_json::from_str::<Value>(&answer[2..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut bearer = ws_from(&server, 1, &[("Authorization", &format!("Bearer {expired}"))])
        .await
        .unwrap();
    assert_eq!(
        connect_error_reason(&sio_connect(&mut bearer, None).await),
        "token_expired"
    );
    // A token in the URL (not a supported place) must not be logged either.
    let res = get(&server, 1, &format!("{POLLING}&token={token}"), &[])
        .await
        .unwrap();
    let polling_sid = serde_json::from_str::<Value>(&res.body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let posted = request(
        &server,
        1,
        "POST",
        &format!("/socket.io/?EIO=4&transport=polling&sid={polling_sid}"),
        &["Content-Type: text/plain;charset=UTF-8"],
        "40",
    )
    .await
    .unwrap();
    assert_eq!(posted.status, 200);
    drop(ws);

    let log = server.stop().await;
    assert!(log.contains(r#"sub="erin""#), "the user id is logged:\n{log}");
    for secret in [
        token.as_str(),
        expired.as_str(),
        &engine_sid,
        &socket_sid,
        &polling_sid,
        SECRET,
    ] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}

/// The README's example: the annotated configuration plus a minted token.
#[tokio::test]
async fn the_example_configuration_works() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ferrio.example.toml");
    let example = example.to_str().unwrap();
    // It listens on every address: without a secret, that is refused.
    let (ok, _, err) = run(&["check-config", "-c", example], &[]);
    assert!(!ok);
    assert!(err.contains("refusing to listen on 0.0.0.0:3000"), "{err}");
    let env = [("FERRIO_AUTH__SECRET", SECRET)];
    let (ok, out, err) = run(&["check-config", "-c", example], &env);
    assert!(ok, "{err}");
    assert!(out.contains("# authentication: on"), "{out}");

    let (ok, token, err) = run(
        &[
            "token",
            "-c",
            example,
            "--sub",
            "alice",
            "--rooms",
            "chat:*",
            "--publish",
            "chat:*",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(example).unwrap();
    let text = text
        .replace("listen = \"0.0.0.0:3000\"", "")
        .replace("shutdown_timeout = \"10s\"", "");
    let server = Server::start_with(&text, &env).await;
    let mut ws = ws_from(&server, 1, &[]).await.unwrap();
    let answer = sio_connect(&mut ws, Some(json!({ "token": token.trim() }))).await;
    assert!(answer.starts_with("40"), "{answer}");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"421["join","chat:lobby"]"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await.as_deref(), Some(r#"431[{"ok":true}]"#));
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"422["join","admin"]"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some(r#"432[{"ok":false,"error":"forbidden"}]"#)
    );
}
