//! Rate-limit state in the shared Redis: one GCRA decision per request, made atomically inside
//! Redis by a Lua script, so every replica sees one bucket per user and tier.
//!
//! The script is the same arithmetic as `gcra::decide`, in microseconds, with "now" taken from
//! Redis's own `TIME`: replicas' clocks never enter the decision, so clock skew between them
//! cannot become extra allowance. It stores the TAT with a `PX` of exactly the time until the
//! bucket is full again; after that an absent key decides like the old one would, so idle
//! users cost Redis nothing. One `EVALSHA` per decision (redis-rs loads the script when Redis
//! answers `NOSCRIPT`, e.g. after a restart), one key, so it runs unchanged on Redis Cluster.

use std::sync::Arc;

use crate::ratelimit::gcra::{Outcome, Quota};
use crate::shared::store::{digest, RedisStore, StoreError};

/// KEYS[1]: the TAT (µs on Redis's clock). ARGV[1]: emission interval (µs). ARGV[2]: burst.
/// Returns {allowed, remaining, reset µs, retry-after µs}. Every number stays an integer
/// below 2^53, so Lua's doubles hold it exactly.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local base = math.max(tat, now)
local tolerance = emission * burst
local ahead = base + emission - now
if ahead > tolerance then
  return {0, 0, base - now, ahead - tolerance}
end
redis.call('SET', KEYS[1], string.format('%.0f', base + emission),
  'PX', string.format('%.0f', math.ceil(ahead / 1000)))
return {1, math.floor((tolerance - ahead) / emission), ahead, 0}
";

/// The Redis backend of the rate limiter.
pub struct RedisLimiter {
    store: Arc<RedisStore>,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn new(store: Arc<RedisStore>) -> RedisLimiter {
        RedisLimiter {
            store,
            script: redis::Script::new(GCRA),
        }
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Decides one request for `key` (tier and user) under `quota`.
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Outcome, StoreError> {
        let redis_key = self.store.key("rl", &digest(key));
        let emission_micros = (quota.emission_nanos / 1_000).max(1);
        let (allowed, remaining, reset, retry_after): (i64, i64, i64, i64) = self
            .store
            .call("rate_limit", |mut conn| async move {
                self.script
                    .key(&redis_key)
                    .arg(emission_micros)
                    .arg(quota.burst)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Outcome {
            allowed: allowed == 1,
            limit: quota.burst,
            remaining: remaining.clamp(0, quota.burst as i64) as u32,
            reset_nanos: reset.max(0) as u64 * 1_000,
            retry_after_nanos: retry_after.max(0) as u64 * 1_000,
        })
    }
}
