//! JWT authentication of namespace connections: where the token comes from, how it is
//! verified (keys, algorithms, claims), and the reasons a refusal names.

pub mod keys;
pub mod lifetime;
pub mod mint;

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::config::{ConfigError, Layers, Settings};
pub use keys::KeyStore;
pub use lifetime::AuthSession;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most entries in a `rooms` or `publish` claim.
pub const MAX_ROOM_CLAIMS: usize = 256;

/// Why a token was refused; [`AuthFailure::reason`] is what clients see in
/// `{"message":"unauthorized","data":{"reason":...}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    TokenMissing,
    TokenMalformed,
    AlgorithmNotAllowed,
    SignatureInvalid,
    TokenExpired,
    TokenNotYetValid,
    IssuerInvalid,
    AudienceInvalid,
    UnknownKid,
    ClaimsInvalid,
    /// A refreshed token names another user.
    SubjectMismatch,
    /// The token's `namespaces` claim (or `auth.namespaces`, without one) does not allow the
    /// namespace.
    NamespaceForbidden,
}

impl AuthFailure {
    /// The stable, machine-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::SignatureInvalid => "signature_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::IssuerInvalid => "issuer_invalid",
            Self::AudienceInvalid => "audience_invalid",
            Self::UnknownKid => "unknown_kid",
            Self::ClaimsInvalid => "claims_invalid",
            Self::SubjectMismatch => "subject_mismatch",
            Self::NamespaceForbidden => "namespace_forbidden",
        }
    }

    /// The CONNECT_ERROR a client gets.
    pub fn connect_error(self) -> ferrio::ConnectError {
        ferrio::ConnectError::new("unauthorized").with_data(serde_json::json!({ "reason": self.reason() }))
    }
}

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (`sub`).
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Rooms (or patterns) the user may join.
    pub rooms: Vec<String>,
    /// Rooms (or patterns) the user may publish to.
    pub publish: Vec<String>,
    /// Namespaces (or patterns) the token may connect to; `None` without the claim, when
    /// `auth.namespaces` decides.
    pub namespaces: Option<Vec<String>>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

/// Verifies tokens against the configured keys and claims; SIGHUP replaces them
/// ([`Authenticator::reload`]) while connections stay.
#[derive(Debug)]
pub struct Authenticator {
    current: RwLock<Arc<Verifier>>,
}

impl Authenticator {
    /// Loads the keys the settings name (reading files, fetching a JWKS URL once).
    pub async fn new(settings: &Settings, layers: &Layers) -> Result<Self, ConfigError> {
        let keys = KeyStore::load(&settings.auth, layers).await?;
        Ok(Self {
            current: RwLock::new(Arc::new(Verifier::new(settings, keys))),
        })
    }

    /// Reads the keys again and takes the claim rules (`algorithms`, `issuer`, `audience`,
    /// `bearer_header`) from `settings`; `leeway` stays as it started. A changed JWKS source,
    /// or keys that do not load, leave everything as it was.
    pub async fn reload(&self, settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
        let running = self.now();
        let keys = running.keys.reload(&settings.auth, layers).await?;
        let mut fresh = Verifier::new(settings, keys);
        fresh.leeway = running.leeway;
        fresh.validation.leeway = running.leeway;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    fn now(&self) -> Arc<Verifier> {
        self.current.read().clone()
    }

    /// The algorithms tokens may use.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.now().algorithms.clone()
    }

    /// The JWKS document the keys come from, if any (the same one across reloads).
    pub fn jwks(&self) -> Option<Arc<keys::Jwks>> {
        self.now().keys.jwks().cloned()
    }

    /// Allowed clock skew, in seconds.
    pub fn leeway(&self) -> u64 {
        self.now().leeway
    }

