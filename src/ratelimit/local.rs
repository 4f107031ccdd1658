//! Rate-limit state held in this process.
//!
//! One GCRA TAT (nanoseconds on the injected clock) per user and tier, in an [`ExpiringMap`]
//! keyed by a 64-bit keyed hash of the user-and-tier key: sixteen bytes of payload per tracked
//! user, so a million users cost tens of MiB, not hundreds. The hash is SipHash under a random
//! per-process key, so a caller cannot choose names that collide (two users sharing a bucket
//! would need a 64-bit collision: about one chance in 2^25 among a million active users).
//!
//! A TAT in the past decides exactly as an absent entry does (the bucket is full again), so
//! the TAT is also the entry's expiry: the map sweeps such users out and forgetting them costs
//! no accuracy. Beyond `max_users` live users some are forgotten, which can only make the
//! limit more generous for them, never stricter.

use std::hash::{BuildHasher, BuildHasherDefault, RandomState};

use crate::clock::SharedClock;
use crate::expiring_map::{AlreadyRandom, ExpiringMap};
use crate::ratelimit::gcra::{self, Outcome, Quota};

/// Per-process limiter.
pub struct LocalLimiter {
    tats: ExpiringMap<u64, (), BuildHasherDefault<AlreadyRandom>>,
    hasher: RandomState,
    clock: SharedClock,
}

impl LocalLimiter {
    /// `max_users` caps memory even under a flood of distinct users (see the module docs for
    /// what happens beyond it).
    pub fn new(clock: SharedClock, max_users: u64) -> LocalLimiter {
        LocalLimiter {
            tats: ExpiringMap::new(max_users, BuildHasherDefault::default()),
            hasher: RandomState::new(),
            clock,
        }
    }

    /// Decides one request for `key` (user and tier) under `quota`.
    pub fn check(&self, key: &str, quota: Quota) -> Outcome {
        let now = self.clock.monotonic_nanos();
        self.tats.update(self.hasher.hash_one(key), now, |tat| {
            let tat = tat.unwrap_or(0);
            let (outcome, next) = gcra::decide(tat, now, quota);
            (outcome, (next != tat).then_some(next))
        })
    }

    /// Users currently tracked (for tests and metrics).
    pub fn tracked_users(&self) -> u64 {
        self.tats.len() as u64
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
