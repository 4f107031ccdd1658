//! An issuer's key set fetched from its identity provider over HTTPS, kept fresh safely.
//!
//! - The first fetch happens while the gateway is built, so it never reports ready without the
//!   keys (a failed first fetch stops start-up like any other config problem).
//! - A background task refreshes the set on the issuer's interval, sooner when the answer's
//!   `Cache-Control: max-age` says so, but never more often than the configured minimum.
//! - A token naming an unknown `kid` triggers a refetch (the provider may have rotated), but
//!   at most once per cool-down and single-flight: random `kid`s cannot cause a fetch storm, and
//!   requests that arrive while a fetch runs wait for it instead of starting another.
//! - When the provider is down or answers garbage, the last good set stays in use.
//! - The `kid` is only ever compared with the ids of keys already fetched: the URL fetched is
//!   always the configured one (or the one the discovery document names), never built from a
//!   token.
//!
//! Times are read from the injected clock, so tests move time instead of sleeping. The refresh
//! task holds only a `Weak` reference and is aborted when its owner is dropped, so a config
//! reload that builds a new gateway leaves no task behind.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::keys::{self, KeySet};
use crate::clock::SharedClock;
use crate::config::IssuerConfig;
use crate::telemetry::Metrics;

/// Largest JWKS or discovery document read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How often the refresh task looks at the clock while waiting.
const REFRESH_TICK: Duration = Duration::from_secs(1);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where the key set comes from.
enum Location {
    Jwks(Uri),
    /// `{issuer}/.well-known/openid-configuration`, whose `jwks_uri` is fetched.
    Discovery {
        document: Uri,
        issuer: String,
    },
}

/// One issuer's remotely fetched key set.
pub struct RemoteJwks {
    issuer_name: Arc<str>,
    location: Location,
    /// The JWKS URL a discovery document named, until a fetch from it fails.
    discovered: Mutex<Option<Uri>>,
    http: HttpsClient,
    timeout: Duration,
    min_refresh: Duration,
    max_refresh: Duration,
    cooldown: Duration,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    keys: RwLock<Arc<KeySet>>,
    /// SHA-256 of the last good document, to tell a changed set from a refetched one.
    fingerprint: Mutex<Vec<u8>>,
    /// Bumped whenever any issuer's keys change; the verified-token cache checks it.
    key_epoch: Arc<AtomicU64>,
    fetched_at_unix: AtomicI64,
    next_refresh_nanos: AtomicU64,
    last_unknown_kid_fetch_nanos: Mutex<Option<u64>>,
    /// Held while a fetch runs: one fetch at a time, and waiters see its result.
    in_flight: tokio::sync::Mutex<()>,
}

