//! API keys are held only as SHA-256 digests. A presented key is hashed and looked up by its
//! digest; the digest comparison itself is constant-time.
//!
//! API keys are long random tokens, so a fast unsalted hash is the right tool (as for GitHub or
//! Stripe tokens): it keeps clear keys out of memory dumps and config backups.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::consumer::Consumer;
use crate::error::GatewayError;
use crate::policy::limits::Budgets;

/// What a key digest opens: its consumer (narrowed by the key's own settings, for a stored
/// key that has them), the stored key, and how the key stands.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub consumer: Arc<Consumer>,
    /// For keys from the store; `None` for keys in the config file.
    pub managed: Option<Arc<ManagedKey>>,
    pub standing: KeyStanding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStanding {
    /// The key's current secret.
    Current,
    /// The secret before the last rotation: valid until the grace period ends.
    Previous,
    /// Revoked: refused with its own error code.
    Revoked,
}

/// A key from the store, as requests see it.
#[derive(Debug)]
pub struct ManagedKey {
    /// Stable across rotations.
    pub id: String,
    pub expires_at_ms: Option<i64>,
    /// When the previous secret stops working.
    pub previous_until_ms: Option<i64>,
    pub budgets: Option<Arc<Budgets>>,
    /// When it last authenticated a request (Unix ms): carried from snapshot to snapshot and
    /// written to the store now and then, never on the request path.
    pub last_used_ms: Arc<AtomicI64>,
}

impl KeyEntry {
    /// Refuses an expired, revoked or rotated-out key, each with its own error; marks the
    /// key as used.
    pub fn admit(&self, now_ms: i64) -> Result<(), GatewayError> {
        let Some(key) = &self.managed else {
            return Ok(());
        };
        match self.standing {
            KeyStanding::Revoked => return Err(GatewayError::KeyRevoked),
            KeyStanding::Previous if key.previous_until_ms.is_none_or(|t| now_ms >= t) => {
                return Err(GatewayError::KeyRotated);
            }
            _ => {}
        }
        if key.expires_at_ms.is_some_and(|t| now_ms >= t) {
            return Err(GatewayError::KeyExpired);
        }
        // To the second is enough: most requests only read the shared line.
        if now_ms - key.last_used_ms.load(Ordering::Relaxed) >= 1000 {
            key.last_used_ms.store(now_ms, Ordering::Relaxed);
        }
        Ok(())
    }
}

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
        format!("{PREFIX}{}", self.to_hex())
    }

    /// The digest in hex, as the store keeps it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A digest the store kept (64 hex digits).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

impl PartialEq for KeyDigest {
    /// In constant time, eight bytes a step (byte by byte, `subtle` took ~340 instructions).
    fn eq(&self, other: &Self) -> bool {
        let word = |digest: &[u8; 32], i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(bytes)
        };
        let same = |i: usize| word(&self.0, i).ct_eq(&word(&other.0, i));
        (same(0) & same(1) & same(2) & same(3)).into()
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
    fn a_difference_in_any_byte_is_seen() {
        let key = KeyDigest::of("dev-key-12345");
        for i in 0..32 {
            for bit in 0..8 {
                let mut other = KeyDigest(key.0);
                other.0[i] ^= 1 << bit;
                assert_ne!(key, other, "byte {i}, bit {bit}");
            }
        }
        assert_eq!(key, KeyDigest(key.0));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(KeyDigest::from_config("sha256:abc").is_err());
        assert!(KeyDigest::from_config("short").is_err());
        assert!(KeyDigest::from_config(" padded-key ").is_err());
    }
}
