//! A faithful, in-process simulator of the Huawei Cloud BMS `remote_console` API.
//!
//! Used by the gateway's tests, by the demo config (running embedded) and by the `simulate`
//! subcommand, so that everything upstream of the cloud can be exercised without an account.
//! It owns the cloud side of the contract: AK/SK signature checks as Huawei's API gateway
//! does them, the BMS answers and both error shapes (flat APIGW, nested BMS), and fault
//! injection. Facts and their sources: `docs/huawei-api.md` sections 1, 2 and 4.
//!
//! Module map:
//! - `catalog`: which servers exist where ([`Catalog`]);
//! - `auth`: `SDK-HMAC-SHA256` verification and the 15-minute date window;
//! - `faults`: live fault knobs ([`Faults`]), including scripted faults for the next calls;
//! - `broken`: the scripted answers that break the HTTP or BMS contract (a connection dropped
//!   after the head, truncated, huge or trickling bodies, `200`s that are not console answers);
//! - `console_urls`: minting console URLs and remembering the latest tokens;
//! - `iam`: the IAM token endpoint and `X-Auth-Token` checks ([`SimIamUser`]);
//! - `guard`: per-account throttling and the AK lockout after 5 bad signatures;
//! - `stats`: counters for tests ([`SimStats`]);
//! - `responses`: JSON answers, request ids;
//! - `server`: accept loop, routing, the route handler and the `/sim/` control endpoints.
//!
//! The control endpoints (`GET /sim/stats`, `GET`/`POST /sim/faults`, `POST /sim/reset`,
//! `POST /sim/iam/revoke`) are not part of the real API and are unauthenticated: bind the simulator to loopback.

mod auth;
mod broken;
mod catalog;
mod console_urls;
mod faults;
mod guard;
mod iam;
mod responses;
mod server;
mod stats;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::secret::Secret;

pub use broken::HUGE_BODY_BYTES;
pub use catalog::{
    Catalog, ServerOs, SimServer, DEMO_LINUX_SERVER_2_ID, DEMO_LINUX_SERVER_ID, DEMO_PROJECT_ID,
    DEMO_WINDOWS_SERVER_ID,
};
pub use console_urls::REMEMBERED_TOKENS;
pub use faults::{
    FaultSettings, Faults, Scripted, DEFAULT_TRICKLE_INTERVAL, MAX_LATENCY, MAX_TRICKLE_INTERVAL,
};
pub use guard::{LOCKOUT_DURATION, LOCKOUT_THRESHOLD};
pub use iam::{SimIamUser, DEFAULT_TOKEN_LIFETIME};
pub use stats::SimStats;

/// Where console URLs point unless configured otherwise (`.invalid` never resolves).
pub const DEFAULT_CONSOLE_BASE_URL: &str = "https://console.bms.sim.invalid/serial/";

/// An AK/SK pair the simulator accepts, and the projects its account owns.
#[derive(Clone, Debug)]
pub struct SimCredential {
    pub access_key: String,
    pub secret_key: Secret,
    /// Project ids the account owns; any other project in a URL is `Common.0018`.
    pub projects: Vec<String>,
    /// Set for temporary (STS) keys: requests must carry this `X-Security-Token`, signed.
    pub security_token: Option<Secret>,
}

/// Everything a simulator needs to start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub credentials: Vec<SimCredential>,
    pub catalog: Catalog,
    /// Console URLs are `<console_base_url>?token=<fresh uuid>` (`&token=` if it already
    /// has a query).
    pub console_base_url: String,
    /// IAM users that may obtain tokens from `POST /v3/auth/tokens`.
    pub users: Vec<SimIamUser>,
}

impl SimConfig {
    /// A config with the default console base URL.
    pub fn new(credentials: Vec<SimCredential>, catalog: Catalog) -> SimConfig {
        SimConfig {
            credentials,
            catalog,
            console_base_url: DEFAULT_CONSOLE_BASE_URL.to_string(),
            users: Vec::new(),
        }
    }
}

/// State shared by the server task and every [`SimHandle`].
pub(crate) struct Shared {
    config: SimConfig,
    /// The AK/SK pairs, rotatable at run time ([`SimHandle::set_secret_key`]).
    credentials: RwLock<Vec<SimCredential>>,
    counters: stats::Counters,
    console_urls: console_urls::ConsoleUrls,
    faults: Faults,
    iam: iam::IamState,
    guards: guard::Guards,
}

