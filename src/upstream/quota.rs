//! The gateway's own rate cap on calls to the cloud, per account (a token bucket).
//!
//! The cloud throttles each account (`429 APIGW.0308`) past a quota this gateway cannot see,
//! shared by every replica and tool using the account. Staying under it is cheaper than
//! being throttled, so every call (retries included) takes a token first. Tokens refill at
//! `requests_per_second` up to `burst`. A call without a token waits, at most `max_wait_ms`
//! and with at most `max_queue` others; past either bound it is refused with `503
//! BMSGW.0314` and a `Retry-After`, instead of being sent.
//!
//! Refill is measured on the injected clock (tests move it); the wait itself polls in short
//! real-time steps, bounded by `max_wait_ms` and the request's deadline.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::config::QuotaConfig;

/// How often a waiting call looks at the bucket again.
const POLL: Duration = Duration::from_millis(5);

struct Bucket {
    tokens: f64,
    last_nanos: u64,
}

pub struct UpstreamQuota {
    config: QuotaConfig,
    clock: SharedClock,
    bucket: Mutex<Bucket>,
    waiting: AtomicU32,
}

/// Why no token was had.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
}

/// How a token was had.
#[derive(Debug, PartialEq, Eq)]
pub enum Granted {
    AtOnce,
    AfterWaiting,
}

impl UpstreamQuota {
    pub fn new(config: QuotaConfig, clock: SharedClock) -> UpstreamQuota {
        let now = clock.monotonic_nanos();
        UpstreamQuota {
            bucket: Mutex::new(Bucket {
                tokens: f64::from(config.burst),
                last_nanos: now,
            }),
            config,
            clock,
            waiting: AtomicU32::new(0),
        }
    }

    fn take(&self) -> bool {
        let now = self.clock.monotonic_nanos();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_sub(b.last_nanos) as f64 / 1e9;
        b.tokens = (b.tokens + elapsed * self.config.requests_per_second)
            .min(f64::from(self.config.burst));
        b.last_nanos = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn retry_after(&self) -> u64 {
        (1.0 / self.config.requests_per_second).ceil().max(1.0) as u64
    }

    /// A token now, or after a bounded wait that also ends at `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<Granted, Refused> {
        if self.take() {
            return Ok(Granted::AtOnce);
        }
        let refused = Refused {
            retry_after_secs: self.retry_after(),
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(refused);
        }
        let until = deadline.min(Instant::now() + Duration::from_millis(self.config.max_wait_ms));
        let result = loop {
            if self.take() {
                break Ok(Granted::AfterWaiting);
            }
            if Instant::now() + POLL > until {
                break Err(refused);
            }
            tokio::time::sleep(POLL).await;
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn burst_then_bounded_wait_then_refusal() {
        let clock = ManualClock::new();
        let q = UpstreamQuota::new(
            QuotaConfig {
                requests_per_second: 1.0,
                burst: 2,
                max_queue: 1,
                max_wait_ms: 20,
            },
            clock.clone(),
        );
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(q.acquire(far).await, Ok(Granted::AtOnce));
        assert_eq!(q.acquire(far).await, Ok(Granted::AtOnce));
        assert_eq!(q.acquire(far).await.unwrap_err().retry_after_secs, 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(q.acquire(far).await, Ok(Granted::AtOnce));
    }
}
