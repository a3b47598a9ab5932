//! `ferrio token`: mints a development token signed with the configured shared secret.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value, json};

use crate::config::{Layers, Settings, read_key_file};

/// What goes into a minted token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub rooms: Vec<String>,
    pub publish: Vec<String>,
    pub ttl: Duration,
    /// Seconds from now before which the token is not valid (0: none).
    pub not_before: u64,
}

/// Signs a token with the configured secret, with the configured issuer and first audience.
pub fn mint(settings: &Settings, layers: &Layers, req: &TokenRequest) -> Result<String, String> {
    let secret = match (&settings.auth.secret, &settings.auth.secret_file) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(path)) => read_key_file(layers, "auth.secret_file", path)
            .map_err(|e| e.to_string())?
            .trim_ascii_end()
            .to_vec(),
        (None, None) => {
            return Err(
                "`ferrio token` signs with the shared secret: set `auth.secret` (or FERRIO_AUTH__SECRET) \
                 or `auth.secret_file`"
                    .into(),
            );
        }
    };
    let alg = settings
        .auth
        .algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
        .find(|a| a.family() == AlgorithmFamily::Hmac)
        .unwrap_or(Algorithm::HS256);
    if req.sub.is_empty() {
        return Err("--sub must not be empty".into());
    }
    let now = super::unix_now();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(req.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + req.ttl.as_secs()));
    if req.not_before > 0 {
        claims.insert("nbf".into(), json!(now + req.not_before));
    }
    if !req.rooms.is_empty() {
        claims.insert("rooms".into(), json!(req.rooms));
    }
    if !req.publish.is_empty() {
        claims.insert("publish".into(), json!(req.publish));
    }
    if let Some(iss) = &settings.auth.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = settings.auth.audience.iter().next() {
        claims.insert("aud".into(), json!(aud));
    }
    jsonwebtoken::encode(
        &Header::new(alg),
        &Value::Object(claims),
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| format!("cannot sign: {e}"))
}
