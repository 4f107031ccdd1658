//! The one place where a failed request becomes an HTTP answer.
//!
//! Every way a request can fail is a [`GatewayError`] variant, and each variant knows its HTTP
//! status, its error code and the message the caller sees. Bodies use Huawei's flat API-gateway
//! shape `{"error_code","error_msg","request_id"}` so the official Huawei SDKs classify them like
//! answers from the cloud itself. Conditions that Huawei's API gateway also reports reuse its
//! codes (`APIGW.*`); the rest are ours (`BMSGW.*`). Errors the cloud returned keep the cloud's
//! status and code.
//!
//! Messages are written for the caller and never carry a token, a key, a console URL or the text
//! of an upstream authentication failure (which can echo the gateway's canonical request).

use http::StatusCode;

/// Why a bearer token was refused. The reason is counted in metrics; the caller only learns
/// "invalid" or "expired", which is all an honest client needs and all an attacker gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    TooLarge,
    UnsupportedHeader,
    UnknownIssuer,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    BadClaims,
    LifetimeTooLong,
}

impl AuthFailure {
    /// The metric label for this reason (bounded set).
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::TooLarge => "too_large",
            AuthFailure::UnsupportedHeader => "unsupported_header",
            AuthFailure::UnknownIssuer => "unknown_issuer",
            AuthFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::BadClaims => "bad_claims",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
        }
    }

    pub const ALL: [AuthFailure; 13] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::TooLarge,
        AuthFailure::UnsupportedHeader,
        AuthFailure::UnknownIssuer,
        AuthFailure::AlgorithmNotAllowed,
        AuthFailure::UnknownKey,
        AuthFailure::BadSignature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::WrongAudience,
        AuthFailure::BadClaims,
        AuthFailure::LifetimeTooLong,
    ];
}

/// An error answered by the cloud, as parsed from either of its two body shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The cloud's `X-Request-Id` for the failed call, for the access log.
    pub request_id: Option<String>,
}

