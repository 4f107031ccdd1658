//! The console-URL cache, with request coalescing.
//!
//! A console URL is good for a short while, and many tools ask for the same server at once, so
//! the gateway keeps each URL for at most the configured TTL and lets concurrent misses for one
//! key share a single upstream call.
//!
//! Invariants:
//! - an entry is never served once it is `ttl` old, measured on the injected clock from the
//!   moment the cloud's answer arrived (the map's sweeps only reclaim memory);
//! - errors are never stored here: a failed fetch is shared with the callers waiting on it,
//!   and the next request tries again. The one exception is [`NegativeCache`] below, which
//!   remembers exactly two cloud answers that will not change soon (`BMS.0395` Windows server,
//!   `BMS.0040` no such server) per server, for a short configured time;
//! - at most one upstream call per key is in flight. The fetch runs in its own task, so a
//!   caller that disconnects does not cancel it for the others, and the task stores the URL
//!   before it leaves the in-flight table (under the table's lock), so a request arriving in
//!   between sees one or the other, never neither.
//!
//! With `cache.backend = "redis"` a [`SharedCacheTier`] sits behind the local entries: the
//! in-flight task asks it before calling the cloud, so replicas share URLs and coalesce their
//! misses too (see `crate::shared::cache_tier`). A URL from Redis is kept locally exactly as
//! long as Redis keeps it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::RandomState;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::bms::{ConsoleUrl, TargetKey};
use crate::clock::SharedClock;
use crate::error::{GatewayError, UpstreamError};
use crate::expiring_map::ExpiringMap;
use crate::shared::cache_tier::{Served, SharedCacheTier, Source};

/// What a cached URL is keyed by. `user` is set only with `scope = "per-user"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub target: TargetKey,
    pub protocol: &'static str,
    pub kind: &'static str,
    pub user: Option<Box<str>>,
}

/// A URL as the cloud gave it.
#[derive(Debug)]
pub struct Fetched {
    pub url: ConsoleUrl,
    /// The cloud's `X-Request-Id` for the call that produced this URL (shared: every request
    /// served this URL records it).
    pub upstream_request_id: Option<Arc<str>>,
    /// The audit log's keyed hash of the URL's token (as hex), once computed, with the id of
    /// the key it was made under: every request served this URL from the cache is audited with
    /// it.
    audit_tag: OnceLock<(u64, [u8; 64])>,
}

impl Fetched {
    pub fn new(url: ConsoleUrl, upstream_request_id: Option<String>) -> Fetched {
        Fetched {
            url,
            upstream_request_id: upstream_request_id.map(Arc::from),
            audit_tag: OnceLock::new(),
        }
    }

    /// The tag made under key `key_id` by `make`, computed on the first call only (a call with
    /// another key than the first makes its own and does not keep it).
    pub fn audit_tag(&self, key_id: u64, make: impl Fn(&str) -> [u8; 64]) -> [u8; 64] {
        let (kept_for, tag) = *self
            .audit_tag
            .get_or_init(|| (key_id, make(self.url.expose())));
        if kept_for == key_id {
            tag
        } else {
            make(self.url.expose())
        }
    }
}

/// How a request was served, for the `X-Cache` header and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from memory.
    Hit,
    /// This request made the upstream call.
    Miss,
    /// This request waited for another request's upstream call (here or on another replica).
    Coalesced,
    /// Served from the shared Redis tier.
    SharedHit,
}

impl CacheOutcome {
    /// `X-Cache` value: a coalesced wait got a fresh URL from the cloud, so it is a miss.
    pub fn header_value(self) -> &'static str {
        match self {
            CacheOutcome::Hit | CacheOutcome::SharedHit => "hit",
            CacheOutcome::Miss | CacheOutcome::Coalesced => "miss",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::SharedHit => "shared_hit",
        }
    }

    /// How a request that started (`leader`) or joined the in-flight task saw its source.
    fn of(source: Source, leader: bool) -> CacheOutcome {
        match (source, leader) {
            (Source::Shared, _) => CacheOutcome::SharedHit,
            (Source::Upstream, true) => CacheOutcome::Miss,
            (Source::Upstream, false) | (Source::OtherReplica, _) => CacheOutcome::Coalesced,
        }
    }
}

type FetchResult = Result<Arc<Fetched>, GatewayError>;
type SharedFetch = Shared<BoxFuture<'static, Result<(Arc<Fetched>, Source), GatewayError>>>;

struct Inner {
    /// `None` when the cache is off (TTL 0): requests still coalesce, nothing is kept.
    /// Key → URL, expiring (on the injected clock) at the cloud's answer time plus the TTL,
    /// or, for a URL from Redis, when Redis drops it.
    entries: Option<ExpiringMap<CacheKey, Arc<Fetched>, RandomState>>,
    ttl_nanos: u64,
    in_flight: Mutex<HashMap<CacheKey, SharedFetch>>,
    clock: SharedClock,
    shared_tier: Option<Arc<SharedCacheTier>>,
}

