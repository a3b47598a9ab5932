//! Session and socket identifiers: 20 characters of URL-safe base64 from 15 random bytes, the
//! shape of the reference's `base64id`. Mixed Node/ferrio clusters rely on the length: the
//! sharded Redis adapter treats a 20-character room name as a socket id.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A 20-character identifier (an Engine.IO session id, a socket id or a recovery pid).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; Sid::LEN]);

impl Sid {
    /// Length of every id, in ASCII characters.
    pub const LEN: usize = 20;

    /// A fresh random id.
    pub fn random() -> Self {
        let raw: [u8; 15] = rand::random();
        let mut out = [0u8; Self::LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("15 bytes always encode to 20 base64 characters");
        debug_assert_eq!(written, Self::LEN);
        Self(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only URL-safe base64 characters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Text that is not a 20-character URL-safe base64 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session id")]
pub struct InvalidSid;

impl FromStr for Sid {
    type Err = InvalidSid;

    fn from_str(s: &str) -> Result<Self, InvalidSid> {
        let bytes = s.as_bytes();
        if bytes.len() != Self::LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(InvalidSid);
        }
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_20_url_safe_chars_and_parse_back() {
        for _ in 0..1000 {
            let sid = Sid::random();
            assert_eq!(sid.as_str().len(), 20);
            assert_eq!(sid.as_str().parse::<Sid>(), Ok(sid));
        }
        assert_ne!(Sid::random(), Sid::random());
    }

    #[test]
    fn rejects_wrong_length_and_characters() {
        assert!("short".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaa+".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaaaa".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaaa".parse::<Sid>().is_ok());
    }
}