impl Shared {
    fn stats(&self) -> SimStats {
        let mut s = self.counters.snapshot();
        s.iam_token_requests = self.iam.token_requests.load(Ordering::Relaxed);
        s.iam_tokens_issued = self.iam.tokens_issued.load(Ordering::Relaxed);
        s.max_consecutive_bad_signatures = self
            .guards
            .max_consecutive_bad_signatures
            .load(Ordering::Relaxed);
        s.ak_lockouts = self.guards.lockouts.load(Ordering::Relaxed);
        s
    }

    /// Every knob, the IAM and per-account ones included (`GET /sim/faults`).
    fn fault_settings(&self) -> FaultSettings {
        FaultSettings {
            iam_token_lifetime_seconds: Some(self.iam.lifetime().as_secs()),
            iam_down: Some(self.iam.is_down()),
            account_limit_per_minute: Some(self.guards.limit_per_minute()),
            ..self.faults.settings()
        }
    }

    fn reset(&self) {
        self.counters.reset();
        self.faults.reset();
        self.iam.reset();
        self.guards.reset();
    }
}

/// Starts serving `config` on `listener` in a spawned task (call inside a tokio runtime).
///
/// Refuses (`InvalidInput`) a config whose access keys repeat, since a lookup by access key
/// would then be ambiguous. The server runs until [`SimHandle::shutdown`] or until the
/// runtime ends; dropping the handles does not stop it.
pub async fn start(config: SimConfig, listener: TcpListener) -> std::io::Result<SimHandle> {
    for (i, c) in config.credentials.iter().enumerate() {
        if config.credentials[..i]
            .iter()
            .any(|d| d.access_key == c.access_key)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("access key {} appears twice", c.access_key),
            ));
        }
    }
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        credentials: RwLock::new(config.credentials.clone()),
        iam: iam::IamState::new(config.users.clone()),
        console_urls: console_urls::ConsoleUrls::new(&config.console_base_url),
        config,
        counters: stats::Counters::default(),
        faults: Faults::new(),
        guards: guard::Guards::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(server::serve(listener, shared.clone(), stop_rx, done_tx));
    Ok(SimHandle {
        shared,
        addr,
        stop: Arc::new(stop_tx),
        done: done_rx,
    })
}

/// A running simulator. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl SimHandle {
    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL to point a client at, e.g. `http://127.0.0.1:40123`. A wildcard bind address
    /// is replaced by the loopback address, which is what a local client can reach.
    pub fn endpoint(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            let loopback = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            addr.set_ip(loopback);
        }
        format!("http://{addr}")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Rotates an account's secret key on the cloud side (as a key rotation in the console
    /// does); requests signed with the old key fail from now on.
    pub fn set_secret_key(&self, access_key: &str, secret_key: &str) {
        let mut creds = self
            .shared
            .credentials
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for c in creds.iter_mut().filter(|c| c.access_key == access_key) {
            c.secret_key = Secret::new(secret_key);
        }
    }

    /// Lifetime of IAM tokens issued from now on (default 24 h; may be seconds).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.iam.set_lifetime(lifetime);
    }

    /// Revokes every IAM token issued so far (as a password change does).
    pub fn revoke_tokens(&self) {
        self.shared.iam.revoke_all();
    }

    /// While `down`, `POST /v3/auth/tokens` answers `503`.
    pub fn set_iam_down(&self, down: bool) {
        self.shared.iam.set_down(down);
    }

    /// Requests per minute each account may make before `429 APIGW.0308`; 0 = unlimited.
    pub fn set_account_limit_per_minute(&self, limit: u64) {
        self.shared.guards.set_limit_per_minute(limit);
    }

    /// Every IAM token handed out so far (revoked and expired ones too), for tests that check
    /// a token never leaks. These are credentials: keep them inside the test.
    pub fn issued_iam_tokens(&self) -> Vec<String> {
        self.shared.iam.issued_tokens()
    }

    /// The tokens of the last [`REMEMBERED_TOKENS`] console URLs handed out, in real answers
    /// and broken ones alike, oldest first (for the same kind of test).
    pub fn issued_console_tokens(&self) -> Vec<String> {
        self.shared.console_urls.recent_tokens()
    }

    /// The live fault knobs, shared with the server.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Zeroes the counters, turns every fault off, forgets issued tokens, lockouts and
    /// limits (as `POST /sim/reset`).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting connections; in-flight requests finish, then the task ends.
    /// Idempotent.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once the server task has ended (after [`SimHandle::shutdown`]).
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        // An Err means the task is gone (e.g. the runtime is shutting down): stopped too.
        let _ = done.wait_for(|d| *d).await;
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
