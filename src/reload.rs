//! Config reload: `SIGHUP` or `POST /-/reload` builds a new [`Gateway`] from the re-read config
//! file and swaps it in whole.
//!
//! The swap is one atomic pointer store ([`ArcSwap`]). Each request takes its own `Arc` of the
//! gateway current when it started and keeps it to the end, so requests in flight finish on the
//! old gateway, new requests see the new one, and no connection is touched. The old gateway
//! (with whatever background tasks it owns) is dropped when its last request finishes.
//!
//! A config that does not load or build is rejected: the old gateway keeps serving, and the
//! problem is logged and counted in `bmsgw_config_reloads_total{result="failure"}`.
//!
//! What a reload changes: keys, issuers, policy, rate limits (local limiter state starts afresh),
//! cache settings (the cache starts empty), accounts and their secrets, upstream settings and
//! `server.body_read_timeout_ms` / `server.max_request_line_bytes`. What it does not change: the
//! listeners (`listen`, `admin_listen`, `tls`), the connection settings read when they were
//! bound (limits, timeouts, drain), logging, tracing export, and the embedded simulator.
//! Changed `server.*` values are ignored with a warning naming them; they take a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, ServerConfig};
use crate::state::Gateway;

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config does not load or build; the old one keeps running.
    #[error("{0}")]
    Invalid(ConfigError),
    /// The gateway was started from config text, not a file, so there is nothing to re-read.
    #[error("the gateway was not started from a config file")]
    NoConfigFile,
    /// The gateway is draining for shutdown.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Owns the current gateway and replaces it on reload.
pub struct Reloader {
    current: Arc<ArcSwap<Gateway>>,
    config_path: Option<PathBuf>,
    clock: SharedClock,
    embedded_endpoint: Option<String>,
    /// The server settings the listeners were started with.
    running_server: ServerConfig,
    /// One reload at a time: two concurrent reloads would race to the swap.
    serial: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
}

impl Reloader {
    pub fn new(
        gateway: Arc<Gateway>,
        config: &Config,
        clock: SharedClock,
        embedded_endpoint: Option<String>,
    ) -> Reloader {
        Reloader {
            current: Arc::new(ArcSwap::new(gateway)),
            config_path: config.path.clone(),
            clock,
            embedded_endpoint,
            running_server: config.server.clone(),
            serial: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The gateway new requests should use. Hold the `Arc` for the whole request.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Re-reads the config file and swaps in a gateway built from it.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let Some(path) = &self.config_path else {
            return Err(ReloadError::NoConfigFile);
        };
        let loaded = Config::load(path);
        self.finish(loaded).await
    }

    /// Swaps in a gateway built from `config` (tests hand configs over directly).
    pub async fn apply(&self, config: Config) -> Result<(), ReloadError> {
        self.finish(Ok(config)).await
    }

    async fn finish(&self, loaded: Result<Config, ConfigError>) -> Result<(), ReloadError> {
        let _one_at_a_time = self.serial.lock().await;
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ReloadError::ShuttingDown);
        }
        let old = self.current();
        let built = match loaded {
            Ok(config) => Gateway::build_with_metrics(
                &config,
                self.clock.clone(),
                self.embedded_endpoint.as_deref(),
                old.metrics.clone(),
            )
            .await
            .map(|gateway| (config, gateway)),
            Err(e) => Err(e),
        };
        let (config, gateway) = match built {
            Ok(ok) => ok,
            Err(e) => {
                old.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(
                    problems = %e,
                    "config reload rejected; the previous config keeps running"
                );
                return Err(ReloadError::Invalid(e));
            }
        };
        let ignored = restart_only_changes(&self.running_server, &config.server);
        if !ignored.is_empty() {
            tracing::warn!(
                keys = ?ignored,
                "config reload: these settings only take effect on restart and were ignored"
            );
        }
        // Ready before the swap: first IAM tokens, refreshers and the secret poller running, and
        // Redis connected, so requests never wait for the new gateway to get going.
        gateway.start_background().await;
        if let Some(redis) = &gateway.redis {
            redis.warm_up().await;
        }
        gateway
            .ready
            .store(old.ready.load(Ordering::Acquire), Ordering::Release);
        self.current.store(Arc::new(gateway));
        let metrics = &old.metrics;
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics
            .config_last_reload_success
            .set(self.clock.unix_seconds());
        tracing::info!("config reloaded");
        Ok(())
    }

    /// Readiness off and reloads refused from now on: the gateway is draining.
    pub async fn begin_shutdown(&self) {
        // Under the reload lock, so no reload in progress can swap in a ready gateway after this.
        let _no_reload = self.serial.lock().await;
        self.shutting_down.store(true, Ordering::Release);
        let current = self.current();
        current.ready.store(false, Ordering::Release);
        current.metrics.ready.set(0);
    }
}

/// The `server.*` keys whose new values differ from the running ones.
fn restart_only_changes(running: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("server.listen", running.listen != new.listen);
    check(
        "server.admin_listen",
        running.admin_listen != new.admin_listen,
    );
    check(
        "server.tls",
        format!("{:?}", running.tls) != format!("{:?}", new.tls),
    );
    check(
        "server.header_read_timeout_ms",
        running.header_read_timeout_ms != new.header_read_timeout_ms,
    );
    check(
        "server.max_header_bytes",
        running.max_header_bytes != new.max_header_bytes,
    );
    check("server.max_headers", running.max_headers != new.max_headers);
    check(
        "server.max_connections",
        running.max_connections != new.max_connections,
    );
    check(
        "server.max_concurrent_streams",
        running.max_concurrent_streams != new.max_concurrent_streams,
    );
    check(
        "server.idle_timeout_ms",
        running.idle_timeout_ms != new.idle_timeout_ms,
    );
    check(
        "server.drain_timeout_seconds",
        running.drain_timeout_seconds != new.drain_timeout_seconds,
    );
    check(
        "server.shutdown_delay_ms",
        running.shutdown_delay_ms != new.shutdown_delay_ms,
    );
    check(
        "server.admin_reload",
        running.admin_reload != new.admin_reload,
    );
    check(
        "server.busy_poll_us",
        running.busy_poll_us != new.busy_poll_us,
    );
    changed
}
