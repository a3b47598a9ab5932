//! Origin policy: which web pages may open a connection, checked on every handshake of both
//! transports before a session exists (and before a WebSocket upgrade), and mirrored in the
//! CORS headers of long-polling.

use std::sync::Arc;

use ferrio::config::{is_origin_pattern, origin_matches};
use ferrio::{AllowRequest, Cors, HandshakeRequest, OriginCheck};
use parking_lot::RwLock;

use crate::config::{ConfigError, Layers, Settings};
use crate::stats::{Rejection, Stats};

/// The allowlist and what to do with requests that carry no `Origin`. Clones share one
/// policy, which [`OriginPolicy::reload`] replaces while the server runs.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    rules: Arc<RwLock<Rules>>,
    credentials: bool,
}

#[derive(Debug)]
struct Rules {
    allowed: Vec<String>,
    allow_missing: bool,
}

impl Rules {
    fn new(settings: &Settings) -> Self {
        Self {
            allowed: settings
                .origin
                .allowed
                .as_ref()
                .map(|l| l.0.clone())
                .unwrap_or_default(),
            allow_missing: settings.origin.allow_missing.unwrap_or(false),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|p| origin_matches(p, origin))
    }
}

/// Why a handshake's origin was refused (the 403 message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    NotAllowed,
    Missing,
}

impl OriginRefusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAllowed => "origin not allowed",
            Self::Missing => "origin required",
        }
    }
}

impl OriginPolicy {
    pub fn new(settings: &Settings) -> Self {
        Self {
            rules: Arc::new(RwLock::new(Rules::new(settings))),
            credentials: settings.origin.credentials,
        }
    }

    /// Takes `origin.allowed` and `origin.allow_missing` from `settings` (on SIGHUP);
    /// `origin.credentials` stays as it started.
    pub fn reload(&self, settings: &Settings) {
        *self.rules.write() = Rules::new(settings);
    }

    /// Checks the `[origin]` keys.
    pub fn validate(settings: &Settings, layers: &Layers) -> Result<(), ConfigError> {
        let allowed = settings
            .origin
            .allowed
            .as_ref()
            .map(|l| l.0.as_slice())
            .unwrap_or(&[]);
        for (i, pattern) in allowed.iter().enumerate() {
            let key = format!("origin.allowed[{i}]");
            if pattern.eq_ignore_ascii_case("null") {
                return Err(layers.error(
                    &key,
                    "`null` cannot be allowed: sandboxed frames and local files all send it",
                ));
            }
            if !is_origin_pattern(pattern) {
                return Err(layers.error(
                    &key,
                    format!(
                        "{pattern:?} is not an origin (`https://app.example.com`, `https://*.example.com`, \
                         `http://localhost:*` or `*`)"
                    ),
                ));
            }
            if pattern == "*" && settings.origin.credentials {
                return Err(layers.error(&key, "`*` cannot be combined with `origin.credentials`"));
            }
        }
        Ok(())
    }

    /// Whether a handshake with this `Origin` header (or none) may proceed.
    pub fn check(&self, origin: Option<&http::HeaderValue>) -> Result<(), OriginRefusal> {
        let rules = self.rules.read();
        match origin {
            None if rules.allow_missing => Ok(()),
            None => Err(OriginRefusal::Missing),
            Some(value) => {
                let allowed = value.to_str().is_ok_and(|o| rules.allows(o));
                if allowed {
                    Ok(())
                } else {
                    Err(OriginRefusal::NotAllowed)
                }
            }
        }
    }

    /// The CORS policy of long-polling responses, following reloads.
    pub fn cors(&self) -> Cors {
        let rules = self.rules.clone();
        Cors::Checked {
            check: OriginCheck::new(move |origin| rules.read().allows(origin)),
            credentials: self.credentials,
        }
    }

    /// The library's `allow_request` hook: refuses with 403 `{"code":4,"message":...}`.
    pub fn allow_request(self, stats: Arc<Stats>) -> AllowRequest {
        Arc::new(move |req: &HandshakeRequest<'_>| {
            self.check(req.headers.get(http::header::ORIGIN))
                .map_err(|refusal| {
                    stats.count(match refusal {
                        OriginRefusal::NotAllowed => Rejection::OriginNotAllowed,
                        OriginRefusal::Missing => Rejection::OriginMissing,
                    });
                    tracing::debug!(
                        path = req.uri.path(),
                        reason = refusal.message(),
                        "handshake refused"
                    );
                    refusal.message().to_owned()
                })
        })
    }

    pub fn allowed(&self) -> Vec<String> {
        self.rules.read().allowed.clone()
    }

    pub fn allow_missing(&self) -> bool {
        self.rules.read().allow_missing
    }
}
