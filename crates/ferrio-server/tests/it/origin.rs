//! The origin policy: pattern semantics, and evil, `null` and look-alike origins refused with
//! 403 on both transports before any session exists (and before a WebSocket upgrade).

use ferrio::config::{is_origin_pattern, origin_matches};

use crate::support::*;

#[test]
fn patterns() {
    let yes = [
        ("https://app.example.com", "https://app.example.com"),
        ("https://app.example.com", "HTTPS://APP.EXAMPLE.COM"),
        ("https://*.example.com", "https://a.example.com"),
        ("https://*.example.com", "https://a.b.example.com"),
        ("http://localhost:*", "http://localhost:5173"),
        ("http://localhost:*", "http://localhost"),
        ("http://[::1]:*", "http://[::1]:8080"),
        ("https://app.example.com:8443", "https://app.example.com:8443"),
        ("*", "https://anything.test"),
    ];
    for (p, o) in yes {
        assert!(origin_matches(p, o), "{p} should allow {o}");
    }
    let no = [
        ("https://app.example.com", "null"),
        ("*", "null"),
        ("*", "not an origin"),
        ("https://app.example.com", "http://app.example.com"),
        ("https://app.example.com", "https://app.example.com:8443"),
        ("https://app.example.com", "https://app.example.com.evil.com"),
        ("https://app.example.com", "https://app.example.co"),
        ("https://app.example.com", "https://app.example.com/"),
        ("https://app.example.com", "https://user@app.example.com"),
        ("https://*.example.com", "https://example.com"),
        ("https://*.example.com", "https://evilexample.com"),
        ("https://*.example.com", "https://a.example.com.evil.com"),
        ("https://*.example.com", "https://.example.com"),
        ("https://*.example.com", "https://a..example.com"),
        ("https://*.example.com", "https://a.example.com:444"),
        ("https://*.example.com", "http://a.example.com"),
        ("http://localhost:*", "http://localhost.evil.com:80"),
        ("http://localhost:*", "http://localhost:abc"),
    ];
    for (p, o) in no {
        assert!(!origin_matches(p, o), "{p} must not allow {o}");
    }
    for bad in [
        "null",
        "example.com",
        "https://",
        "https://a.*.com",
        "https://exa mple.com",
        "https://*",
    ] {
        assert!(!is_origin_pattern(bad), "{bad} is not a pattern");
    }
}

const POLICY: &str = "[origin]\nallowed = [\"https://app.example.com\", \"https://*.example.org\"]\n";

const BAD_ORIGINS: &[&str] = &[
    "https://evil.com",
    "null",
    "https://app.example.com.evil.com",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://example.org",
    "https://evilexample.org",
];

fn auth_with_policy() -> String {
    format!("[auth]\nsecret = \"{SECRET}\"\n{POLICY}")
}

#[tokio::test]
async fn bad_origins_get_403_on_both_transports() {
    let server = Server::start(&auth_with_policy()).await;
    for origin in BAD_ORIGINS {
        let header = format!("Origin: {origin}");
        let res = get(&server, 1, POLLING, &[&header]).await.unwrap();
        assert_eq!(res.status, 403, "polling from {origin}");
        assert_eq!(
            res.json(),
            serde_json::json!({ "code": 4, "message": "origin not allowed" })
        );
        assert!(!res.body.contains("sid"), "no session for {origin}");
        assert_eq!(res.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(
            ws_from(&server, 1, &[("Origin", origin)]).await.err(),
            Some(403),
            "websocket from {origin}"
        );
    }
    // No Origin at all: a non-browser client, refused unless configured.
    let res = get(&server, 1, POLLING, &[]).await.unwrap();
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["message"], "origin required");
    assert_eq!(ws_from(&server, 1, &[]).await.err(), Some(403));

    // Allowed origins get a session, and the polling answer carries the CORS headers.
    for origin in ["https://app.example.com", "https://a.b.example.org"] {
        let res = get(&server, 1, POLLING, &[&format!("Origin: {origin}")])
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{origin}");
        assert!(res.body.starts_with("0{\"sid\""));
        assert_eq!(res.header("access-control-allow-origin").as_deref(), Some(origin));
        assert_eq!(res.header("vary").as_deref(), Some("Origin"));
        assert_eq!(res.header("access-control-allow-credentials"), None);
        let mut ws = ws_from(&server, 1, &[("Origin", origin)])
            .await
            .expect("allowed websocket");
        let answer = sio_connect(&mut ws, Some(serde_json::json!({ "token": hs(claims("dan")) }))).await;
        assert!(answer.starts_with("40"), "{answer}");
    }
    let log = server.stop().await;
    assert!(log.contains("origin.not_allowed=14"), "counted:\n{log}");
    assert!(log.contains("origin.missing=2"), "counted:\n{log}");
}

#[tokio::test]
async fn preflight_and_credentials() {
    let server = Server::start(&format!("{}credentials = true\n", auth_with_policy())).await;
    let req = |origin: &str| {
        vec![
            format!("Origin: {origin}"),
            "Access-Control-Request-Method: POST".to_owned(),
            "Access-Control-Request-Headers: content-type".to_owned(),
        ]
    };
    let mut stream = tcp_from(1, server.addr).await;
    let lines = req("https://app.example.com").join("\r\n");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        format!("OPTIONS {POLLING} HTTP/1.1\r\nHost: x\r\n{lines}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let res = read_response(&mut stream).await.unwrap();
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        res.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        res.header("access-control-allow-methods").as_deref(),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE")
    );
    assert_eq!(
        res.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert_eq!(
        res.header("vary").as_deref(),
        Some("Origin, Access-Control-Request-Headers")
    );

    let mut stream = tcp_from(1, server.addr).await;
    let lines = req("https://evil.com").join("\r\n");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        format!("OPTIONS {POLLING} HTTP/1.1\r\nHost: x\r\n{lines}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let res = read_response(&mut stream).await.unwrap();
    assert_eq!(
        res.header("access-control-allow-origin"),
        None,
        "the browser must block it"
    );
    assert_eq!(res.header("access-control-allow-credentials"), None);
}

#[tokio::test]
async fn development_mode_allows_pages_from_this_machine_only() {
    let server = Server::start("").await;
    assert_eq!(
        get(&server, 1, POLLING, &[]).await.unwrap().status,
        200,
        "no Origin"
    );
    assert_eq!(
        get(&server, 1, POLLING, &["Origin: http://localhost:5173"])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&server, 1, POLLING, &["Origin: https://evil.com"])
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        ws_from(&server, 1, &[("Origin", "http://localhost.evil.com")])
            .await
            .err(),
        Some(403)
    );
}
