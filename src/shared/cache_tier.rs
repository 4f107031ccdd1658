//! The shared console-URL tier: Redis behind each replica's local cache.
//!
//! A replica that misses locally asks Redis, in one round trip (a Lua script), for the URL or,
//! when there is none, for a short lock (`SET NX PX`). Then:
//!
//! - the URL is there: it is served, and kept locally exactly as long as Redis keeps it
//!   (`PTTL`), so every replica drops it at the same moment, on Redis's clock;
//! - this replica got the lock: it makes the one upstream call, stores the sealed URL with
//!   `PX` = the TTL from the moment the answer arrived, and releases the lock in the same
//!   script (errors are never stored; the lock is released so another replica may try);
//! - another replica holds the lock: this one polls, with a short backoff, until the URL
//!   appears, the lock frees up (the holder failed: then this replica takes the lock), or the
//!   lock's lifetime has passed (then it fetches on its own: a bounded wait, never a hang).
//!
//! Value and lock share a Redis Cluster hash slot through the `{...}` hash tag in their keys,
//! so both scripts touch a single slot. Values are sealed (`seal`): Redis never holds a
//! usable URL. A Redis fault applies `redis.fallback`: `local` fetches directly (this
//! replica's own coalescing still holds), `deny` refuses with `BMSGW.0601`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::bms::ConsoleUrl;
use crate::cache::{CacheKey, Fetched};
use crate::config::RedisFallback;
use crate::error::GatewayError;
use crate::shared::seal::Sealer;
use crate::shared::store::{digest, RedisStore, StoreError};

/// Returns `{1, value, pttl}` when the URL is stored, `{2}` when the caller now holds the lock,
/// `{3}` when another caller holds it.
const READ_OR_LOCK: &str = r"
local value = redis.call('GET', KEYS[1])
if value then
  return {1, value, redis.call('PTTL', KEYS[1])}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {3}
";

/// Stores the sealed URL for ARGV[2] ms and releases the lock if ARGV[3] still holds it.
const STORE_AND_UNLOCK: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
";

/// Releases the lock if ARGV[1] still holds it (a failed fetch stores nothing).
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// First and largest pause between two looks while another replica fetches.
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(50);

/// Where a URL came from, as the cache reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This replica called the cloud.
    Upstream,
    /// Redis already held it.
    Shared,
    /// Another replica called the cloud while this one waited.
    OtherReplica,
}

/// A URL the tier produced, and how long it may still be served.
pub struct Served {
    pub fetched: Fetched,
    pub source: Source,
    pub lifetime: Duration,
}

enum Lookup {
    Found(Fetched, Duration),
    /// A value is stored but does not open (sealed under another key, or damaged).
    Unreadable,
    Locked,
    Busy,
}

/// The Redis tier of the console-URL cache.
pub struct SharedCacheTier {
    store: Arc<RedisStore>,
    sealer: Sealer,
    ttl: Duration,
    /// How long a fetch may hold the lock: the whole upstream budget and a margin.
    lock_ttl: Duration,
    read_or_lock: redis::Script,
    store_and_unlock: redis::Script,
    unlock: redis::Script,
}

impl SharedCacheTier {
    pub fn new(
        store: Arc<RedisStore>,
        sealer: Sealer,
        ttl: Duration,
        upstream_timeout: Duration,
    ) -> SharedCacheTier {
        SharedCacheTier {
            store,
            sealer,
            ttl,
            lock_ttl: upstream_timeout + Duration::from_secs(1),
            read_or_lock: redis::Script::new(READ_OR_LOCK),
            store_and_unlock: redis::Script::new(STORE_AND_UNLOCK),
            unlock: redis::Script::new(UNLOCK),
        }
    }

    /// The value key; the lock key is this plus `:lock`. The hash tag keeps both in one slot.
    pub fn value_key(&self, key: &CacheKey) -> String {
        // The ids in lower case, as keys were named before they were held as numbers, so
        // replicas of both versions share entries during a rolling upgrade.
        let name = format!(
            "{}|{}|{}|{}|{}",
            key.target.project_hex(),
            key.target.server_uuid(),
            key.protocol,
            key.kind,
            key.user.as_deref().unwrap_or("")
        );
        self.store.key("url", &format!("{{{}}}", digest(&name)))
    }

