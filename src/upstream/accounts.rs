//! Cloud accounts: each has its BMS endpoint(s) (each with its own circuit breaker), a region,
//! the projects it serves, its credentials (AK/SK, temporary AK/SK with a security token, or
//! an IAM token source) and its own resilience state (lockout guard, upstream quota, throttle
//! backoff).
//!
//! Any number of accounts may be configured; lookup by project id is one hash-map read.
//! Credentials are resolved from their `env:`/`file:` references when the gateway starts, are
//! held only as [`Secret`](crate::secret::Secret)s, and `file:` ones are re-read when they
//! change ([`Accounts::poll_secrets`]).
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigIssue, EMBEDDED_ENDPOINT};
use crate::telemetry::Metrics;
use crate::upstream::breaker::Breaker;
use crate::upstream::client::HttpClient;
use crate::upstream::iam::{IamSettings, IamTokenSource, Scope};
use crate::upstream::lockout::Lockout;
use crate::upstream::quota::UpstreamQuota;
use crate::upstream::secrets::{Poll, WatchedSecret};
use crate::upstream::throttle::ThrottleBackoff;

/// How an account authenticates to the cloud.
// One value per account: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Credentials {
    /// AK/SK, signed with SDK-HMAC-SHA256. With `security_token` the keys are temporary
    /// (STS) and the token is sent and signed as `X-Security-Token`.
    AkSk {
        access_key: WatchedSecret,
        secret_key: WatchedSecret,
        security_token: Option<WatchedSecret>,
    },
    /// An IAM token, sent as `X-Auth-Token`.
    Iam(Arc<IamTokenSource>),
}

impl Credentials {
    fn watched(&self) -> Vec<&WatchedSecret> {
        match self {
            Credentials::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                let mut all = vec![access_key, secret_key];
                all.extend(security_token.as_ref());
                all
            }
            Credentials::Iam(source) => vec![&source.user, &source.domain, &source.password],
        }
    }
}

/// One endpoint of an account's BMS API, with its own circuit breaker.
pub struct Endpoint {
    /// Scheme and authority, e.g. `https://bms.cn-north-4.myhuaweicloud.com`.
    pub url: String,
    /// The `Host` value signed and sent: the endpoint's authority (with a port when it has one).
    pub host: String,
    /// The metric label: `0` for the primary endpoint, `1`.. for the fallbacks in order.
    pub label: String,
    pub breaker: Breaker,
}

/// The per-account state of the resilience layers (see `stack.rs` for their order).
pub struct Guards {
    pub lockout: Lockout,
    pub quota: UpstreamQuota,
    pub throttle: ThrottleBackoff,
}

/// One account the gateway calls the cloud as.
pub struct Account {
    pub name: Arc<str>,
    /// The primary endpoint first, then the fallbacks; never empty.
    pub endpoints: Vec<Endpoint>,
    pub region: Option<String>,
    pub credentials: Credentials,
    pub guards: Guards,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.url).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What building accounts needs besides the config.
pub struct AccountDeps<'a> {
    pub embedded_endpoint: Option<&'a str>,
    pub clock: SharedClock,
    pub http: HttpClient,
    pub metrics: Arc<Metrics>,
}

/// All accounts, indexed by the projects they serve.
#[derive(Default)]
pub struct Accounts {
    by_project: HashMap<String, Arc<Account>>,
    all: Vec<Arc<Account>>,
    names: Vec<String>,
    metrics: Option<Arc<Metrics>>,
}

