//! Shared test harness: starts real gateways and simulators on loopback ports, mints tokens,
//! and speaks HTTP to them.
#![allow(dead_code)]

pub mod binary;
pub mod idp;
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bms_console_gateway::clock::{Clock, ManualClock, SharedClock};
use bms_console_gateway::config::Config;
use bms_console_gateway::secret::Secret;
use bms_console_gateway::server::{self, RunningGateway};
use bms_console_gateway::sim;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const PROJECT: &str = "bbf1946d374b44a0a2a95533562ba954";
pub const LINUX: &str = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b";
/// The demo catalog's second Linux server.
pub const LINUX_2: &str = "7d0c3e1a-4b2f-4e8d-a6c5-9f1b2e3d4c5a";
pub const WINDOWS: &str = "5f3c8a2e-1d4b-4c6e-9f7a-2b8d0e4c6a13";
/// A well-formed server id the demo catalog does not hold.
pub const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";
pub const ISSUER: &str = "https://idp.test.invalid";
pub const AUDIENCE: &str = "bms-console-gateway";
pub const BODY: &str = r#"{"remote_console":{"protocol":"serial","type":"serial"}}"#;
pub const TEST_AK: &str = "HPUATESTACCESSKEY0001";
pub const TEST_SK: &str = "test-secret-key-9f8e7d6c5b4a";

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn console_path(project: &str, server: &str) -> String {
    format!("/v1/{project}/baremetalservers/{server}/remote_console")
}

/// Knobs the tests turn; everything else is a fixed, valid config.
pub struct TestConfig {
    pub rate_per_second: f64,
    pub burst: u32,
    pub extra_rate_limit: String,
    pub cache_ttl_seconds: u64,
    pub cache_scope: &'static str,
    pub upstream_timeout_ms: u64,
    /// `embedded`, or an http:// URL.
    pub endpoint: String,
    pub policy: String,
    /// Extra CA file for the upstream client (absolute path).
    pub upstream_ca_file: Option<PathBuf>,
    /// TOML lines added at the end of `[server]` (may open `[server.tls]`).
    pub extra_server: String,
    /// TOML lines added to `[upstream]`.
    pub extra_upstream: String,
    /// Lines added to `[cache]`, e.g. `backend = "redis"`.
    pub extra_cache: String,
    /// Whole sections appended at the end, e.g. `[redis]`.
    pub extra_sections: String,
    /// More `[[auth.issuers]]` blocks, after the standard one.
    pub extra_issuers: String,
    /// Appended at the end of the file (e.g. `[audit]`, `[auth]` settings).
    pub extra_config: String,
    /// Replaces the one `[[accounts]]` block (AK/SK from tests/data) when set.
    pub accounts: Option<String>,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            rate_per_second: 1000.0,
            burst: 1000,
            extra_rate_limit: String::new(),
            cache_ttl_seconds: 30,
            cache_scope: "shared",
            upstream_timeout_ms: 5000,
            endpoint: "embedded".into(),
            policy: format!(
                r#"
[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["{PROJECT}"]
"#
            ),
            upstream_ca_file: None,
            extra_server: String::new(),
            extra_upstream: String::new(),
            extra_cache: String::new(),
            extra_sections: String::new(),
            extra_issuers: String::new(),
            extra_config: String::new(),
            accounts: None,
        }
    }
}

impl TestConfig {
    pub fn render(&self) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
header_read_timeout_ms = 2000
body_read_timeout_ms = 1000
{extra_server}

[[auth.issuers]]
name = "test"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}", "other-audience-also-accepted"]
algorithms = ["ES256", "RS256", "EdDSA"]
leeway_seconds = 60
pem_keys = [
  {{ kid = "es", alg = "ES256", file = "keys/es256-public.pem" }},
  {{ kid = "rs", alg = "RS256", file = "keys/rs256-public.pem" }},
  {{ kid = "ed", alg = "EdDSA", file = "keys/ed25519-public.pem" }},
]
{extra_issuers}

[rate_limit]
requests_per_second = {rate}
burst = {burst}
{extra_rate}

