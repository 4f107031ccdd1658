//! Rate-limit state held in this process.
//!
//! One GCRA TAT (a `u64` of nanoseconds) per user and tier, in a sharded hash map keyed by a
//! 64-bit keyed hash of the user-and-tier key: sixteen bytes of payload per tracked user, so a
//! million users cost tens of MiB, not hundreds. The hash is SipHash under a random per-process
//! key, so a caller cannot choose names that collide (two users sharing a bucket would need a
//! 64-bit collision: about one chance in 2^25 among a million active users).
//!
//! A TAT in the past decides exactly as an absent entry does (the bucket is full again), so
//! such entries are swept out whenever a shard has doubled since its last sweep: forgetting
//! costs no accuracy. When a shard is full of active users, a quarter of it is forgotten, which
//! can only make the limit more generous for those users, never stricter. The decision itself
//! uses the injected clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

use crate::clock::SharedClock;
use crate::ratelimit::gcra::{self, Outcome, Quota};

const SHARDS: usize = 16;
/// A shard is not swept before it holds this many users (sweeping tiny maps is pure cost).
const MIN_SWEEP_LEN: usize = 1024;

/// Per-process limiter.
pub struct LocalLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: SharedClock,
}

/// One shard: user hash → TAT.
struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<AlreadyHashed>>,
    /// Sweep when the shard grows past this many users.
    sweep_at: usize,
    max_users: usize,
}

impl LocalLimiter {
    /// `max_users` caps memory even under a flood of distinct users (see the module docs for
    /// what happens beyond it).
    pub fn new(clock: SharedClock, max_users: u64) -> LocalLimiter {
        let per_shard = usize::try_from(max_users / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::default(),
                    sweep_at: MIN_SWEEP_LEN.min(per_shard),
                    max_users: per_shard,
                })
            })
            .collect();
        LocalLimiter {
            shards,
            hasher: RandomState::new(),
            clock,
        }
    }

    /// Decides one request for `key` (user and tier) under `quota`.
    pub fn check(&self, key: &str, quota: Quota) -> Outcome {
        let hash = self.hasher.hash_one(key);
        // Middle bits pick the shard: the map itself uses the low bits (bucket) and the top
        // seven (control byte), which must stay random within a shard.
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        let now = self.clock.monotonic_nanos();
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = shard.tats.get(&hash).copied().unwrap_or(0);
        let (outcome, next) = gcra::decide(tat, now, quota);
        if next != tat {
            shard.tats.insert(hash, next);
            if shard.tats.len() > shard.sweep_at {
                shard.sweep(now);
            }
        }
        outcome
    }

    /// Users currently tracked (for tests and metrics).
    pub fn tracked_users(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).tats.len() as u64)
            .sum()
    }
}

impl Shard {
    /// Drops every user whose bucket is full again; if the shard is still full, forgets a
    /// quarter of it. Runs once per doubling, so its cost is constant per request on average.
    fn sweep(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.len() >= self.max_users {
            let mut keep = self.max_users - self.max_users / 4;
            self.tats.retain(|_, _| {
                keep = keep.saturating_sub(1);
                keep > 0
            });
        }
        let len = self.tats.len();
        self.sweep_at = (len * 2)
            .max(MIN_SWEEP_LEN)
            .min(self.max_users)
            .max(len + 1);
    }
}

/// The map's keys are already SipHash outputs; hashing them again would only cost time.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::RateTier;

    fn one_per_second() -> Quota {
        Quota::from_tier(&RateTier {
            requests_per_second: 1.0,
            burst: 1,
        })
    }

    #[test]
    fn users_whose_bucket_refilled_are_swept_and_decide_as_new() {
        let clock = ManualClock::new();
        let limiter = LocalLimiter::new(clock.clone(), 1_000_000);
        let quota = one_per_second();
        for i in 0..40_000 {
            assert!(limiter.check(&format!("old-{i}"), quota).allowed);
        }
        assert!(
            !limiter.check("old-7", quota).allowed,
            "the bucket is empty"
        );
        clock.advance(Duration::from_secs(2));
        for i in 0..40_000 {
            assert!(limiter.check(&format!("new-{i}"), quota).allowed);
        }
        // The old users' buckets refilled, so the sweeps forgot most of them...
        assert!(
            limiter.tracked_users() < 60_000,
            "{}",
            limiter.tracked_users()
        );
        // ...which changes no decision: each gets its full burst, then is limited again.
        assert!(limiter.check("old-7", quota).allowed);
        assert!(!limiter.check("old-7", quota).allowed);
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let clock = ManualClock::new();
        let limiter = Arc::new(LocalLimiter::new(clock, 1000));
        let quota = Quota::from_tier(&RateTier {
            requests_per_second: 1.0,
            burst: 100,
        });
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                let admitted = admitted.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if limiter.check("u", quota).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_flood_of_distinct_users_stays_within_the_cap() {
        let limiter = LocalLimiter::new(ManualClock::new(), 1_000);
        let quota = one_per_second();
        for i in 0..20_000 {
            assert!(limiter.check(&format!("user-{i}"), quota).allowed);
        }
        assert!(
            limiter.tracked_users() <= 1_000,
            "{}",
            limiter.tracked_users()
        );
    }
}
