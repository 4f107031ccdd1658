//! The gateway's configuration: one TOML file, read into typed structs and validated.
//!
//! Loading happens in two steps. [`Config::load`] parses the file (unknown keys are errors, so a
//! typo never silently falls back to a default) and checks everything that can be checked
//! without touching other files. Building the running gateway (`crate::state`) then loads keys
//! and resolves secret references. Both steps report problems as [`ConfigIssue`]s, printed as
//! `PATH: key.path: what is wrong`, and `check-config` runs both without opening a socket.
//!
//! Relative paths in the file (key files, secret `file:` references, catalog files) are taken
//! from the directory that holds the config file, so a config works from any working directory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretRef;

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in one config file.
#[derive(Clone, Debug)]
pub struct ConfigError {
    pub source: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.source, issue.key, issue.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Which account endpoint means "the simulator running inside this process".
pub const EMBEDDED_ENDPOINT: &str = "embedded";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub simulator: SimulatorConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub tracing: TracingConfig,

    /// Directory of the config file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// How the file is named in error messages.
    #[serde(skip)]
    pub source_name: String,
    /// The file this config was read from (reload reads it again); `None` for text.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// The Redis that replicas share rate limits and console URLs through (see
    /// `rate_limit.backend` and `cache.backend`).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// Longest `server.busy_poll_us`: beyond a second, busy polling is just a spinning core.
const MAX_BUSY_POLL_US: u64 = 1_000_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener for the API.
    pub listen: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz.
    pub admin_listen: SocketAddr,
    /// Longest time a client may take to send its request headers.
    pub header_read_timeout_ms: u64,
    /// Longest time a client may take to send its (at most 4 KiB) body.
    pub body_read_timeout_ms: u64,
    /// Largest request head (request line plus headers) accepted.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Open connections served at once; further connections are closed on accept.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
    pub drain_timeout_seconds: u64,
    /// TLS on the public listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// Longest request line (method, target, version) accepted; longer ones get 414.
    pub max_request_line_bytes: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT: how long readiness reports false while the listener still accepts,
    /// so load balancers stop sending before the listener closes.
    pub shutdown_delay_ms: u64,
    /// Serve `POST /-/reload` on the admin listener (SIGHUP works either way).
    pub admin_reload: bool,
    /// Keep polling the sockets, instead of sleeping, for this many microseconds after each
    /// request (0: off). Trades a busy core for lower latency on virtual machines.
    pub busy_poll_us: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (leaf first), PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA bundle for client certificates; when set, every client must present one it signed.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(default = "default_tls_reload_interval")]
    pub reload_interval_seconds: u64,
}

fn default_tls_reload_interval() -> u64 {
    10
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            admin_listen: "127.0.0.1:9901".parse().expect("static address"),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 10_000,
            max_concurrent_streams: 100,
            drain_timeout_seconds: 30,
            tls: None,
            max_request_line_bytes: 8 * 1024,
            idle_timeout_ms: 60_000,
            shutdown_delay_ms: 0,
            admin_reload: false,
            busy_poll_us: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The claim that names "the user" for policy, rate limits, logs and audit.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Tokens longer than this are refused before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    pub issuers: Vec<IssuerConfig>,
    /// Most verified tokens remembered (by hash) so repeated calls skip signature checks; 0
    /// turns the cache off.
    #[serde(default = "default_token_cache_entries")]
    pub token_cache_max_entries: u64,
}

