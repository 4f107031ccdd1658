//! The connection to the shared Redis, and what happens when Redis misbehaves.
//!
//! One [`RedisStore`] per gateway holds one multiplexed connection (redis-rs's
//! `ConnectionManager`: every request pipelines over it, and it reconnects by itself after
//! the connection drops). Every call goes through [`RedisStore::call`], which
//!
//! - bounds it by `redis.timeout_ms`, so a slow or paused Redis costs a request at most that;
//! - records its latency and, on failure, the kind of fault;
//! - keeps the store's health: after a fault Redis is left alone for `redis.retry_interval_ms`
//!   (on the injected clock) and callers go straight to the fallback, then exactly one request
//!   probes it again, and the first success brings the shared state back. The transitions, not
//!   every request, are logged, and `bmsgw_redis_fallback_active` shows the state.
//!
//! The connection is created lazily (building the store opens no socket, so `check-config`
//! stays offline) and [`RedisStore::warm_up`] opens it at start-up.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, RedisError, RedisResult};

use crate::clock::SharedClock;
use crate::config::{ConfigIssue, RedisConfig, RedisFallback};
use crate::secret::SecretRef;
use crate::telemetry::Metrics;

/// Why a Redis call did not produce an answer. Each is a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within `redis.timeout_ms`.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// Redis refused the credentials.
    Auth,
    /// Redis answered with an error (out of memory, read-only replica, script error, ...).
    Server,
    /// The answer did not have the expected shape, or a stored value did not decrypt.
    Decode,
    /// Not tried: Redis failed recently and is left alone until the next probe.
    Unavailable,
}

impl StoreError {
    pub fn label(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Auth => "auth",
            StoreError::Server => "server",
            StoreError::Decode => "decode",
            StoreError::Unavailable => "unavailable",
        }
    }

    /// The labels `bmsgw_redis_errors_total` can carry (`unavailable` is not a call).
    pub const CALL_FAULTS: [StoreError; 5] = [
        StoreError::Timeout,
        StoreError::Connection,
        StoreError::Auth,
        StoreError::Server,
        StoreError::Decode,
    ];

    fn classify(error: &RedisError) -> StoreError {
        match error.kind() {
            ErrorKind::AuthenticationFailed => StoreError::Auth,
            ErrorKind::Io if error.is_timeout() => StoreError::Timeout,
            ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => StoreError::Connection,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Decode,
            _ if error.is_connection_dropped() || error.is_connection_refusal() => {
                StoreError::Connection
            }
            _ if error.to_string().contains("NOAUTH")
                || error.to_string().contains("WRONGPASS") =>
            {
                StoreError::Auth
            }
            _ => StoreError::Server,
        }
    }
}

/// Checks a `redis.url` without opening anything. The message never repeats the URL, which
/// could hold a password by mistake.
pub fn check_url(url: &str) -> Result<(), String> {
    const SHAPE: &str = "must be redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB] (TLS)";
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(SHAPE.into());
    }
    let info = url.into_connection_info().map_err(|_| SHAPE.to_string())?;
    let settings = info.redis_settings();
    if settings.password().is_some() || settings.username().is_some() {
        return Err(
            "must not hold credentials: set redis.username, and redis.password to a secret reference (env:NAME or file:PATH)"
                .into(),
        );
    }
    Ok(())
}

/// The shared Redis, with its timeouts, health and metrics.
pub struct RedisStore {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    timeout: Duration,
    connect_timeout: Duration,
    prefix: String,
    fallback: RedisFallback,
    health: Health,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl RedisStore {
    /// Resolves the password and CA file and prepares the client; opens no socket.
    pub fn from_config(
        config: &RedisConfig,
        base_dir: &Path,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Result<RedisStore, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| vec![ConfigIssue::new("redis.url", "cannot be parsed")])?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(reference) = &config.password {
            match SecretRef::parse(reference).and_then(|r| r.resolve(base_dir)) {
                Ok(password) => settings = settings.set_password(password.expose()),
                Err(e) => issues.push(ConfigIssue::new("redis.password", e)),
            }
        }
        info = info.set_redis_settings(settings);
        let root_cert = match &config.ca_file {
            None => None,
            Some(path) => {
                let path = base_dir.join(path);
                match std::fs::read(&path) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        issues.push(ConfigIssue::new(
                            "redis.ca_file",
                            format!("cannot read {}: {e}", path.display()),
                        ));
                        None
                    }
                }
            }
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        let client = match root_cert {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| vec![ConfigIssue::new("redis", one_line_error(&e))])?;
        metrics.redis_fallback_active.set(0);
        Ok(RedisStore {
            client,
            manager: OnceLock::new(),
            timeout: Duration::from_millis(config.timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            prefix: config.key_prefix.clone(),
            fallback: config.fallback,
            health: Health::new(Duration::from_millis(config.retry_interval_ms)),
            metrics,
            clock,
        })
    }

    /// What requests get while Redis is unavailable.
    pub fn fallback(&self) -> RedisFallback {
        self.fallback
    }

