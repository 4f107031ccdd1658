//! The upstream stack: the one place where the resilience layers around a BMS call are
//! composed, in this order (outermost first). Each layer lives in its own module with its own
//! tests; this file only decides the order and what each outcome means for the others.
//!
//! 1. **throttle backoff** (`throttle.rs`): the cloud throttled this account recently →
//!    `429 APIGW.0308` + `Retry-After`, no call.
//! 2. **lockout guard** (`lockout.rs`, AK/SK accounts): paused after consecutive `401`s →
//!    `503 BMSGW.0312`; while the credential is unverified, calls go one at a time.
//! 3. then per attempt, at most `upstream.retry.max_attempts`, all inside the request's
//!    overall deadline (`upstream.timeout_ms`):
//!    - **endpoint and circuit breaker** (`breaker.rs`, one per endpoint): the first endpoint
//!      (primary, then the fallbacks in order) whose breaker lets the call through; after an
//!      endpoint failure the retry starts at the next endpoint; all open → `503 BMSGW.0313`
//!      with `Retry-After`;
//!    - **upstream quota** (`quota.rs`): no token within the bounded wait → `503 BMSGW.0314`
//!      with `Retry-After`, nothing sent;
//!    - **credentials**: AK/SK material, or a valid IAM token (`iam.rs`; none → `503
//!      BMSGW.0310`);
//!    - **the attempt** (`client.rs`), whose outcome feeds the breaker, then:
//!      - success → the credential is verified (lockout count reset);
//!      - `401` with an IAM token → the token is dropped, refreshed once and the request
//!        retried once (this retry is not counted against the attempt cap);
//!      - `401` with AK/SK → counted by the lockout guard, `502 BMSGW.0304`, no retry;
//!      - `429` → the throttle backoff engages, `429` with `Retry-After`, no retry;
//!      - transient (`retry.rs`) → full-jitter backoff and another attempt, unless the
//!        attempts or the deadline are used up;
//!      - anything else (4xx) → passed on, no retry.

use std::time::Duration;

use tokio::time::Instant;

use crate::bms::ConsoleTarget;
use crate::cache::Fetched;
use crate::error::GatewayError;
use crate::upstream::accounts::{Account, Credentials};
use crate::upstream::breaker::State;
use crate::upstream::client::{AuthMaterial, UpstreamClient};
use crate::upstream::lockout::AfterRejection;
use crate::upstream::quota::Granted;
use crate::upstream::retry::{is_endpoint_failure, is_retryable};