/// Everything that can end a request early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("no such API")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("invalid project id")]
    InvalidProjectId,
    #[error("invalid server id")]
    InvalidServerId,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request body is not valid JSON")]
    MalformedBody,
    #[error("invalid field {field}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("authentication failed: {0:?}")]
    Unauthenticated(AuthFailure),
    #[error("forbidden by policy")]
    Forbidden,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("no account serves this project")]
    ProjectNotServed,
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("upstream answered with something that is not a BMS answer")]
    UpstreamBadResponse,
    #[error("upstream rejected the gateway's service credentials")]
    UpstreamCredentialsRejected,
    #[error("upstream throttled the gateway")]
    UpstreamThrottled { retry_after_secs: u64 },
    #[error("upstream error {}", .0.code)]
    Upstream(UpstreamError),
    #[error("internal error")]
    Internal,
    #[error("request line too long")]
    RequestLineTooLong,
    #[error("shared store unavailable")]
    SharedStoreUnavailable,
    #[error("no valid IAM token")]
    IamTokenUnavailable,
    #[error("account credentials paused after repeated rejections")]
    CredentialsPaused { retry_after_secs: u64 },
    #[error("circuit breaker open")]
    BreakerOpen { retry_after_secs: u64 },
    #[error("upstream rate cap exhausted")]
    UpstreamQuotaExhausted { retry_after_secs: u64 },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::InvalidProjectId
            | GatewayError::InvalidServerId
            | GatewayError::MalformedBody
            | GatewayError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } | GatewayError::UpstreamThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::ProjectNotServed => StatusCode::NOT_FOUND,
            GatewayError::UpstreamUnreachable
            | GatewayError::UpstreamBadResponse
            | GatewayError::UpstreamCredentialsRejected => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Upstream(e) => e.status,
            GatewayError::IamTokenUnavailable
            | GatewayError::CredentialsPaused { .. }
            | GatewayError::BreakerOpen { .. }
            | GatewayError::UpstreamQuotaExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            GatewayError::SharedStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error code; the README's error table lists every one of these.
    pub fn code(&self) -> &str {
        match self {
            GatewayError::NotFound => "APIGW.0101",
            GatewayError::Unauthenticated(_) => "APIGW.0301",
            GatewayError::RateLimited { .. } | GatewayError::UpstreamThrottled { .. } => {
                "APIGW.0308"
            }
            GatewayError::InvalidProjectId => "BMSGW.0101",
            GatewayError::InvalidServerId => "BMSGW.0102",
            GatewayError::MalformedBody => "BMSGW.0103",
            GatewayError::InvalidField { .. } => "BMSGW.0104",
            GatewayError::BodyTooLarge => "BMSGW.0105",
            GatewayError::UnsupportedMediaType => "BMSGW.0106",
            GatewayError::MethodNotAllowed => "BMSGW.0107",
            GatewayError::BodyTimeout => "BMSGW.0108",
            GatewayError::Forbidden => "BMSGW.0201",
            GatewayError::ProjectNotServed => "BMSGW.0202",
            GatewayError::UpstreamUnreachable => "BMSGW.0301",
            GatewayError::UpstreamTimeout => "BMSGW.0302",
            GatewayError::UpstreamBadResponse => "BMSGW.0303",
            GatewayError::UpstreamCredentialsRejected => "BMSGW.0304",
            GatewayError::Upstream(e) => &e.code,
            GatewayError::Internal => "BMSGW.0500",
            GatewayError::RequestLineTooLong => "BMSGW.0701",
            GatewayError::SharedStoreUnavailable => "BMSGW.0601",
            GatewayError::IamTokenUnavailable => "BMSGW.0310",
            GatewayError::CredentialsPaused { .. } => "BMSGW.0312",
            GatewayError::BreakerOpen { .. } => "BMSGW.0313",
            GatewayError::UpstreamQuotaExhausted { .. } => "BMSGW.0314",
        }
    }

    /// The message the caller sees.
    pub fn message(&self) -> String {
        match self {
            GatewayError::NotFound => "API not found".into(),
            GatewayError::MethodNotAllowed => "Method not allowed; use POST".into(),
            GatewayError::InvalidProjectId => {
                "Invalid project_id: expected 32 hexadecimal characters".into()
            }
            GatewayError::InvalidServerId => "Invalid server_id: expected a UUID".into(),
            GatewayError::BodyTooLarge => "Request body too large (at most 4096 bytes)".into(),
            GatewayError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            GatewayError::MalformedBody => "Request body is not valid JSON".into(),
            GatewayError::InvalidField { field, reason } => {
                format!("Invalid field {field}: {reason}")
            }
            GatewayError::BodyTimeout => "Request body not received in time".into(),
            GatewayError::Unauthenticated(AuthFailure::Missing) => {
                "Incorrect IAM authentication information: bearer token required".into()
            }
            GatewayError::Unauthenticated(AuthFailure::Expired) => {
                "Incorrect IAM authentication information: token expired".into()
            }
            GatewayError::Unauthenticated(_) => {
                "Incorrect IAM authentication information: invalid token".into()
            }
            GatewayError::Forbidden => {
                "Policy does not allow this caller to open this server's console".into()
            }
            GatewayError::RateLimited { .. } => {
                "The throttling threshold has been reached: policy user over ratelimit".into()
            }
            GatewayError::UpstreamThrottled { .. } => {
                "The throttling threshold has been reached: the cloud throttled the gateway".into()
            }
            GatewayError::ProjectNotServed => {
                "No account of this gateway serves the project".into()
            }
            GatewayError::UpstreamUnreachable => "The BMS endpoint could not be reached".into(),
            GatewayError::UpstreamTimeout => "The BMS endpoint did not answer in time".into(),
            GatewayError::UpstreamBadResponse => {
                "The BMS endpoint answered with an unexpected response".into()
            }
            GatewayError::UpstreamCredentialsRejected => {
                "The BMS endpoint rejected the gateway's service credentials".into()
            }
            GatewayError::Upstream(e) => e.message.clone(),
            GatewayError::Internal => "Internal error".into(),
            GatewayError::RequestLineTooLong => {
                "Request line too long (see server.max_request_line_bytes)".into()
            }
            GatewayError::SharedStoreUnavailable => {
                "The shared rate-limit and cache store is unavailable; retry shortly".into()
            }
            GatewayError::IamTokenUnavailable => {
                "The gateway holds no valid IAM token for this project's account (IAM could not be reached or refused)".into()
            }
            GatewayError::CredentialsPaused { .. } => {
                "The cloud rejected this account's service credentials repeatedly; calls are paused to avoid locking the access key".into()
            }
            GatewayError::BreakerOpen { .. } => {
                "The BMS endpoint keeps failing; calls are paused briefly".into()
            }
            GatewayError::UpstreamQuotaExhausted { .. } => {
                "The gateway's upstream rate cap for this account is exhausted".into()
            }
        }
    }

    /// The JSON body in Huawei's flat API-gateway error shape.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error_code": self.code(),
            "error_msg": self.message(),
            "request_id": request_id,
        }))
        .unwrap_or_default()
    }

    /// `Retry-After` seconds, for the errors that carry one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after_secs }
            | GatewayError::UpstreamThrottled { retry_after_secs }
            | GatewayError::CredentialsPaused { retry_after_secs }
            | GatewayError::BreakerOpen { retry_after_secs }
            | GatewayError::UpstreamQuotaExhausted { retry_after_secs } => Some(*retry_after_secs),
            // Redis is probed again within a second or so (`redis.retry_interval_ms`).
            GatewayError::SharedStoreUnavailable => Some(1),
            _ => None,
        }
    }

    /// One error of every kind, for the tests that check the README's error table and
    /// `docs/openapi.yaml` cover them all. `Upstream` stands for every status the cloud can
    /// answer with.
    pub fn catalogue() -> Vec<GatewayError> {
        let catalogue = vec![
            GatewayError::NotFound,
            GatewayError::MethodNotAllowed,
            GatewayError::InvalidProjectId,
            GatewayError::InvalidServerId,
            GatewayError::BodyTooLarge,
            GatewayError::UnsupportedMediaType,
            GatewayError::MalformedBody,
            GatewayError::InvalidField {
                field: "remote_console",
                reason: "is required",
            },
            GatewayError::BodyTimeout,
            GatewayError::Unauthenticated(AuthFailure::Missing),
            GatewayError::Forbidden,
            GatewayError::RateLimited {
                retry_after_secs: 1,
            },
            GatewayError::ProjectNotServed,
            GatewayError::UpstreamUnreachable,
            GatewayError::UpstreamTimeout,
            GatewayError::UpstreamBadResponse,
            GatewayError::UpstreamCredentialsRejected,
            GatewayError::UpstreamThrottled {
                retry_after_secs: 1,
            },
            GatewayError::Upstream(UpstreamError {
                status: StatusCode::BAD_REQUEST,
                code: "BMS.0395".into(),
                message: "windows".into(),
                request_id: None,
            }),
            GatewayError::Internal,
            GatewayError::RequestLineTooLong,
            GatewayError::SharedStoreUnavailable,
            GatewayError::IamTokenUnavailable,
            GatewayError::CredentialsPaused {
                retry_after_secs: 1,
            },
            GatewayError::BreakerOpen {
                retry_after_secs: 1,
            },
            GatewayError::UpstreamQuotaExhausted {
                retry_after_secs: 1,
            },
        ];
        // A new variant fails to compile here until it is listed above as well.
        for error in &catalogue {
            match error {
                GatewayError::NotFound
                | GatewayError::MethodNotAllowed
                | GatewayError::InvalidProjectId
                | GatewayError::InvalidServerId
                | GatewayError::BodyTooLarge
                | GatewayError::UnsupportedMediaType
                | GatewayError::MalformedBody
                | GatewayError::InvalidField { .. }
                | GatewayError::BodyTimeout
                | GatewayError::Unauthenticated(_)
                | GatewayError::Forbidden
                | GatewayError::RateLimited { .. }
                | GatewayError::ProjectNotServed
                | GatewayError::UpstreamUnreachable
                | GatewayError::UpstreamTimeout
                | GatewayError::UpstreamBadResponse
                | GatewayError::UpstreamCredentialsRejected
                | GatewayError::UpstreamThrottled { .. }
                | GatewayError::Upstream(_)
                | GatewayError::Internal
                | GatewayError::RequestLineTooLong
                | GatewayError::SharedStoreUnavailable
                | GatewayError::IamTokenUnavailable
                | GatewayError::CredentialsPaused { .. }
                | GatewayError::BreakerOpen { .. }
                | GatewayError::UpstreamQuotaExhausted { .. } => {}
            }
        }
        catalogue
    }

    /// A short, bounded label for the upstream-error metric, when this error came from upstream.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            GatewayError::UpstreamUnreachable => Some("connect"),
            GatewayError::UpstreamTimeout => Some("timeout"),
            GatewayError::UpstreamBadResponse => Some("bad_response"),
            GatewayError::UpstreamCredentialsRejected => Some("credentials_rejected"),
            GatewayError::UpstreamThrottled { .. } => Some("throttled"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_use_the_flat_shape() {
        let body = GatewayError::Forbidden.body("req-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error_code"], "BMSGW.0201");
        assert_eq!(v["request_id"], "req-1");
        assert!(v["error_msg"].as_str().unwrap().contains("Policy"));
    }

    #[test]
    fn auth_failures_do_not_tell_the_reason() {
        for reason in AuthFailure::ALL {
            let msg = GatewayError::Unauthenticated(reason).message();
            assert!(
                msg.ends_with("invalid token")
                    || msg.ends_with("token expired")
                    || msg.ends_with("bearer token required"),
                "{msg}"
            );
        }
    }

    #[test]
    fn the_catalogue_holds_every_code_once() {
        let codes: Vec<String> = GatewayError::catalogue()
            .iter()
            .filter(|e| !matches!(e, GatewayError::Upstream(_)))
            .map(|e| e.code().to_string())
            .collect();
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        // RateLimited and UpstreamThrottled share APIGW.0308; every other code is one kind's.
        assert_eq!(unique.len(), codes.len() - 1, "{codes:?}");
    }

    #[test]
    fn upstream_errors_keep_status_and_code() {
        let e = GatewayError::Upstream(UpstreamError {
            status: StatusCode::BAD_REQUEST,
            code: "BMS.0395".into(),
            message: "windows".into(),
            request_id: None,
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "BMS.0395");
    }
}
