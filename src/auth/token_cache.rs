//! The verified-token cache's store: a token's SHA-256 → what its verification proved, in an
//! [`ExpiringMap`] until the first second the token is no longer accepted.
//!
//! The digest's own first bytes are the hash ([`AlreadyRandom`]): only tokens that passed verification are ever
//! inserted, and nobody can choose a SHA-256, so the map cannot be flooded into one bucket.

use std::hash::BuildHasherDefault;

use crate::expiring_map::{AlreadyRandom, ExpiringMap};

/// A token's SHA-256.
pub type Digest = [u8; 32];

/// Digest → value, expiring on Unix seconds.
pub type TokenStore<V> = ExpiringMap<Digest, V, BuildHasherDefault<AlreadyRandom>>;

/// A store for at most about `max_entries` tokens.
pub fn token_store<V>(max_entries: u64) -> TokenStore<V> {
    ExpiringMap::new(max_entries, BuildHasherDefault::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u32) -> Digest {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes());
        hash.as_ref().try_into().unwrap()
    }

    #[test]
    fn every_stored_digest_is_found_again() {
        let store = token_store::<u32>(100_000);
        for i in 0..10_000 {
            store.insert(digest(i), 10, i, 0);
        }
        assert_eq!(store.len(), 10_000);
        assert!((0..10_000).all(|i| store.get(&digest(i)) == Some((10, i))));
    }
}