/// The cache. Cloning shares it.
#[derive(Clone)]
pub struct ConsoleCache {
    inner: Arc<Inner>,
}

impl ConsoleCache {
    pub fn new(ttl: Duration, max_entries: u64, clock: SharedClock) -> ConsoleCache {
        ConsoleCache::with_shared_tier(ttl, max_entries, clock, None)
    }

    /// A cache with (optionally) the Redis tier behind the local entries.
    pub fn with_shared_tier(
        ttl: Duration,
        max_entries: u64,
        clock: SharedClock,
        shared_tier: Option<Arc<SharedCacheTier>>,
    ) -> ConsoleCache {
        let entries = (!ttl.is_zero()).then(|| ExpiringMap::new(max_entries, RandomState::new()));
        ConsoleCache {
            inner: Arc::new(Inner {
                entries,
                ttl_nanos: ttl.as_nanos() as u64,
                in_flight: Mutex::new(HashMap::new()),
                clock,
                shared_tier,
            }),
        }
    }

    /// Returns a fresh cached URL, or joins (or starts) the one upstream call for `key`.
    /// With `force_refresh` the cached entry is skipped, but an upstream call already in flight
    /// is still shared: its URL is newer than anything cached.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        force_refresh: bool,
        fetch: F,
    ) -> (FetchResult, CacheOutcome)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        if !force_refresh {
            if let Some(hit) = self.fresh(&key) {
                return (Ok(hit), CacheOutcome::Hit);
            }
        }
        let (shared, leader) = {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = in_flight.get(&key) {
                (existing.clone(), false)
            } else {
                // Checked again under the lock: a fetch that finished since the first look has
                // stored its URL before leaving the table.
                if !force_refresh {
                    if let Some(hit) = self.fresh(&key) {
                        return (Ok(hit), CacheOutcome::Hit);
                    }
                }
                let shared = self.spawn_fetch(key.clone(), force_refresh, fetch());
                in_flight.insert(key, shared.clone());
                (shared, true)
            }
        };
        match shared.await {
            Ok((fetched, source)) => (Ok(fetched), CacheOutcome::of(source, leader)),
            Err(e) => {
                let outcome = if leader {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Coalesced
                };
                (Err(e), outcome)
            }
        }
    }

    fn spawn_fetch<Fut>(&self, key: CacheKey, force_refresh: bool, fetch: Fut) -> SharedFetch
    where
        Fut: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let served = match &inner.shared_tier {
                Some(tier) => tier.get_or_fetch(&key, force_refresh, fetch).await,
                None => fetch.await.map(|fetched| Served {
                    fetched,
                    source: Source::Upstream,
                    lifetime: Duration::from_nanos(inner.ttl_nanos),
                }),
            };
            let result = served.map(|s| (Arc::new(s.fetched), s.source, s.lifetime));
            let mut in_flight = inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let (Ok((fetched, _, lifetime)), Some(entries)) = (&result, &inner.entries) {
                let lifetime = (lifetime.as_nanos() as u64).min(inner.ttl_nanos);
                let now = inner.clock.monotonic_nanos();
                entries.insert(
                    key.clone(),
                    now.saturating_add(lifetime),
                    fetched.clone(),
                    now,
                );
            }
            in_flight.remove(&key);
            result.map(|(fetched, source, _)| (fetched, source))
        });
        task.map(|joined| joined.unwrap_or(Err(GatewayError::Internal)))
            .boxed()
            .shared()
    }

    fn fresh(&self, key: &CacheKey) -> Option<Arc<Fetched>> {
        let entries = self.inner.entries.as_ref()?;
        let (expires_at, fetched) = entries.get(key)?;
        (self.inner.clock.monotonic_nanos() < expires_at).then_some(fetched)
    }

    /// URLs currently held (expired ones count until they are swept).
    pub fn len(&self) -> u64 {
        self.inner.entries.as_ref().map_or(0, |e| e.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Remembers, per server, the cloud answers that will not change soon, so a tool looping on
/// a Windows server (`BMS.0395`) or a wrong server id (`BMS.0040`) does not spend the
/// account's cloud quota. The answer keeps the cloud's status, code and message; the
/// pipeline marks it `X-Cache: hit`. Every other error is never remembered. Ages are measured
/// on the injected clock; `Cache-Control: no-cache` skips the lookup.
pub struct NegativeCache {
    /// Server → the answer, expiring at its own code's time.
    entries: Option<ExpiringMap<TargetKey, UpstreamError, RandomState>>,
    windows_nanos: u64,
    not_found_nanos: u64,
    clock: SharedClock,
}

impl NegativeCache {
    pub fn new(
        windows: Duration,
        not_found: Duration,
        max_entries: u64,
        clock: SharedClock,
    ) -> NegativeCache {
        let longest = windows.max(not_found);
        let entries =
            (!longest.is_zero()).then(|| ExpiringMap::new(max_entries, RandomState::new()));
        NegativeCache {
            entries,
            windows_nanos: windows.as_nanos() as u64,
            not_found_nanos: not_found.as_nanos() as u64,
            clock,
        }
    }

    fn ttl_nanos(&self, code: &str) -> u64 {
        match code {
            "BMS.0395" => self.windows_nanos,
            "BMS.0040" => self.not_found_nanos,
            _ => 0,
        }
    }

    /// Stores `error` if it is one of the two remembered answers.
    pub fn remember(&self, target: TargetKey, error: &UpstreamError) {
        let Some(entries) = &self.entries else { return };
        let ttl = self.ttl_nanos(&error.code);
        if ttl == 0 {
            return;
        }
        let mut error = error.clone();
        // The cloud's request id belongs to the call that produced it, not to later answers.
        error.request_id = None;
        let now = self.clock.monotonic_nanos();
        entries.insert(target, now.saturating_add(ttl), error, now);
    }

    /// The remembered answer for a server, while it is young enough.
    pub fn get(&self, target: TargetKey) -> Option<UpstreamError> {
        let entries = self.entries.as_ref()?;
        let (expires_at, error) = entries.get(&target)?;
        (self.clock.monotonic_nanos() < expires_at).then_some(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The key of server `n` of one project.
    fn target(n: u8) -> TargetKey {
        let server = format!("00000000-0000-4000-8000-0000000000{n:02}");
        crate::bms::ConsoleTarget::parse("bbf1946d374b44a0a2a95533562ba954", &server)
            .unwrap()
            .key()
    }

    fn key() -> CacheKey {
        CacheKey {
            target: target(0),
            protocol: "serial",
            kind: "serial",
            user: None,
        }
    }

    fn fetched(n: u32) -> Fetched {
        Fetched::new(ConsoleUrl::new(format!("https://c/?token={n}")), None)
    }

    #[tokio::test]
    async fn entries_expire_on_the_injected_clock_and_errors_are_not_kept() {
        let clock = ManualClock::new();
        let cache = ConsoleCache::new(Duration::from_secs(30), 10, clock.clone());
        let calls = Arc::new(AtomicU32::new(0));
        let fetch = |calls: Arc<AtomicU32>| {
            move || async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Ok(fetched(n))
            }
        };
        let (r, o) = cache.get_or_fetch(key(), false, fetch(calls.clone())).await;
        assert_eq!(o, CacheOutcome::Miss);
        assert_eq!(r.unwrap().url.expose(), "https://c/?token=0");
        let (_, o) = cache.get_or_fetch(key(), false, fetch(calls.clone())).await;
        assert_eq!(o, CacheOutcome::Hit);
        clock.advance(Duration::from_secs(30));
        let (r, o) = cache.get_or_fetch(key(), false, fetch(calls.clone())).await;
        assert_eq!(o, CacheOutcome::Miss);
        assert_eq!(r.unwrap().url.expose(), "https://c/?token=1");

        let (r, _) = cache
            .get_or_fetch(key(), true, || async { Err(GatewayError::UpstreamTimeout) })
            .await;
        assert_eq!(r.unwrap_err(), GatewayError::UpstreamTimeout);
        let (r, o) = cache.get_or_fetch(key(), false, fetch(calls.clone())).await;
        assert_eq!(o, CacheOutcome::Hit, "the error did not replace the entry");
        assert_eq!(r.unwrap().url.expose(), "https://c/?token=1");
    }

    #[test]
    fn only_windows_and_not_found_are_remembered_for_their_own_time() {
        let clock = ManualClock::new();
        let neg = NegativeCache::new(
            Duration::from_secs(300),
            Duration::from_secs(30),
            10,
            clock.clone(),
        );
        let err = |code: &str| UpstreamError {
            status: http::StatusCode::BAD_REQUEST,
            code: code.into(),
            message: "m".into(),
            request_id: Some("cloud-id".into()),
        };
        let (windows, gone, busy) = (target(1), target(2), target(3));
        neg.remember(windows, &err("BMS.0395"));
        neg.remember(gone, &err("BMS.0040"));
        neg.remember(busy, &err("BMS.0212"));
        assert!(neg.get(busy).is_none(), "other errors are never kept");
        assert_eq!(neg.get(windows).unwrap().request_id, None);
        clock.advance(Duration::from_secs(30));
        assert!(neg.get(gone).is_none());
        assert!(neg.get(windows).is_some());
        clock.advance(Duration::from_secs(270));
        assert!(neg.get(windows).is_none());
    }
}