[cache]
ttl_seconds = {ttl}
scope = "{scope}"
{extra_cache}

[upstream]
timeout_ms = {timeout}
connect_timeout_ms = 1000
{ca_file}
{extra_upstream}

{accounts}

{policy}

{extra_sections}
{extra_config}
"#,
            rate = self.rate_per_second,
            burst = self.burst,
            extra_rate = self.extra_rate_limit,
            ttl = self.cache_ttl_seconds,
            scope = self.cache_scope,
            timeout = self.upstream_timeout_ms,
            policy = self.policy,
            extra_server = self.extra_server,
            extra_upstream = self.extra_upstream,
            extra_cache = self.extra_cache,
            extra_sections = self.extra_sections,
            extra_issuers = self.extra_issuers,
            extra_config = self.extra_config,
            accounts = self.accounts.clone().unwrap_or_else(|| format!(
                r#"
[[accounts]]
name = "test-account"
endpoint = "{endpoint}"
projects = ["{PROJECT}"]
access_key = "file:test-access-key"
secret_key = "file:test-secret-key"
"#,
                endpoint = self.endpoint
            )),
            ca_file = self
                .upstream_ca_file
                .as_ref()
                .map(|p| format!("ca_file = {:?}", p.display().to_string()))
                .unwrap_or_default(),
        )
    }

    pub fn build(&self) -> Config {
        Config::from_toml_str(&self.render(), &data_dir(), "test.toml").expect("valid test config")
    }
}

/// A running gateway with its clock and HTTP client.
pub struct Harness {
    pub gateway: RunningGateway,
    pub clock: Arc<ManualClock>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

impl Harness {
    pub async fn start(config: TestConfig) -> Harness {
        let clock = ManualClock::new();
        let shared: SharedClock = clock.clone();
        let gateway = server::start_with_clock(config.build(), shared)
            .await
            .expect("gateway starts");
        Harness {
            gateway,
            clock,
            client: client(),
        }
    }

    pub async fn default() -> Harness {
        Harness::start(TestConfig::default()).await
    }

    pub fn sim(&self) -> &sim::SimHandle {
        self.gateway.simulator.as_ref().expect("embedded simulator")
    }

    pub fn token(&self, sub: &str) -> String {
        mint(Algorithm::ES256, &claims(sub, self.clock.unix_seconds()))
    }

    /// POSTs the standard body for `server` with a token for `sub`.
    pub async fn console(&self, sub: &str, server: &str) -> Reply {
        let token = self.token(sub);
        self.post(
            &console_path(PROJECT, server),
            &[("authorization", &format!("Bearer {token}"))],
            BODY,
        )
        .await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        send(
            &self.client,
            Method::POST,
            &format!("{}{path}", self.gateway.public_url()),
            &all,
            body.to_string(),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        let reply = send(
            &self.client,
            Method::GET,
            &format!("{}/metrics", self.gateway.admin_url()),
            &[],
            String::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text()
    }
}

/// An HTTP answer, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn url(&self) -> String {
        self.json()["remote_console"]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no url in {}", self.text()))
            .to_string()
    }

    /// Asserts the flat error shape with this status and code, and returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error_code"], code, "body: {v}");
        let request_id = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(v["request_id"], request_id);
        v["error_msg"].as_str().expect("error_msg").to_string()
    }
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(builder.body(Full::new(Bytes::from(body))).unwrap()),
    )
    .await
    .expect("answer within 20 s")
    .expect("HTTP exchange");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Standard valid claims for `sub` at `now`.
pub fn claims(sub: &str, now: i64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join("keys").join(name)).expect("test key")
}

/// Signs `claims` with the test key for `alg` (kid `es`, `rs` or `ed`).
pub fn mint(alg: Algorithm, claims: &Value) -> String {
    let (key, kid) = match alg {
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&key_file("es256-private.pem")).unwrap(),
            "es",
        ),
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&key_file("rs256-private.pem")).unwrap(),
            "rs",
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(&key_file("ed25519-private.pem")).unwrap(),
            "ed",
        ),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// Signs with a key the gateway does not trust, claiming the trusted kid `es`.
