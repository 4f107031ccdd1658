//! The gateway's Prometheus metrics.
//!
//! Every collector lives in one [`Metrics`] value with its own registry, so several gateways in
//! one process (as in the tests) never share counters. Names carry the `bmsgw_` prefix and base
//! units; label values come from small fixed sets or from config (account names), never from
//! users, tokens or URLs.

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
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
    pub tls_handshake_failures: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: IntGauge,
    pub redis_duration: HistogramVec,
    pub redis_errors: IntCounterVec,
    pub redis_fallback_active: IntGauge,
    pub redis_fallbacks: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
    pub jwks_fetches: IntCounterVec,
    pub jwks_key_set_age: IntGaugeVec,
    pub jwks_keys: IntGaugeVec,
    pub token_cache_requests: IntCounterVec,
    pub signature_verifications: IntCounter,
    pub audit_records: IntCounterVec,
    /// Seconds the runtime spent busy polling (`server.busy_poll_us`).
    pub busy_poll_seconds: Counter,
    pub resilience: crate::telemetry::resilience::ResilienceMetrics,
    /// Series every served request touches, resolved once.
    hot: HotSeries,
}

/// Children of labelled metrics that every request served from the caches touches, looked up
/// once: `with_label_values` hashes the labels and takes the family's lock on every call.
struct HotSeries {
    token_cache_hit: IntCounter,
    token_cache_miss: IntCounter,
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    console_2xx: IntCounter,
    console_duration: Histogram,
    /// `bmsgw_rate_limit_decisions_total`, by backend (`local`, `redis`) then result
    /// (`allowed`, `limited`).
    rate_limit: [[IntCounter; 2]; 2],
}

/// `metric`, registered: every collector of the gateway is made through this.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

