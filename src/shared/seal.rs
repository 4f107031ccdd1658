//! Encryption at rest for what the gateway keeps in Redis.
//!
//! A console URL is a bearer credential, and whoever can read the Redis (an operator, a
//! backup, a `MONITOR` session) must not be able to use it. Each value is sealed with
//! AES-256-GCM (aws-lc-rs) under a fresh random nonce, and the Redis key is the additional
//! authenticated data, so a value copied to another key does not open. The AES key is derived
//! with HKDF-SHA256 from the configured secret (`cache.encryption_key`), so any long random
//! string works as key material. Stored form: `v1` marker byte, 12-byte nonce, ciphertext
//! and tag.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;

use crate::secret::Secret;

const VERSION: u8 = 1;
/// Shortest key material accepted: 32 bytes, as from `openssl rand -base64 32` (44 characters).
pub const MIN_KEY_MATERIAL: usize = 32;
const HKDF_SALT: &[u8] = b"bms-console-gateway cache v1";

/// Seals and opens values. Holds only the derived key.
pub struct Sealer {
    key: RandomizedNonceKey,
}

/// A value did not open: wrong key, another key's value, or tampered bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenError;

impl Sealer {
    /// Derives the AES key. Refuses key material shorter than [`MIN_KEY_MATERIAL`].
    pub fn new(material: &Secret) -> Result<Sealer, String> {
        let bytes = material.expose().as_bytes();
        if bytes.len() < MIN_KEY_MATERIAL {
            return Err(format!(
                "key material must be at least {MIN_KEY_MATERIAL} bytes (e.g. `openssl rand -base64 32`)"
            ));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(bytes);
        let mut key = [0u8; 32];
        prk.expand(&[b"aes-256-gcm"], &AES_256_GCM)
            .and_then(|okm| okm.fill(&mut key))
            .map_err(|_| "key derivation failed".to_string())?;
        let key = RandomizedNonceKey::new(&AES_256_GCM, &key)
            .map_err(|_| "cannot build the AES key".to_string())?;
        Ok(Sealer { key })
    }

    /// Encrypts `plaintext` bound to `context` (the Redis key).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut data = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut data)
            .expect("AES-GCM sealing of a short value cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(VERSION);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&data);
        out
    }

    /// Decrypts a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(OpenError);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| OpenError)?;
        let mut data = sealed[1 + NONCE_LEN..].to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(material: &str) -> Sealer {
        Sealer::new(&Secret::new(material)).unwrap()
    }

    #[test]
    fn values_open_only_with_the_same_key_and_context() {
        let a = sealer("0123456789abcdef0123456789abcdef-a");
        let sealed = a.seal("k1", b"https://console/?token=secret");
        assert!(!sealed
            .windows(b"token=secret".len())
            .any(|w| w == b"token=secret"));
        assert_eq!(
            a.open("k1", &sealed).unwrap(),
            b"https://console/?token=secret"
        );
        assert_eq!(a.open("k2", &sealed), Err(OpenError), "bound to its key");
        let b = sealer("0123456789abcdef0123456789abcdef-b");
        assert_eq!(b.open("k1", &sealed), Err(OpenError), "wrong key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(a.open("k1", &tampered), Err(OpenError));
        assert_ne!(
            a.seal("k1", b"x"),
            a.seal("k1", b"x"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(Sealer::new(&Secret::new("short")).is_err());
    }
}
