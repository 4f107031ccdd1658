//! Rate-limit state held in this process.
//!
//! One atomic integer (the GCRA TAT) per user and tier, in a bounded moka cache. An entry is
//! dropped after it has been idle for the tier's whole tolerance: by then its TAT lies in the
//! past, so a fresh entry decides exactly as the old one would. Eviction therefore costs no
//! accuracy, and a million one-off users cost memory only while they are active. (The idle
//! timer runs on real time; the decision itself uses the injected clock.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::clock::SharedClock;
use crate::ratelimit::gcra::{self, Outcome, Quota};

/// Per-process limiter.
pub struct LocalLimiter {
    state: Cache<String, Arc<AtomicU64>>,
    clock: SharedClock,
}

impl LocalLimiter {
    /// `longest_tolerance` is the largest `burst / rate` among all tiers: entries idle longer
    /// than that are equivalent to absent ones. `max_users` caps memory even under a flood of
    /// distinct users; beyond it the least recently active are evicted first (which can only
    /// make the limit more generous for them, never stricter).
    pub fn new(clock: SharedClock, longest_tolerance: Duration, max_users: u64) -> LocalLimiter {
        LocalLimiter {
            state: Cache::builder()
                .max_capacity(max_users)
                .time_to_idle(longest_tolerance + Duration::from_secs(1))
                .build(),
            clock,
        }
    }

    /// Decides one request for `key` (user and tier) under `quota`.
    pub fn check(&self, key: &str, quota: Quota) -> Outcome {
        let cell = match self.state.get(key) {
            Some(cell) => cell,
            None => self
                .state
                .get_with(key.to_string(), || Arc::new(AtomicU64::new(0))),
        };
        let now = self.clock.monotonic_nanos();
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let (outcome, next) = gcra::decide(current, now, quota);
            if next == current {
                return outcome;
            }
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return outcome,
                Err(actual) => current = actual,
            }
        }
    }

    /// Users currently tracked (approximate; for tests and metrics).
    pub fn tracked_users(&self) -> u64 {
        self.state.run_pending_tasks();
        self.state.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::RateTier;

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let clock = ManualClock::new();
        let limiter = Arc::new(LocalLimiter::new(clock, Duration::from_secs(10), 1000));
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
        let limiter = LocalLimiter::new(ManualClock::new(), Duration::from_secs(10), 1_000);
        let quota = Quota::from_tier(&RateTier {
            requests_per_second: 1.0,
            burst: 1,
        });
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
