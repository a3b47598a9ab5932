//! Token verification: every bad token the issue lists gets its documented reason, checked
//! in-process against the verifier `ferrio serve` uses, and end to end over a raw WebSocket
//! (the `Authorization: Bearer` path a browser client cannot take).

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use ferrio_server::auth::{AuthFailure, Authenticator};
use ferrio_server::config::{Inputs, Settings};

use crate::support::*;

async fn authenticator(config: &str) -> Authenticator {
    let dir = TempDir::new("auth");
    let path = dir.write("ferrio.toml", config);
    let loaded = Settings::load(Inputs {
        file: Some(path),
        ..Inputs::default()
    })
    .unwrap();
    Authenticator::new(&loaded.settings, &loaded.layers)
        .await
        .unwrap()
}

async fn reason(auth: &Authenticator, token: &str) -> Result<String, &'static str> {
    auth.verify(token)
        .await
        .map(|id| id.sub)
        .map_err(AuthFailure::reason)
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[tokio::test]
async fn shared_secret_tokens_and_every_bad_one() {
    let auth = authenticator(&format!(
        "[auth]\nsecret = \"{SECRET}\"\nissuer = \"https://issuer.test\"\naudience = [\"ferrio\"]\nleeway = \"30s\"\n"
    ))
    .await;
    let good = json!({ "sub": "alice", "exp": now() + 600, "iss": "https://issuer.test", "aud": "ferrio" });
    assert_eq!(reason(&auth, &hs(good.clone())).await, Ok("alice".into()));
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        good.clone(),
    );
    assert_eq!(reason(&auth, &hs512).await, Ok("alice".into()));

    let other_secret = EncodingKey::from_secret(b"another-secret-0123456789abcdef-0123");
    let valid = hs(good.clone());
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{head}.{}.{sig}",
        b64url(
            with(good.clone(), json!({"sub": "mallory"}))
                .to_string()
                .as_bytes()
        )
    );
    let none = raw_token(json!({ "alg": "none", "typ": "JWT" }), good.clone(), b"");
    let none_upper = raw_token(json!({ "alg": "NONE", "typ": "JWT" }), good.clone(), b"");

    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "token_missing"),
        ("not a JWT", "hello".into(), "token_malformed"),
        ("three dots of junk", "a.b.c".into(), "token_malformed"),
        (
            "header not JSON",
            format!("{}.e30.", b64url(b"nope")),
            "token_malformed",
        ),
        ("huge", "a".repeat(20_000), "token_malformed"),
        (
            "wrong signature",
            sign(Algorithm::HS256, &other_secret, None, good.clone()),
            "signature_invalid",
        ),
        ("tampered claims", tampered, "signature_invalid"),
        ("alg none", none, "algorithm_not_allowed"),
        ("alg NONE", none_upper, "algorithm_not_allowed"),
        (
            "expired",
            hs(with(good.clone(), json!({ "exp": now() - 3600 }))),
            "token_expired",
        ),
        (
            "not yet valid",
            hs(with(good.clone(), json!({ "nbf": now() + 3600 }))),
            "token_not_yet_valid",
        ),
        (
            "no exp",
            hs(with(good.clone(), json!({ "exp": null }))),
            "claims_invalid",
        ),
        (
            "no sub",
            hs(with(good.clone(), json!({ "sub": null }))),
            "claims_invalid",
        ),
        (
            "sub not a string",
            hs(with(good.clone(), json!({ "sub": 42 }))),
            "claims_invalid",
        ),
        (
            "wrong iss",
            hs(with(good.clone(), json!({ "iss": "https://evil.test" }))),
            "issuer_invalid",
        ),
        (
            "no iss",
            hs(with(good.clone(), json!({ "iss": null }))),
            "claims_invalid",
        ),
        (
            "wrong aud",
            hs(with(good.clone(), json!({ "aud": "someone-else" }))),
            "audience_invalid",
        ),
        (
            "rooms not a list",
            hs(with(good.clone(), json!({ "rooms": "chat:*" }))),
            "claims_invalid",
        ),
        (
            "rooms of numbers",
            hs(with(good.clone(), json!({ "rooms": [1, 2] }))),
            "claims_invalid",
        ),
    ];
    for (what, token, expected) in cases {
        assert_eq!(reason(&auth, &token).await, Err(expected), "{what}");
    }
    // Inside the leeway, an expired token still passes (clock skew).
    let skewed = hs(with(good, json!({ "exp": now() - 5 })));
    assert_eq!(reason(&auth, &skewed).await, Ok("alice".into()));
}

