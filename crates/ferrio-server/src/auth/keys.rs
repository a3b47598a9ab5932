//! The keys tokens are verified with: a shared secret, a PEM public key, and a JWKS document
//! from a file or a URL, cached by `kid` and refreshed; when the document cannot be fetched
//! the keys already known keep working and unknown `kid`s are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::RwLock;
use tokio::time::Instant;

use super::AuthFailure;
use crate::config::{AuthSettings, ConfigError, Layers, read_key_file};

/// Shortest shared secret accepted (RFC 7518 §3.2: at least the hash output, 256 bits).
pub const MIN_SECRET_LEN: usize = 32;
/// Largest JWKS document read, in bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Every key the server verifies with.
pub struct KeyStore {
    secret: Option<DecodingKey>,
    public: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("secret", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(DecodingKey::family))
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl KeyStore {
    pub async fn load(auth: &AuthSettings, layers: &Layers) -> Result<Self, ConfigError> {
        let (secret, public) = Self::static_keys(auth, layers)?;
        let source = match (&auth.jwks_file, &auth.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(layers.error(
                    "auth.jwks_url",
                    "set `auth.jwks_file` or `auth.jwks_url`, not both",
                ));
            }
            (Some(path), None) => Some(JwksSource::File(path.clone())),
            (None, Some(url)) => {
                let client = reqwest::Client::builder()
                    .timeout(auth.jwks_timeout.0)
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()
                    .map_err(|e| {
                        layers.error("auth.jwks_url", format!("cannot build an HTTP client: {e}"))
                    })?;
                Some(JwksSource::Url(url.clone(), client))
            }
            (None, None) => None,
        };
        let jwks = match source {
            Some(source) => {
                let jwks = Arc::new(Jwks::new(source, auth.jwks_cooldown.0));
                match jwks.refresh().await {
                    Ok(n) => tracing::info!(keys = n, source = %jwks.source, "JWKS loaded"),
                    // A file must be readable at start; a URL may come up later.
                    Err(e) if matches!(jwks.source, JwksSource::File(_)) => {
                        return Err(layers.error("auth.jwks_file", e));
                    }
                    Err(e) => {
                        tracing::warn!(source = %jwks.source, error = e.as_str(), "JWKS not available yet; tokens are refused until it is")
                    }
                }
                Some(jwks)
            }
            None => None,
        };
        Ok(Self { secret, public, jwks })
    }

    /// The shared secret and the PEM public key the settings name.
    fn static_keys(
        auth: &AuthSettings,
        layers: &Layers,
    ) -> Result<(Option<DecodingKey>, Option<DecodingKey>), ConfigError> {
        let secret = match (&auth.secret, &auth.secret_file) {
            (Some(s), _) => Some(DecodingKey::from_secret(s.as_bytes())),
            (None, Some(path)) => {
                let bytes = read_key_file(layers, "auth.secret_file", path)?;
                let trimmed = bytes.trim_ascii_end();
                if trimmed.len() < MIN_SECRET_LEN {
                    return Err(layers.error(
                        "auth.secret_file",
                        format!("the secret must be at least {MIN_SECRET_LEN} bytes"),
                    ));
                }
                Some(DecodingKey::from_secret(trimmed))
            }
            (None, None) => None,
        };
        let public = match &auth.public_key_file {
            Some(path) => {
                let pem = read_key_file(layers, "auth.public_key_file", path)?;
                Some(public_key_from_pem(&pem).ok_or_else(|| {
                    layers.error(
                        "auth.public_key_file",
                        "not a PEM public key (RSA, EC P-256/P-384 or Ed25519)",
                    )
                })?)
            }
            None => None,
        };
        Ok((secret, public))
    }

    /// The keys the settings name now (on SIGHUP): the secret and the public key read again;
    /// the JWKS of the same source kept and fetched again (a changed source needs a restart).
    pub async fn reload(&self, auth: &AuthSettings, layers: &Layers) -> Result<Self, ConfigError> {
        let (secret, public) = Self::static_keys(auth, layers)?;
        let same_source = match (&self.jwks, &auth.jwks_file, &auth.jwks_url) {
            (None, None, None) => true,
            (Some(j), Some(path), None) => matches!(&j.source, JwksSource::File(p) if p == path),
            (Some(j), None, Some(url)) => matches!(&j.source, JwksSource::Url(u, _) if u == url),
            _ => false,
        };
        if !same_source {
            return Err(layers.error(
                "auth.jwks_url",
                "the JWKS source changed: restart to use the new one",
            ));
        }
        if let Some(jwks) = &self.jwks {
            match jwks.refresh().await {
                Ok(n) => tracing::info!(keys = n, source = %jwks.source, "JWKS loaded again"),
                Err(e) if matches!(jwks.source, JwksSource::File(_)) => {
                    return Err(layers.error("auth.jwks_file", e));
                }
                Err(e) => {
                    tracing::warn!(source = %jwks.source, error = e.as_str(), "JWKS refetch failed; keeping the keys known")
                }
            }
        }
        Ok(Self {
            secret,
            public,
            jwks: self.jwks.clone(),
        })
    }

