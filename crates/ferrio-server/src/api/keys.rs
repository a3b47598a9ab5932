//! API keys, compared in constant time and replaced on SIGHUP.

use parking_lot::RwLock;
use subtle::{Choice, ConstantTimeEq};

/// The keys a backend may present.
#[derive(Debug, Default)]
pub struct ApiKeys(RwLock<Vec<Vec<u8>>>);

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let this = Self::default();
        this.replace(keys);
        this
    }

    pub fn replace<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        *self.0.write() = keys.into_iter().map(|k| k.as_bytes().to_vec()).collect();
    }

    /// Whether the API is on at all.
    pub fn any(&self) -> bool {
        !self.0.read().is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in constant time
    /// for its length, so the time taken does not tell how much of a key was right.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let keys = self.0.read();
        let mut found = Choice::from(0);
        for key in keys.iter() {
            found |= key.as_slice().ct_eq(presented);
        }
        bool::from(found)
    }
}

/// The key a request carries: `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
pub fn presented(headers: &http::HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let prefix = b"Bearer ";
        return (bytes.len() > prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
            .then(|| &bytes[prefix.len()..]);
    }
    headers.get("x-api-key").map(|v| v.as_bytes())
}
