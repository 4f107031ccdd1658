//! Bearer-token verification: a JWT in, a typed [`Caller`] out, or the reason it was refused.
//!
//! The checks run in an order that does the cheap, attacker-controlled work first and the
//! signature check only once the token names a configured issuer, an allowed algorithm and a
//! known key:
//!
//! 1. size cap, three base64url parts;
//! 2. header: `alg` must be a known asymmetric algorithm on the issuer's allow-list (so `none`,
//!    in any spelling, never passes); a `crit` header is refused because we understand no
//!    extensions; `jku`, `x5u`, `jwk` and `x5c` are ignored, never used to find a key;
//! 3. issuer from the (not yet trusted) `iss` claim selects which keys and rules apply;
//! 4. key by `kid` among that issuer's loaded keys, whose bound algorithms must include `alg`;
//! 5. signature (jsonwebtoken's verifier on aws-lc-rs);
//! 6. claims, on the injected clock: `exp` required and numeric, `nbf`/`iat` numeric when
//!    present, leeway applied; `aud` (string or array of strings) must name a configured
//!    audience; the subject claim must be a non-empty string.
//!
//! Nothing downstream sees the raw token: the pipeline keeps only the [`Caller`].

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::auth::keys::{self, KeySet};
use crate::clock::SharedClock;
use crate::config::{AuthConfig, ConfigIssue};
use crate::error::AuthFailure;

/// Key ids of the repository's public dev keys start with this; loading one logs a warning.
pub const DEV_KEY_PREFIX: &str = "bmsgw-dev-only";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The value of the configured subject claim.
    pub subject: String,
    /// The configured name of the issuer that vouched for this caller.
    pub issuer_name: Arc<str>,
    /// The token's claims, for policy decisions.
    pub claims: Arc<Map<String, Value>>,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: i64,
}

impl Caller {
    /// The identity rate limits and per-user caches are keyed by: issuer and subject together,
    /// so two identity providers cannot share a user by accident.
    pub fn user_key(&self) -> String {
        format!("{}/{}", self.issuer_name, self.subject)
    }
}

struct Issuer {
    name: Arc<str>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    keys: KeySet,
}

/// Verifies tokens against every configured issuer.
pub struct Verifier {
    issuers: HashMap<String, Issuer>,
    subject_claim: String,
    max_token_bytes: usize,
    clock: SharedClock,
}

impl Verifier {
    /// Builds the verifier, loading every issuer's keys. Problems are reported per config key.
    pub fn from_config(
        auth: &AuthConfig,
        base_dir: &std::path::Path,
        clock: SharedClock,
    ) -> Result<Verifier, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issuers = HashMap::new();
        for (i, cfg) in auth.issuers.iter().enumerate() {
            let key_path = format!("auth.issuers[{i}]");
            let algorithms: Vec<Algorithm> = cfg
                .algorithms
                .iter()
                .filter_map(|a| keys::parse_algorithm(a).ok())
                .collect();
            let mut loaded = Vec::new();
            if let Some(file) = &cfg.jwks_file {
                match keys::load_jwks_file(&base_dir.join(file)) {
                    Ok(set) => loaded.push(set),
                    Err(e) => issues.push(ConfigIssue::new(format!("{key_path}.jwks_file"), e)),
                }
            }
            let mut pem = Vec::new();
            for (j, k) in cfg.pem_keys.iter().enumerate() {
                let alg = match keys::parse_algorithm(&k.alg) {
                    Ok(a) => a,
                    Err(e) => {
                        issues.push(ConfigIssue::new(format!("{key_path}.pem_keys[{j}].alg"), e));
                        continue;
                    }
                };
                match keys::load_pem_key(&base_dir.join(&k.file), alg, k.kid.clone()) {
                    Ok(key) => pem.push(key),
                    Err(e) => issues.push(ConfigIssue::new(
                        format!("{key_path}.pem_keys[{j}].file"),
                        e,
                    )),
                }
            }
            let mut all: Vec<_> = pem;
            for set in loaded {
                all.extend(set.into_keys());
            }
            if all.iter().any(|k| {
                k.kid
                    .as_deref()
                    .is_some_and(|kid| kid.starts_with(DEV_KEY_PREFIX))
            }) {
                tracing::warn!(
                    issuer = %cfg.name,
                    "ISSUER USES THE PUBLIC DEV SIGNING KEY: anyone can mint accepted tokens; for development and demos only"
                );
            }
            if !all
                .iter()
                .any(|k| k.algorithms.iter().any(|a| algorithms.contains(a)))
                && issues.is_empty()
            {
                issues.push(ConfigIssue::new(
                    format!("{key_path}.algorithms"),
                    "no loaded key can verify any of these algorithms",
                ));
            }
            issuers.insert(
                cfg.issuer.clone(),
                Issuer {
                    name: Arc::from(cfg.name.as_str()),
                    audiences: cfg.audiences.clone(),
                    algorithms,
                    leeway: cfg.leeway_seconds as i64,
                    keys: KeySet::new(all),
                },
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Verifier {
            issuers,
            subject_claim: auth.subject_claim.clone(),
            max_token_bytes: auth.max_token_bytes,
            clock,
        })
    }