/// Aborts the refresh task when dropped.
pub struct RefreshTask(tokio::task::JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RemoteJwks {
    /// Sets up the source for an issuer whose config names `jwks_url` or `discovery`; `None`
    /// for issuers with local keys only.
    pub fn from_config(
        cfg: &IssuerConfig,
        base_dir: &Path,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        key_epoch: Arc<AtomicU64>,
    ) -> Result<Option<Arc<RemoteJwks>>, String> {
        let location = match (&cfg.jwks_url, cfg.discovery) {
            (Some(url), _) => Location::Jwks(
                url.parse()
                    .map_err(|e| format!("jwks_url is not a URL: {e}"))?,
            ),
            (None, true) => {
                let document = format!(
                    "{}/.well-known/openid-configuration",
                    cfg.issuer.trim_end_matches('/')
                );
                Location::Discovery {
                    document: document
                        .parse()
                        .map_err(|e| format!("issuer is not a URL: {e}"))?,
                    issuer: cfg.issuer.clone(),
                }
            }
            (None, false) => return Ok(None),
        };
        let http = https_client(cfg.ca_file.as_deref().map(|f| base_dir.join(f)).as_deref())?;
        // Series exist at zero from the first scrape, so "no failures yet" is visible as 0.
        for result in ["success", "failure"] {
            metrics.jwks_fetches.with_label_values(&[&cfg.name, result]);
        }
        Ok(Some(Arc::new(RemoteJwks {
            issuer_name: Arc::from(cfg.name.as_str()),
            location,
            discovered: Mutex::new(None),
            http,
            timeout: Duration::from_millis(cfg.jwks_timeout_ms),
            min_refresh: Duration::from_secs(cfg.jwks_min_refresh_seconds),
            max_refresh: Duration::from_secs(cfg.jwks_refresh_seconds),
            cooldown: Duration::from_secs(cfg.jwks_unknown_kid_cooldown_seconds),
            clock,
            metrics,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fingerprint: Mutex::new(Vec::new()),
            key_epoch,
            fetched_at_unix: AtomicI64::new(0),
            next_refresh_nanos: AtomicU64::new(0),
            last_unknown_kid_fetch_nanos: Mutex::new(None),
            in_flight: tokio::sync::Mutex::new(()),
        })))
    }

    /// The current key set (empty before the first good fetch).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first fetch, before the gateway reports ready.
    pub async fn initial_fetch(&self) -> Result<(), String> {
        let _one_at_a_time = self.in_flight.lock().await;
        self.fetch_and_store().await
    }

    /// Starts the background refresh. The task stops when the returned guard is dropped, and
    /// also by itself once the source is gone.
    pub fn spawn_refresh(self: &Arc<Self>) -> RefreshTask {
        let weak = Arc::downgrade(self);
        RefreshTask(tokio::spawn(refresh_loop(weak)))
    }

    /// Called when a token names a `kid` this issuer's set lacks: refetches at most once per
    /// cool-down. Concurrent callers wait for the fetch already running instead of starting
    /// another; callers inside the cool-down return at once with the current set.
    pub async fn refetch_for_unknown_kid(&self) {
        let now = self.clock.monotonic_nanos();
        let may_fetch = {
            let mut last = self
                .last_unknown_kid_fetch_nanos
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let cooling =
                last.is_some_and(|t| now.saturating_sub(t) < duration_nanos(self.cooldown));
            if !cooling {
                *last = Some(now);
            }
            !cooling
        };
        let _one_at_a_time = self.in_flight.lock().await;
        if may_fetch {
            let _ = self.fetch_and_store().await;
        }
    }

    /// Sets the key-set age and size gauges (called before each scrape).
    pub fn update_gauges(&self) {
        let fetched = self.fetched_at_unix.load(Ordering::Acquire);
        let age = if fetched == 0 {
            0
        } else {
            (self.clock.unix_seconds() - fetched).max(0)
        };
        self.metrics
            .jwks_key_set_age
            .with_label_values(&[&self.issuer_name])
            .set(age);
        self.metrics
            .jwks_keys
            .with_label_values(&[&self.issuer_name])
            .set(self.keys().len() as i64);
    }

    async fn scheduled_refresh(&self) {
        let _one_at_a_time = self.in_flight.lock().await;
        // Another fetch (an unknown kid) may have just refreshed the set and moved the deadline.
        if self.clock.monotonic_nanos() >= self.next_refresh_nanos.load(Ordering::Acquire) {
            let _ = self.fetch_and_store().await;
        }
    }

    /// One fetch; on success the set is swapped in, on failure the last good one stays.
    /// Either way the next scheduled refresh is set. Call with `in_flight` held.
    async fn fetch_and_store(&self) -> Result<(), String> {
        let result = self.fetch().await;
        let fetches = &self.metrics.jwks_fetches;
        let now = self.clock.monotonic_nanos();
        match result {
            Ok((set, fingerprint, max_age)) => {
                fetches
                    .with_label_values(&[&self.issuer_name, "success"])
                    .inc();
                let changed = {
                    let mut last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = *last != fingerprint;
                    *last = fingerprint;
                    changed
                };
                let count = set.len();
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                if changed {
                    self.key_epoch.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(issuer = %self.issuer_name, keys = count, "JWKS key set loaded");
                }
                self.fetched_at_unix
                    .store(self.clock.unix_seconds(), Ordering::Release);
                let wait = refresh_after(max_age, self.min_refresh, self.max_refresh);
                self.next_refresh_nanos
                    .store(now + duration_nanos(wait), Ordering::Release);
                Ok(())
            }
            Err(e) => {
                fetches
                    .with_label_values(&[&self.issuer_name, "failure"])
                    .inc();
                tracing::warn!(
                    issuer = %self.issuer_name,
                    error = %e,
                    keys_in_use = self.keys().len(),
                    "JWKS fetch failed; keeping the last good key set"
                );
                self.next_refresh_nanos
                    .store(now + duration_nanos(self.min_refresh), Ordering::Release);
                Err(e)
            }
        }
    }

    /// Fetches and parses the set: (keys, document fingerprint, the answer's `max-age`).
    async fn fetch(&self) -> Result<(KeySet, Vec<u8>, Option<Duration>), String> {
        let url = match &self.location {
            Location::Jwks(url) => url.clone(),
            Location::Discovery { document, issuer } => {
                let known = self
                    .discovered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match known {
                    Some(url) => url,
                    None => {
                        let url = self.discover(document, issuer).await?;
                        *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(url.clone());
                        url
                    }
                }
            }
        };
        let result = async {
            let (body, max_age) = self.get(&url).await?;
            let text = std::str::from_utf8(&body).map_err(|_| "JWKS is not UTF-8".to_string())?;
            let set = keys::parse_jwks(text)?;
            let fingerprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body)
                .as_ref()
                .to_vec();
            Ok((set, fingerprint, max_age))
        }
        .await;
        if result.is_err() {
            // The discovery document may have moved the JWKS: look again next time.
            *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }

    async fn discover(&self, document: &Uri, issuer: &str) -> Result<Uri, String> {
        let (body, _) = self.get(document).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| "the discovery document is not JSON".to_string())?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer it was
        // fetched for, so one provider cannot hand out another's keys.
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err("the discovery document names another issuer".into());
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("the discovery document has no jwks_uri")?;
        let uri: Uri = jwks_uri
            .parse()
            .map_err(|_| "the discovery document's jwks_uri is not a URL".to_string())?;
        if uri.scheme_str() != Some("https") {
            return Err("the discovery document's jwks_uri is not https://".into());
        }
        Ok(uri)
    }

    /// GET with the fetch deadline and size cap; returns the body and `Cache-Control: max-age`.
    async fn get(&self, url: &Uri) -> Result<(Bytes, Option<Duration>), String> {
        let request = Request::get(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("bms-console-gateway/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("GET {url} failed: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("GET {url} answered {}", response.status()));
            }
            let max_age = max_age(response.headers());
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: cannot read the body: {e}"))?
                .to_bytes();
            Ok((body, max_age))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("GET {url} timed out"))?
    }
}