fn default_token_cache_entries() -> u64 {
    100_000
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_max_token_bytes() -> usize {
    8 * 1024
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for logs and metrics.
    pub name: String,
    /// The exact `iss` claim value.
    pub issuer: String,
    /// Accepted `aud` values; at least one is required (an empty list would accept any audience).
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer. The token's `alg` must be on this list and match
    /// the key it names; the list never comes from the token.
    pub algorithms: Vec<String>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// Public keys in PEM files.
    #[serde(default)]
    pub pem_keys: Vec<PemKeyConfig>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The identity provider's JWKS over HTTPS, fetched before the gateway is ready and
    /// refreshed in the background.
    pub jwks_url: Option<String>,
    /// Find the JWKS through OIDC discovery: `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Extra CA certificates (PEM) trusted for the JWKS and discovery fetches.
    pub ca_file: Option<PathBuf>,
    /// Longest time between JWKS refreshes (used when the answer has no `max-age`).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Shortest time between refreshes, whatever `Cache-Control: max-age` says.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_seconds: u64,
    /// A token naming an unknown `kid` triggers a refetch at most this often.
    #[serde(default = "default_unknown_kid_cooldown")]
    pub jwks_unknown_kid_cooldown_seconds: u64,
    /// Deadline for one JWKS or discovery fetch.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout_ms: u64,
    /// Tokens whose lifetime (`exp - iat`, or `exp - now` without `iat`) is longer are refused.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime_seconds: u64,
    /// Shared secret (`env:NAME` or `file:PATH`) for issuers that sign with HS256/384/512.
    pub hmac_secret: Option<String>,
}

fn default_leeway() -> u64 {
    60
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_jwks_min_refresh() -> u64 {
    60
}

fn default_unknown_kid_cooldown() -> u64 {
    30
}

fn default_jwks_timeout() -> u64 {
    5_000
}

fn default_max_token_lifetime() -> u64 {
    86_400
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKeyConfig {
    pub kid: Option<String>,
    pub alg: String,
    pub file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per user.
    pub requests_per_second: f64,
    /// Requests a user may make at once after being idle.
    pub burst: u32,
    /// Named tiers that policy rules can assign instead of the default.
    pub tiers: BTreeMap<String, RateTier>,
    /// Most users whose limiter state is kept at once (idle users are dropped long before).
    pub max_tracked_users: u64,
    /// Where the decision is made: in this process, or in Redis for every replica at once.
    pub backend: Backend,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: 10.0,
            burst: 50,
            tiers: BTreeMap::new(),
            max_tracked_users: 1_000_000,
            backend: Backend::Local,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateTier {
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    /// One URL per server, handed only to callers the policy allows for that server.
    Shared,
    /// The caller's identity is part of the key: nobody receives a URL fetched for someone else.
    PerUser,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Longest time a console URL is served from memory; 0 turns the cache off.
    pub ttl_seconds: u64,
    /// Most URLs held at once.
    pub max_entries: u64,
    pub scope: CacheScope,
    /// `local`: this process only; `redis`: a shared tier behind the local one.
    pub backend: Backend,
    /// Secret reference (`env:`/`file:`) to the key material that encrypts URLs in Redis.
    pub encryption_key: Option<String>,
    /// How long a `BMS.0395` (Windows server) answer is remembered per server; 0 = never.
    pub windows_seconds: u64,
    /// How long a `BMS.0040` (no such server) answer is remembered per server; 0 = never.
    pub not_found_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_seconds: 30,
            max_entries: 100_000,
            scope: CacheScope::Shared,
            backend: Backend::Local,
            encryption_key: None,
            windows_seconds: 300,
            not_found_seconds: 30,
        }
    }
}

/// Where rate-limit state or cached URLs live.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this process only.
    #[default]
    Local,
    /// In the shared Redis of `[redis]`.
    Redis,
}

/// What requests get while Redis is unreachable or slower than `redis.timeout_ms`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisFallback {
    /// Per-process limits and cache, with a warning log and `bmsgw_redis_fallback_active`.
    #[default]
    Local,
    /// Fail closed: 503 `BMSGW.0601`.
    Deny,
}

/// The shared Redis.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://HOST[:PORT][/DB]` or `rediss://` for TLS; never with a password in it.
    pub url: String,
    /// ACL user name (Redis 6+); the `default` user when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Secret reference (`env:NAME` or `file:PATH`) to the password.
    #[serde(default)]
    pub password: Option<String>,
    /// CA certificates (PEM) that `rediss://` trusts instead of the public web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Prepended to every key, so several gateways (or environments) can share one Redis.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
    /// Budget for one Redis call; a slower answer counts as a fault.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Budget for opening a connection (TCP, TLS, AUTH).
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default)]
    pub fallback: RedisFallback,
    /// After a fault, Redis is left alone this long before one request probes it again.
    #[serde(default = "default_redis_retry_interval_ms")]
    pub retry_interval_ms: u64,
}

fn default_redis_key_prefix() -> String {
    "bmsgw:".into()
}

fn default_redis_timeout_ms() -> u64 {
    10
}

fn default_redis_connect_timeout_ms() -> u64 {
    1_000
}

fn default_redis_retry_interval_ms() -> u64 {
    1_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: u64,
    /// Budget for one whole upstream call: connect, send, and read the answer.
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) trusted besides the public web PKI roots.
    pub ca_file: Option<PathBuf>,
    pub pool_idle_timeout_seconds: u64,
    pub pool_max_idle_per_host: usize,
    /// Client certificate chain (PEM) presented to the BMS endpoint, for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// How often `file:` secrets are checked for changes (Kubernetes rotates mounted secrets).
    pub secret_reload_interval_ms: u64,
    /// After the cloud throttles an account (`429`/`APIGW.0308`), how long the gateway stops
    /// calling with it (answering `429` + `Retry-After` itself).
    pub throttle_backoff_seconds: u64,
    pub retry: RetryConfig,
    pub iam: IamRefreshConfig,
    pub lockout: LockoutConfig,
    pub breaker: BreakerConfig,
    /// The default per-account upstream rate cap; an account's own `[accounts.quota]` wins.
    pub quota: QuotaConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 2_000,
            timeout_ms: 10_000,
            ca_file: None,
            pool_idle_timeout_seconds: 90,
            pool_max_idle_per_host: 64,
            client_cert_file: None,
            client_key_file: None,
            secret_reload_interval_ms: 10_000,
            throttle_backoff_seconds: 30,
            retry: RetryConfig::default(),
            iam: IamRefreshConfig::default(),
            lockout: LockoutConfig::default(),
            breaker: BreakerConfig::default(),
            quota: QuotaConfig::default(),
        }
    }
}