    /// Total number of keys loaded across issuers (for readiness).
    pub fn key_count(&self) -> usize {
        self.issuers.values().map(|i| i.keys.len()).sum()
    }

    /// Verifies a bearer token.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Malformed);
        };
        let header = decode_json_object(header_b64)?;
        let claims = decode_json_object(payload_b64)?;

        if header.contains_key("crit") {
            return Err(AuthFailure::UnsupportedHeader);
        }
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::Malformed)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(AuthFailure::Malformed),
        };

        let issuer_claim = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::UnknownIssuer)?;
        let issuer = self
            .issuers
            .get(issuer_claim)
            .ok_or(AuthFailure::UnknownIssuer)?;

        let alg: Algorithm = alg_name
            .parse()
            .map_err(|_| AuthFailure::AlgorithmNotAllowed)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }

        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = &token.as_bytes()[..signed_len];
        let mut any_candidate = false;
        let mut verified = false;
        for key in issuer.keys.candidates(kid, alg) {
            any_candidate = true;
            if matches!(
                jsonwebtoken::crypto::verify(signature_b64, message, &key.key, alg),
                Ok(true)
            ) {
                verified = true;
                break;
            }
        }
        if !any_candidate {
            return Err(AuthFailure::UnknownKey);
        }
        if !verified {
            return Err(AuthFailure::BadSignature);
        }

        let expires_at = self.check_times(&claims, issuer.leeway)?;
        check_audience(&claims, &issuer.audiences)?;
        let subject = match claims.get(&self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
            _ => return Err(AuthFailure::BadClaims),
        };
        Ok(Caller {
            subject,
            issuer_name: issuer.name.clone(),
            claims: Arc::new(claims),
            expires_at,
        })
    }

    /// Checks `exp` (required), `nbf` and `iat` against the clock; returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>, leeway: i64) -> Result<i64, AuthFailure> {
        let now = self.clock.unix_seconds();
        let exp = numeric_claim(claims, "exp")?.ok_or(AuthFailure::BadClaims)?;
        if now > exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired);
        }
        for name in ["nbf", "iat"] {
            if let Some(t) = numeric_claim(claims, name)? {
                if t > now.saturating_add(leeway) {
                    return Err(AuthFailure::NotYetValid);
                }
            }
        }
        Ok(exp)
    }
}

/// A NumericDate claim: a JSON number (integer or finite float, truncated to seconds). Any
/// other type is a malformed token, never "absent".
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15) {
                Ok(Some(f as i64))
            } else {
                Err(AuthFailure::BadClaims)
            }
        }
        Some(_) => Err(AuthFailure::BadClaims),
    }
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), AuthFailure> {
    let matches = |aud: &str| accepted.iter().any(|a| a == aud);
    match claims.get("aud") {
        Some(Value::String(aud)) if matches(aud) => Ok(()),
        Some(Value::String(_)) => Err(AuthFailure::WrongAudience),
        Some(Value::Array(list)) => {
            let mut any = false;
            for item in list {
                match item {
                    Value::String(aud) => any |= matches(aud),
                    _ => return Err(AuthFailure::BadClaims),
                }
            }
            if any {
                Ok(())
            } else {
                Err(AuthFailure::WrongAudience)
            }
        }
        None => Err(AuthFailure::WrongAudience),
        Some(_) => Err(AuthFailure::BadClaims),
    }
}

fn decode_json_object(part: &str) -> Result<Map<String, Value>, AuthFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthFailure::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthFailure::Malformed),
    }
}
