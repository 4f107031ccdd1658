//! Credential lockout protection for one AK/SK account.
//!
//! The cloud locks an access key for about 5 minutes after 5 consecutive signature failures
//! (`shared/reference/huawei-api.md` section 2), which would take every console in the
//! account down with it. So the gateway counts consecutive `401`s per account itself and,
//! at `threshold` (default 3), **pauses** the account for `cooldown_seconds`: requests fail
//! fast with `503 BMSGW.0312`, an error is logged and `bmsgw_upstream_credentials_paused`
//! turns 1. A wrong secret therefore costs at most `threshold` bad signatures, never a lockout.
//!
//! Two details make "at most" hold under concurrency:
//! - until a credential has been **verified** (one call answered with anything but `401`),
//!   calls with it go one at a time, so a burst of requests with a wrong secret cannot put
//!   50 bad signatures on the wire before the count catches up;
//! - after a cool-down one probe is allowed, and its failure pauses the account again at
//!   once (the count restarts at `threshold - 1`, not 0).
//!
//! A changed secret file ([`Lockout::reset`]) ends a pause: the new secret deserves a try.

use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::SharedClock;
use crate::config::LockoutConfig;

struct Inner {
    consecutive_401: u32,
    paused_since_nanos: Option<u64>,
    verified: bool,
}

pub struct Lockout {
    config: LockoutConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
    /// One call at a time while the credential is not verified.
    probe: Arc<Semaphore>,
}

/// What [`Lockout::admit`] hands out: a probe slot while unverified, nothing otherwise.
pub struct Admission {
    _probe: Option<OwnedSemaphorePermit>,
}

/// What a `401` did.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterRejection {
    Counted(u32),
    /// This rejection paused the account.
    Paused,
}

impl Lockout {
    pub fn new(config: LockoutConfig, clock: SharedClock) -> Lockout {
        Lockout {
            config,
            clock,
            inner: Mutex::new(Inner {
                consecutive_401: 0,
                paused_since_nanos: None,
                verified: false,
            }),
            probe: Arc::new(Semaphore::new(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds left)` while paused.
    fn check(&self) -> Result<bool, u64> {
        let now = self.clock.monotonic_nanos();
        let cooldown = self.config.cooldown_seconds.saturating_mul(1_000_000_000);
        let mut inner = self.lock();
        if let Some(since) = inner.paused_since_nanos {
            let elapsed = now.saturating_sub(since);
            if elapsed < cooldown {
                return Err((cooldown - elapsed).div_ceil(1_000_000_000).max(1));
            }
            inner.paused_since_nanos = None;
            inner.consecutive_401 = self.config.threshold.saturating_sub(1);
            inner.verified = false;
        }
        Ok(inner.verified)
    }

    /// Waits for permission to call (while unverified, calls queue one at a time); `Err(
    /// seconds left)` while the account is paused.
    pub async fn admit(&self) -> Result<Admission, u64> {
        if self.check()? {
            return Ok(Admission { _probe: None });
        }
        let permit = self.probe.clone().acquire_owned().await.ok();
        // Looked at again: the call before ours may have verified or paused the credential.
        let verified = self.check()?;
        Ok(Admission {
            _probe: if verified { None } else { permit },
        })
    }

    /// The cloud accepted the credential.
    pub fn accepted(&self) {
        let mut inner = self.lock();
        inner.consecutive_401 = 0;
        inner.verified = true;
    }

    /// The cloud answered `401`.
    pub fn rejected(&self) -> AfterRejection {
        let now = self.clock.monotonic_nanos();
        let mut inner = self.lock();
        inner.verified = false;
        inner.consecutive_401 += 1;
        if inner.consecutive_401 >= self.config.threshold {
            inner.paused_since_nanos = Some(now);
            AfterRejection::Paused
        } else {
            AfterRejection::Counted(inner.consecutive_401)
        }
    }

    /// The secret changed: forget the count and any pause.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.consecutive_401 = 0;
        inner.paused_since_nanos = None;
        inner.verified = false;
    }

    pub fn is_paused(&self) -> bool {
        self.check().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[tokio::test]
    async fn pauses_at_the_threshold_and_probes_once_after_the_cooldown() {
        let clock = ManualClock::new();
        let l = Lockout::new(
            LockoutConfig {
                threshold: 3,
                cooldown_seconds: 60,
            },
            clock.clone(),
        );
        for n in 1..3 {
            let a = l.admit().await.unwrap();
            assert_eq!(l.rejected(), AfterRejection::Counted(n));
            drop(a);
        }
        let a = l.admit().await.unwrap();
        assert_eq!(l.rejected(), AfterRejection::Paused);
        drop(a);
        assert_eq!(l.admit().await.err(), Some(60));
        clock.advance(Duration::from_secs(60));
        let a = l.admit().await.unwrap();
        assert_eq!(l.rejected(), AfterRejection::Paused, "one probe only");
        drop(a);
        l.reset();
        let a = l.admit().await.unwrap();
        l.accepted();
        drop(a);
        assert!(!l.is_paused());
    }
}