/// Retries of transient upstream failures (connect errors, resets before an answer, 502/503/504,
/// `BMS.0212`), with exponential backoff and full jitter, inside `upstream.timeout_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per request, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in `0..min(max_backoff, base * 2^(n-1))`.
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_backoff_ms: 100,
            max_backoff_ms: 2_000,
        }
    }
}

/// IAM token refresh.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IamRefreshConfig {
    /// Refresh this long before `expires_at`.
    pub refresh_margin_seconds: u64,
    /// How often the background refresher looks at the token (and retries a failed refresh).
    pub check_interval_ms: u64,
}

impl Default for IamRefreshConfig {
    fn default() -> Self {
        IamRefreshConfig {
            refresh_margin_seconds: 3_600,
            check_interval_ms: 1_000,
        }
    }
}

/// Credential lockout protection: the cloud locks an AK after 5 consecutive bad signatures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Consecutive `401`s for one account that pause it (1..=4: the cloud locks at 5).
    pub threshold: u32,
    /// How long a paused account is not used (a changed secret file ends the pause early).
    pub cooldown_seconds: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            threshold: 3,
            cooldown_seconds: 600,
        }
    }
}

/// The per-account circuit breaker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the breaker.
    pub consecutive_failures: u32,
    /// Share of failed calls among the last `window` calls that opens the breaker.
    pub failure_ratio: f64,
    /// Calls the ratio is computed over (and the fewest before it applies).
    pub window: u32,
    /// How long the breaker stays open before letting probes through.
    pub open_seconds: u64,
    /// Probes allowed at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: 20,
            open_seconds: 30,
            half_open_probes: 1,
        }
    }
}

/// The gateway's own upstream rate cap for one account (a token bucket).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub requests_per_second: f64,
    pub burst: u32,
    /// Requests that may wait for a token at once; more are refused at once.
    pub max_queue: u32,
    /// Longest wait for a token before the request is refused.
    pub max_wait_ms: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            requests_per_second: 20.0,
            burst: 50,
            max_queue: 200,
            max_wait_ms: 2_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// `https://bms.{region}.myhuaweicloud.com`, or `embedded` for the in-process simulator.
    pub endpoint: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Project ids this account serves.
    pub projects: Vec<String>,
    /// `env:NAME` or `file:PATH` (AK/SK accounts).
    #[serde(default)]
    pub access_key: Option<String>,
    /// `env:NAME` or `file:PATH` (AK/SK accounts).
    #[serde(default)]
    pub secret_key: Option<String>,
    /// `env:NAME` or `file:PATH`: set for temporary (STS) AK/SK, sent and signed as
    /// `X-Security-Token`.
    #[serde(default)]
    pub security_token: Option<String>,
    /// IAM token credentials instead of AK/SK.
    #[serde(default)]
    pub iam: Option<IamAccountConfig>,
    /// This account's upstream rate cap (default: `[upstream.quota]`).
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// More endpoints of the same BMS API (e.g. a VPC endpoint behind the public one), tried in
    /// order when the one before is failing or its circuit breaker is open.
    #[serde(default)]
    pub fallback_endpoints: Vec<String>,
}

/// How an account obtains IAM tokens (`POST /v3/auth/tokens`, password method).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamAccountConfig {
    /// `https://iam.myhuaweicloud.com` (or a regional IAM), or `embedded`.
    pub endpoint: String,
    /// The IAM user name (`env:`/`file:`).
    pub user: String,
    /// The account ("domain") name (`env:`/`file:`).
    pub domain: String,
    /// `env:`/`file:`.
    pub password: String,
    /// Scope: the project id, or
    pub project_id: Option<String>,
    /// the project name (e.g. `cn-north-4`).
    pub project_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Servers known to the embedded simulator (JSON); the built-in demo data when absent.
    pub catalog_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub rules: Vec<RuleConfig>,
}

/// One allow rule. A caller matches when every condition given holds; the rule then grants the
/// listed projects (optionally narrowed to servers).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Subjects matched (`*` for any authenticated caller). Empty means "any" when `claims` is given.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Claim name → accepted values; the claim (a string or an array of strings) must hold one of them.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    pub projects: Vec<String>,
    /// Server ids; absent or `["*"]` means every server of the projects.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Rate-limit tier from `rate_limit.tiers` for callers this rule admits.
    pub rate_limit_tier: Option<String>,
    /// Verified TLS client-certificate subjects (as the access log's `tls_client` prints them,
    /// e.g. `CN=ops-bot, O=Example`); when given, the request must arrive over mutual TLS with
    /// one of them, in addition to the rule's other conditions.
    #[serde(default)]
    pub client_certs: Vec<String>,
    /// `allow` (the default) grants; `deny` refuses, and any matching deny rule wins.
    #[serde(default)]
    pub effect: RuleEffect,
    /// Issuer names (`auth.issuers[].name`) the rule applies to; empty means any issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleEffect {
    #[default]
    Allow,
    Deny,
}

