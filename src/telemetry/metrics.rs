//! The gateway's Prometheus metrics.
//!
//! Every collector lives in one [`Metrics`] value with its own registry, so several gateways in
//! one process (as in the tests) never share counters. Names carry the `bmsgw_` prefix and base
//! units; label values come from small fixed sets or from config (account names), never from
//! users, tokens or URLs.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::AuthFailure;

/// Latency buckets from 0.5 ms to 10 s: cache hits sit at the bottom, cloud calls in the middle.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub auth_failures: IntCounterVec,
    pub authz_denied: IntCounter,
    pub rate_limited: IntCounter,
    pub cache_requests: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub ready: IntGauge,
    pub build_info: IntGaugeVec,
    pub console_urls_issued: IntCounter,
    pub connections_open: IntGauge,
    pub connections_rejected: IntCounter,
    pub tls_certificate_expiry: IntGauge,
    pub tls_reloads: IntCounterVec,
    pub resilience: crate::telemetry::resilience::ResilienceMetrics,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    /// Creates every collector. `accounts` are the configured account names, so per-account
    /// series exist (at zero) from the first scrape.
    pub fn new(accounts: &[String]) -> Metrics {
        let registry = Registry::new();
        let http_requests = counter_vec(
            &registry,
            "bmsgw_http_requests_total",
            "Requests answered on the public listener, by route and status class.",
            &["route", "status_class"],
        );
        let http_duration = histogram_vec(
            &registry,
            "bmsgw_http_request_duration_seconds",
            "Time from request head received to response ready, by route.",
            &["route"],
        );
        let in_flight = IntGauge::new(
            "bmsgw_http_requests_in_flight",
            "Requests being handled on the public listener.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let auth_failures = counter_vec(
            &registry,
            "bmsgw_auth_failures_total",
            "Requests refused because the bearer token was missing or invalid, by reason.",
            &["reason"],
        );
        let authz_denied = counter(
            &registry,
            "bmsgw_authz_denied_total",
            "Authenticated requests the policy refused.",
        );
        let rate_limited = counter(
            &registry,
            "bmsgw_rate_limited_total",
            "Authenticated requests refused by the per-user rate limit.",
        );
        let cache_requests = counter_vec(
            &registry,
            "bmsgw_cache_requests_total",
            "Console-URL cache lookups by outcome: hit, miss (made the upstream call) or coalesced (waited for another request's call).",
            &["outcome"],
        );
        let upstream_requests = counter_vec(
            &registry,
            "bmsgw_upstream_requests_total",
            "Calls to the BMS API that got an HTTP answer, by account and status class.",
            &["account", "status_class"],
        );
        let upstream_duration = histogram_vec(
            &registry,
            "bmsgw_upstream_request_duration_seconds",
            "Duration of calls to the BMS API, by account.",
            &["account"],
        );
        let upstream_errors = counter_vec(
            &registry,
            "bmsgw_upstream_errors_total",
            "Calls to the BMS API that failed, by account and kind (connect, timeout, bad_response, credentials_rejected, throttled).",
            &["account", "kind"],
        );
        let ready = IntGauge::new(
            "bmsgw_ready",
            "1 when keys and credentials are loaded and the gateway serves requests.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(ready.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "bmsgw_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let console_urls_issued = counter(
            &registry,
            "bmsgw_console_urls_issued_total",
            "Console URLs handed to callers, from cache or upstream.",
        );
        let connections_open = gauge(
            &registry,
            "bmsgw_connections_open",
            "Connections open on the public listener.",
        );
        let connections_rejected = counter(
            &registry,
            "bmsgw_connections_rejected_total",
            "Connections closed on accept because server.max_connections were open.",
        );
        let tls_certificate_expiry = gauge(
            &registry,
            "bmsgw_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the public listener's certificate expires (0 without TLS).",
        );
        let tls_reloads = counter_vec(
            &registry,
            "bmsgw_tls_reloads_total",
            "Certificate reloads after the files changed, by result (success, failure).",
            &["result"],
        );
        for result in ["success", "failure"] {
            tls_reloads.with_label_values(&[result]);
        }

        for reason in AuthFailure::ALL {
            auth_failures.with_label_values(&[reason.label()]);
        }
        for outcome in ["hit", "miss", "coalesced"] {
            cache_requests.with_label_values(&[outcome]);
        }
        for account in accounts {
            upstream_duration.with_label_values(&[account]);
            for class in ["2xx", "4xx", "5xx"] {
                upstream_requests.with_label_values(&[account, class]);
            }
            for kind in [
                "connect",
                "timeout",
                "bad_response",
                "credentials_rejected",
                "throttled",
            ] {
                upstream_errors.with_label_values(&[account, kind]);
            }
        }
        http_duration.with_label_values(&["remote_console"]);

        let resilience = crate::telemetry::resilience::ResilienceMetrics::new(&registry, accounts);
        Metrics {
            registry,
            http_requests,
            http_duration,
            in_flight,
            auth_failures,
            authz_denied,
            rate_limited,
            cache_requests,
            upstream_requests,
            upstream_duration,
            upstream_errors,
            ready,
            build_info,
            console_urls_issued,
            connections_open,
            connections_rejected,
            tls_certificate_expiry,
            tls_reloads,
            resilience,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// An upstream-duration timer for one account.
    pub fn upstream_timer(&self, account: &str) -> Histogram {
        self.upstream_duration.with_label_values(&[account])
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