impl Accounts {
    /// Resolves every account's credentials. `embedded_endpoint` replaces the `embedded`
    /// placeholder once the in-process simulator is listening.
    pub fn from_config(config: &Config, deps: AccountDeps) -> Result<Accounts, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut accounts = Accounts {
            metrics: Some(deps.metrics.clone()),
            ..Accounts::default()
        };
        let embedded = |endpoint: &str| {
            if endpoint == EMBEDDED_ENDPOINT {
                deps.embedded_endpoint
                    .unwrap_or("http://127.0.0.1:0")
                    .to_string()
            } else {
                endpoint.trim_end_matches('/').to_string()
            }
        };
        let upstream = &config.upstream;
        for (i, acc) in config.accounts.iter().enumerate() {
            let key = format!("accounts[{i}]");
            let mut resolve = |field: &str, text: &str| {
                WatchedSecret::resolve(text, &config.base_dir)
                    .map_err(|e| issues.push(ConfigIssue::new(format!("{key}.{field}"), e)))
                    .ok()
            };
            let name: Arc<str> = Arc::from(acc.name.as_str());
            let credentials = match (&acc.iam, &acc.access_key, &acc.secret_key) {
                (Some(iam), _, _) => {
                    let user = resolve("iam.user", &iam.user);
                    let domain = resolve("iam.domain", &iam.domain);
                    let password = resolve("iam.password", &iam.password);
                    let (Some(user), Some(domain), Some(password)) = (user, domain, password)
                    else {
                        continue;
                    };
                    let scope = match (&iam.project_id, &iam.project_name) {
                        (Some(id), _) => Scope::ProjectId(id.clone()),
                        (None, Some(n)) => Scope::ProjectName(n.clone()),
                        (None, None) => continue,
                    };
                    Credentials::Iam(Arc::new(IamTokenSource::new(
                        IamSettings {
                            account: name.clone(),
                            endpoint: embedded(&iam.endpoint),
                            user,
                            domain,
                            password,
                            scope,
                            margin_seconds: upstream.iam.refresh_margin_seconds,
                            timeout: Duration::from_millis(upstream.timeout_ms),
                        },
                        deps.clock.clone(),
                        deps.http.clone(),
                        deps.metrics.clone(),
                    )))
                }
                (None, Some(ak), Some(sk)) => {
                    let access_key = resolve("access_key", ak);
                    let secret_key = resolve("secret_key", sk);
                    let security_token = match &acc.security_token {
                        None => Some(None),
                        Some(t) => resolve("security_token", t).map(Some),
                    };
                    let (Some(access_key), Some(secret_key), Some(security_token)) =
                        (access_key, secret_key, security_token)
                    else {
                        continue;
                    };
                    Credentials::AkSk {
                        access_key,
                        secret_key,
                        security_token,
                    }
                }
                _ => continue,
            };
            let mut endpoints = Vec::new();
            let urls = std::iter::once(&acc.endpoint).chain(&acc.fallback_endpoints);
            for (n, url) in urls.enumerate() {
                let url = embedded(url);
                let Some(host) = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
                else {
                    continue;
                };
                let label = n.to_string();
                deps.metrics
                    .resilience
                    .breaker_state
                    .with_label_values(&[&acc.name, &label])
                    .set(0);
                endpoints.push(Endpoint {
                    url,
                    host,
                    label,
                    breaker: Breaker::new(upstream.breaker.clone(), deps.clock.clone()),
                });
            }
            if endpoints.is_empty() {
                continue;
            }
            let quota = acc.quota.clone().unwrap_or_else(|| upstream.quota.clone());
            let account = Arc::new(Account {
                name,
                endpoints,
                region: acc.region.clone(),
                credentials,
                guards: Guards {
                    lockout: Lockout::new(upstream.lockout.clone(), deps.clock.clone()),
                    quota: UpstreamQuota::new(quota, deps.clock.clone()),
                    throttle: ThrottleBackoff::new(
                        upstream.throttle_backoff_seconds,
                        deps.clock.clone(),
                    ),
                },
            });
            for project in &acc.projects {
                accounts
                    .by_project
                    .insert(project.to_ascii_lowercase(), account.clone());
            }
            accounts.all.push(account);
            accounts.names.push(acc.name.clone());
        }
        if issues.is_empty() {
            Ok(accounts)
        } else {
            Err(issues)
        }
    }

    /// The account that serves a project.
    pub fn for_project(&self, project: &str) -> Option<&Arc<Account>> {
        if project.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_project.get(&project.to_ascii_lowercase())
        } else {
            self.by_project.get(project)
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The IAM token sources of IAM accounts.
    pub fn iam_sources(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<IamTokenSource>)> {
        self.all.iter().filter_map(|a| match &a.credentials {
            Credentials::Iam(source) => Some((&a.name, source)),
            Credentials::AkSk { .. } => None,
        })
    }

    /// True when every IAM account holds a token that has not expired.
    pub fn credentials_ready(&self) -> bool {
        self.iam_sources().all(|(_, s)| s.valid_token().is_some())
    }

    /// Fetches the first token of every IAM account, concurrently (failures are retried by
    /// the refreshers).
    pub async fn prime_tokens(&self) {
        let fetches = self.iam_sources().map(|(_, s)| s.refresh_once());
        futures_util::future::join_all(fetches).await;
    }

    /// Re-reads every `file:` secret (see `secrets.rs`). A changed secret of an account ends
    /// its lockout pause: the new value deserves a try.
    pub fn poll_secrets(&self) {
        let Some(metrics) = &self.metrics else { return };
        for account in &self.all {
            let mut reloaded = false;
            for secret in account.credentials.watched() {
                match secret.poll() {
                    Poll::Unchanged => {}
                    Poll::Reloaded => {
                        reloaded = true;
                        tracing::info!(account = %account.name, secret = %secret.describe(), "secret reloaded");
                        metrics
                            .resilience
                            .secret_reloads
                            .with_label_values(&[&account.name, "success"])
                            .inc();
                    }
                    Poll::Failed { first, reason } => {
                        if first {
                            tracing::error!(
                                account = %account.name,
                                secret = %secret.describe(),
                                error = %reason,
                                "secret file is broken; the previous value stays in use"
                            );
                            metrics
                                .resilience
                                .secret_reloads
                                .with_label_values(&[&account.name, "failure"])
                                .inc();
                        }
                    }
                }
            }
            if reloaded {
                account.guards.lockout.reset();
                if let Credentials::Iam(source) = &account.credentials {
                    source.credentials_changed();
                }
                metrics
                    .resilience
                    .credentials_paused
                    .with_label_values(&[&account.name])
                    .set(0);
            }
        }
    }
}

/// Starts the secret poller: every `every`, [`Accounts::poll_secrets`]. Holds a [`Weak`]
/// reference and ends when the accounts are dropped.
pub fn spawn_secret_poller(accounts: &Arc<Accounts>, every: Duration) -> tokio::task::AbortHandle {
    let weak: Weak<Accounts> = Arc::downgrade(accounts);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(accounts) = weak.upgrade() else {
                return;
            };
            accounts.poll_secrets();
        }
    })
    .abort_handle()
}
