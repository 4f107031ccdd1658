//! What the cloud's API gateway does to protect itself from one account: per-account
//! throttling (`429 APIGW.0308`) and the AK lockout after 5 consecutive bad signatures.
//!
//! Facts (`shared/reference/huawei-api.md` section 2): throttling is `429` with the flat body
//! `APIGW.0308` "The throttling threshold has been reached: policy user over ratelimit,limit:N,
//! time:1 minute"; after 5 consecutive AK/SK authentication failures the AK is locked for
//! about 5 minutes, answered `401 APIGW.0301` "AK access failed to reach the limit,forbidden"
//! even for correctly signed requests.
//!
//! Both run on the real clock: the simulator is the cloud, and the gateway's injected clock
//! is not the cloud's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive bad signatures that lock an AK.
pub const LOCKOUT_THRESHOLD: u32 = 5;
/// How long a locked AK stays locked.
pub const LOCKOUT_DURATION: Duration = Duration::from_secs(5 * 60);
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct AkState {
    consecutive_bad: u32,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Guards {
    /// Requests per minute per account; 0 = unlimited.
    limit_per_minute: AtomicU64,
    windows: Mutex<HashMap<String, (Instant, u64)>>,
    access_keys: Mutex<HashMap<String, AkState>>,
    /// The most consecutive bad signatures any AK reached (what a lockout test asserts on).
    pub(crate) max_consecutive_bad_signatures: AtomicU64,
    pub(crate) lockouts: AtomicU64,
}

impl Guards {
    pub(crate) fn set_limit_per_minute(&self, limit: u64) {
        self.limit_per_minute.store(limit, Ordering::Relaxed);
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn limit_per_minute(&self) -> u64 {
        self.limit_per_minute.load(Ordering::Relaxed)
    }

    /// Counts one request for `account`; `Err(limit)` when it is over the limit.
    pub(crate) fn admit(&self, account: &str) -> Result<(), u64> {
        let limit = self.limit_per_minute();
        if limit == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = windows.entry(account.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > limit {
            Err(limit)
        } else {
            Ok(())
        }
    }

    /// True while `access_key` is locked.
    pub(crate) fn is_locked(&self, access_key: &str) -> bool {
        let keys = self.access_keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(access_key)
            .and_then(|s| s.locked_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Records a signature check for `access_key`.
    pub(crate) fn signature(&self, access_key: &str, good: bool) {
        let mut keys = self.access_keys.lock().unwrap_or_else(|e| e.into_inner());
        let state = keys.entry(access_key.to_string()).or_default();
        if good {
            state.consecutive_bad = 0;
            return;
        }
        state.consecutive_bad += 1;
        self.max_consecutive_bad_signatures
            .fetch_max(u64::from(state.consecutive_bad), Ordering::Relaxed);
        if state.consecutive_bad >= LOCKOUT_THRESHOLD && state.locked_until.is_none() {
            state.locked_until = Some(Instant::now() + LOCKOUT_DURATION);
            self.lockouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reset(&self) {
        self.set_limit_per_minute(0);
        self.access_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.max_consecutive_bad_signatures
            .store(0, Ordering::Relaxed);
        self.lockouts.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_bad_signatures_lock_and_a_good_one_resets_the_count() {
        let g = Guards::default();
        for _ in 0..4 {
            g.signature("ak", false);
        }
        g.signature("ak", true);
        assert!(!g.is_locked("ak"));
        for _ in 0..5 {
            g.signature("ak", false);
        }
        assert!(g.is_locked("ak"));
        assert_eq!(g.max_consecutive_bad_signatures.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn per_account_limit() {
        let g = Guards::default();
        assert!(g.admit("a").is_ok());
        g.set_limit_per_minute(2);
        assert!(g.admit("a").is_ok());
        assert!(g.admit("a").is_ok());
        assert_eq!(g.admit("a"), Err(2));
        assert!(g.admit("b").is_ok(), "limits are per account");
    }
}
