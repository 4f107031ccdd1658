//! Metrics of the upstream side's resilience layers: credentials (IAM tokens, secret
//! reloads, lockout pauses), retries, the circuit breaker, the upstream quota and the negative
//! cache. Every series is labelled by the account's configured name (a bounded set) and,
//! where there is one, a reason from a fixed list.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::metrics::{counter_vec, gauge_vec};

/// Why a request was answered without calling the cloud.
pub const SHORT_CIRCUIT_REASONS: [&str; 5] = [
    "breaker_open",
    "credentials_paused",
    "throttle_backoff",
    "quota_exhausted",
    "no_token",
];

pub struct ResilienceMetrics {
    pub retries: IntCounterVec,
    pub short_circuits: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub credentials_paused: IntGaugeVec,
    pub quota_waits: IntCounterVec,
    pub iam_refreshes: IntCounterVec,
    pub iam_token_expiry: IntGaugeVec,
    pub secret_reloads: IntCounterVec,
    pub negative_cache_hits: IntCounterVec,
}

impl ResilienceMetrics {
    pub fn new(registry: &Registry, accounts: &[String]) -> ResilienceMetrics {
        let m = ResilienceMetrics {
            retries: counter_vec(
                registry,
                "bmsgw_upstream_retries_total",
                "BMS calls repeated after a transient failure (connect error, reset, 502/503/504, BMS.0212), by account.",
                &["account"],
            ),
            short_circuits: counter_vec(
                registry,
                "bmsgw_upstream_short_circuits_total",
                "Requests answered without calling the cloud, by account and reason (breaker_open, credentials_paused, throttle_backoff, quota_exhausted, no_token).",
                &["account", "reason"],
            ),
            breaker_state: gauge_vec(
                registry,
                "bmsgw_upstream_breaker_state",
                "Circuit breaker state per account endpoint (0 = primary, 1.. = fallbacks): 0 closed, 1 open, 2 half-open.",
                &["account", "endpoint"],
            ),
            credentials_paused: gauge_vec(
                registry,
                "bmsgw_upstream_credentials_paused",
                "1 while an account is paused after consecutive 401s (lockout protection).",
                &["account"],
            ),
            quota_waits: counter_vec(
                registry,
                "bmsgw_upstream_quota_waits_total",
                "Requests that waited for the account's upstream rate cap, by account and result (sent, refused).",
                &["account", "result"],
            ),
            iam_refreshes: counter_vec(
                registry,
                "bmsgw_iam_token_refreshes_total",
                "IAM token requests, by account and result (success, failure).",
                &["account", "result"],
            ),
            iam_token_expiry: gauge_vec(
                registry,
                "bmsgw_iam_token_expiry_timestamp_seconds",
                "Unix time at which the account's current IAM token expires (0 without one).",
                &["account"],
            ),
            secret_reloads: counter_vec(
                registry,
                "bmsgw_secret_reloads_total",
                "Secret files re-read after they changed, by account and result (success, failure: the old secret stays in use).",
                &["account", "result"],
            ),
            negative_cache_hits: counter_vec(
                registry,
                "bmsgw_negative_cache_hits_total",
                "Cloud errors answered from memory (BMS.0395, BMS.0040), by code.",
                &["code"],
            ),
        };
        for code in ["BMS.0395", "BMS.0040"] {
            m.negative_cache_hits.with_label_values(&[code]);
        }
        m.add_accounts(accounts);
        m
    }

    /// Creates the per-account series (at zero); a reload that adds an account calls this again.
    pub fn add_accounts(&self, accounts: &[String]) {
        for account in accounts {
            self.retries.with_label_values(&[account]);
            self.credentials_paused.with_label_values(&[account]);
            for reason in SHORT_CIRCUIT_REASONS {
                self.short_circuits.with_label_values(&[account, reason]);
            }
            for result in ["sent", "refused"] {
                self.quota_waits.with_label_values(&[account, result]);
            }
            for result in ["success", "failure"] {
                self.secret_reloads.with_label_values(&[account, result]);
                self.iam_refreshes.with_label_values(&[account, result]);
            }
        }
    }
}
