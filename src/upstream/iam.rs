//! IAM token credentials: a project-scoped token from `POST /v3/auth/tokens?nocatalog=true`
//! (password method), kept fresh ahead of its expiry.
//!
//! Facts (`shared/reference/huawei-api.md` section 3): the request body is
//! `{"auth":{"identity":{"methods":["password"],"password":{"user":{"domain":{"name":D},
//! "name":U,"password":P}}},"scope":{"project":{"id"|"name":..}}}}` with `Content-Type:
//! application/json;charset=utf8`; success is `201` with the token in the `X-Subject-Token`
//! header (several KB) and `{"token":{"expires_at":"2020-01-04T09:05:22.701000Z",..}}`; the
//! token goes on BMS calls as `X-Auth-Token`. A token lives 24 h, but a password or
//! permission change revokes it early, which BMS reports as `401 APIGW.0301`.
//!
//! Rules this module keeps:
//! - **Ahead of expiry**: once `now >= expires_at - refresh_margin` (for a token that lives
//!   shorter than twice the margin: half-way through its life) the background refresher
//!   (one task per account, [`spawn_refresher`]) fetches a new token; requests keep using the
//!   still-valid one meanwhile and never wait for it.
//! - **Single flight**: however many requests find no valid token at once, one IAM call is
//!   made; the others wait for its outcome (an attempt counter tells a waiter that an attempt
//!   finished while it queued, successful or not, so an outage does not turn into one IAM call
//!   per waiting request).
//! - **Outage**: a failed refresh keeps the old token while it is valid. With none valid,
//!   requests get `503 BMSGW.0310` and `/readyz` fails. After a failure the next attempt waits
//!   1 s, doubling to 5 min, so a wrong password does not hammer IAM (which locks users too).
//! - **Revocation**: [`IamTokenSource::invalidate`] drops the token BMS refused (only if it is
//!   still the current one), so the stack's single retry gets a fresh one.
//!
//! Time is the injected clock's (wall-clock seconds, compared with `expires_at`), so tests move
//! it rather than wait. The token, user, account and password are [`Secret`]s throughout.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::clock::SharedClock;
use crate::error::GatewayError;
use crate::secret::Secret;
use crate::telemetry::Metrics;
use crate::upstream::client::HttpClient;
use crate::upstream::secrets::WatchedSecret;

/// First wait after a failed refresh; it doubles per failure up to [`MAX_FAILURE_BACKOFF`].
const FIRST_FAILURE_BACKOFF: u64 = 1;
const MAX_FAILURE_BACKOFF: u64 = 300;
/// Largest IAM answer read (the body without catalog is a few KB).
const MAX_IAM_RESPONSE_BYTES: usize = 256 * 1024;

/// What the token is scoped to.
#[derive(Clone, Debug)]
pub enum Scope {
    ProjectId(String),
    ProjectName(String),
}

/// A token, when it expires and when to replace it (Unix seconds).
#[derive(Clone, Debug)]
pub struct Token {
    pub value: Secret,
    pub expires_at: i64,
    /// `expires_at - refresh_margin`, or half-way through the lifetime for a token that lives
    /// shorter than twice the margin (so a short-lived token is not refreshed in a loop).
    pub refresh_at: i64,
}

pub struct IamTokenSource {
    account: Arc<str>,
    /// `https://iam.myhuaweicloud.com`, no trailing slash.
    endpoint: String,
    pub user: WatchedSecret,
    pub domain: WatchedSecret,
    pub password: WatchedSecret,
    scope: Scope,
    margin_seconds: i64,
    timeout: Duration,
    clock: SharedClock,
    http: HttpClient,
    metrics: Arc<Metrics>,
    token: RwLock<Option<Token>>,
    /// Held while one IAM call is made.
    refresh: tokio::sync::Mutex<()>,
    /// Counts finished IAM attempts (see the module docs).
    attempts: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Wall-clock second before which no new attempt is made after a failure.
    next_attempt_at: AtomicU64,
}

/// Everything needed to build one [`IamTokenSource`].
pub struct IamSettings {
    pub account: Arc<str>,
    pub endpoint: String,
    pub user: WatchedSecret,
    pub domain: WatchedSecret,
    pub password: WatchedSecret,
    pub scope: Scope,
    pub margin_seconds: u64,
    pub timeout: Duration,
}

impl IamTokenSource {
    pub fn new(
        settings: IamSettings,
        clock: SharedClock,
        http: HttpClient,
        metrics: Arc<Metrics>,
    ) -> IamTokenSource {
        IamTokenSource {
            account: settings.account,
            endpoint: settings.endpoint.trim_end_matches('/').to_string(),
            user: settings.user,
            domain: settings.domain,
            password: settings.password,
            scope: settings.scope,
            margin_seconds: settings.margin_seconds as i64,
            timeout: settings.timeout,
            clock,
            http,
            metrics,
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            next_attempt_at: AtomicU64::new(0),
        }
    }