async fn refresh_loop(source: Weak<RemoteJwks>) {
    loop {
        let Some(this) = source.upgrade() else {
            return;
        };
        let now = this.clock.monotonic_nanos();
        let due = this.next_refresh_nanos.load(Ordering::Acquire);
        if now >= due {
            this.scheduled_refresh().await;
            continue;
        }
        let wait = Duration::from_nanos(due - now).min(REFRESH_TICK);
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

/// When to refresh after a good fetch: the answer's `max-age` within `[min, max]`, or `max`
/// when it gave none. A provider cannot make the gateway poll it constantly, nor keep a set
/// for longer than the operator allows.
fn refresh_after(max_age: Option<Duration>, min: Duration, max: Duration) -> Duration {
    max_age.unwrap_or(max).clamp(min, max)
}

/// `Cache-Control: max-age=N`, if the answer has one.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .filter_map(|n| n.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
        .next()
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX / 2)
        .min(u64::MAX / 2)
}

/// An HTTPS-only client trusting the public web PKI roots and, optionally, a CA file.
fn https_client(ca_file: Option<&Path>) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca_file) = ca_file {
        crate::upstream::client::add_ca_file(&mut roots, ca_file)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            "public, max-age=120".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
        h.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(300));
        let s = Duration::from_secs;
        assert_eq!(refresh_after(Some(s(120)), min, max), s(120));
        assert_eq!(refresh_after(Some(s(0)), min, max), min);
        assert_eq!(refresh_after(Some(s(86_400)), min, max), max);
        assert_eq!(refresh_after(None, min, max), max);
    }
}
