//! A bounded, sharded hash map whose entries each carry the instant they stop mattering: the
//! store behind the rate limiter (user → TAT), the verified-token cache (digest → caller) and
//! the console-URL cache (server → URL).
//!
//! Sixteen mutex-guarded shards keep lookups short and uncontended (fewer for a small map, so
//! that each shard holds a useful number of entries). Nothing runs in the background: entries
//! at or past their instant are swept out whenever a shard has doubled since its last sweep,
//! so the cost per insert stays constant on average. A shard full of live entries forgets a
//! quarter of them before it takes a new one; every user of this map is a cache or a limiter
//! for which forgetting is safe (a cache refetches, a limiter forgets in the caller's favour).
//! Time is whatever unit the owner uses, passed in, so tests can drive it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;
/// A map is split into fewer shards when it would otherwise give a shard fewer entries than
/// this: a one-entry shard would forget an entry whenever a second key hashed to it.
const MIN_SHARD_ENTRIES: u64 = 64;
/// A shard is not swept before it holds this many entries (sweeping tiny maps is pure cost).
const MIN_SWEEP_LEN: usize = 1024;

pub struct ExpiringMap<K, V, S> {
    /// A power of two of them, so a shard is picked with a mask.
    shards: Box<[Mutex<Shard<K, V, S>>]>,
    hasher: S,
}

struct Shard<K, V, S> {
    /// Key → (the instant it stops mattering, value).
    entries: HashMap<K, (u64, V), S>,
    sweep_at: usize,
    max_entries: usize,
}

impl<K: Hash + Eq, V, S: BuildHasher + Clone> ExpiringMap<K, V, S> {
    /// Holds at most about `max_entries` entries (at least one).
    pub fn new(max_entries: u64, hasher: S) -> ExpiringMap<K, V, S> {
        // The largest power of two up to 16 that leaves each shard MIN_SHARD_ENTRIES.
        let wanted = (max_entries / MIN_SHARD_ENTRIES).clamp(1, SHARDS as u64);
        let shard_count = 1usize << wanted.ilog2();
        let per_shard = usize::try_from(max_entries.div_ceil(shard_count as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::with_hasher(hasher.clone()),
                    sweep_at: MIN_SWEEP_LEN.min(per_shard),
                    max_entries: per_shard,
                })
            })
            .collect();
        ExpiringMap { shards, hasher }
    }

    /// The entry for `key` and its instant, however old (the caller decides what is fresh).
    pub fn get<Q>(&self, key: &Q) -> Option<(u64, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.shard(key).entries.get(key).cloned()
    }

    /// Stores `value` for `key` until `expires_at`; `now` drives the sweep.
    pub fn insert(&self, key: K, expires_at: u64, value: V, now: u64) {
        let mut shard = self.shard(&key);
        shard.make_room(now);
        shard.entries.insert(key, (expires_at, value));
    }

    /// Reads and rewrites the instant of `key` under its shard's lock: `decide` gets the current
    /// instant (`None` when absent) and returns its answer and the instant to store, if any.
    pub fn update<R>(
        &self,
        key: K,
        now: u64,
        decide: impl FnOnce(Option<u64>) -> (R, Option<u64>),
    ) -> R
    where
        V: Default,
    {
        let mut shard = self.shard(&key);
        let (answer, store) = decide(shard.entries.get(&key).map(|(at, _)| *at));
        if let Some(expires_at) = store {
            shard.make_room(now);
            shard.entries.insert(key, (expires_at, V::default()));
        }
        answer
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).entries.remove(key);
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).entries.clear();
        }
    }

    /// Entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V, S>> {
        // Middle bits pick the shard: the map inside uses the low bits (bucket) and the top
        // seven (control byte), which must stay varied within a shard.
        let hash = self.hasher.hash_one(key);
        lock(&self.shards[(hash >> 32) as usize & (self.shards.len() - 1)])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Hash + Eq, V, S: BuildHasher> Shard<K, V, S> {
    /// Called before an entry goes in: once the shard has grown to its sweep mark, drops the
    /// expired entries, and if the shard is still full, forgets enough live ones that it holds
    /// three quarters of its capacity with the new entry. The new entry is never the one
    /// forgotten, since it is not in yet.
    fn make_room(&mut self, now: u64) {
        if self.entries.len() < self.sweep_at {
            return;
        }
        self.entries.retain(|_, (expires_at, _)| *expires_at > now);
        if self.entries.len() >= self.max_entries {
            let mut keep = (self.max_entries - self.max_entries / 4).saturating_sub(1);
            self.entries.retain(|_, _| {
                let kept = keep > 0;
                keep = keep.saturating_sub(1);
                kept
            });
        }
        let len = self.entries.len();
        self.sweep_at = (len * 2)
            .max(MIN_SWEEP_LEN)
            .min(self.max_entries)
            .max(len + 1);
    }
}

