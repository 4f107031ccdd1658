//! The simulator's IAM side: `POST /v3/auth/tokens` with the password method, and the check
//! of `X-Auth-Token` on BMS calls.
//!
//! Facts (`shared/reference/huawei-api.md` section 3, copied here so the simulator stands on
//! its own):
//! - request body `{"auth":{"identity":{"methods":["password"],"password":{"user":{"domain":
//!   {"name"|"id"},"name","password"}}},"scope":{"project":{"id"|"name"}}}}`;
//! - success is **201**, the token is the `X-Subject-Token` response header (several KB,
//!   starting `MII`), the body is `{"token":{"expires_at":"2020-01-04T09:05:22.701000Z",...}}`;
//! - a wrong user or password is a Keystone-style `401 {"error":{"code":401,"message":..,
//!   "title":"Unauthorized"}}` (IAM's exact body is undocumented; the SDK parser handles both);
//! - an expired or revoked token on a BMS call is `401 APIGW.0301` "token expires, expires_at:
//!   ..." or "decrypt token fail".
//!
//! Knobs for tests: token lifetime (down to seconds), revocation of every token issued so
//! far (as a password change does), and an outage switch (`503`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::responses::{flat, json, Body};
use crate::secret::Secret;

/// Huawei's documented token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// An IAM user the simulator accepts.
#[derive(Clone, Debug)]
pub struct SimIamUser {
    /// The account ("domain") name; `domain.id` is accepted too when it equals this.
    pub domain: String,
    pub name: String,
    pub password: Secret,
    /// Project ids this user's tokens may be scoped to. A project-name scope is resolved to
    /// the first project (the name is the region name, e.g. `cn-north-4`, and any name works).
    pub projects: Vec<String>,
}

/// One token handed out.
struct Issued {
    project: String,
    expires_at: SystemTime,
    revoked: bool,
}

/// Why a token on a BMS call is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenFailure {
    Unknown,
    Expired(String),
}

impl TokenFailure {
    pub(crate) fn message(&self) -> String {
        match self {
            TokenFailure::Unknown => {
                "Incorrect IAM authentication information: decrypt token fail".into()
            }
            TokenFailure::Expired(at) => {
                format!("Incorrect IAM authentication information: token expires, expires_at: {at}")
            }
        }
    }
}

pub(crate) struct IamState {
    users: Vec<SimIamUser>,
    tokens: Mutex<HashMap<String, Issued>>,
    lifetime_ms: AtomicU64,
    down: AtomicBool,
    pub(crate) token_requests: AtomicU64,
    pub(crate) tokens_issued: AtomicU64,
}

