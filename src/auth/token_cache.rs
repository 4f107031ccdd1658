//! The store behind the verified-token cache: a token's SHA-256 → what its verification
//! proved, until the last second the token is accepted.
//!
//! Sixteen mutex-guarded hash-map shards. The digest's own bytes are the hash (only tokens
//! that passed verification are ever inserted, and nobody can choose a SHA-256, so the map
//! cannot be flooded into one bucket). Entries past their second are swept out whenever a
//! shard has doubled since its last sweep; a shard full of live tokens forgets a quarter of
//! them, which only costs those tokens one more signature check. Which entries are live is
//! decided by the caller's clock, passed in, so tests can drive it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

const SHARDS: usize = 16;
/// A shard is not swept before it holds this many tokens.
const MIN_SWEEP_LEN: usize = 1024;

/// A token's SHA-256.
pub type Digest = [u8; 32];

/// Bounded, sharded digest → value map with a per-entry last second.
pub struct TokenStore<V> {
    shards: Box<[Mutex<Shard<V>>]>,
}

struct Shard<V> {
    entries: HashMap<Digest, (i64, V), BuildHasherDefault<DigestHash>>,
    sweep_at: usize,
    max_entries: usize,
}

impl<V: Clone> TokenStore<V> {
    /// Holds at most about `max_entries` tokens.
    pub fn new(max_entries: u64) -> TokenStore<V> {
        let per_shard = usize::try_from(max_entries / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::default(),
                    sweep_at: MIN_SWEEP_LEN.min(per_shard),
                    max_entries: per_shard,
                })
            })
            .collect();
        TokenStore { shards }
    }

    /// The value stored for `digest` and its last second, however old.
    pub fn get(&self, digest: &Digest) -> Option<(i64, V)> {
        self.shard(digest).entries.get(digest).cloned()
    }

    /// Stores `value` for `digest` until `last_second` (inclusive); `now` drives the sweep.
    pub fn insert(&self, digest: Digest, last_second: i64, value: V, now: i64) {
        let mut shard = self.shard(&digest);
        shard.entries.insert(digest, (last_second, value));
        if shard.entries.len() > shard.sweep_at {
            shard.sweep(now);
        }
    }

    pub fn remove(&self, digest: &Digest) {
        self.shard(digest).entries.remove(digest);
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).entries.clear();
        }
    }

    /// Tokens held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, digest: &Digest) -> std::sync::MutexGuard<'_, Shard<V>> {
        // A byte the map's own hash (the first eight) does not use picks the shard.
        lock(&self.shards[usize::from(digest[8]) % SHARDS])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<V> Shard<V> {
    fn sweep(&mut self, now: i64) {
        self.entries
            .retain(|_, (last_second, _)| *last_second >= now);
        if self.entries.len() >= self.max_entries {
            let mut keep = self.max_entries - self.max_entries / 4;
            self.entries.retain(|_, _| {
                keep = keep.saturating_sub(1);
                keep > 0
            });
        }
        let len = self.entries.len();
        self.sweep_at = (len * 2)
            .max(MIN_SWEEP_LEN)
            .min(self.max_entries)
            .max(len + 1);
    }
}

/// Hashes a digest by its first eight bytes: already uniformly distributed.
#[derive(Default)]
struct DigestHash(u64);

impl Hasher for DigestHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length (a usize, via write_usize) and then its bytes.
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }

    fn write_usize(&mut self, _length: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u32) -> Digest {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes());
        hash.as_ref().try_into().unwrap()
    }

    #[test]
    fn entries_are_found_removed_and_cleared() {
        let store = TokenStore::new(1000);
        store.insert(digest(1), 100, "a", 0);
        store.insert(digest(2), 100, "b", 0);
        assert_eq!(store.get(&digest(1)), Some((100, "a")));
        assert_eq!(store.get(&digest(3)), None);
        store.remove(&digest(1));
        assert_eq!(store.get(&digest(1)), None);
        store.clear();
        assert!(store.is_empty());
    }

    #[test]
    fn expired_tokens_are_swept_and_the_size_stays_bounded() {
        let store = TokenStore::new(16_000);
        for i in 0..20_000 {
            store.insert(digest(i), 10, (), 0);
        }
        assert!(store.len() <= 16_000, "{}", store.len());
        // Past their last second, the old tokens go at the next sweeps.
        for i in 20_000..40_000 {
            store.insert(digest(i), 100, (), 11);
        }
        assert!(
            (0..20_000)
                .filter(|&i| store.get(&digest(i)).is_some())
                .count()
                < 2_000
        );
        assert!(store.len() <= 16_000, "{}", store.len());
    }
}
