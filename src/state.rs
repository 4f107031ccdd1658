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
use crate::cache::{ConsoleCache, NegativeCache};
use crate::clock::SharedClock;
use crate::config::{Backend, CacheScope, Config, ConfigError, ConfigIssue};
use crate::ratelimit::{Limiter, LocalLimiter, Quota, RedisLimiter};
use crate::secret::SecretRef;
use crate::shared::seal::Sealer;
use crate::shared::{RedisStore, SharedCacheTier};
use crate::telemetry::audit::AuditLog;
use crate::telemetry::Metrics;
use crate::upstream::accounts::AccountDeps;
use crate::upstream::{Accounts, UpstreamClient};

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub verifier: Verifier,
    pub policy: Policy,
    pub limiter: Limiter,
    pub default_quota: Quota,
    pub tier_quotas: HashMap<String, Quota>,
    pub cache: ConsoleCache,
    pub cache_scope: CacheScope,
    pub accounts: Arc<Accounts>,
    pub upstream: UpstreamClient,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub body_read_timeout: Duration,
    /// True once everything is loaded; the admin `/readyz` reports it.
    pub ready: AtomicBool,
    /// Longest request line accepted (`server.max_request_line_bytes`).
    pub max_request_line_bytes: usize,
    /// The shared Redis, when a backend uses it.
    pub redis: Option<Arc<RedisStore>>,
    /// Where a record of every console URL issued or refused goes.
    pub audit: AuditLog,
    /// Remembered `BMS.0395` / `BMS.0040` answers.
    pub negative_cache: NegativeCache,
    /// Background tasks (IAM refreshers, the secret poller), aborted when the gateway is
    /// dropped, so a config reload that builds a new `Gateway` never leaks them.
    pub background: BackgroundTasks,
    secret_reload_interval: Duration,
    iam_check_interval: Duration,
}

/// Abort handles of the tasks a [`Gateway`] owns; dropping this aborts them all.
#[derive(Default)]
pub struct BackgroundTasks(std::sync::Mutex<Vec<tokio::task::AbortHandle>>);

