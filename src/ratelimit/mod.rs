//! Per-user rate limiting: the GCRA decision (`gcra`) and where its state lives: in this
//! process (`local`) or in the shared Redis (`distributed`), chosen by `rate_limit.backend`.
//!
//! A user is limited per tier: the tier a policy rule assigns, or the default. Every
//! authenticated request counts, cache hits included, because a URL is a credential whether it
//! came from memory or from the cloud.

pub mod distributed;
pub mod gcra;
pub mod local;

pub use distributed::RedisLimiter;
pub use gcra::{Outcome, Quota};
pub use local::LocalLimiter;

use std::sync::Arc;

use crate::config::RedisFallback;
use crate::error::GatewayError;
use crate::telemetry::Metrics;

/// The configured backend, with the local limiter as the fallback for the Redis one.
pub struct Limiter {
    local: LocalLimiter,
    shared: Option<RedisLimiter>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(
        local: LocalLimiter,
        shared: Option<RedisLimiter>,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        Limiter {
            local,
            shared,
            metrics,
        }
    }

    /// Decides one request for `key` (tier and user). With the Redis backend, a Redis fault
    /// applies `redis.fallback`: this process's own limiter (`local`), or `BMSGW.0601`
    /// (`deny`).
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Outcome, GatewayError> {
        if let Some(shared) = &self.shared {
            // Boxed: the Redis round trip's future is large, and inlined it would be carried
            // (and moved) by every request's future, Redis or not.
            match Box::pin(shared.check(key, quota)).await {
                Ok(outcome) => {
                    self.metrics
                        .count_rate_limit_decision(true, outcome.allowed);
                    return Ok(outcome);
                }
                Err(_) => {
                    let deny = shared.store().fallback() == RedisFallback::Deny;
                    self.metrics
                        .redis_fallbacks
                        .with_label_values(&["rate_limit", if deny { "deny" } else { "local" }])
                        .inc();
                    if deny {
                        return Err(GatewayError::SharedStoreUnavailable);
                    }
                }
            }
        }
        let outcome = self.local.check(key, quota);
        self.metrics
            .count_rate_limit_decision(false, outcome.allowed);
        Ok(outcome)
    }

    /// The per-process limiter (the `local` backend, and the Redis backend's fallback).
    pub fn local(&self) -> &LocalLimiter {
        &self.local
    }
}