    /// The current token if it has not expired.
    pub fn valid_token(&self) -> Option<Token> {
        let now = self.clock.unix_seconds();
        self.token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|t| t.expires_at > now)
    }

    /// True when there is no token or it is inside the refresh margin.
    pub fn needs_refresh(&self) -> bool {
        let now = self.clock.unix_seconds();
        self.token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|t| now >= t.refresh_at)
    }

    /// A valid token for a BMS call: the current one, or (when none is valid) the outcome of
    /// the one shared refresh.
    pub async fn token(&self) -> Result<Token, GatewayError> {
        if let Some(t) = self.valid_token() {
            return Ok(t);
        }
        self.refresh_once().await;
        self.valid_token().ok_or(GatewayError::IamTokenUnavailable)
    }

    /// The user, account or password file changed: a refresh may now succeed, so the failure
    /// backoff is forgotten.
    pub fn credentials_changed(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.next_attempt_at.store(0, Ordering::Release);
    }

    /// Drops `rejected` if it is still the current token (BMS refused it).
    pub fn invalidate(&self, rejected: &Token) {
        let mut current = self.token.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|t| t.value == rejected.value) {
            tracing::warn!(account = %self.account, "the BMS API refused the IAM token; fetching a new one");
            *current = None;
            self.metrics
                .resilience
                .iam_token_expiry
                .with_label_values(&[&self.account])
                .set(0);
        }
    }

    /// Makes one IAM call unless another finished while this one waited for the lock, or the
    /// failure backoff says not yet.
    pub async fn refresh_once(&self) {
        let seen = self.attempts.load(Ordering::Acquire);
        let _flight = self.refresh.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        let now = self.clock.unix_seconds();
        if (now.max(0) as u64) < self.next_attempt_at.load(Ordering::Acquire) {
            return;
        }
        let result = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .unwrap_or_else(|_| Err("IAM did not answer in time".into()));
        let label = match result {
            Ok(token) => {
                self.metrics
                    .resilience
                    .iam_token_expiry
                    .with_label_values(&[&self.account])
                    .set(token.expires_at);
                tracing::info!(account = %self.account, expires_at = token.expires_at, "IAM token obtained");
                *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
                self.consecutive_failures.store(0, Ordering::Release);
                self.next_attempt_at.store(0, Ordering::Release);
                "success"
            }
            Err(reason) => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel);
                let wait = (FIRST_FAILURE_BACKOFF << failures.min(16)).min(MAX_FAILURE_BACKOFF);
                self.next_attempt_at
                    .store(now.max(0) as u64 + wait, Ordering::Release);
                let still_valid = self.valid_token().is_some();
                tracing::error!(
                    account = %self.account,
                    error = %reason,
                    still_valid,
                    next_attempt_in_seconds = wait,
                    "IAM token refresh failed"
                );
                "failure"
            }
        };
        self.metrics
            .resilience
            .iam_refreshes
            .with_label_values(&[&self.account, label])
            .inc();
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    /// One `POST /v3/auth/tokens?nocatalog=true`. Errors never hold a secret.
    async fn fetch(&self) -> Result<Token, String> {
        let scope = match &self.scope {
            Scope::ProjectId(id) => json!({"project": {"id": id}}),
            Scope::ProjectName(name) => json!({"project": {"name": name}}),
        };
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "domain": {"name": self.domain.get().expose()},
                "name": self.user.get().expose(),
                "password": self.password.get().expose(),
            }}},
            "scope": scope,
        }});
        let bytes = serde_json::to_vec(&body).map_err(|_| "cannot encode the IAM request")?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v3/auth/tokens?nocatalog=true", self.endpoint))
            .header(http::header::CONTENT_TYPE, "application/json;charset=utf8")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|_| "invalid IAM endpoint")?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| format!("IAM could not be reached: {e}"))?;
        let status = response.status();
        let subject_token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| Secret::new(v.trim()));
        let body = Limited::new(response.into_body(), MAX_IAM_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|_| "IAM answer unreadable or too large")?
            .to_bytes();
        if status != StatusCode::CREATED && status != StatusCode::OK {
            // IAM's error text describes the request (wrong user or password), never echoes
            // the password; it is still only logged, by the caller, never returned.
            let code = crate::bms::parse_upstream_error(status, &body).code;
            return Err(format!("IAM answered {} ({code})", status.as_u16()));
        }
        let value = subject_token
            .filter(|t| !t.expose().is_empty())
            .ok_or("IAM answered without X-Subject-Token")?;
        let expires_at = token_expiry(&body)?;
        let lifetime = (expires_at - self.clock.unix_seconds()).max(0);
        let refresh_at = expires_at - self.margin_seconds.min(lifetime / 2);
        Ok(Token {
            value,
            expires_at,
            refresh_at,
        })
    }
}

/// The `token.expires_at` (RFC 3339) of a successful IAM answer, in Unix seconds. The error
/// names what is wrong and never quotes the body.
pub(crate) fn token_expiry(body: &[u8]) -> Result<i64, &'static str> {
    let parsed: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "IAM answer is not JSON")?;
    Ok(parsed["token"]["expires_at"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .ok_or("IAM answer has no valid token.expires_at")?
        .unix_timestamp())
}

/// Starts the background refresher of `source`. It holds only a [`Weak`] reference and ends
/// when the source is dropped (the owner also aborts it, see `state::BackgroundTasks`).
pub fn spawn_refresher(source: &Arc<IamTokenSource>, every: Duration) -> tokio::task::AbortHandle {
    let weak: Weak<IamTokenSource> = Arc::downgrade(source);
    tokio::spawn(async move {
        loop {
            let Some(source) = weak.upgrade() else { return };
            if source.needs_refresh() {
                source.refresh_once().await;
            }
            drop(source);
            tokio::time::sleep(every).await;
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints_its_value() {
        let token = Token {
            value: Secret::new("MIIsecret-token-value"),
            expires_at: 1,
            refresh_at: 0,
        };
        assert!(!format!("{token:?}").contains("MIIsecret"));
    }
}