impl BackgroundTasks {
    fn push(&self, handle: tokio::task::AbortHandle) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Handles on the tasks (to watch them end, in tests).
    pub fn handles(&self) -> Vec<tokio::task::AbortHandle> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many tasks are registered (for tests).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl Gateway {
    /// Builds the state. `embedded_endpoint` is where the in-process simulator listens, when
    /// the config uses one.
    ///
    /// Identity providers' key sets are fetched here, so the gateway is never ready without
    /// them; their background refreshers stop when the `Gateway` is dropped. A runnable gateway
    /// also needs [`Gateway::start_background`] (first IAM tokens, refreshers, the secret
    /// poller), which a config reload calls on the new `Gateway` before swapping it in.
    pub async fn build(
        config: &Config,
        clock: SharedClock,
        embedded_endpoint: Option<&str>,
    ) -> Result<Gateway, ConfigError> {
        let metrics = Arc::new(Metrics::new(&account_names(config)));
        Gateway::build_with_metrics(config, clock, embedded_endpoint, metrics).await
    }

    /// Like [`Gateway::build`], but counting into existing metrics: a reload builds the new
    /// gateway this way, so counters continue instead of starting again at zero.
    pub async fn build_with_metrics(
        config: &Config,
        clock: SharedClock,
        embedded_endpoint: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<Gateway, ConfigError> {
        metrics.add_accounts(&account_names(config));
        let mut issues = Vec::new();
        let policy = Policy::from_config(&config.policy);
        let verifier = Verifier::from_config(
            &config.auth,
            &config.base_dir,
            clock.clone(),
            metrics.clone(),
        )
        .map(|verifier| verifier.keeping_only_claims(policy.claim_names()))
        .map_err(|e| issues.extend(e))
        .ok();
        let upstream = UpstreamClient::new(&config.upstream, &config.base_dir, metrics.clone())
            .map_err(|e| issues.push(crate::config::ConfigIssue::new("upstream", e)))
            .ok();
        let accounts = upstream.as_ref().and_then(|upstream| {
            Accounts::from_config(
                config,
                AccountDeps {
                    embedded_endpoint,
                    clock: clock.clone(),
                    http: upstream.http(),
                    metrics: metrics.clone(),
                },
            )
            .map_err(|e| issues.extend(e))
            .ok()
        });
        let shared = SharedBackends::build(config, &metrics, &clock)
            .map_err(|e| issues.extend(e))
            .ok();
        let audit = AuditLog::from_config(&config.audit, &config.base_dir, metrics.clone())
            .map_err(|e| issues.extend(e))
            .ok();
        let (Some(verifier), Some(accounts), Some(upstream), Some(shared), Some(audit)) =
            (verifier, accounts, upstream, shared, audit)
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

        Ok(Gateway {
            verifier,
            policy,
            limiter: Limiter::new(
                LocalLimiter::new(clock.clone(), config.rate_limit.max_tracked_users),
                shared.limiter,
                metrics.clone(),
            ),
            default_quota,
            tier_quotas,
            cache: ConsoleCache::with_shared_tier(
                Duration::from_secs(config.cache.ttl_seconds),
                config.cache.max_entries,
                clock.clone(),
                shared.cache_tier,
            ),
            cache_scope: config.cache.scope,
            negative_cache: NegativeCache::new(
                Duration::from_secs(config.cache.windows_seconds),
                Duration::from_secs(config.cache.not_found_seconds),
                config.cache.max_entries,
                clock.clone(),
            ),
            accounts: Arc::new(accounts),
            upstream,
            metrics,
            clock,
            body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            ready: AtomicBool::new(false),
            max_request_line_bytes: config.server.max_request_line_bytes,
            redis: shared.store,
            audit,
            background: BackgroundTasks::default(),
            secret_reload_interval: Duration::from_millis(
                config.upstream.secret_reload_interval_ms,
            ),
            iam_check_interval: Duration::from_millis(config.upstream.iam.check_interval_ms),
        })
    }

    /// Fetches the first IAM tokens and starts the background tasks (call inside a tokio
    /// runtime, once). The tasks end when this gateway is dropped.
    pub async fn start_background(&self) {
        self.accounts.prime_tokens().await;
        for (_, source) in self.accounts.iam_sources() {
            self.background.push(crate::upstream::iam::spawn_refresher(
                source,
                self.iam_check_interval,
            ));
        }
        self.background
            .push(crate::upstream::accounts::spawn_secret_poller(
                &self.accounts,
                self.secret_reload_interval,
            ));
    }

    /// True when every account has usable credentials (IAM accounts: a valid token).
    pub fn upstream_ready(&self) -> bool {
        self.accounts.credentials_ready()
    }

    /// The quota for a tier name (the default when the rule names none).
    pub fn quota_for(&self, tier: Option<&str>) -> Quota {
        tier.and_then(|t| self.tier_quotas.get(t))
            .copied()
            .unwrap_or(self.default_quota)
    }
}

fn account_names(config: &Config) -> Vec<String> {
    config.accounts.iter().map(|a| a.name.clone()).collect()
}

/// The Redis-backed parts the config asks for (none with the `local` backends).
struct SharedBackends {
    store: Option<Arc<RedisStore>>,
    limiter: Option<RedisLimiter>,
    cache_tier: Option<Arc<SharedCacheTier>>,
}

impl SharedBackends {
    fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        clock: &SharedClock,
    ) -> Result<SharedBackends, Vec<ConfigIssue>> {
        let limit_in_redis = config.rate_limit.backend == Backend::Redis;
        let cache_in_redis = config.cache.backend == Backend::Redis && config.cache.ttl_seconds > 0;
        let (Some(redis), true) = (&config.redis, limit_in_redis || cache_in_redis) else {
            return Ok(SharedBackends {
                store: None,
                limiter: None,
                cache_tier: None,
            });
        };
        // Both are checked, so one run of check-config reports every missing secret.
        let sealer = match (cache_in_redis, &config.cache.encryption_key) {
            (true, Some(reference)) => SecretRef::parse(reference)
                .and_then(|r| r.resolve(&config.base_dir))
                .and_then(|material| Sealer::new(&material))
                .map(Some)
                .map_err(|e| vec![ConfigIssue::new("cache.encryption_key", e)]),
            _ => Ok(None),
        };
        let store =
            RedisStore::from_config(redis, &config.base_dir, metrics.clone(), clock.clone());
        let (sealer, store) = match (sealer, store) {
            (Ok(sealer), Ok(store)) => (sealer, Arc::new(store)),
            (sealer, store) => {
                let mut issues = sealer.err().unwrap_or_default();
                issues.extend(store.err().unwrap_or_default());
                return Err(issues);
            }
        };
        Ok(SharedBackends {
            limiter: limit_in_redis.then(|| RedisLimiter::new(store.clone())),
            cache_tier: sealer.map(|sealer| {
                Arc::new(SharedCacheTier::new(
                    store.clone(),
                    sealer,
                    Duration::from_secs(config.cache.ttl_seconds),
                    Duration::from_millis(config.upstream.timeout_ms),
                ))
            }),
            store: Some(store),
        })
    }
}