pub(super) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    registered(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Redis round trips on a healthy network take well under a millisecond; the top buckets show
/// calls that ran into `redis.timeout_ms`.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub(super) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    registered(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    registered(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
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
        let in_flight = gauge(
            &registry,
            "bmsgw_http_requests_in_flight",
            "Requests being handled on the public listener.",
        );
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
        let ready = gauge(
            &registry,
            "bmsgw_ready",
            "1 when keys and credentials are loaded and the gateway serves requests.",
        );
        let build_info = gauge_vec(
            &registry,
            "bmsgw_build_info",
            "Build information; the value is always 1.",
            &["version"],
        );
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
        let tls_handshake_failures = counter(
            &registry,
            "bmsgw_tls_handshake_failures_total",
            "TLS handshakes on the public listener that failed or timed out (untrusted or expired client certificates among them).",
        );
        let config_reloads = counter_vec(
            &registry,
            "bmsgw_config_reloads_total",
            "Config reloads (SIGHUP or POST /-/reload) by result: success, or failure (the old config keeps running).",
            &["result"],
        );
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        let busy_poll_seconds = registered(
            &registry,
            Counter::new(
                "bmsgw_busy_poll_seconds_total",
                "Time the runtime spent polling its sockets instead of sleeping between requests (server.busy_poll_us; 0 when off).",
            )
            .expect("valid metric"),
        );
        let config_last_reload_success = gauge(
            &registry,
            "bmsgw_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (start-up or reload).",
        );

        let redis_duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "bmsgw_redis_command_duration_seconds",
                    "Duration of calls to the shared Redis, by command (rate_limit, cache_read, cache_store, cache_unlock, ping); timed-out calls count at the timeout.",
                )
                .buckets(REDIS_BUCKETS.to_vec()),
                &["command"],
            )
            .expect("valid metric"),
        );
        for command in [
            "rate_limit",
            "cache_read",
            "cache_store",
            "cache_unlock",
            "ping",
        ] {
            redis_duration.with_label_values(&[command]);
        }
        let redis_errors = counter_vec(
            &registry,
            "bmsgw_redis_errors_total",
            "Failed calls to the shared Redis, by kind (timeout, connection, auth, server, decode).",
            &["kind"],
        );
        for kind in crate::shared::StoreError::CALL_FAULTS {
            redis_errors.with_label_values(&[kind.label()]);
        }
        let redis_fallback_active = gauge(
            &registry,
            "bmsgw_redis_fallback_active",
            "1 while the shared Redis is treated as unavailable and redis.fallback applies.",
        );
        let redis_fallbacks = counter_vec(
            &registry,
            "bmsgw_redis_fallbacks_total",
            "Requests that could not use the shared Redis, by component (rate_limit, cache) and the fallback applied (local, deny).",
            &["component", "action"],
        );
        for component in ["rate_limit", "cache"] {
            for action in ["local", "deny"] {
                redis_fallbacks.with_label_values(&[component, action]);
            }
        }
        let rate_limit_decisions = counter_vec(
            &registry,
            "bmsgw_rate_limit_decisions_total",
            "Rate-limit decisions by the backend that made them (local, redis) and result (allowed, limited).",
            &["backend", "result"],
        );
        for backend in ["local", "redis"] {
            for result in ["allowed", "limited"] {
                rate_limit_decisions.with_label_values(&[backend, result]);
            }
        }
        cache_requests.with_label_values(&["shared_hit"]);

        let jwks_fetches = counter_vec(
            &registry,
            "bmsgw_jwks_fetches_total",
            "JWKS (and discovery) fetches from identity providers, by issuer and result (success, failure).",
            &["issuer", "result"],
        );
        let jwks_key_set_age = gauge_vec(
            &registry,
            "bmsgw_jwks_key_set_age_seconds",
            "Seconds since the issuer's key set was last fetched successfully.",
            &["issuer"],
        );
        let jwks_keys = gauge_vec(
            &registry,
            "bmsgw_jwks_keys",
            "Keys in the issuer's fetched key set.",
            &["issuer"],
        );
        let token_cache_requests = counter_vec(
            &registry,
            "bmsgw_token_cache_requests_total",
            "Verified-token cache lookups by outcome (hit: signature check skipped, miss).",
            &["outcome"],
        );
        let signature_verifications = counter(
            &registry,
            "bmsgw_token_signature_verifications_total",
            "Token signatures checked (cache hits skip the check).",
        );
        let audit_records = counter_vec(
            &registry,
            "bmsgw_audit_records_total",
            "Audit records by result: written, dropped (queue full) or failed (the sink refused the write).",
            &["result"],
        );
        for outcome in ["hit", "miss"] {
            token_cache_requests.with_label_values(&[outcome]);
        }
        for result in ["written", "dropped", "failed"] {
            audit_records.with_label_values(&[result]);
        }

        for reason in AuthFailure::ALL {
            auth_failures.with_label_values(&[reason.label()]);
        }
        for outcome in ["hit", "miss", "coalesced"] {
            cache_requests.with_label_values(&[outcome]);
        }
        http_duration.with_label_values(&["remote_console"]);

        let resilience = crate::telemetry::resilience::ResilienceMetrics::new(&registry, accounts);
        let hot = HotSeries {
            token_cache_hit: token_cache_requests.with_label_values(&["hit"]),
            token_cache_miss: token_cache_requests.with_label_values(&["miss"]),
            cache_hit: cache_requests.with_label_values(&["hit"]),
            cache_miss: cache_requests.with_label_values(&["miss"]),
            console_2xx: http_requests.with_label_values(&["remote_console", "2xx"]),
            console_duration: http_duration.with_label_values(&["remote_console"]),
            rate_limit: ["local", "redis"].map(|backend| {
                ["allowed", "limited"]
                    .map(|result| rate_limit_decisions.with_label_values(&[backend, result]))
            }),
        };
        let metrics = Metrics {
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
            tls_handshake_failures,
            config_reloads,
            config_last_reload_success,
            redis_duration,
            redis_errors,
            redis_fallback_active,
            redis_fallbacks,
            rate_limit_decisions,
            jwks_fetches,
            jwks_key_set_age,
            jwks_keys,
            token_cache_requests,
            signature_verifications,
            audit_records,
            busy_poll_seconds,
            resilience,
            hot,
        };
        metrics.add_accounts(accounts);
        metrics
    }

    /// Creates the per-account series (at zero) for these accounts, so they show from the
    /// first scrape; a reload that adds an account calls this again.
    pub fn add_accounts(&self, accounts: &[String]) {
        self.resilience.add_accounts(accounts);
        for account in accounts {
            self.upstream_duration.with_label_values(&[account]);
            for class in ["2xx", "4xx", "5xx"] {
                self.upstream_requests.with_label_values(&[account, class]);
            }
            for kind in [
                "connect",
                "timeout",
                "bad_response",
                "credentials_rejected",
                "throttled",
            ] {
                self.upstream_errors.with_label_values(&[account, kind]);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Counts a verified-token cache lookup (`hit` skipped the signature check).
    pub fn count_token_cache(&self, hit: bool) {
        if hit {
            self.hot.token_cache_hit.inc();
        } else {
            self.hot.token_cache_miss.inc();
        }
    }

    /// Counts a console-URL cache lookup by its outcome label.
    pub fn count_cache_request(&self, outcome: &str) {
        match outcome {
            "hit" => self.hot.cache_hit.inc(),
            "miss" => self.hot.cache_miss.inc(),
            other => self.cache_requests.with_label_values(&[other]).inc(),
        }
    }

    /// Counts a rate-limit decision made by the local limiter or by Redis.
    pub fn count_rate_limit_decision(&self, by_redis: bool, allowed: bool) {
        self.hot.rate_limit[usize::from(by_redis)][usize::from(!allowed)].inc();
    }

    /// Counts an answered request and its duration.
    pub fn count_http_request(&self, route: &str, status: u16, seconds: f64) {
        let class = status_class(status);
        if route == "remote_console" {
            self.hot.console_duration.observe(seconds);
            if class == "2xx" {
                self.hot.console_2xx.inc();
                return;
            }
        } else {
            self.http_duration
                .with_label_values(&[route])
                .observe(seconds);
        }
        self.http_requests.with_label_values(&[route, class]).inc();
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