    /// The token of a connection attempt: `{"token": "..."}` in the CONNECT auth payload (what
    /// browsers send), else an `Authorization: Bearer` header of the handshake.
    pub fn token_from<'a>(
        &self,
        auth: &'a Value,
        handshake: &'a ferrio::Handshake,
    ) -> Result<&'a str, AuthFailure> {
        self.now().token_from(auth, handshake)
    }

    /// Verifies a token: header, algorithm, key, signature, then claims.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        self.now().verify(token).await
    }

    /// Whether `identity` may connect to namespace `nsp`: its `namespaces` claim decides, or
    /// `auth.namespaces` for a token without one.
    pub fn check_namespace(&self, identity: &Identity, nsp: &str) -> Result<(), AuthFailure> {
        let verifier = self.now();
        let allowed = identity.namespaces.as_deref().unwrap_or(&verifier.namespaces);
        if crate::rooms::any_match(allowed, nsp) {
            Ok(())
        } else {
            Err(AuthFailure::NamespaceForbidden)
        }
    }
}

/// One set of keys and claim rules.
#[derive(Debug)]
struct Verifier {
    keys: KeyStore,
    algorithms: Vec<Algorithm>,
    validation: Validation,
    bearer_header: bool,
    leeway: u64,
    /// `auth.namespaces`: where a token without a `namespaces` claim may connect.
    namespaces: Vec<String>,
}

impl Verifier {
    fn new(settings: &Settings, keys: KeyStore) -> Self {
        let algorithms = effective_algorithms(settings, &keys);
        let leeway = settings.auth.leeway.0.as_secs();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &settings.auth.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if settings.auth.audience.is_empty() {
            // Tokens with an `aud` are accepted when no audience is configured.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.auth.audience.0);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Self {
            keys,
            algorithms,
            validation,
            bearer_header: settings.auth.bearer_header,
            leeway,
            namespaces: settings.auth.namespaces.0.clone(),
        }
    }

    fn token_from<'a>(
        &self,
        auth: &'a Value,
        handshake: &'a ferrio::Handshake,
    ) -> Result<&'a str, AuthFailure> {
        match auth.get("token") {
            Some(Value::String(t)) => return Ok(t),
            Some(Value::Null) | None => {}
            Some(_) => return Err(AuthFailure::TokenMalformed),
        }
        if self.bearer_header
            && let Some(value) = handshake.headers.get(http::header::AUTHORIZATION)
        {
            let value = value.to_str().map_err(|_| AuthFailure::TokenMalformed)?;
            let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::TokenMalformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthFailure::TokenMalformed);
            }
            return Ok(token.trim());
        }
        Err(AuthFailure::TokenMissing)
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        if token.is_empty() {
            return Err(AuthFailure::TokenMissing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::TokenMalformed);
        }
        let header = TokenHeader::parse(token)?;
        // `none`, and anything the configured keys are not meant for, stops here, before a
        // key is chosen: a public key is never used as an HMAC secret.
        let alg = Algorithm::from_str(&header.alg).map_err(|_| AuthFailure::AlgorithmNotAllowed)?;
        if !self.algorithms.contains(&alg) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        let key = self.keys.key_for(alg, header.kid.as_deref()).await?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| failure_of(e.kind()))?;
        identity_of(data.claims)
    }
}

/// The parts of a JOSE header read before verification.
#[derive(Debug)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<Self, AuthFailure> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::TokenMalformed);
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthFailure::TokenMalformed)?;
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(AuthFailure::TokenMalformed);
        };
        let Some(Value::String(alg)) = map.get("alg") else {
            return Err(AuthFailure::TokenMalformed);
        };
        let kid = match map.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(AuthFailure::TokenMalformed),
        };
        Ok(Self {
            alg: alg.clone(),
            kid,
        })
    }
}

fn failure_of(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::SignatureInvalid,
        ErrorKind::ExpiredSignature => AuthFailure::TokenExpired,
        ErrorKind::ImmatureSignature => AuthFailure::TokenNotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::IssuerInvalid,
        ErrorKind::InvalidAudience => AuthFailure::AudienceInvalid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            AuthFailure::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
            AuthFailure::ClaimsInvalid
        }
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthFailure::SignatureInvalid,
        _ => AuthFailure::TokenMalformed,
    }
}

