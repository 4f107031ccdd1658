//! The running gateway's shared state, built once from a validated [`Config`].
//!
//! Building it is where files outside the config are read (keys, secrets), so a config that
//! parses but names a missing key file fails here, with the same `PATH: key: problem` report,
//! both in `serve` and in `check-config`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Policy, Verifier};
use crate::cache::ConsoleCache;
use crate::clock::SharedClock;
use crate::config::{CacheScope, Config, ConfigError};
use crate::ratelimit::{LocalLimiter, Quota};
use crate::telemetry::audit::AuditLog;
use crate::telemetry::Metrics;
use crate::upstream::{Accounts, UpstreamClient};

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub verifier: Verifier,
    pub policy: Policy,
    pub limiter: LocalLimiter,
    pub default_quota: Quota,
    pub tier_quotas: HashMap<String, Quota>,
    pub cache: ConsoleCache,
    pub cache_scope: CacheScope,
    pub accounts: Accounts,
    pub upstream: UpstreamClient,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub body_read_timeout: Duration,
    /// True once everything is loaded; the admin `/readyz` reports it.
    pub ready: AtomicBool,
    /// Where a record of every console URL issued or refused goes.
    pub audit: AuditLog,
}

impl Gateway {
    /// Builds the state. `embedded_endpoint` is where the in-process simulator listens, when
    /// the config uses one.
    ///
    /// Identity providers' key sets are fetched here, so the gateway is never ready without
    /// them; their background refreshers stop when the `Gateway` is dropped.
    pub async fn build(
        config: &Config,
        clock: SharedClock,
        embedded_endpoint: Option<&str>,
    ) -> Result<Gateway, ConfigError> {
        let mut issues = Vec::new();
        let metrics = Arc::new(Metrics::new(
            &config
                .accounts
                .iter()
                .map(|a| a.name.clone())
                .collect::<Vec<_>>(),
        ));
        let verifier = Verifier::from_config(
            &config.auth,
            &config.base_dir,
            clock.clone(),
            metrics.clone(),
        )
        .map_err(|e| issues.extend(e))
        .ok();
        let accounts = Accounts::from_config(config, embedded_endpoint)
            .map_err(|e| issues.extend(e))
            .ok();
        let upstream = UpstreamClient::new(&config.upstream, &config.base_dir, metrics.clone())
            .map_err(|e| issues.push(crate::config::ConfigIssue::new("upstream.ca_file", e)))
            .ok();
        let audit = AuditLog::from_config(&config.audit, &config.base_dir, metrics.clone())
            .map_err(|e| issues.extend(e))
            .ok();
        let (Some(verifier), Some(accounts), Some(upstream), Some(audit)) =
            (verifier, accounts, upstream, audit)
        else {
            return Err(config.error(issues));
        };
        verifier
            .fetch_remote_keys()
            .await
            .map_err(|e| config.error(e))?;

        let default_quota = Quota::from_tier(&config.rate_limit.default_tier());
        let tier_quotas: HashMap<String, Quota> = config
            .rate_limit
            .tiers
            .iter()
            .map(|(name, tier)| (name.clone(), Quota::from_tier(tier)))
            .collect();
        let longest_tolerance = tier_quotas
            .values()
            .chain(std::iter::once(&default_quota))
            .map(Quota::tolerance_nanos)
            .max()
            .unwrap_or(0);

        Ok(Gateway {
            verifier,
            policy: Policy::from_config(&config.policy),
            limiter: LocalLimiter::new(
                clock.clone(),
                Duration::from_nanos(longest_tolerance),
                config.rate_limit.max_tracked_users,
            ),
            default_quota,
            tier_quotas,
            cache: ConsoleCache::new(
                Duration::from_secs(config.cache.ttl_seconds),
                config.cache.max_entries,
                clock.clone(),
            ),
            cache_scope: config.cache.scope,
            accounts,
            upstream,
            metrics,
            clock,
            body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            ready: AtomicBool::new(false),
            audit,
        })
    }

    /// The quota for a tier name (the default when the rule names none).
    pub fn quota_for(&self, tier: Option<&str>) -> Quota {
        tier.and_then(|t| self.tier_quotas.get(t))
            .copied()
            .unwrap_or(self.default_quota)
    }
}