pub fn mint_with_attacker_key(claims: &Value, kid: &str) -> String {
    let key = EncodingKey::from_ec_pem(&key_file("attacker-es256-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token assembled by hand from a header, claims and raw signature bytes.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Starts a simulator of its own (not embedded) with the given credentials.
pub async fn start_simulator(access_key: &str, secret_key: &str) -> sim::SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(
        sim::SimConfig {
            credentials: vec![sim::SimCredential {
                access_key: access_key.into(),
                secret_key: Secret::new(secret_key),
                projects: vec![PROJECT.into()],
                security_token: None,
            }],
            catalog: sim::Catalog::demo(),
            console_base_url: sim::DEFAULT_CONSOLE_BASE_URL.into(),
            users: Vec::new(),
        },
        listener,
    )
    .await
    .unwrap()
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The value of one sample line in a Prometheus scrape, e.g.
/// `bmsgw_cache_requests_total{outcome="hit"}`.
pub fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("series {series} not in scrape"))
        .trim()
        .parse()
        .unwrap()
}

/// Log lines (JSON, one per line) written while a [`LogCapture`] is installed on this thread.
/// Use it in a `current_thread` test (the `#[tokio::test]` default), where the gateway's tasks
/// run on the test's thread too.
pub struct LogCapture {
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct BufferWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn start() -> LogCapture {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = BufferWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        LogCapture {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every JSON event so far.
    pub fn events(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.buffer.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access-log events so far.
    pub fn access(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["target"] == "access")
            .collect()
    }
}

/// Waits (polling the admin scrape) until `series` reaches at least `value`.
pub async fn wait_for_metric(admin_url: &str, series: &str, value: f64) {
    let c = client();
    for _ in 0..600 {
        let reply = send(
            &c,
            Method::GET,
            &format!("{admin_url}/metrics"),
            &[],
            String::new(),
        )
        .await;
        let text = reply.text();
        let current = text.lines().find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if current.is_some_and(|v| v >= value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {value}");
}

/// Starts a simulator of its own with a full config (IAM users, STS keys, several accounts).
pub async fn start_sim_with(config: sim::SimConfig) -> sim::SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(config, listener).await.unwrap()
}

/// An AK/SK credential the simulator accepts for `projects`.
pub fn sim_credential(access_key: &str, secret_key: &str, projects: &[&str]) -> sim::SimCredential {
    sim::SimCredential {
        access_key: access_key.into(),
        secret_key: Secret::new(secret_key),
        projects: projects.iter().map(|p| p.to_string()).collect(),
        security_token: None,
    }
}

/// Waits (up to 20 s) until `condition` holds, checking every 10 ms.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh, empty directory for secret files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bmsgw-{name}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Harness {
    /// The admin `/readyz` status.
    pub async fn readyz(&self) -> u16 {
        send(
            &self.client,
            Method::GET,
            &format!("{}/readyz", self.gateway.admin_url()),
            &[],
            String::new(),
        )
        .await
        .status
        .as_u16()
    }

    /// One sample of the current scrape.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series)
    }
}

impl Harness {
    /// Asserts that the next request for `server` gets a console URL fresh from `sim`: `200`,
    /// an `https://` URL, `X-Cache: miss`, and one more successful call counted by the
    /// simulator. Fault tests end with it: whatever the fault did, nothing of it was cached.
    pub async fn assert_fresh_url_from(&self, sim: &sim::SimHandle, server: &str) -> String {
        let served_before = sim.stats().remote_console_ok;
        let reply = self.console("after-the-fault", server).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-cache"), Some("miss"), "not from the cache");
        let url = reply.url();
        assert!(url.starts_with("https://"), "{url}");
        assert_eq!(
            sim.stats().remote_console_ok,
            served_before + 1,
            "the URL came from the simulator just now"
        );
        url
    }

    /// The injected clock's wall-clock seconds.
    pub fn clock_now(&self) -> i64 {
        self.clock.unix_seconds()
    }
}
