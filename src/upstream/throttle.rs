//! Backing off an account the cloud throttled.
//!
//! A `429`/`APIGW.0308` means the account's cloud quota is spent, for every replica and tool
//! that uses it; calling again at once only spends more. So the gateway does not retry: it
//! answers `429 APIGW.0308` with `Retry-After`, and for `throttle_backoff_seconds` answers
//! every request for the account the same way without calling. Time is the injected clock's.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::SharedClock;

pub struct ThrottleBackoff {
    backoff_nanos: u64,
    clock: SharedClock,
    /// Monotonic nanos until which the account is not called; 0 = not backing off.
    until_nanos: AtomicU64,
}

impl ThrottleBackoff {
    pub fn new(backoff_seconds: u64, clock: SharedClock) -> ThrottleBackoff {
        ThrottleBackoff {
            backoff_nanos: backoff_seconds.saturating_mul(1_000_000_000),
            clock,
            until_nanos: AtomicU64::new(0),
        }
    }

    /// `Err(seconds left)` while backing off.
    pub fn check(&self) -> Result<(), u64> {
        let now = self.clock.monotonic_nanos();
        let until = self.until_nanos.load(Ordering::Acquire);
        if until > now {
            Err((until - now).div_ceil(1_000_000_000).max(1))
        } else {
            Ok(())
        }
    }

    /// The cloud throttled us: back off. Returns the `Retry-After` seconds.
    pub fn engage(&self) -> u64 {
        let until = self
            .clock
            .monotonic_nanos()
            .saturating_add(self.backoff_nanos);
        self.until_nanos.fetch_max(until, Ordering::AcqRel);
        self.backoff_nanos.div_ceil(1_000_000_000).max(1)
    }
}
