//! Which upstream failures are worth another attempt, and how long to wait before it.
//!
//! Retried: no connection or a reset before any answer (`BMSGW.0301`), `502`/`503`/`504`, and
//! BMS overload (`BMS.0212`, which BMS sends as a 400). Never retried: any other 4xx (the
//! request or the credential is wrong and will stay wrong; the one IAM-token refresh is
//! handled by the stack, not here), throttling (it would spend more of a spent quota), and
//! timeouts (the request's overall deadline is gone).
//!
//! Backoff is exponential with **full jitter** (uniform in `0..min(cap, base * 2^(n-1))`,
//! the AWS-architecture-blog scheme), so replicas that failed together do not retry together.
//! The stack never sleeps past the request's deadline.

use std::time::Duration;

use crate::config::RetryConfig;
use crate::error::GatewayError;

pub struct RetryPolicy {
    pub max_attempts: u32,
    base: Duration,
    cap: Duration,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            base: Duration::from_millis(config.base_backoff_ms),
            cap: Duration::from_millis(config.max_backoff_ms),
        }
    }

    /// The wait before retry number `retry` (1 = the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.cap);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// True for the transient failures listed in the module docs.
pub fn is_retryable(error: &GatewayError) -> bool {
    match error {
        GatewayError::UpstreamUnreachable => true,
        GatewayError::Upstream(e) => matches!(e.status.as_u16(), 502..=504) || e.code == "BMS.0212",
        _ => false,
    }
}

/// True for failures that say the endpoint is unhealthy (what the circuit breaker counts).
pub fn is_endpoint_failure(error: &GatewayError) -> bool {
    match error {
        GatewayError::UpstreamUnreachable
        | GatewayError::UpstreamTimeout
        | GatewayError::UpstreamBadResponse => true,
        GatewayError::Upstream(e) => e.status.is_server_error() || e.code == "BMS.0212",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;
    use http::StatusCode;

    fn cloud(status: u16, code: &str) -> GatewayError {
        GatewayError::Upstream(UpstreamError {
            status: StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: String::new(),
            request_id: None,
        })
    }

    #[test]
    fn classification() {
        assert!(is_retryable(&GatewayError::UpstreamUnreachable));
        assert!(is_retryable(&cloud(503, "APIGW.0202")));
        assert!(is_retryable(&cloud(400, "BMS.0212")));
        assert!(!is_retryable(&cloud(500, "BMS.9999")));
        assert!(!is_retryable(&cloud(400, "BMS.0040")));
        assert!(!is_retryable(&GatewayError::UpstreamTimeout));
        assert!(!is_retryable(&GatewayError::UpstreamCredentialsRejected));
        assert!(!is_retryable(&GatewayError::UpstreamThrottled {
            retry_after_secs: 1
        }));
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let p = RetryPolicy::new(&RetryConfig {
            max_attempts: 5,
            base_backoff_ms: 100,
            max_backoff_ms: 300,
        });
        for _ in 0..200 {
            assert!(p.backoff(1) < Duration::from_millis(100));
            assert!(p.backoff(2) < Duration::from_millis(200));
            assert!(p.backoff(5) < Duration::from_millis(300));
        }
    }
}
