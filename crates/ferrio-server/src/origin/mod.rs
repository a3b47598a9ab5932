//! Origin policy: which web pages may open a connection, checked on every handshake of both
//! transports before a session exists (and before a WebSocket upgrade), and mirrored in the
//! CORS headers of long-polling.

use std::sync::Arc;

use ferrio::config::{is_origin_pattern, origin_matches};
use ferrio::{AllowRequest, Cors, HandshakeRequest};

use crate::config::{ConfigError, Layers, Settings};
use crate::stats::{Rejection, Stats};

/// The allowlist and what to do with requests that carry no `Origin`.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    allow_missing: bool,
    credentials: bool,
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
            allowed: settings
                .origin
                .allowed
                .as_ref()
                .map(|l| l.0.clone())
                .unwrap_or_default(),
            allow_missing: settings.origin.allow_missing.unwrap_or(false),
            credentials: settings.origin.credentials,
        }
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
        match origin {
            None if self.allow_missing => Ok(()),
            None => Err(OriginRefusal::Missing),
            Some(value) => {
                let allowed = value
                    .to_str()
                    .is_ok_and(|o| self.allowed.iter().any(|p| origin_matches(p, o)));
                if allowed {
                    Ok(())
                } else {
                    Err(OriginRefusal::NotAllowed)
                }
            }
        }
    }

    /// The CORS policy of long-polling responses.
    pub fn cors(&self) -> Cors {
        if self.allowed.is_empty() {
            Cors::Off
        } else {
            Cors::Origins {
                allowed: self.allowed.clone(),
                credentials: self.credentials,
            }
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
                    tracing::debug!(path = %req.uri.path(), reason = refusal.message(), "handshake refused");
                    refusal.message().to_owned()
                })
        })
    }

    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    pub fn allow_missing(&self) -> bool {
        self.allow_missing
    }
}