/// Where audit records go.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// JSON lines on stdout, marked `"log":"audit"` to tell them from the access log.
    #[default]
    Stdout,
    /// JSON lines in `audit.file`, rotated by size.
    File,
    /// No audit records.
    Off,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub sink: AuditSink,
    /// The audit file (`sink = "file"`).
    pub file: Option<PathBuf>,
    /// The file is rotated (`audit.log` → `audit.log.1` → ...) before it grows past this.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub max_files: u32,
    /// Records waiting for the writer; when full, records are dropped and counted.
    pub queue_capacity: usize,
    /// Key (`env:NAME` or `file:PATH`) of the HMAC that hashes console-URL tokens; a random
    /// per-process key when absent.
    pub token_hash_key: Option<String>,
    /// Peers whose `X-Forwarded-For` header is recorded: addresses or CIDR blocks.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: AuditSink::Stdout,
            file: None,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
            queue_capacity: 10_000,
            token_hash_key: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,bms_console_gateway=debug`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Optional export of request spans over OTLP (HTTP, protobuf); off unless an endpoint is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's full traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces exported (0 to 1); a caller's `traceparent` decides for its own.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "bms-console-gateway".into(),
            sample_ratio: 1.0,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source_name.clone(),
            issues: vec![ConfigIssue::new("(file)", format!("cannot read: {e}"))],
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Config::from_toml_str(&text, &base_dir, &source_name)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates config text; `base_dir` anchors relative paths.
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        source_name: &str,
    ) -> Result<Config, ConfigError> {
        let fail = |issues| ConfigError {
            source: source_name.to_string(),
            issues,
        };
        // Syntax first (with a line number), then types against the parsed table, so type
        // errors name the key path rather than quoting the document.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            fail(vec![ConfigIssue::new("(syntax)", syntax_error(text, &e))])
        })?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    "(top level)".into()
                } else {
                    key
                };
                fail(vec![ConfigIssue::new(
                    key,
                    one_line(&e.inner().to_string()),
                )])
            })?;
        config.base_dir = base_dir.to_path_buf();
        config.source_name = source_name.to_string();
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(fail(issues))
        }
    }

    /// Resolves a path from the config file against its directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// Wraps issues found after parsing (keys, secrets) in this file's error type.
    pub fn error(&self, issues: Vec<ConfigIssue>) -> ConfigError {
        ConfigError {
            source: self.source_name.clone(),
            issues,
        }
    }

    /// True when some account is served by the in-process simulator.
    pub fn uses_embedded_simulator(&self) -> bool {
        self.accounts.iter().any(|a| {
            a.endpoint == EMBEDDED_ENDPOINT
                || a.iam
                    .as_ref()
                    .is_some_and(|i| i.endpoint == EMBEDDED_ENDPOINT)
        })
    }

    /// Checks everything that needs no other file.
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        self.validate_server(&mut issues);
        self.validate_auth(&mut issues);
        self.validate_rate_limit(&mut issues);
        if self.cache.max_entries == 0 && self.cache.ttl_seconds > 0 {
            issues.push(ConfigIssue::new(
                "cache.max_entries",
                "must be at least 1 while the cache is on (ttl_seconds > 0)",
            ));
        }
        if self.upstream.client_cert_file.is_some() != self.upstream.client_key_file.is_some() {
            issues.push(ConfigIssue::new(
                "upstream",
                "client_cert_file and client_key_file go together: set both or neither",
            ));
        }
        if self.upstream.timeout_ms == 0 || self.upstream.connect_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                "upstream",
                "timeout_ms and connect_timeout_ms must be above 0",
            ));
        }
        self.validate_tracing(&mut issues);
        self.validate_upstream_resilience(&mut issues);
        let served = self.validate_accounts(&mut issues);
        self.validate_policy(&served, &mut issues);
        self.validate_redis(&mut issues);
        self.validate_audit(&mut issues);
        issues
    }

    fn validate_redis(&self, issues: &mut Vec<ConfigIssue>) {
        let wants_redis = self.rate_limit.backend == Backend::Redis
            || (self.cache.backend == Backend::Redis && self.cache.ttl_seconds > 0);
        if wants_redis && self.redis.is_none() {
            issues.push(ConfigIssue::new(
                "redis",
                "rate_limit.backend or cache.backend is \"redis\": add a [redis] section with its url",
            ));
        }
        if self.cache.backend == Backend::Redis {
            match &self.cache.encryption_key {
                None => issues.push(ConfigIssue::new(
                    "cache.encryption_key",
                    "required with backend = \"redis\": console URLs are credentials and are stored encrypted (a secret reference, e.g. env:BMSGW_CACHE_KEY)",
                )),
                Some(reference) => {
                    if let Err(e) = SecretRef::parse(reference) {
                        issues.push(ConfigIssue::new("cache.encryption_key", e));
                    }
                }
            }
        }
        let Some(redis) = &self.redis else {
            return;
        };
        if let Err(message) = crate::shared::store::check_url(&redis.url) {
            issues.push(ConfigIssue::new("redis.url", message));
        } else if redis.ca_file.is_some() && !redis.url.starts_with("rediss://") {
            issues.push(ConfigIssue::new(
                "redis.ca_file",
                "only used with a rediss:// (TLS) url",
            ));
        }
        if let Some(reference) = &redis.password {
            if let Err(e) = SecretRef::parse(reference) {
                issues.push(ConfigIssue::new("redis.password", e));
            }
        }
        if redis.key_prefix.contains(['{', '}'])
            || redis.key_prefix.chars().any(char::is_whitespace)
        {
            issues.push(ConfigIssue::new(
                "redis.key_prefix",
                "must not contain braces or spaces (braces would change Redis Cluster hash slots)",
            ));
        }
        if redis.timeout_ms == 0 || redis.connect_timeout_ms == 0 || redis.retry_interval_ms == 0 {
            issues.push(ConfigIssue::new(
                "redis",
                "timeout_ms, connect_timeout_ms and retry_interval_ms must be above 0",
            ));
        }
    }

    fn validate_audit(&self, issues: &mut Vec<ConfigIssue>) {
        let a = &self.audit;
        if a.sink == AuditSink::File && a.file.is_none() {
            issues.push(ConfigIssue::new(
                "audit.file",
                "sink = \"file\" needs a file to write to",
            ));
        }
        if a.max_file_bytes < 4096 {
            issues.push(ConfigIssue::new(
                "audit.max_file_bytes",
                "must be at least 4096",
            ));
        }
        if a.queue_capacity == 0 {
            issues.push(ConfigIssue::new(
                "audit.queue_capacity",
                "must be at least 1",
            ));
        }
        if let Some(key) = &a.token_hash_key {
            if let Err(e) = SecretRef::parse(key) {
                issues.push(ConfigIssue::new("audit.token_hash_key", e));
            }
        }
        for (i, proxy) in a.trusted_proxies.iter().enumerate() {
            if let Err(e) = crate::telemetry::audit::AddressBlock::parse(proxy) {
                issues.push(ConfigIssue::new(format!("audit.trusted_proxies[{i}]"), e));
            }
        }
    }

    fn validate_server(&self, issues: &mut Vec<ConfigIssue>) {
        let s = &self.server;
        if s.header_read_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                "server.header_read_timeout_ms",
                "must be above 0",
            ));
        }
        if s.body_read_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                "server.body_read_timeout_ms",
                "must be above 0",
            ));
        }
        if s.max_headers == 0 || s.max_connections == 0 || s.max_concurrent_streams == 0 {
            issues.push(ConfigIssue::new(
                "server",
                "max_headers, max_connections and max_concurrent_streams must be above 0",
            ));
        }
        if let Some(tls) = &s.tls {
            if tls.reload_interval_seconds == 0 {
                issues.push(ConfigIssue::new(
                    "server.tls.reload_interval_seconds",
                    "must be above 0",
                ));
            }
        }
        if s.max_request_line_bytes < 256 {
            issues.push(ConfigIssue::new(
                "server.max_request_line_bytes",
                "must be at least 256 (the API's own request line is about 120 bytes)",
            ));
        }
        if s.busy_poll_us > MAX_BUSY_POLL_US {
            issues.push(ConfigIssue::new(
                "server.busy_poll_us",
                format!(
                    "must be at most {MAX_BUSY_POLL_US} (one second); 0 turns busy polling off"
                ),
            ));
        }
        if s.idle_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                "server.idle_timeout_ms",
                "must be above 0",
            ));
        }
        if s.max_header_bytes < 8192 {
            issues.push(ConfigIssue::new(
                "server.max_header_bytes",
                "must be at least 8192 (tokens alone can take several KiB, and HTTP/1's read buffer cannot be smaller)",
            ));
        }
    }

    fn validate_tracing(&self, issues: &mut Vec<ConfigIssue>) {
        let t = &self.tracing;
        if let Some(endpoint) = &t.otlp_endpoint {
            let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
            });
            if !ok {
                issues.push(ConfigIssue::new(
                    "tracing.otlp_endpoint",
                    "must be an http(s) URL such as http://127.0.0.1:4318/v1/traces",
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            issues.push(ConfigIssue::new(
                "tracing.sample_ratio",
                "must be between 0 and 1",
            ));
        }
        if t.service_name.is_empty() {
            issues.push(ConfigIssue::new(
                "tracing.service_name",
                "must not be empty",
            ));
        }
    }

    fn validate_auth(&self, issues: &mut Vec<ConfigIssue>) {
        if self.auth.subject_claim.is_empty() {
            issues.push(ConfigIssue::new("auth.subject_claim", "must not be empty"));
        }
        if self.auth.issuers.is_empty() {
            issues.push(ConfigIssue::new(
                "auth.issuers",
                "at least one issuer is required: without one no token can be accepted",
            ));
        }
        let mut seen = HashMap::new();
        for (i, iss) in self.auth.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            if let Some(prev) = seen.insert(iss.issuer.clone(), i) {
                issues.push(ConfigIssue::new(
                    format!("{key}.issuer"),
                    format!("duplicates auth.issuers[{prev}].issuer"),
                ));
            }
            if iss.issuer.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{key}.issuer"),
                    "must not be empty",
                ));
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                issues.push(ConfigIssue::new(
                    format!("{key}.audiences"),
                    "list at least one non-empty audience (an empty list would accept tokens meant for any service)",
                ));
            }
            if iss.algorithms.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{key}.algorithms"),
                    "list the algorithms this issuer signs with, e.g. [\"ES256\"]",
                ));
            }
            for (j, alg) in iss.algorithms.iter().enumerate() {
                if let Err(e) = crate::auth::keys::parse_algorithm(alg, iss.hmac_secret.is_some()) {
                    issues.push(ConfigIssue::new(format!("{key}.algorithms[{j}]"), e));
                }
            }
            if iss.jwks_file.is_none()
                && iss.pem_keys.is_empty()
                && iss.jwks_url.is_none()
                && !iss.discovery
                && iss.hmac_secret.is_none()
            {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    "needs jwks_url, discovery, jwks_file, pem_keys or hmac_secret: there is nothing to verify tokens with",
                ));
            }
            self.validate_issuer_sources(&key, iss, issues);
            if iss.leeway_seconds > 300 {
                issues.push(ConfigIssue::new(
                    format!("{key}.leeway_seconds"),
                    "at most 300: a larger skew keeps expired tokens alive",
                ));
            }
        }
    }

    /// The remote key source, refresh bounds, token lifetime and shared secret of one issuer.
    fn validate_issuer_sources(
        &self,
        key: &str,
        iss: &IssuerConfig,
        issues: &mut Vec<ConfigIssue>,
    ) {
        if iss.jwks_url.is_some() && iss.discovery {
            issues.push(ConfigIssue::new(
                format!("{key}.discovery"),
                "give jwks_url or discovery, not both",
            ));
        }
        if let Some(url) = &iss.jwks_url {
            if !is_https_url(url) {
                issues.push(ConfigIssue::new(
                    format!("{key}.jwks_url"),
                    "must be an https:// URL: keys fetched over plain HTTP can be swapped in transit",
                ));
            }
        }
        if iss.discovery && !is_https_url(&iss.issuer) {
            issues.push(ConfigIssue::new(
                format!("{key}.discovery"),
                "needs an https:// issuer: the discovery document is fetched from it",
            ));
        }
        if iss.jwks_min_refresh_seconds == 0
            || iss.jwks_min_refresh_seconds > iss.jwks_refresh_seconds
        {
            issues.push(ConfigIssue::new(
                format!("{key}.jwks_min_refresh_seconds"),
                "must be above 0 and at most jwks_refresh_seconds",
            ));
        }
        if iss.jwks_unknown_kid_cooldown_seconds == 0 {
            issues.push(ConfigIssue::new(
                format!("{key}.jwks_unknown_kid_cooldown_seconds"),
                "must be at least 1: without a cool-down every random kid fetches the key set",
            ));
        }
        if iss.jwks_timeout_ms == 0 {
            issues.push(ConfigIssue::new(
                format!("{key}.jwks_timeout_ms"),
                "must be above 0",
            ));
        }
        if iss.max_token_lifetime_seconds == 0 {
            issues.push(ConfigIssue::new(
                format!("{key}.max_token_lifetime_seconds"),
                "must be above 0",
            ));
        }
        if let Some(secret) = &iss.hmac_secret {
            if let Err(e) = SecretRef::parse(secret) {
                issues.push(ConfigIssue::new(format!("{key}.hmac_secret"), e));
            }
        }
    }

    fn validate_rate_limit(&self, issues: &mut Vec<ConfigIssue>) {
        let mut check = |key: String, tier: &RateTier| {
            if !(tier.requests_per_second.is_finite() && tier.requests_per_second > 0.0) {
                issues.push(ConfigIssue::new(
                    format!("{key}.requests_per_second"),
                    "must be a number above 0",
                ));
            }
            if tier.burst == 0 {
                issues.push(ConfigIssue::new(
                    format!("{key}.burst"),
                    "must be at least 1",
                ));
            }
        };
        check("rate_limit".into(), &self.rate_limit.default_tier());
        for (name, tier) in &self.rate_limit.tiers {
            check(format!("rate_limit.tiers.{name}"), tier);
        }
        if self.rate_limit.max_tracked_users < 1000 {
            issues.push(ConfigIssue::new(
                "rate_limit.max_tracked_users",
                "must be at least 1000",
            ));
        }
    }

    /// Returns the project ids some account serves.
    fn validate_accounts(&self, issues: &mut Vec<ConfigIssue>) -> HashMap<String, usize> {
        let mut served = HashMap::new();
        let mut names = HashMap::new();
        for (i, acc) in self.accounts.iter().enumerate() {
            let key = format!("accounts[{i}]");
            if acc.name.is_empty() {
                issues.push(ConfigIssue::new(format!("{key}.name"), "must not be empty"));
            }
            if let Some(prev) = names.insert(acc.name.clone(), i) {
                issues.push(ConfigIssue::new(
                    format!("{key}.name"),
                    format!("duplicates accounts[{prev}].name"),
                ));
            }
            if acc.endpoint != EMBEDDED_ENDPOINT {
                match acc.endpoint.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("https") | Some("http"))
                            && uri.host().is_some()
                            && uri.path_and_query().is_none_or(|p| p.as_str() == "/") => {}
                    _ => issues.push(ConfigIssue::new(
                        format!("{key}.endpoint"),
                        "must be https://HOST[:PORT] (e.g. https://bms.cn-north-4.myhuaweicloud.com) or \"embedded\"",
                    )),
                }
            }
            for (j, fallback) in acc.fallback_endpoints.iter().enumerate() {
                match fallback.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("https") | Some("http"))
                            && uri.host().is_some()
                            && uri.path_and_query().is_none_or(|p| p.as_str() == "/") => {}
                    _ => issues.push(ConfigIssue::new(
                        format!("{key}.fallback_endpoints[{j}]"),
                        "must be https://HOST[:PORT]",
                    )),
                }
            }
            if acc.projects.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{key}.projects"),
                    "list the project ids this account serves",
                ));
            }
            for (j, p) in acc.projects.iter().enumerate() {
                if crate::bms::ProjectId::parse(p).is_err() {
                    issues.push(ConfigIssue::new(
                        format!("{key}.projects[{j}]"),
                        format!("{p:?} is not a project id (32 hex characters)"),
                    ));
                } else if let Some(prev) = served.insert(p.to_ascii_lowercase(), i) {
                    issues.push(ConfigIssue::new(
                        format!("{key}.projects[{j}]"),
                        format!("project {p} is already served by accounts[{prev}]"),
                    ));
                }
            }
            validate_account_credentials(acc, &key, issues);
        }
        if self.accounts.is_empty() {
            issues.push(ConfigIssue::new(
                "accounts",
                "at least one account is required to reach the BMS API",
            ));
        }
        served
    }

    fn validate_upstream_resilience(&self, issues: &mut Vec<ConfigIssue>) {
        let u = &self.upstream;
        if u.secret_reload_interval_ms == 0 {
            issues.push(ConfigIssue::new(
                "upstream.secret_reload_interval_ms",
                "must be above 0",
            ));
        }
        if !(1..=10).contains(&u.retry.max_attempts) {
            issues.push(ConfigIssue::new(
                "upstream.retry.max_attempts",
                "must be between 1 and 10",
            ));
        }
        if u.retry.base_backoff_ms == 0 || u.retry.max_backoff_ms < u.retry.base_backoff_ms {
            issues.push(ConfigIssue::new(
                "upstream.retry",
                "base_backoff_ms must be above 0 and at most max_backoff_ms",
            ));
        }
        if u.iam.check_interval_ms == 0 {
            issues.push(ConfigIssue::new(
                "upstream.iam.check_interval_ms",
                "must be above 0",
            ));
        }
        if !(1..=4).contains(&u.lockout.threshold) {
            issues.push(ConfigIssue::new(
                "upstream.lockout.threshold",
                "must be between 1 and 4: the cloud locks an access key after 5 consecutive bad signatures",
            ));
        }
        let b = &u.breaker;
        if b.consecutive_failures == 0 || b.window == 0 || b.half_open_probes == 0 {
            issues.push(ConfigIssue::new(
                "upstream.breaker",
                "consecutive_failures, window and half_open_probes must be above 0",
            ));
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            issues.push(ConfigIssue::new(
                "upstream.breaker.failure_ratio",
                "must be above 0 and at most 1",
            ));
        }
        let mut quotas = vec![("upstream.quota".to_string(), &u.quota)];
        for (i, acc) in self.accounts.iter().enumerate() {
            if let Some(q) = &acc.quota {
                quotas.push((format!("accounts[{i}].quota"), q));
            }
        }
        for (key, q) in quotas {
            if !(q.requests_per_second.is_finite() && q.requests_per_second > 0.0) || q.burst == 0 {
                issues.push(ConfigIssue::new(
                    key,
                    "requests_per_second must be a number above 0 and burst at least 1",
                ));
            }
        }
    }

    fn validate_policy(&self, served: &HashMap<String, usize>, issues: &mut Vec<ConfigIssue>) {
        if self.policy.rules.is_empty() {
            issues.push(ConfigIssue::new(
                "policy.rules",
                "no rules: the policy denies by default, so nobody could open a console",
            ));
        }
        for (i, rule) in self.policy.rules.iter().enumerate() {
            let key = format!("policy.rules[{i}]");
            if rule.subjects.is_empty() && rule.claims.is_empty() && rule.client_certs.is_empty() {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    "names neither subjects nor claims; use subjects = [\"*\"] to match every caller",
                ));
            }
            if rule.projects.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{key}.projects"),
                    "must not be empty",
                ));
            }
            for (j, p) in rule.projects.iter().enumerate() {
                if p == "*" {
                    continue;
                }
                if !served.contains_key(&p.to_ascii_lowercase()) {
                    issues.push(ConfigIssue::new(
                        format!("{key}.projects[{j}]"),
                        format!("project {p} is not served by any account"),
                    ));
                }
            }
            for (j, s) in rule.servers.iter().enumerate() {
                if !crate::auth::policy::is_valid_server_pattern(s) {
                    issues.push(ConfigIssue::new(
                        format!("{key}.servers[{j}]"),
                        format!("{s:?} is not a server id (UUID), a prefix glob such as \"cf2a8b97-*\", or \"*\""),
                    ));
                }
            }
            let mtls = self
                .server
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some());
            if !rule.client_certs.is_empty() && !mtls {
                issues.push(ConfigIssue::new(
                    format!("{key}.client_certs"),
                    "needs server.tls.client_ca_file: without mutual TLS no request has a client certificate",
                ));
            }
            for (j, name) in rule.issuers.iter().enumerate() {
                if !self.auth.issuers.iter().any(|i| &i.name == name) {
                    issues.push(ConfigIssue::new(
                        format!("{key}.issuers[{j}]"),
                        format!("no issuer is named {name:?} in auth.issuers"),
                    ));
                }
            }
            if rule.effect == RuleEffect::Deny && rule.rate_limit_tier.is_some() {
                issues.push(ConfigIssue::new(
                    format!("{key}.rate_limit_tier"),
                    "a deny rule admits nobody, so it cannot assign a tier",
                ));
            }
            if let Some(tier) = &rule.rate_limit_tier {
                if !self.rate_limit.tiers.contains_key(tier) {
                    issues.push(ConfigIssue::new(
                        format!("{key}.rate_limit_tier"),
                        format!("unknown tier {tier:?}; define it under [rate_limit.tiers.{tier}]"),
                    ));
                }
            }
        }
    }
}

/// One account's credentials: AK/SK (optionally temporary, with a security token) or IAM.
fn validate_account_credentials(acc: &AccountConfig, key: &str, issues: &mut Vec<ConfigIssue>) {
    let mut secret = |field: String, value: &str| {
        if let Err(e) = SecretRef::parse(value) {
            issues.push(ConfigIssue::new(field, e));
        }
    };
    match (&acc.iam, &acc.access_key, &acc.secret_key) {
        (None, Some(ak), Some(sk)) => {
            secret(format!("{key}.access_key"), ak);
            secret(format!("{key}.secret_key"), sk);
            if let Some(token) = &acc.security_token {
                secret(format!("{key}.security_token"), token);
            }
        }
        (Some(iam), None, None) => {
            secret(format!("{key}.iam.user"), &iam.user);
            secret(format!("{key}.iam.domain"), &iam.domain);
            secret(format!("{key}.iam.password"), &iam.password);
            if acc.security_token.is_some() {
                issues.push(ConfigIssue::new(
                    format!("{key}.security_token"),
                    "belongs to temporary AK/SK, not to IAM token accounts",
                ));
            }
            if iam.project_id.is_some() == iam.project_name.is_some() {
                issues.push(ConfigIssue::new(
                    format!("{key}.iam"),
                    "set exactly one of project_id and project_name (the token's scope)",
                ));
            }
            if iam.endpoint != EMBEDDED_ENDPOINT {
                match iam.endpoint.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("https") | Some("http"))
                            && uri.host().is_some() => {}
                    _ => issues.push(ConfigIssue::new(
                        format!("{key}.iam.endpoint"),
                        "must be https://HOST[:PORT] (e.g. https://iam.myhuaweicloud.com) or \"embedded\"",
                    )),
                }
            }
        }
        (Some(_), _, _) => issues.push(ConfigIssue::new(
            key.to_string(),
            "an account uses either access_key/secret_key or [iam], not both",
        )),
        _ => issues.push(ConfigIssue::new(
            key.to_string(),
            "needs access_key and secret_key (AK/SK) or an [iam] table (IAM token)",
        )),
    }
}

impl RateLimitConfig {
    pub fn default_tier(&self) -> RateTier {
        RateTier {
            requests_per_second: self.requests_per_second,
            burst: self.burst,
        }
    }
}

fn is_https_url(text: &str) -> bool {
    text.parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some())
}

fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => format!(
            "line {}: {}",
            text[..span.start].lines().count().max(1),
            one_line(error.message())
        ),
        None => one_line(error.message()),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
