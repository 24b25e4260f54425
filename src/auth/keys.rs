//! API keys are held only as SHA-256 digests. A presented key is hashed and looked up by its
//! digest; the digest comparison itself is constant-time.
//!
//! API keys are long random tokens, so a fast unsalted hash is the right tool (as for GitHub or
//! Stripe tokens): it keeps clear keys out of memory dumps and config backups.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Eq)]
pub struct KeyDigest([u8; 32]);

const PREFIX: &str = "sha256:";
/// Shorter keys are guessable and refused in the config.
pub const MIN_KEY_LEN: usize = 8;

impl KeyDigest {
    /// The digest of a key presented by a client.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// A config entry: a clear key, or `sha256:<64 hex digits>`.
    pub fn from_config(entry: &str) -> Result<Self, String> {
        if let Some(hex_digest) = entry.strip_prefix(PREFIX) {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut out).map_err(|_| {
                "a hashed key must be \"sha256:\" followed by 64 hex digits".to_owned()
            })?;
            return Ok(Self(out));
        }
        if entry.trim() != entry || entry.is_empty() {
            return Err("a key must not be empty or begin or end with white space".to_owned());
        }
        if entry.len() < MIN_KEY_LEN {
            return Err(format!(
                "a key must be at least {MIN_KEY_LEN} characters long"
            ));
        }
        Ok(Self::of(entry))
    }

    /// `sha256:<hex>`, the form `tollgate hash-key` prints for the config.
    pub fn to_config_string(&self) -> String {
        format!("{PREFIX}{}", hex::encode(self.0))
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_and_hashed_forms_agree() {
        let clear = KeyDigest::from_config("dev-key-12345").unwrap();
        let hashed = KeyDigest::from_config(&clear.to_config_string()).unwrap();
        assert_eq!(clear, hashed);
        assert_eq!(clear, KeyDigest::of("dev-key-12345"));
        assert_ne!(clear, KeyDigest::of("dev-key-12346"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(KeyDigest::from_config("sha256:abc").is_err());
        assert!(KeyDigest::from_config("short").is_err());
        assert!(KeyDigest::from_config(" padded-key ").is_err());
    }
}