/// A hasher for keys that are already uniformly random (a keyed SipHash, a SHA-256): the key's
/// own first eight bytes are its hash, so the map does not hash it again. Only for keys no
/// caller can choose: a `u64` key is taken whole, a byte key by its first eight bytes, and a
/// length prefix (which a `[u8; N]` writes first) is ignored.
#[derive(Default)]
pub struct AlreadyRandom(u64);

impl Hasher for AlreadyRandom {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn write_usize(&mut self, _length: usize) {}
}

#[cfg(test)]
mod tests {
    use std::hash::RandomState;

    use super::*;

    #[test]
    fn entries_are_found_updated_removed_and_cleared() {
        let map = ExpiringMap::new(1000, RandomState::new());
        map.insert("a".to_string(), 100, 1, 0);
        assert_eq!(map.get("a"), Some((100, 1)));
        assert_eq!(map.get("b"), None);
        let seen = map.update("b".to_string(), 0, |at| (at, Some(7)));
        assert_eq!(seen, None);
        assert_eq!(map.get("b"), Some((7, 0)));
        map.remove("a");
        assert_eq!(map.get("a"), None);
        map.clear();
        assert!(map.is_empty());
    }

    #[test]
    fn a_small_map_holds_as_many_entries_as_it_was_given() {
        // Sixteen shards of one entry each would forget whenever two of the ten keys met.
        let map = ExpiringMap::new(10, RandomState::new());
        for i in 0..10u32 {
            map.insert(i, 100, i, 0);
        }
        assert!((0..10u32).all(|i| map.get(&i) == Some((100, i))));
    }

    #[test]
    fn a_full_shard_forgets_a_quarter_and_keeps_the_entry_going_in() {
        // 64 entries: one shard.
        let map = ExpiringMap::new(64, RandomState::new());
        for i in 0..64u32 {
            map.insert(i, 100, (), 0);
        }
        assert_eq!(map.len(), 64);
        map.insert(64, 100, (), 0);
        assert_eq!(
            map.len(),
            48,
            "three quarters of 64, the new entry among them"
        );
        assert_eq!(map.get(&64), Some((100, ())));
        // The same for a key written through `update`.
        for i in 65..81u32 {
            map.insert(i, 100, (), 0);
        }
        assert_eq!(map.len(), 64);
        assert_eq!(map.update(81, 0, |at| (at, Some(100))), None);
        assert_eq!(map.len(), 48);
        assert_eq!(map.get(&81), Some((100, ())));
    }

    #[test]
    fn expired_entries_are_swept_and_the_size_stays_bounded() {
        let map = ExpiringMap::new(16_000, RandomState::new());
        for i in 0..20_000u32 {
            map.insert(i, 10, (), 0);
        }
        assert!(map.len() <= 16_000, "{}", map.len());
        // At their instant, the old entries go at the next sweeps.
        for i in 20_000..40_000u32 {
            map.insert(i, 100, (), 10);
        }
        assert!((0..20_000u32).filter(|i| map.get(i).is_some()).count() < 2_000);
        assert!(map.len() <= 16_000, "{}", map.len());
    }
}
