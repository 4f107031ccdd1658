//! Time, injected. Expiry logic (token lifetimes, cache TTLs, rate limits) reads the time from
//! a [`Clock`] so tests can move time instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time: wall-clock seconds for token claims, and a monotonic reading for
/// intervals (rate limits, cache ages).
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn unix_seconds(&self) -> i64;
    /// Monotonic time since an arbitrary fixed start, in nanoseconds.
    fn monotonic_nanos(&self) -> u64;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock {
            start: Instant::now(),
        })
    }
}

impl Clock for SystemClock {
    fn unix_seconds(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn monotonic_nanos(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A clock that only moves when told to. Starts at the real wall-clock time.
pub struct ManualClock {
    unix_start: i64,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            unix_start: SystemClock::shared().unix_seconds(),
            offset_nanos: AtomicU64::new(0),
        })
    }

    pub fn advance(&self, by: Duration) {
        self.offset_nanos
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_seconds(&self) -> i64 {
        self.unix_start + (self.offset_nanos.load(Ordering::SeqCst) / 1_000_000_000) as i64
    }

    fn monotonic_nanos(&self) -> u64 {
        self.offset_nanos.load(Ordering::SeqCst)
    }
}
