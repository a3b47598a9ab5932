//! `/dashboard`: off without a password; HTTP Basic in front of the page; the page's headers;
//! the admin namespace admits only a valid page token; the snapshots follow what happens; the
//! page's own handshake passes the origin policy; the `[dashboard]` keys are checked.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{client_async, tungstenite};

use ferrio_server::config::{Inputs, Settings};
use ferrio_server::dashboard::{Signer, TokenRefusal};

use crate::support::*;

const PASSWORD: &str = "dashboard-password-0123";
const ADMIN: &str = "/ferrio-admin";

fn config(extra: &str) -> String {
    format!("[dashboard]\npassword = \"{PASSWORD}\"\ninterval = \"200ms\"\n{extra}")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {encoded}")
}

async fn page(server: &Server) -> HttpResponse {
    get(server, 1, "/dashboard", &[&basic("admin", PASSWORD)])
        .await
        .expect("no response")
}

/// The token a served page carries.
async fn page_token(server: &Server) -> String {
    let res = page(server).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let start = res.body.find("data-token=\"").expect("no token in the page") + "data-token=\"".len();
    let len = res.body[start..].find('"').unwrap();
    res.body[start..start + len].to_owned()
}

/// Engine.IO open, then a CONNECT to the admin namespace with `auth`; the answer packet.
async fn admin_connect(ws: &mut Ws, auth: Value) -> String {
    let open = next_text(ws).await.expect("no open packet");
    assert!(open.starts_with('0'), "{open}");
    ws.send(Message::text(format!("40{ADMIN},{auth}"))).await.unwrap();
    loop {
        let packet = next_text(ws).await.expect("closed before the CONNECT answer");
        if packet.starts_with(&format!("40{ADMIN},")) || packet.starts_with(&format!("44{ADMIN},")) {
            return packet;
        }
    }
}

fn refusal_reason(packet: &str) -> String {
    let body = packet
        .strip_prefix(&format!("44{ADMIN},"))
        .unwrap_or_else(|| panic!("expected CONNECT_ERROR, got {packet}"));
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["message"], "unauthorized", "{packet}");
    v["data"]["reason"].as_str().unwrap_or_default().to_owned()
}

async fn admin_refused(server: &Server, auth: Value) -> String {
    let mut ws = ws_from(server, 1, &[]).await.expect("upgrade");
    refusal_reason(&admin_connect(&mut ws, auth).await)
}

/// The next admin event `(name, data)`.
async fn admin_event(ws: &mut Ws) -> (String, Value) {
    loop {
        let text = next_text(ws).await.expect("closed");
        if let Some(body) = text.strip_prefix(&format!("42{ADMIN},")) {
            let v: Value = serde_json::from_str(body).unwrap();
            return (v[0].as_str().unwrap().to_owned(), v[1].clone());
        }
    }
}

/// Waits (bounded) for a snapshot that satisfies `pred`.
async fn snapshot_where(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let (name, data) = admin_event(ws).await;
        if name != "snapshot" {
            continue;
        }
        if pred(&data) {
            return data;
        }
        last = data;
    }
    panic!("no snapshot with {what}; the last one: {last:#}");
}

