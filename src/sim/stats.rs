//! What the simulator has seen, so tests can assert on the upstream side of the gateway.
//!
//! Counting rules (API route = `POST /v1/{project}/baremetalservers/{server}/remote_console`;
//! control endpoints and unknown paths are not counted):
//! - `requests_total`: every request to the API route, counted on arrival.
//! - `remote_console_ok`: answers `200` with a console URL (a broken `200` that a fault
//!   injected counts as an error).
//! - `remote_console_errors`: every other outcome, including injected faults and dropped
//!   connections, so `requests_total == remote_console_ok + remote_console_errors` once no
//!   request is in flight.
//! - `auth_failures`: the `401 APIGW.0301` answers (also counted as errors).
//! - `faults_injected`: one per knob that fired, so a delayed-then-throttled request counts 2.
//! - `bad_signatures`: `401` answers to AK/SK requests whose signature (or key) was wrong.
//! - `throttled`: `429 APIGW.0308` answers of the per-account limit (not the rate knob).
//! - `iam_token_requests` / `iam_tokens_issued`: calls to `POST /v3/auth/tokens`, and the
//!   tokens it handed out.
//! - `max_consecutive_bad_signatures` / `ak_lockouts`: the longest run of bad signatures any
//!   AK reached, and how many AKs got locked (5 in a row locks one).
//! - `connections_accepted`: TCP connections accepted on any route, so a test can tell a
//!   reused connection from a new one.
//! - `last_request_headers`: the lower-case header names (sorted, deduplicated) of the last
//!   API request, to assert what a gateway did or did not forward. Names only, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// A snapshot of the counters (see the module docs for what each counts).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SimStats {
    pub requests_total: u64,
    pub remote_console_ok: u64,
    pub remote_console_errors: u64,
    pub auth_failures: u64,
    pub faults_injected: u64,
    pub last_request_headers: Vec<String>,
    #[serde(default)]
    pub bad_signatures: u64,
    #[serde(default)]
    pub throttled: u64,
    #[serde(default)]
    pub iam_token_requests: u64,
    #[serde(default)]
    pub iam_tokens_issued: u64,
    #[serde(default)]
    pub max_consecutive_bad_signatures: u64,
    #[serde(default)]
    pub ak_lockouts: u64,
    #[serde(default)]
    pub connections_accepted: u64,
}

/// The live counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests_total: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    auth_failures: AtomicU64,
    faults_injected: AtomicU64,
    bad_signatures: AtomicU64,
    throttled: AtomicU64,
    connections: AtomicU64,
    last_request_headers: Mutex<Vec<String>>,
}

impl Counters {
    /// An API request arrived with these header names.
    pub(crate) fn request<'a>(&self, header_names: impl Iterator<Item = &'a str>) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let mut names: Vec<String> = header_names.map(str::to_ascii_lowercase).collect();
        names.sort();
        names.dedup();
        // A panic elsewhere while holding the lock leaves a Vec that is still valid.
        *self
            .last_request_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = names;
    }

    pub(crate) fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_signature(&self) {
        self.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fault(&self) {
        self.faults_injected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        SimStats {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            remote_console_ok: self.ok.load(Ordering::Relaxed),
            remote_console_errors: self.errors.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            faults_injected: self.faults_injected.load(Ordering::Relaxed),
            bad_signatures: self.bad_signatures.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            connections_accepted: self.connections.load(Ordering::Relaxed),
            last_request_headers: self
                .last_request_headers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ..SimStats::default()
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests_total,
            &self.ok,
            &self.errors,
            &self.auth_failures,
            &self.faults_injected,
            &self.bad_signatures,
            &self.throttled,
            &self.connections,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.last_request_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_snapshot_and_reset() {
        let c = Counters::default();
        c.request(["X-B", "x-a", "X-A"].into_iter());
        c.ok();
        c.request(["Host"].into_iter());
        c.error();
        c.auth_failure();
        c.fault();
        c.connection();
        let s = c.snapshot();
        assert_eq!(
            (
                s.requests_total,
                s.remote_console_ok,
                s.remote_console_errors
            ),
            (2, 1, 1)
        );
        assert_eq!((s.auth_failures, s.faults_injected), (1, 1));
        assert_eq!(s.connections_accepted, 1);
        assert_eq!(s.last_request_headers, vec!["host"]);
        c.reset();
        assert_eq!(c.snapshot(), SimStats::default());
    }
}