impl IamState {
    pub(crate) fn new(users: Vec<SimIamUser>) -> IamState {
        IamState {
            users,
            tokens: Mutex::new(HashMap::new()),
            lifetime_ms: AtomicU64::new(DEFAULT_TOKEN_LIFETIME.as_millis() as u64),
            down: AtomicBool::new(false),
            token_requests: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ms
            .store(lifetime.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    pub(crate) fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Revokes every token issued so far (a password change or permission change does this
    /// on the real cloud, within up to 30 minutes).
    pub(crate) fn revoke_all(&self) {
        for issued in self.lock().values_mut() {
            issued.revoked = true;
        }
    }

    pub(crate) fn reset(&self) {
        self.lock().clear();
        self.set_lifetime(DEFAULT_TOKEN_LIFETIME);
        self.set_down(false);
        self.token_requests.store(0, Ordering::Relaxed);
        self.tokens_issued.store(0, Ordering::Relaxed);
    }

    /// Every token issued since the last reset.
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The project a valid token is scoped to.
    pub(crate) fn check(&self, token: &str, now: SystemTime) -> Result<String, TokenFailure> {
        let tokens = self.lock();
        let issued = tokens.get(token).ok_or(TokenFailure::Unknown)?;
        if issued.revoked {
            return Err(TokenFailure::Unknown);
        }
        if now >= issued.expires_at {
            return Err(TokenFailure::Expired(format_expiry(issued.expires_at)));
        }
        Ok(issued.project.clone())
    }

    /// `POST /v3/auth/tokens`.
    pub(crate) fn create_token(&self, request_id: &str, body: &[u8]) -> Response<Body> {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        if self.is_down() {
            return flat(
                StatusCode::SERVICE_UNAVAILABLE,
                request_id,
                "APIGW.0202",
                "Backend unavailable.",
            );
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return keystone_error(StatusCode::BAD_REQUEST, "The request body is not JSON.");
        };
        let auth = &value["auth"];
        let methods_ok = auth["identity"]["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|v| v == "password"));
        let user = &auth["identity"]["password"]["user"];
        let (Some(name), Some(password)) = (user["name"].as_str(), user["password"].as_str())
        else {
            return keystone_error(StatusCode::BAD_REQUEST, "Expecting to find identity.");
        };
        let domain = user["domain"]["name"]
            .as_str()
            .or_else(|| user["domain"]["id"].as_str());
        if !methods_ok || domain.is_none() {
            return keystone_error(StatusCode::BAD_REQUEST, "Expecting to find identity.");
        }
        let found = self.users.iter().find(|u| {
            u.name == name
                && Some(u.domain.as_str()) == domain
                && constant_time_eq(u.password.expose(), password)
        });
        let Some(user) = found else {
            return keystone_error(
                StatusCode::UNAUTHORIZED,
                "The username or password is wrong.",
            );
        };
        let project = &auth["scope"]["project"];
        let scoped = match (project["id"].as_str(), project["name"].as_str()) {
            (Some(id), _) => user.projects.iter().find(|p| *p == id).cloned(),
            (None, Some(_)) => user.projects.first().cloned(),
            (None, None) => None,
        };
        let Some(project_id) = scoped else {
            return keystone_error(
                StatusCode::BAD_REQUEST,
                "The project scope is missing or not accessible to this user.",
            );
        };
        let now = SystemTime::now();
        let expires_at = now + self.lifetime();
        let token = new_token();
        self.lock().insert(
            token.clone(),
            Issued {
                project: project_id.clone(),
                expires_at,
                revoked: false,
            },
        );
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        let mut resp = json(
            StatusCode::CREATED,
            request_id,
            &json!({"token": {
                "expires_at": format_expiry(expires_at),
                "issued_at": format_expiry(now),
                "methods": ["password"],
                "project": {"id": project_id, "name": "cn-north-4",
                            "domain": {"name": user.domain}},
                "user": {"name": user.name, "domain": {"name": user.domain}},
            }}),
        );
        if let Ok(v) = HeaderValue::from_str(&token) {
            resp.headers_mut().insert("x-subject-token", v);
        }
        resp
    }
}

/// ISO-8601 UTC with microseconds and `Z`, as IAM writes `expires_at`.
fn format_expiry(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    let micros = t.microsecond();
    let whole = t
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    // `...:22Z` → `...:22.701000Z`
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

/// A token that looks like IAM's: `MII` and a few KB of base64.
fn new_token() -> String {
    let mut bytes = Vec::with_capacity(2048);
    for _ in 0..128 {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!(
        "MII{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn keystone_error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &super::responses::new_request_id(),
        &json!({"error": {"code": status.as_u16(), "message": message,
                          "title": status.canonical_reason().unwrap_or("Error")}}),
    )
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_iso_with_microseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_578_128_722_701_000);
        assert_eq!(format_expiry(t), "2020-01-04T09:05:22.701000Z");
        let parsed = OffsetDateTime::parse("2020-01-04T09:05:22.701000Z", &Rfc3339).unwrap();
        assert_eq!(parsed.unix_timestamp(), 1_578_128_722);
    }

    #[test]
    fn tokens_check_revoke_and_expire() {
        let iam = IamState::new(vec![SimIamUser {
            domain: "acct".into(),
            name: "svc".into(),
            password: Secret::new("pw"),
            projects: vec!["p1".into()],
        }]);
        iam.set_lifetime(Duration::from_secs(5));
        let body = br#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"domain":{"name":"acct"},"name":"svc","password":"pw"}}},"scope":{"project":{"id":"p1"}}}}"#;
        let resp = iam.create_token("r", body);
        assert_eq!(resp.status(), StatusCode::CREATED);
        let token = resp.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(token.starts_with("MII") && token.len() > 2000);
        assert_eq!(iam.issued_tokens(), vec![token.clone()]);
        let now = SystemTime::now();
        assert_eq!(iam.check(&token, now).unwrap(), "p1");
        assert!(matches!(
            iam.check(&token, now + Duration::from_secs(6)),
            Err(TokenFailure::Expired(_))
        ));
        iam.revoke_all();
        assert_eq!(iam.check(&token, now), Err(TokenFailure::Unknown));
        let wrong = br#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"domain":{"name":"acct"},"name":"svc","password":"nope"}}},"scope":{"project":{"id":"p1"}}}}"#;
        assert_eq!(
            iam.create_token("r", wrong).status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