#[tokio::test]
async fn off_without_a_password() {
    let server = Server::start("").await;
    let res = get(&server, 1, "/dashboard", &[&basic("admin", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(res.status, 404);
    // No admin namespace either.
    let mut ws = ws_from(&server, 1, &[]).await.expect("upgrade");
    let answer = admin_connect(&mut ws, json!({})).await;
    assert!(answer.starts_with(&format!("44{ADMIN},")), "{answer}");
    assert!(answer.contains("Invalid namespace"), "{answer}");
}

#[tokio::test]
async fn the_page_needs_the_admin_credential() {
    let server = Server::start(&config("")).await;
    let refused: [&[&str]; 6] = [
        &[],
        &[&basic("admin", "wrong-password-0123")],
        &[&basic("root", PASSWORD)],
        &[&basic("admin", &format!("{PASSWORD}x"))],
        &["Authorization: Basic !!!"],
        &["Authorization: Bearer dashboard-password-0123"],
    ];
    for headers in refused {
        let res = get(&server, 1, "/dashboard", headers).await.unwrap();
        assert_eq!(res.status, 401, "{headers:?}");
        assert_eq!(
            res.header("www-authenticate").as_deref(),
            Some(r#"Basic realm="ferrio""#)
        );
        assert!(!res.body.contains("data-token"), "{headers:?}");
    }
    let res = request(
        &server,
        1,
        "POST",
        "/dashboard",
        &[&basic("admin", PASSWORD)],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(res.status, 405);
    // Wrong credentials (not their absence, a browser's first request) are counted.
    let metrics = get(&server, 1, "/metrics", &[]).await.unwrap().body;
    assert!(
        metrics.contains(r#"ferrio_rejections_total{kind="dashboard",reason="wrong_credentials"} 5"#),
        "{metrics}"
    );

    // A user set in the configuration replaces `admin`.
    let other = Server::start(&config("user = \"ops\"\n")).await;
    let res = get(&other, 1, "/dashboard", &[&basic("ops", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let res = get(&other, 1, "/dashboard", &[&basic("admin", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(res.status, 401);
}

#[tokio::test]
async fn the_page_is_self_contained_under_a_strict_policy() {
    let server = Server::start(&config("")).await;
    let res = page(&server).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(res.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(res.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(res.header("x-content-type-options").as_deref(), Some("nosniff"));
    let csp = res.header("content-security-policy").expect("no CSP");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("no nonce in the CSP")
        .to_owned();
    assert!(nonce.len() >= 16, "{csp}");
    for directive in [
        "default-src 'none'",
        &format!("script-src 'nonce-{nonce}'"),
        &format!("style-src 'nonce-{nonce}'"),
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{directive:?} missing from {csp}"
        );
    }
    // Every script and style carries the nonce; nothing comes from elsewhere.
    let scripts = res.body.matches("<script").count();
    assert_eq!(scripts, 1);
    assert_eq!(
        res.body.matches(&format!("<script nonce=\"{nonce}\">")).count(),
        scripts
    );
    assert_eq!(res.body.matches(&format!("<style nonce=\"{nonce}\">")).count(), 1);
    assert!(!res.body.contains("src="), "no external resource");
    assert!(!res.body.contains("{{"), "every placeholder is filled");
    assert!(res.body.contains("data-namespace=\"/ferrio-admin\""));
    assert!(res.body.contains("data-path=\"/socket.io/\""));

    // A fresh nonce and token every time.
    let again = page(&server).await;
    assert_ne!(again.header("content-security-policy").unwrap(), csp);
}

/// Ten wrong passwords from one address lock it out for a minute, even with the right one;
/// other addresses are not affected.
#[tokio::test]
async fn guessing_the_password_is_locked_out_per_address() {
    let server = Server::start(&config("")).await;
    for i in 0..10 {
        let wrong = basic("admin", &format!("guess-number-{i:04}"));
        assert_eq!(
            get(&server, 2, "/dashboard", &[&wrong]).await.unwrap().status,
            401
        );
    }
    let locked = get(&server, 2, "/dashboard", &[&basic("admin", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(locked.status, 429);
    assert_eq!(locked.header("retry-after").as_deref(), Some("60"));
    let other = get(&server, 3, "/dashboard", &[&basic("admin", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(other.status, 200, "another address still gets in");
}

#[tokio::test]
async fn the_admin_namespace_admits_only_a_valid_page_token() {
    // With authentication on: a user's JWT does not open the admin namespace.
    let server = Server::start(&format!("{}{}", hs_config(), config("token_lifetime = \"1s\"\n"))).await;
    let jwt = hs(claims("alice"));
    assert_eq!(admin_refused(&server, json!({})).await, "missing_token");
    assert_eq!(
        admin_refused(&server, json!({ "token": jwt })).await,
        "invalid_token"
    );
    assert_eq!(
        admin_refused(&server, json!({ "token": 42 })).await,
        "missing_token"
    );

    let token = page_token(&server).await;
    let (expiry, tag) = token.split_once('.').unwrap();
    let later = (expiry.parse::<u64>().unwrap() + 3_600_000).to_string();
    let mut flipped = tag.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let forged = [
        format!("{later}.{tag}"),
        format!("{expiry}.{}", String::from_utf8(flipped).unwrap()),
        format!("{expiry}."),
        expiry.to_owned(),
        // Signed by another process's key.
        Signer::random().issue(Duration::from_secs(60)),
    ];
    for bad in forged {
        assert_eq!(
            admin_refused(&server, json!({ "token": bad })).await,
            "invalid_token",
            "{bad}"
        );
    }

    let mut ws = ws_from(&server, 1, &[]).await.expect("upgrade");
    let answer = admin_connect(&mut ws, json!({ "token": token })).await;
    assert!(answer.starts_with(&format!("40{ADMIN},")), "{answer}");
    let (name, history) = admin_event(&mut ws).await;
    assert_eq!(name, "history");
    assert!(history.is_array(), "{history}");

    // The same token past its lifetime.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        admin_refused(&server, json!({ "token": token })).await,
        "token_expired"
    );
    // Already connected viewers stay.
    let (name, _) = admin_event(&mut ws).await;
    assert_eq!(name, "snapshot");
    // Every refusal counted: 3 + 5 forged + 1 expired.
    let metrics = get(&server, 1, "/metrics", &[]).await.unwrap().body;
    assert!(
        metrics.contains(r#"ferrio_rejections_total{kind="dashboard",reason="token_refused"} 9"#),
        "{metrics}"
    );
}

#[test]
fn tokens_check_signature_then_expiry() {
    let signer = Signer::random();
    let token = signer.issue(Duration::from_secs(60));
    assert_eq!(signer.verify(&token), Ok(()));
    assert_eq!(Signer::random().verify(&token), Err(TokenRefusal::Invalid));
    assert_eq!(
        signer.verify(&signer.issue(Duration::ZERO)),
        Err(TokenRefusal::Expired)
    );
    for bad in ["", ".", "x.y", "12.", "-1.AAAA", "+1.AAAA", "1.2.3"] {
        assert_eq!(signer.verify(bad), Err(TokenRefusal::Invalid), "{bad:?}");
    }
}

#[tokio::test]
async fn snapshots_follow_connections_rooms_and_events() {
    let server = Server::start(&config("")).await;
    let token = page_token(&server).await;
    let mut admin = ws_from(&server, 1, &[]).await.expect("upgrade");
    let answer = admin_connect(&mut admin, json!({ "token": token })).await;
    assert!(answer.starts_with(&format!("40{ADMIN},")), "{answer}");

    let idle = snapshot_where(&mut admin, "the viewer alone", |s| {
        s["connections"]["dashboard"] == 1
    })
    .await;
    assert_eq!(idle["connections"]["clients"], 0, "{idle:#}");
    assert_eq!(idle["sockets"], 0);
    assert!(idle["node"].as_str().is_some_and(|n| !n.is_empty()), "{idle:#}");
    assert_eq!(idle["metrics"], true);
    assert_eq!(idle["interval"], 200);
    assert!(
        idle["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != ADMIN),
        "the admin namespace is not listed: {idle:#}"
    );

    let mut user = ws_from(&server, 2, &[]).await.expect("upgrade");
    assert!(sio_connect(&mut user, None).await.starts_with("40"));
    user.send(Message::text("421[\"join\",\"lobby\"]")).await.unwrap();
    assert_eq!(next_text(&mut user).await.unwrap(), "431[{\"ok\":true}]");
    let busy = snapshot_where(&mut admin, "one client in lobby", |s| {
        s["connections"]["clients"] == 1 && s["rooms"] == 1
    })
    .await;
    assert_eq!(busy["connections"]["total"], 2, "{busy:#}");
    assert_eq!(busy["connections"]["transports"]["websocket"], 2.0, "{busy:#}");
    assert_eq!(busy["sockets"], 1);
    assert_eq!(
        busy["top_rooms"],
        json!([{ "namespace": "/", "room": "lobby", "sockets": 1 }])
    );
    assert_eq!(
        busy["namespaces"],
        json!([{ "name": "/", "sockets": 1, "rooms": 1 }])
    );

    for i in 0..50 {
        user.send(Message::text(format!("42[\"ping-{i}\"]")))
            .await
            .unwrap();
    }
    let flowing = snapshot_where(&mut admin, "events flowing", |s| {
        s["rates"]["events"].as_f64().is_some_and(|r| r > 0.0)
    })
    .await;
    assert!(
        flowing["totals"]["events"].as_f64().unwrap() >= 50.0,
        "{flowing:#}"
    );

    drop(user);
    snapshot_where(&mut admin, "the client gone", |s| {
        s["connections"]["clients"] == 0 && s["rooms"] == 0
    })
    .await;

    // A new viewer gets the history of the charts at once.
    let token = page_token(&server).await;
    let mut second = ws_from(&server, 3, &[]).await.expect("upgrade");
    assert!(
        admin_connect(&mut second, json!({ "token": token }))
            .await
            .starts_with("40")
    );
    let (name, history) = admin_event(&mut second).await;
    assert_eq!(name, "history");
    let points = history.as_array().unwrap();
    assert!(points.len() >= 3, "{history}");
    assert!(points.iter().any(|p| p["connections"] == 1), "{history}");
    assert!(points.iter().all(|p| p["t"].as_u64().is_some()), "{history}");
}

#[tokio::test]
async fn without_metrics_the_rates_are_absent() {
    let server = Server::start(&format!("[metrics]\nenabled = false\n{}", config(""))).await;
    let token = page_token(&server).await;
    let mut admin = ws_from(&server, 1, &[]).await.expect("upgrade");
    assert!(
        admin_connect(&mut admin, json!({ "token": token }))
            .await
            .starts_with("40")
    );
    let s = snapshot_where(&mut admin, "a snapshot", |_| true).await;
    assert_eq!(s["metrics"], false);
    assert_eq!(s["rates"], Value::Null);
    assert_eq!(s["connections"]["transports"], Value::Null);
    assert_eq!(s["connections"]["total"], 1);
}

/// A WebSocket handshake to `target` (path and query) with these headers; the HTTP status
/// when refused.
async fn handshake(server: &Server, target: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
    let url = format!("ws://{}{target}", server.addr);
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let stream = tcp_from(1, server.addr).await;
    match tokio::time::timeout(STEP, client_async(req, stream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(tungstenite::Error::Http(res))) => Err(res.status().as_u16()),
        other => panic!("handshake: {other:?}"),
    }
}

#[tokio::test]
async fn the_page_handshake_passes_the_origin_policy_on_its_own_origin() {
    // Authentication on and no origin allowed: browsers cannot connect, except the page.
    let server = Server::start(&format!("[auth]\nsecret = \"{SECRET}\"\n{}", config(""))).await;
    let token = page_token(&server).await;
    let own = format!("http://{}", server.addr);
    let ws = "/socket.io/?EIO=4&transport=websocket";
    let with_token = format!("{ws}&dashboard={token}");
    assert_eq!(handshake(&server, &with_token, &[("Origin", &own)]).await, Ok(()));
    assert_eq!(handshake(&server, ws, &[("Origin", &own)]).await, Err(403));
    assert_eq!(
        handshake(&server, &with_token, &[("Origin", "http://evil.example")]).await,
        Err(403)
    );
    assert_eq!(handshake(&server, &with_token, &[]).await, Err(403), "no Origin");
    let forged = format!(
        "{ws}&dashboard={}",
        Signer::random().issue(Duration::from_secs(60))
    );
    assert_eq!(handshake(&server, &forged, &[("Origin", &own)]).await, Err(403));
}

fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
    Settings::load(Inputs {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Inputs::default()
    })
    .map(|l| l.settings)
    .map_err(|e| e.to_string())
}

#[test]
fn the_settings_are_checked() {
    let s = load(&[("FERRIO_DASHBOARD__PASSWORD", PASSWORD)]).unwrap();
    assert_eq!(s.dashboard.user, "admin");
    assert_eq!(s.dashboard.namespace, ADMIN);
    assert_eq!(s.dashboard.interval.0, Duration::from_secs(1));
    assert!(load(&[]).unwrap().dashboard.password.is_none());

    let err = load(&[("FERRIO_DASHBOARD__PASSWORD", "short-pass1")]).unwrap_err();
    assert!(
        err.contains("dashboard.password") && err.contains("at least 12 characters"),
        "{err}"
    );
    let err = load(&[
        ("FERRIO_DASHBOARD__PASSWORD", PASSWORD),
        ("FERRIO_NAMESPACES", "/,/ferrio-admin"),
    ])
    .unwrap_err();
    assert!(err.contains("dashboard.namespace"), "{err}");
    for (key, value) in [
        ("FERRIO_DASHBOARD__NAMESPACE", "/"),
        ("FERRIO_DASHBOARD__NAMESPACE", "admin"),
        ("FERRIO_DASHBOARD__NAMESPACE", "/admin-*"),
        ("FERRIO_DASHBOARD__USER", "a:b"),
        ("FERRIO_DASHBOARD__INTERVAL", "10ms"),
        ("FERRIO_DASHBOARD__TOKEN_LIFETIME", "0"),
    ] {
        let err = load(&[("FERRIO_DASHBOARD__PASSWORD", PASSWORD), (key, value)]).unwrap_err();
        let field = key.trim_start_matches("FERRIO_DASHBOARD__").to_lowercase();
        assert!(
            err.contains(&format!("dashboard.{field}")),
            "{key}={value}: {err}"
        );
    }
    let shown = load(&[("FERRIO_DASHBOARD__PASSWORD", PASSWORD)])
        .unwrap()
        .to_redacted_toml();
    assert!(!shown.contains(PASSWORD), "{shown}");
}
