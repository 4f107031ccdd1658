//! The circuit breaker of one account's endpoint.
//!
//! Closed, it lets every call through and watches outcomes. It **opens** after
//! `consecutive_failures` failed calls in a row, or when at least `failure_ratio` of the last
//! `window` calls failed (once `window` calls have been seen). Open, it refuses every call at
//! once (the gateway answers `503 BMSGW.0313` with `Retry-After`) for `open_seconds`, so a
//! struggling endpoint is not hammered and callers do not wait for timeouts. Then it is
//! **half-open**: up to `half_open_probes` calls go through; a success closes it (history
//! forgotten), a failure opens it again for another period.
//!
//! A failure is what says the endpoint is unhealthy: no connection, a reset or timeout, a 5xx,
//! `BMS.0212` (overloaded). Any other answer, 4xx included, is a success: the endpoint works.
//! Time is the injected clock's, so tests move it instead of waiting.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::BreakerConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The `bmsgw_upstream_breaker_state` value.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

struct Inner {
    state: State,
    opened_at_nanos: u64,
    probes_in_flight: u32,
    consecutive_failures: u32,
    recent: VecDeque<bool>,
}

pub struct Breaker {
    config: BreakerConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

/// Permission for one call; hand it back with [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    probe: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig, clock: SharedClock) -> Breaker {
        Breaker {
            config,
            clock,
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at_nanos: 0,
                probes_in_flight: 0,
                consecutive_failures: 0,
                recent: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_nanos(&self) -> u64 {
        self.config.open_seconds.saturating_mul(1_000_000_000)
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// A permit, or `Err(seconds until probes are let through)`.
    pub fn try_acquire(&self) -> Result<Permit, u64> {
        let now = self.clock.monotonic_nanos();
        let mut inner = self.lock();
        if inner.state == State::Open {
            let elapsed = now.saturating_sub(inner.opened_at_nanos);
            if elapsed < self.open_nanos() {
                let left = self.open_nanos() - elapsed;
                return Err(left.div_ceil(1_000_000_000).max(1));
            }
            inner.state = State::HalfOpen;
            inner.probes_in_flight = 0;
        }
        if inner.state == State::HalfOpen {
            if inner.probes_in_flight >= self.config.half_open_probes {
                return Err(1);
            }
            inner.probes_in_flight += 1;
            return Ok(Permit { probe: true });
        }
        Ok(Permit { probe: false })
    }

    /// Hands back a permit whose call was never made (refused by a later layer).
    pub fn cancel(&self, permit: Permit) {
        if permit.probe {
            let mut inner = self.lock();
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    /// Records the outcome of a permitted call; returns the state afterwards.
    pub fn record(&self, permit: Permit, success: bool) -> State {
        let now = self.clock.monotonic_nanos();
        let mut inner = self.lock();
        if permit.probe && inner.state == State::HalfOpen {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            if success {
                inner.state = State::Closed;
                inner.consecutive_failures = 0;
                inner.recent.clear();
            } else {
                inner.state = State::Open;
                inner.opened_at_nanos = now;
            }
            return inner.state;
        }
        if inner.state != State::Closed {
            // A call let through before the breaker opened: its outcome is old news.
            return inner.state;
        }
        inner.consecutive_failures = if success {
            0
        } else {
            inner.consecutive_failures + 1
        };
        inner.recent.push_back(success);
        while inner.recent.len() > self.config.window as usize {
            inner.recent.pop_front();
        }
        let failures = inner.recent.iter().filter(|ok| !**ok).count();
        let full = inner.recent.len() >= self.config.window as usize;
        let ratio_tripped =
            full && failures as f64 >= self.config.failure_ratio * inner.recent.len() as f64;
        if inner.consecutive_failures >= self.config.consecutive_failures || ratio_tripped {
            inner.state = State::Open;
            inner.opened_at_nanos = now;
        }
        inner.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn breaker(clock: &std::sync::Arc<ManualClock>) -> Breaker {
        Breaker::new(
            BreakerConfig {
                consecutive_failures: 3,
                failure_ratio: 0.5,
                window: 4,
                open_seconds: 10,
                half_open_probes: 1,
            },
            clock.clone(),
        )
    }

    #[test]
    fn opens_after_a_run_half_opens_with_one_probe_and_closes_on_success() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            let p = b.try_acquire().unwrap();
            b.record(p, false);
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.try_acquire().unwrap_err(), 10);
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "one probe at a time");
        assert_eq!(b.record(probe, false), State::Open);
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.record(probe, true), State::Closed);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn opens_on_the_failure_ratio() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for ok in [false, true, false, true] {
            let p = b.try_acquire().unwrap();
            b.record(p, ok);
        }
        assert_eq!(b.state(), State::Open, "2 of the last 4 failed");
    }
}
