//! JWKS: keys selected by `kid`, fetched again for an unknown `kid` (at most once per
//! cooldown), and an endpoint that goes down: the keys known keep working, new `kid`s are
//! refused. A small HTTP server in the test plays the identity provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

/// Serves a JWKS document at `/jwks?...` until dropped; can be taken down.
struct IdentityProvider {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    up: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl IdentityProvider {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/jwks?client_secret=hunter2",
            listener.local_addr().unwrap()
        );
        let keys = Arc::new(Mutex::new(Vec::new()));
        let up = Arc::new(AtomicBool::new(true));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, u, f) = (keys.clone(), up.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (k, u, f) = (k.clone(), u.clone(), f.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    let response = if u.load(Ordering::SeqCst) {
                        let body = serde_json::to_string(&JwkSet {
                            keys: k.lock().clone(),
                        })
                        .unwrap();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .into()
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            keys,
            up,
            fetches,
            task,
        }
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(server: &Server, token: &str) -> String {
    let mut ws = ws_from(server, 1, &[]).await.unwrap();
    sio_connect(&mut ws, Some(json!({ "token": token }))).await
}

#[tokio::test]
async fn kid_rotation_and_an_identity_provider_outage() {
    let idp = IdentityProvider::start().await;
    let key_a = rsa_key("rsa.key");
    let key_b = EncodingKey::from_ec_pem(&fixture_bytes("ec.key")).unwrap();
    let key_c = rsa_key("rsa-other.key");
    idp.keys.lock().push(jwk(&key_a, Algorithm::RS256, "a"));

    let server = Server::start(&format!(
        "[auth]\njwks_url = {:?}\njwks_cooldown = \"0s\"\n[origin]\nallow_missing = true\n",
        idp.url
    ))
    .await;
    server.wait_log("JWKS loaded").await;
    let token_a = sign(Algorithm::RS256, &key_a, Some("a"), claims("alice"));
    assert!(connect(&server, &token_a).await.starts_with("40"));

    // A kid the document does not have (yet): fetched again, still unknown, refused.
    let token_b = sign(Algorithm::ES256, &key_b, Some("b"), claims("bob"));
    assert_eq!(
        connect_error_reason(&connect(&server, &token_b).await),
        "unknown_kid"
    );

    // The provider rotates in key b: the next connection fetches it.
    idp.keys.lock().push(jwk(&key_b, Algorithm::ES256, "b"));
    assert!(connect(&server, &token_b).await.starts_with("40"));

    // A kid naming a key of another algorithm is refused.
    let wrong_alg = sign(Algorithm::RS256, &key_a, Some("b"), claims("eve"));
    assert_eq!(
        connect_error_reason(&connect(&server, &wrong_alg).await),
        "unknown_kid"
    );

    // The provider goes down: known keys keep working, a new kid fails closed.
    idp.up.store(false, Ordering::SeqCst);
    idp.keys.lock().push(jwk(&key_c, Algorithm::RS256, "c"));
    let before = idp.fetches.load(Ordering::SeqCst);
    let token_c = sign(Algorithm::RS256, &key_c, Some("c"), claims("carol"));
    assert_eq!(
        connect_error_reason(&connect(&server, &token_c).await),
        "unknown_kid"
    );
    assert!(
        idp.fetches.load(Ordering::SeqCst) > before,
        "the unknown kid triggered a fetch"
    );
    assert!(connect(&server, &token_a).await.starts_with("40"));
    assert!(connect(&server, &token_b).await.starts_with("40"));

    // Back up: the new key is picked up.
    idp.up.store(true, Ordering::SeqCst);
    assert!(connect(&server, &token_c).await.starts_with("40"));

    let log = server.stop().await;
    assert!(log.contains("JWKS refresh failed"), "{log}");
    assert!(
        !log.contains("hunter2"),
        "the JWKS URL's query reached the log:\n{log}"
    );
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_provider() {
    let idp = IdentityProvider::start().await;
    let key_a = rsa_key("rsa.key");
    idp.keys.lock().push(jwk(&key_a, Algorithm::RS256, "a"));
    let server = Server::start(&format!(
        "[auth]\njwks_url = {:?}\njwks_cooldown = \"1h\"\n[origin]\nallow_missing = true\n",
        idp.url
    ))
    .await;
    server.wait_log("JWKS loaded").await;
    let start = idp.fetches.load(Ordering::SeqCst);
    for i in 0..20 {
        let token = sign(
            Algorithm::RS256,
            &key_a,
            Some(&format!("random-{i}")),
            claims("x"),
        );
        assert_eq!(
            connect_error_reason(&connect(&server, &token).await),
            "unknown_kid"
        );
    }
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        start,
        "the start-up fetch is within the cooldown"
    );
}

#[tokio::test]
async fn jwks_file_ignores_shared_secrets_and_needs_kids_when_several_keys() {
    let dir = TempDir::new("jwks");
    let key_a = rsa_key("rsa.key");
    let key_b = EncodingKey::from_ed_pem(&fixture_bytes("ed.key")).unwrap();
    // An `oct` key in a public document must never become an HMAC secret.
    let oct = json!({ "kty": "oct", "kid": "s", "k": b64url(SECRET.as_bytes()) });
    let doc =
        json!({ "keys": [jwk(&key_a, Algorithm::RS256, "a"), jwk(&key_b, Algorithm::EdDSA, "b"), oct] });
    let path = dir.write("jwks.json", &doc.to_string());
    let server = Server::start(&format!(
        "[auth]\njwks_file = {path:?}\n[origin]\nallow_missing = true\n"
    ))
    .await;

    let a = sign(Algorithm::RS256, &key_a, Some("a"), claims("alice"));
    assert!(connect(&server, &a).await.starts_with("40"));
    let b = sign(Algorithm::EdDSA, &key_b, Some("b"), claims("bob"));
    assert!(connect(&server, &b).await.starts_with("40"));
    let no_kid = sign(Algorithm::RS256, &key_a, None, claims("alice"));
    assert_eq!(
        connect_error_reason(&connect(&server, &no_kid).await),
        "unknown_kid"
    );
    let hs_with_oct = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Some("s"),
        claims("m"),
    );
    assert_eq!(
        connect_error_reason(&connect(&server, &hs_with_oct).await),
        "algorithm_not_allowed"
    );
}