fn room_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, AuthFailure> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_ROOM_CLAIMS => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() && s.len() <= ferrio::builtins::MAX_NAME_LEN => {
                    Ok(s.clone())
                }
                _ => Err(AuthFailure::ClaimsInvalid),
            })
            .collect(),
        Some(_) => Err(AuthFailure::ClaimsInvalid),
    }
}

fn identity_of(claims: Map<String, Value>) -> Result<Identity, AuthFailure> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
        _ => return Err(AuthFailure::ClaimsInvalid),
    };
    let exp = claims
        .get("exp")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        })
        .ok_or(AuthFailure::ClaimsInvalid)?;
    Ok(Identity {
        rooms: room_claim(&claims, "rooms")?,
        publish: room_claim(&claims, "publish")?,
        namespaces: match claims.get("namespaces") {
            None | Some(Value::Null) => None,
            Some(_) => Some(room_claim(&claims, "namespaces")?),
        },
        sub,
        exp,
        claims,
    })
}

/// The algorithms tokens may use: the configured list, or every algorithm the configured keys
/// can verify.
fn effective_algorithms(settings: &Settings, keys: &KeyStore) -> Vec<Algorithm> {
    if !settings.auth.algorithms.is_empty() {
        return settings
            .auth
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .collect();
    }
    let mut out = Vec::new();
    for family in keys.families() {
        out.extend_from_slice(family_algorithms(family));
    }
    out
}

fn family_algorithms(family: AlgorithmFamily) -> &'static [Algorithm] {
    match family {
        AlgorithmFamily::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        AlgorithmFamily::Rsa => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmFamily::Ec => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmFamily::Ed => &[Algorithm::EdDSA],
    }
}

/// Checks the `[auth]` keys.
pub fn validate(settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
    let auth = &settings.auth;
    if auth.secret.is_some() && auth.secret_file.is_some() {
        return Err(layers.error(
            "auth.secret_file",
            "set `auth.secret` or `auth.secret_file`, not both",
        ));
    }
    if let Some(secret) = &auth.secret
        && secret.len() < keys::MIN_SECRET_LEN
    {
        return Err(layers.error(
            "auth.secret",
            format!("must be at least {} bytes", keys::MIN_SECRET_LEN),
        ));
    }
    if let Some(url) = &auth.jwks_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(layers.error("auth.jwks_url", "must be an http:// or https:// URL"));
    }
    let asymmetric = auth.public_key_file.is_some() || auth.jwks_file.is_some() || auth.jwks_url.is_some();
    let symmetric = auth.secret.is_some() || auth.secret_file.is_some();
    for (i, name) in auth.algorithms.iter().enumerate() {
        let key = format!("auth.algorithms[{i}]");
        let Ok(alg) = Algorithm::from_str(name) else {
            return Err(layers.error(
                &key,
                format!("{name:?} is not a supported algorithm (HS256, RS256, ES256, EdDSA, ...)"),
            ));
        };
        let hmac = alg.family() == AlgorithmFamily::Hmac;
        if hmac && !symmetric {
            return Err(layers.error(&key, format!("{name} needs `auth.secret` or `auth.secret_file`")));
        }
        if !hmac && !asymmetric {
            return Err(layers.error(
                &key,
                format!("{name} needs `auth.public_key_file`, `auth.jwks_file` or `auth.jwks_url`"),
            ));
        }
    }
    for key in ["expiring_event", "expired_event", "refresh_event"] {
        let name = match key {
            "expiring_event" => &auth.expiring_event,
            "expired_event" => &auth.expired_event,
            _ => &auth.refresh_event,
        };
        if name.is_empty() || ferrio::proto::socket::RESERVED_EVENTS.contains(&name.as_str()) {
            return Err(layers.error(
                &format!("auth.{key}"),
                format!("{name:?} cannot be used as an event name"),
            ));
        }
        if ["join", "leave", "publish"].contains(&name.as_str()) {
            return Err(layers.error(&format!("auth.{key}"), format!("{name:?} is a built-in event")));
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A shared handle on the verifier.
pub type SharedAuth = Arc<Authenticator>;