    /// The key families tokens can be verified with.
    pub fn families(&self) -> Vec<AlgorithmFamily> {
        let mut out = Vec::new();
        if self.secret.is_some() {
            out.push(AlgorithmFamily::Hmac);
        }
        if let Some(k) = &self.public {
            out.push(k.family());
        }
        if self.jwks.is_some() {
            for f in [AlgorithmFamily::Rsa, AlgorithmFamily::Ec, AlgorithmFamily::Ed] {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        out
    }

    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The key a token with this `alg` and `kid` must verify against.
    pub async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, AuthFailure> {
        // HMAC only ever uses the shared secret; the others never do.
        if alg.family() == AlgorithmFamily::Hmac {
            return self.secret.clone().ok_or(AuthFailure::AlgorithmNotAllowed);
        }
        if let Some(jwks) = &self.jwks {
            match kid {
                Some(kid) => {
                    if let Some(key) = jwks.find(kid, alg).await {
                        return Ok(key);
                    }
                    if self.public.is_none() {
                        return Err(AuthFailure::UnknownKid);
                    }
                }
                None if self.public.is_none() => return jwks.only_key(alg).ok_or(AuthFailure::UnknownKid),
                None => {}
            }
        }
        match &self.public {
            Some(key) if key.family() == alg.family() => Ok(key.clone()),
            Some(_) => Err(AuthFailure::AlgorithmNotAllowed),
            None => Err(AuthFailure::UnknownKid),
        }
    }
}

fn public_key_from_pem(pem: &[u8]) -> Option<DecodingKey> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .ok()
}

/// Where the JWKS document lives.
#[derive(Debug)]
pub enum JwksSource {
    File(PathBuf),
    Url(String, reqwest::Client),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "{}", p.display()),
            // Never the query: it may carry a credential.
            JwksSource::Url(u, _) => f.write_str(u.split(['?', '#']).next().unwrap_or("")),
        }
    }
}

#[derive(Clone)]
struct JwkEntry {
    key: DecodingKey,
    family: AlgorithmFamily,
    alg: Option<Algorithm>,
}

/// A cached JWKS document.
pub struct Jwks {
    source: JwksSource,
    keys: RwLock<Arc<HashMap<String, JwkEntry>>>,
    /// Keys without a `kid` (usable only when the set has exactly one).
    unnamed: RwLock<Arc<Vec<JwkEntry>>>,
    /// One fetch at a time; the time of the last attempt limits fetches for unknown kids.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source.to_string())
            .field("keys", &self.keys.read().len())
            .finish()
    }
}

impl Jwks {
    pub fn new(source: JwksSource, cooldown: Duration) -> Self {
        Self {
            source,
            keys: RwLock::new(Arc::new(HashMap::new())),
            unnamed: RwLock::new(Arc::new(Vec::new())),
            fetching: tokio::sync::Mutex::new(None),
            cooldown,
        }
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Option<Option<DecodingKey>> {
        let keys = self.keys.read().clone();
        let entry = keys.get(kid)?;
        Some(usable(entry, alg).then(|| entry.key.clone()))
    }

    /// The key with this `kid`, fetching the document again (at most once per cooldown) if
    /// it is unknown. `None` when it is still unknown or not meant for `alg`.
    pub async fn find(&self, kid: &str, alg: Algorithm) -> Option<DecodingKey> {
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        let mut last = self.fetching.lock().await;
        // Someone else may have fetched while this task waited.
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(source = %self.source, error = e.as_str(), "JWKS refresh failed; keeping the keys known");
        }
        drop(last);
        self.lookup(kid, alg).flatten()
    }

    /// The single key of a set whose keys carry no `kid`.
    fn only_key(&self, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read().clone();
        let unnamed = self.unnamed.read().clone();
        let mut all = keys.values().chain(unnamed.iter());
        let (Some(only), None) = (all.next(), all.next()) else {
            return None;
        };
        usable(only, alg).then(|| only.key.clone())
    }

    /// Fetches the document now. Returns the number of keys.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.fetching.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<usize, String> {
        let body = match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err("the JWKS document is too large".into());
                }
                bytes
            }
            JwksSource::Url(url, client) => {
                let res = client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                if !res.status().is_success() {
                    return Err(format!("HTTP {}", res.status()));
                }
                if res.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                    return Err("the JWKS document is too large".into());
                }
                let bytes = res.bytes().await.map_err(|e| e.without_url().to_string())?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err("the JWKS document is too large".into());
                }
                bytes.to_vec()
            }
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut named = HashMap::new();
        let mut unnamed = Vec::new();
        for jwk in &set.keys {
            let Some(entry) = entry_of(jwk) else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    named.insert(kid.clone(), entry);
                }
                None => unnamed.push(entry),
            }
        }
        let n = named.len() + unnamed.len();
        *self.keys.write() = Arc::new(named);
        *self.unnamed.write() = Arc::new(unnamed);
        Ok(n)
    }

    /// Fetches the document every `every`, for as long as the task runs.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let jwks = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                match jwks.refresh().await {
                    Ok(n) => tracing::debug!(keys = n, "JWKS refreshed"),
                    Err(e) => {
                        tracing::warn!(source = %jwks.source, error = e.as_str(), "JWKS refresh failed; keeping the keys known")
                    }
                }
            }
        })
    }
}

fn usable(entry: &JwkEntry, alg: Algorithm) -> bool {
    entry.family == alg.family() && entry.alg.is_none_or(|a| a == alg)
}

/// A verification key from a JWK, or `None` for keys ferrio does not use: encryption keys,
/// symmetric (`oct`) keys (a published document must not hold shared secrets), unknown kinds.
fn entry_of(jwk: &Jwk) -> Option<JwkEntry> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let family = key.family();
    if family == AlgorithmFamily::Hmac {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
    };
    Some(JwkEntry { key, family, alg })
}