    /// True while Redis is treated as unavailable.
    pub fn is_degraded(&self) -> bool {
        self.health.down.load(Ordering::Acquire)
    }

    /// A key under the configured prefix: `{prefix}{kind}:{id}`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// Opens the connection (within `redis.connect_timeout_ms`) so the first requests do not
    /// pay for it. A failure is logged and starts the fallback; it never stops start-up.
    pub async fn warm_up(&self) {
        let result = self
            .call_within("ping", self.connect_timeout, |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
        if result.is_ok() {
            tracing::info!("connected to Redis");
        }
    }

    /// Runs one Redis operation within `redis.timeout_ms`. `command` names it in metrics.
    pub async fn call<T, Fut>(
        &self,
        command: &'static str,
        run: impl FnOnce(ConnectionManager) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_within(command, self.timeout, run).await
    }

    async fn call_within<T, Fut>(
        &self,
        command: &'static str,
        budget: Duration,
        run: impl FnOnce(ConnectionManager) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.health.may_try(self.clock.monotonic_nanos()) {
            return Err(StoreError::Unavailable);
        }
        let manager = self.manager()?;
        let timer = self
            .metrics
            .redis_duration
            .with_label_values(&[command])
            .start_timer();
        let result = match tokio::time::timeout(budget, run(manager)).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::classify(&e)),
            Ok(Ok(value)) => Ok(value),
        };
        timer.observe_duration();
        match &result {
            Ok(_) => {
                if self.health.succeeded() {
                    self.metrics.redis_fallback_active.set(0);
                    tracing::info!("Redis answers again; shared rate limits and cache are back");
                }
            }
            Err(e) => self.fault(command, *e),
        }
        result
    }

    /// The gateway's metrics (the fallback counters live there).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts an error that says nothing about Redis's health (a value that does not open).
    pub fn count_error(&self, error: StoreError) {
        self.metrics
            .redis_errors
            .with_label_values(&[error.label()])
            .inc();
    }

    /// Counts a failed call and, when it starts an outage, says so.
    pub fn fault(&self, command: &'static str, error: StoreError) {
        self.count_error(error);
        if self.health.failed(self.clock.monotonic_nanos()) {
            self.metrics.redis_fallback_active.set(1);
            tracing::warn!(
                command,
                error = error.label(),
                fallback = match self.fallback {
                    RedisFallback::Local => "local",
                    RedisFallback::Deny => "deny",
                },
                "Redis unavailable; applying the fallback until it answers again"
            );
        }
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        // Our own timeout bounds every call; redis-rs's only has to bound connecting. Retries
        // are few and quick because the health probe, not the manager, paces reconnecting.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::classify(&e))?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

/// Up or down, and when a down store may be probed again.
struct Health {
    down: AtomicBool,
    /// Monotonic nanoseconds (injected clock) from which the next probe may run.
    retry_at: AtomicU64,
    interval_nanos: u64,
}

impl Health {
    fn new(interval: Duration) -> Health {
        Health {
            down: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            interval_nanos: interval.as_nanos() as u64,
        }
    }

    /// Up: always. Down: only the one caller that claims the probe once the interval passed.
    fn may_try(&self, now: u64) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let at = self.retry_at.load(Ordering::Acquire);
        now >= at
            && self
                .retry_at
                .compare_exchange(
                    at,
                    now.saturating_add(self.interval_nanos),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Returns true when this success ended an outage.
    fn succeeded(&self) -> bool {
        self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel)
    }

    /// Returns true when this failure started an outage.
    fn failed(&self, now: u64) -> bool {
        self.retry_at
            .store(now.saturating_add(self.interval_nanos), Ordering::Release);
        !self.down.swap(true, Ordering::AcqRel)
    }
}

/// redis-rs errors can span lines; config reports are one line each.
fn one_line_error(error: &RedisError) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A short, fixed-length, non-reversible name for a user or cache key inside a Redis key:
/// keys stay bounded whatever the subject looks like, and `SCAN` shows no user names.
pub fn digest(text: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    crate::hex::lower(&hash.as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_redis_and_carry_no_credentials() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://redis.example.com:6380").is_ok());
        assert!(check_url("http://127.0.0.1:6379").is_err());
        let err = check_url("redis://:hunter2@127.0.0.1:6379").unwrap_err();
        assert!(!err.contains("hunter2"));
        assert!(err.contains("redis.password"));
    }

    #[test]
    fn a_down_store_is_probed_by_one_caller_per_interval() {
        let health = Health::new(Duration::from_secs(1));
        assert!(health.may_try(0));
        assert!(health.failed(0), "the first failure starts an outage");
        assert!(!health.failed(0), "later ones do not");
        assert!(!health.may_try(999_999_999));
        assert!(health.may_try(1_000_000_000), "the probe");
        assert!(
            !health.may_try(1_000_000_000),
            "only one probe per interval"
        );
        assert!(health.succeeded());
        assert!(!health.succeeded());
        assert!(health.may_try(1_000_000_001));
    }
}