    /// Serves `key` from Redis, or makes the one upstream call all replicas share.
    /// `force_refresh` skips the stored URL and replaces it with a fresh one.
    pub async fn get_or_fetch<Fut>(
        &self,
        key: &CacheKey,
        force_refresh: bool,
        fetch: Fut,
    ) -> Result<Served, GatewayError>
    where
        Fut: Future<Output = Result<Fetched, GatewayError>>,
    {
        let value_key = self.value_key(key);
        let lock_key = format!("{value_key}:lock");
        if force_refresh {
            let fetched = fetch.await?;
            self.store(&value_key, &lock_key, &fetched, None).await;
            return Ok(self.upstream(fetched));
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + self.lock_ttl;
        let mut pause = FIRST_POLL;
        let mut waited = false;
        loop {
            match self.read_or_lock(&value_key, &lock_key, &token).await {
                Ok(Lookup::Found(fetched, lifetime)) => {
                    let source = if waited {
                        Source::OtherReplica
                    } else {
                        Source::Shared
                    };
                    return Ok(Served {
                        fetched,
                        source,
                        lifetime,
                    });
                }
                Ok(Lookup::Unreadable) => {
                    let fetched = fetch.await?;
                    self.store(&value_key, &lock_key, &fetched, None).await;
                    return Ok(self.upstream(fetched));
                }
                Ok(Lookup::Locked) => {
                    return match fetch.await {
                        Ok(fetched) => {
                            self.store(&value_key, &lock_key, &fetched, Some(&token))
                                .await;
                            Ok(self.upstream(fetched))
                        }
                        Err(e) => {
                            self.release(&lock_key, &token).await;
                            Err(e)
                        }
                    };
                }
                Ok(Lookup::Busy) if tokio::time::Instant::now() + pause < deadline => {
                    waited = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
                Ok(Lookup::Busy) => {
                    // The holder outlived its lock's purpose: stop waiting and fetch.
                    return Ok(self.upstream(fetch.await?));
                }
                Err(_) => {
                    self.fallback_permits()?;
                    return Ok(self.upstream(fetch.await?));
                }
            }
        }
    }

    fn upstream(&self, fetched: Fetched) -> Served {
        Served {
            fetched,
            source: Source::Upstream,
            lifetime: self.ttl,
        }
    }

    /// `Ok` when the fallback lets this request go on without Redis.
    fn fallback_permits(&self) -> Result<(), GatewayError> {
        let action = match self.store.fallback() {
            RedisFallback::Local => "local",
            RedisFallback::Deny => "deny",
        };
        self.store
            .metrics()
            .redis_fallbacks
            .with_label_values(&["cache", action])
            .inc();
        match self.store.fallback() {
            RedisFallback::Local => Ok(()),
            RedisFallback::Deny => Err(GatewayError::SharedStoreUnavailable),
        }
    }

    async fn read_or_lock(
        &self,
        value_key: &str,
        lock_key: &str,
        token: &str,
    ) -> Result<Lookup, StoreError> {
        let lock_ms = self.lock_ttl.as_millis() as u64;
        let reply: Vec<Value> = self
            .store
            .call("cache_read", |mut conn| async move {
                self.read_or_lock
                    .key(value_key)
                    .key(lock_key)
                    .arg(token)
                    .arg(lock_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [Value::Int(1), Value::BulkString(sealed), Value::Int(pttl)] => {
                match self.decode(value_key, sealed) {
                    Some(fetched) => Ok(Lookup::Found(
                        fetched,
                        Duration::from_millis((*pttl).max(0) as u64),
                    )),
                    None => {
                        // Redis itself is fine: count it, and let a fresh URL replace it.
                        self.store.count_error(StoreError::Decode);
                        Ok(Lookup::Unreadable)
                    }
                }
            }
            [Value::Int(2)] => Ok(Lookup::Locked),
            [Value::Int(3)] => Ok(Lookup::Busy),
            _ => {
                self.store.fault("cache_read", StoreError::Decode);
                Err(StoreError::Decode)
            }
        }
    }

    /// Stores the URL; a failure is counted (by the store) and otherwise ignored: the request
    /// has its URL, and the lock expires by itself.
    async fn store(&self, value_key: &str, lock_key: &str, fetched: &Fetched, token: Option<&str>) {
        let sealed = self.sealer.seal(value_key, &encode(fetched));
        let ttl_ms = self.ttl.as_millis().max(1) as u64;
        let token = token.unwrap_or("");
        let _ = self
            .store
            .call("cache_store", |mut conn| async move {
                self.store_and_unlock
                    .key(value_key)
                    .key(lock_key)
                    .arg(sealed)
                    .arg(ttl_ms)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
    }

    async fn release(&self, lock_key: &str, token: &str) {
        let _ = self
            .store
            .call("cache_unlock", |mut conn| async move {
                self.unlock
                    .key(lock_key)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
    }

    fn decode(&self, value_key: &str, sealed: &[u8]) -> Option<Fetched> {
        let plaintext = self.sealer.open(value_key, sealed).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&plaintext).ok()?;
        let url = value.get("url")?.as_str()?;
        Some(Fetched::new(
            ConsoleUrl::new(url.to_string()),
            value
                .get("upstream_request_id")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        ))
    }
}

fn encode(fetched: &Fetched) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "url": fetched.url.expose(),
        "upstream_request_id": fetched.upstream_request_id.as_deref(),
    }))
    .unwrap_or_default()
}
