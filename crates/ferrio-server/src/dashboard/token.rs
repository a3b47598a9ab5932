//! The dashboard page's token: `<expiry in Unix milliseconds>.<HMAC-SHA256 of it>`, signed
//! with a key drawn when the process starts (a restart invalidates every token; the page then
//! reloads to get a new one).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;

/// What tells this token apart from any other MAC made with the key.
const CONTEXT: &[u8] = b"ferrio-dashboard-v1\0";

/// Why a token was refused (the CONNECT_ERROR's `data.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Missing,
    Invalid,
    Expired,
}

impl TokenRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Invalid => "invalid_token",
            Self::Expired => "token_expired",
        }
    }
}

/// Issues and checks tokens with one process-wide random key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Signer {
    pub fn random() -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        }
    }

    fn signed(expiry: &str) -> Vec<u8> {
        let mut signed = CONTEXT.to_vec();
        signed.extend_from_slice(expiry.as_bytes());
        signed
    }

    /// A token valid for `lifetime` from now.
    pub fn issue(&self, lifetime: Duration) -> String {
        let expiry = now_ms()
            .saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX))
            .to_string();
        let tag = hmac::sign(&self.key, &Self::signed(&expiry));
        format!(
            "{expiry}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks the signature (in constant time), then the expiry.
    pub fn verify(&self, token: &str) -> Result<(), TokenRefusal> {
        let (expiry, tag) = token.split_once('.').ok_or(TokenRefusal::Invalid)?;
        if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenRefusal::Invalid);
        }
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenRefusal::Invalid)?;
        hmac::verify(&self.key, &Self::signed(expiry), &tag).map_err(|_| TokenRefusal::Invalid)?;
        let expiry: u64 = expiry.parse().map_err(|_| TokenRefusal::Invalid)?;
        if now_ms() >= expiry {
            return Err(TokenRefusal::Expired);
        }
        Ok(())
    }
}