#[tokio::test]
async fn public_keys_and_algorithm_confusion() {
    let rsa = authenticator(&format!("[auth]\npublic_key_file = {:?}\n", fixture("rsa.pub"))).await;
    let good = claims("bob");
    assert_eq!(
        reason(
            &rsa,
            &sign(Algorithm::RS256, &rsa_key("rsa.key"), None, good.clone())
        )
        .await,
        Ok("bob".into())
    );
    assert_eq!(
        reason(
            &rsa,
            &sign(Algorithm::PS256, &rsa_key("rsa.key"), None, good.clone())
        )
        .await,
        Ok("bob".into())
    );
    assert_eq!(
        reason(
            &rsa,
            &sign(Algorithm::RS256, &rsa_key("rsa-other.key"), None, good.clone())
        )
        .await,
        Err("signature_invalid")
    );
    // The classic confusion: HS256 "signed" with the server's public key as the HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&fixture_bytes("rsa.pub")),
        None,
        good.clone(),
    );
    assert_eq!(reason(&rsa, &confused).await, Err("algorithm_not_allowed"));
    let ec_token = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&fixture_bytes("ec.key")).unwrap(),
        None,
        good.clone(),
    );
    assert_eq!(reason(&rsa, &ec_token).await, Err("algorithm_not_allowed"));

    let ec = authenticator(&format!("[auth]\npublic_key_file = {:?}\n", fixture("ec.pub"))).await;
    assert_eq!(reason(&ec, &ec_token).await, Ok("bob".into()));
    let ed = authenticator(&format!("[auth]\npublic_key_file = {:?}\n", fixture("ed.pub"))).await;
    let ed_token = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(&fixture_bytes("ed.key")).unwrap(),
        None,
        good.clone(),
    );
    assert_eq!(reason(&ed, &ed_token).await, Ok("bob".into()));
    assert_eq!(reason(&ed, &ec_token).await, Err("algorithm_not_allowed"));

    // A narrower list than the key allows.
    let rs256_only = authenticator(&format!(
        "[auth]\npublic_key_file = {:?}\nalgorithms = [\"RS256\"]\n",
        fixture("rsa.pub")
    ))
    .await;
    assert_eq!(
        reason(
            &rs256_only,
            &sign(Algorithm::PS256, &rsa_key("rsa.key"), None, good.clone())
        )
        .await,
        Err("algorithm_not_allowed")
    );

    // With a secret and a public key, each algorithm family uses only its own key.
    let both = authenticator(&format!(
        "[auth]\nsecret = \"{SECRET}\"\npublic_key_file = {:?}\n",
        fixture("rsa.pub")
    ))
    .await;
    assert_eq!(reason(&both, &hs(good.clone())).await, Ok("bob".into()));
    assert_eq!(reason(&both, &confused).await, Err("signature_invalid"));
    assert_eq!(
        reason(&both, &sign(Algorithm::RS256, &rsa_key("rsa.key"), None, good)).await,
        Ok("bob".into())
    );
}

#[tokio::test]
async fn bearer_header_and_connect_errors_over_a_raw_websocket() {
    let server = Server::start(&hs_config()).await;
    let token = hs(claims("carol"));

    let mut ws = ws_from(&server, 1, &[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    let answer = sio_connect(&mut ws, None).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");

    // The auth payload wins over the header.
    let mut ws = ws_from(&server, 1, &[("Authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    let answer = sio_connect(&mut ws, Some(json!({ "token": "garbage" }))).await;
    assert_eq!(connect_error_reason(&answer), "token_malformed");

    let mut ws = ws_from(&server, 1, &[("Authorization", "Basic dXNlcjpwYXNz")])
        .await
        .unwrap();
    assert_eq!(
        connect_error_reason(&sio_connect(&mut ws, None).await),
        "token_malformed"
    );

    let mut ws = ws_from(&server, 1, &[]).await.unwrap();
    assert_eq!(
        connect_error_reason(&sio_connect(&mut ws, None).await),
        "token_missing"
    );
    let mut ws = ws_from(&server, 1, &[]).await.unwrap();
    assert_eq!(
        connect_error_reason(&sio_connect(&mut ws, Some(json!({ "token": 12 }))).await),
        "token_malformed"
    );

    // No socket was created for a refusal: an event right after is a protocol error that
    // closes the connection instead of reaching a handler.
    let mut ws = ws_from(&server, 1, &[]).await.unwrap();
    assert_eq!(
        connect_error_reason(&sio_connect(&mut ws, Some(json!({ "token": "x" }))).await),
        "token_malformed"
    );
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"421["join","chat:a"]"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await, None, "the connection must close");

    let log = server.stop().await;
    assert!(
        log.contains("reason=\"token_missing\"") || log.contains("reason=token_missing"),
        "{log}"
    );
    assert!(!log.contains(&token), "a token reached the log");
}

/// Not a timed test: what verifying one token costs, per algorithm. Run with
/// `cargo test --release -p ferrio-server -- --ignored --nocapture verification_cost`.
#[tokio::test]
#[ignore]
async fn verification_cost() {
    let auth = authenticator(&format!(
        "[auth]\nsecret = \"{SECRET}\"\npublic_key_file = {:?}\n",
        fixture("rsa.pub")
    ))
    .await;
    let ec = authenticator(&format!("[auth]\npublic_key_file = {:?}\n", fixture("ec.pub"))).await;
    let ed = authenticator(&format!("[auth]\npublic_key_file = {:?}\n", fixture("ed.pub"))).await;
    let c = json!({ "sub": "bench", "exp": now() + 3600, "rooms": ["chat:*"] });
    let cases = [
        ("HS256", &auth, hs(c.clone())),
        (
            "RS256",
            &auth,
            sign(Algorithm::RS256, &rsa_key("rsa.key"), None, c.clone()),
        ),
        (
            "ES256",
            &ec,
            sign(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(&fixture_bytes("ec.key")).unwrap(),
                None,
                c.clone(),
            ),
        ),
        (
            "EdDSA",
            &ed,
            sign(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(&fixture_bytes("ed.key")).unwrap(),
                None,
                c,
            ),
        ),
    ];
    for (name, auth, token) in cases {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = tokio::time::Instant::now();
            for _ in 0..2000 {
                assert!(auth.verify(&token).await.is_ok());
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / 2000.0);
        }
        eprintln!("{name}: {best:.1} µs per verification (best of 5 batches of 2000)");
    }
}
