//! The Generic Cell Rate Algorithm, as pure arithmetic on one number per user.
//!
//! GCRA is a token bucket expressed as a "theoretical arrival time" (TAT): the time at which the
//! user's bucket would be full again. A request is admitted when, after adding one emission
//! interval, the TAT lies no further ahead than `burst` intervals. Keeping one integer per user
//! makes the decision a single compare-and-swap locally and a single key in Redis.

use crate::config::RateTier;

/// A rate and a burst, in the units GCRA needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds between two requests at the sustained rate.
    pub emission_nanos: u64,
    /// Requests admitted at once from a full bucket.
    pub burst: u32,
}

impl Quota {
    pub fn from_tier(tier: &RateTier) -> Quota {
        let emission = (1e9 / tier.requests_per_second).round().max(1.0);
        Quota {
            emission_nanos: emission as u64,
            burst: tier.burst.max(1),
        }
    }

    /// How far ahead of now the TAT may be: the whole bucket.
    pub fn tolerance_nanos(&self) -> u64 {
        self.emission_nanos.saturating_mul(self.burst as u64)
    }
}

/// One decision, with what the rate-limit headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The bucket size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Time until the bucket is full again (`RateLimit-Reset`).
    pub reset_nanos: u64,
    /// When refused: time until one request would be admitted (`Retry-After`).
    pub retry_after_nanos: u64,
}

impl Outcome {
    pub fn reset_seconds(&self) -> u64 {
        self.reset_nanos.div_ceil(1_000_000_000)
    }

    /// Whole seconds to wait, at least 1 (a `Retry-After: 0` invites an immediate retry storm).
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after_nanos.div_ceil(1_000_000_000).max(1)
    }
}

/// Decides one request arriving at `now` for a user whose stored TAT is `tat` (0 for a new
/// user). Returns the outcome and the TAT to store (unchanged when refused).
pub fn decide(tat: u64, now: u64, quota: Quota) -> (Outcome, u64) {
    let tolerance = quota.tolerance_nanos();
    let new_tat = tat.max(now).saturating_add(quota.emission_nanos);
    let ahead = new_tat - now;
    if ahead > tolerance {
        let current_ahead = tat.max(now) - now;
        let outcome = Outcome {
            allowed: false,
            limit: quota.burst,
            remaining: 0,
            reset_nanos: current_ahead,
            retry_after_nanos: ahead - tolerance,
        };
        return (outcome, tat);
    }
    let remaining = ((tolerance - ahead) / quota.emission_nanos) as u32;
    let outcome = Outcome {
        allowed: true,
        limit: quota.burst,
        remaining,
        reset_nanos: ahead,
        retry_after_nanos: 0,
    };
    (outcome, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn quota(rate: f64, burst: u32) -> Quota {
        Quota::from_tier(&RateTier {
            requests_per_second: rate,
            burst,
        })
    }

    #[test]
    fn a_full_bucket_admits_exactly_burst_then_refuses() {
        let q = quota(10.0, 5);
        let now = 100 * SECOND;
        let mut tat = 0;
        for expected_remaining in (0..5).rev() {
            let (o, t) = decide(tat, now, q);
            assert!(o.allowed);
            assert_eq!(o.remaining, expected_remaining);
            tat = t;
        }
        let (o, t) = decide(tat, now, q);
        assert!(!o.allowed);
        assert_eq!(t, tat);
        assert_eq!(o.retry_after_nanos, SECOND / 10);
        assert_eq!(o.retry_after_seconds(), 1);
        assert_eq!(o.reset_seconds(), 1);
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let q = quota(2.0, 1);
        let (o, tat) = decide(0, 10 * SECOND, q);
        assert!(o.allowed);
        assert!(!decide(tat, 10 * SECOND + SECOND / 4, q).0.allowed);
        assert!(decide(tat, 10 * SECOND + SECOND / 2, q).0.allowed);
    }

    #[test]
    fn admitted_count_never_exceeds_rate_times_time_plus_burst() {
        let q = quota(5.0, 3);
        let mut tat = 0;
        let mut admitted = 0u64;
        // One attempt every millisecond for 10 s.
        for ms in 0..10_000u64 {
            let (o, t) = decide(tat, SECOND + ms * 1_000_000, q);
            if o.allowed {
                admitted += 1;
            }
            tat = t;
        }
        assert!(admitted <= 5 * 10 + 3, "{admitted}");
        assert!(admitted >= 5 * 10, "{admitted}");
    }
}