/// Runs one request through the layers above.
pub async fn remote_console(
    client: &UpstreamClient,
    account: &Account,
    target: &ConsoleTarget,
) -> Result<Fetched, GatewayError> {
    let deadline = Instant::now() + client.timeout;
    let m = &client.metrics.resilience;
    let name: &str = &account.name;
    let guards = &account.guards;
    let short_circuit = |reason: &str| m.short_circuits.with_label_values(&[name, reason]).inc();

    // 1. Throttle backoff.
    if let Err(retry_after_secs) = guards.throttle.check() {
        short_circuit("throttle_backoff");
        return Err(GatewayError::UpstreamThrottled { retry_after_secs });
    }

    // 2. Lockout guard (AK/SK only: IAM tokens are refreshed instead).
    let _admission = if let Credentials::AkSk { .. } = account.credentials {
        match tokio::time::timeout_at(deadline, guards.lockout.admit()).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(retry_after_secs)) => {
                short_circuit("credentials_paused");
                return Err(GatewayError::CredentialsPaused { retry_after_secs });
            }
            Ok(Ok(admission)) => {
                // Not paused (any more): a cool-down that ran out clears the gauge.
                m.credentials_paused.with_label_values(&[name]).set(0);
                Some(admission)
            }
        }
    } else {
        None
    };

    let mut attempt = 0;
    let mut token_refreshed = false;
    let mut preferred = 0;
    loop {
        attempt += 1;
        // Endpoint and circuit breaker.
        let (index, permit) = match pick_endpoint(account, preferred) {
            Ok(picked) => picked,
            Err(retry_after_secs) => {
                short_circuit("breaker_open");
                return Err(GatewayError::BreakerOpen { retry_after_secs });
            }
        };
        let endpoint = &account.endpoints[index];
        let breaker = &endpoint.breaker;
        let gauge = m.breaker_state.with_label_values(&[name, &endpoint.label]);
        gauge.set(breaker.state().gauge());

        // Upstream quota.
        match guards.quota.acquire(deadline).await {
            Ok(Granted::AtOnce) => {}
            Ok(Granted::AfterWaiting) => m.quota_waits.with_label_values(&[name, "sent"]).inc(),
            Err(refused) => {
                breaker.cancel(permit);
                m.quota_waits.with_label_values(&[name, "refused"]).inc();
                short_circuit("quota_exhausted");
                return Err(GatewayError::UpstreamQuotaExhausted {
                    retry_after_secs: refused.retry_after_secs,
                });
            }
        }

        // Credentials.
        let auth = match &account.credentials {
            Credentials::AkSk {
                access_key,
                secret_key,
                security_token,
            } => AuthMaterial::Signing {
                access_key: access_key.get(),
                secret_key: secret_key.get(),
                security_token: security_token.as_ref().map(|t| t.get()),
            },
            Credentials::Iam(source) => {
                match tokio::time::timeout_at(deadline, source.token()).await {
                    Ok(Ok(token)) => AuthMaterial::Token(token),
                    Ok(Err(e)) => {
                        breaker.cancel(permit);
                        short_circuit("no_token");
                        return Err(e);
                    }
                    Err(_) => {
                        breaker.cancel(permit);
                        return Err(GatewayError::UpstreamTimeout);
                    }
                }
            }
        };

        // The attempt.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            breaker.cancel(permit);
            return Err(GatewayError::UpstreamTimeout);
        }
        let result = client
            .attempt(account, endpoint, target, &auth, remaining)
            .await;
        let healthy = result
            .as_ref()
            .err()
            .is_none_or(|e| !is_endpoint_failure(e));
        let state = breaker.record(permit, healthy);
        gauge.set(state.gauge());
        if !healthy {
            // The retry, if any, tries the next endpoint first.
            preferred = (index + 1) % account.endpoints.len();
            if state == State::Open {
                tracing::warn!(
                    account = name,
                    endpoint = %endpoint.label,
                    "circuit breaker open: the BMS endpoint keeps failing"
                );
            }
        }

        let error = match result {
            Ok(fetched) => {
                guards.lockout.accepted();
                return Ok(fetched);
            }
            Err(e) => e,
        };
        match (&error, &account.credentials, &auth) {
            (
                GatewayError::UpstreamCredentialsRejected,
                Credentials::Iam(source),
                AuthMaterial::Token(token),
            ) if !token_refreshed => {
                token_refreshed = true;
                source.invalidate(token);
                attempt -= 1;
                continue;
            }
            (GatewayError::UpstreamCredentialsRejected, Credentials::AkSk { .. }, _) => {
                if guards.lockout.rejected() == AfterRejection::Paused {
                    m.credentials_paused.with_label_values(&[name]).set(1);
                    tracing::error!(
                        account = name,
                        "the cloud rejected this account's credentials upstream.lockout.threshold times in a row; calls are paused for upstream.lockout.cooldown_seconds so the access key is not locked"
                    );
                }
                return Err(error);
            }
            (GatewayError::UpstreamThrottled { .. }, _, _) => {
                let retry_after_secs = guards.throttle.engage();
                tracing::warn!(
                    account = name,
                    retry_after_secs,
                    "the cloud throttled this account; backing off"
                );
                return Err(GatewayError::UpstreamThrottled { retry_after_secs });
            }
            (GatewayError::Upstream(e), _, _) if e.status.is_client_error() => {
                // Any answer past authentication means the credential works.
                guards.lockout.accepted();
            }
            _ => {}
        }
        if !is_retryable(&error) || attempt >= client.retry.max_attempts {
            return Err(error);
        }
        let wait = client.retry.backoff(attempt);
        if Instant::now() + wait + Duration::from_millis(1) >= deadline {
            return Err(error);
        }
        m.retries.with_label_values(&[name]).inc();
        tracing::info!(account = name, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying the BMS call");
        tokio::time::sleep(wait).await;
    }
}

/// The first endpoint, starting at `preferred` and wrapping around, whose breaker lets a call
/// through; `Err(seconds until the soonest one half-opens)` when every breaker is open.
fn pick_endpoint(
    account: &Account,
    preferred: usize,
) -> Result<(usize, crate::upstream::breaker::Permit), u64> {
    let n = account.endpoints.len();
    let mut soonest = u64::MAX;
    for offset in 0..n {
        let index = (preferred + offset) % n;
        match account.endpoints[index].breaker.try_acquire() {
            Ok(permit) => return Ok((index, permit)),
            Err(secs) => soonest = soonest.min(secs),
        }
    }
    Err(soonest.max(1))
}
