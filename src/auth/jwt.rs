//! Bearer-token verification: a JWT in, a typed [`Caller`] out, or the reason it was refused.
//!
//! The checks run in an order that does the cheap, attacker-controlled work first and the
//! signature check only once the token names a configured issuer, an allowed algorithm and a
//! known key:
//!
//! 1. size cap, three base64url parts, header and claims JSON objects without duplicate keys
//!    (two parsers could otherwise read two different tokens from one string);
//! 2. header: `alg` must be a known algorithm on the issuer's allow-list (so `none`, in any
//!    spelling, never passes; HS* only for an issuer with a shared secret); a `crit` header is refused because we understand no
//!    extensions; `jku`, `x5u`, `jwk` and `x5c` are ignored, never used to find a key;
//! 3. issuer from the (not yet trusted) `iss` claim selects which keys and rules apply;
//! 4. key by `kid` among that issuer's loaded keys, whose bound algorithms must include `alg`
//!    (an unknown `kid` makes a remote key set refetch, within its cool-down);
//! 5. signature, with the key parsed once at load (aws-lc-rs; `keys`);
//! 6. claims, on the injected clock: `exp` required and numeric, `nbf`/`iat` numeric when
//!    present, leeway applied, lifetime at most the issuer's maximum; `aud` (string or array
//!    of strings) must name a configured audience; the subject claim must be a non-empty
//!    string.
//!
//! A token that passed is remembered in a bounded cache keyed by its SHA-256 (never the token
//! itself) until its `exp`, so a tool that calls repeatedly with one token pays for one
//! signature check. A hit still checks `exp` on the injected clock, and any key-set change
//! empties the cache, so a rotated-out key's tokens are checked again and refused.
//!
//! Nothing downstream sees the raw token: the pipeline keeps only the [`Caller`], which holds
//! only the claims the policy reads (so a cached token costs a couple of hundred bytes, not
//! whatever its issuer put in it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::auth::jwks::{RefreshTask, RemoteJwks};
use crate::auth::keys::{self, KeySet, VerifyKey};
use crate::auth::token_cache::{token_store, TokenStore};
use crate::clock::SharedClock;
use crate::config::{AuthConfig, ConfigIssue, IssuerConfig};
use crate::error::AuthFailure;
use crate::secret::SecretRef;
use crate::strict_json::StrictJson;
use crate::telemetry::Metrics;

/// Key ids of the repository's public dev keys start with this; loading one logs a warning.
pub const DEV_KEY_PREFIX: &str = "bmsgw-dev-only";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The value of the configured subject claim (shared: every cache hit clones the caller).
    pub subject: Arc<str>,
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
        [&*self.issuer_name, "/", &self.subject].concat()
    }

    /// The rate limiter's key: `tier|` and [`Caller::user_key`], built in one allocation
    /// (`concat`, not `format!`, whose machinery cost more than the copying).
    pub fn limiter_key(&self, tier: &str) -> String {
        [tier, "|", &self.issuer_name, "/", &self.subject].concat()
    }
}

struct Issuer {
    name: Arc<str>,
    config_key: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    max_lifetime: i64,
    /// Keys from files and the shared secret: fixed for the life of the gateway.
    local_keys: KeySet,
    /// The identity provider's JWKS over HTTPS, when configured.
    remote: Option<Arc<RemoteJwks>>,
}

impl Issuer {
    fn new(
        cfg: &IssuerConfig,
        config_key: String,
        algorithms: Vec<Algorithm>,
        local_keys: KeySet,
        remote: Option<Arc<RemoteJwks>>,
    ) -> Issuer {
        Issuer {
            name: Arc::from(cfg.name.as_str()),
            config_key,
            audiences: cfg.audiences.clone(),
            algorithms,
            leeway: cfg.leeway_seconds as i64,
            max_lifetime: cfg.max_token_lifetime_seconds.min(i64::MAX as u64) as i64,
            local_keys,
            remote,
        }
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
        let mut found: Vec<VerifyKey> = self.local_keys.candidates(kid, alg).cloned().collect();
        if let Some(remote) = &self.remote {
            found.extend(remote.keys().candidates(kid, alg).cloned());
        }
        found
    }
}

/// The issuer's allow-list as algorithms; names that do not parse are left out (config
/// validation reports them).
fn allowed_algorithms(cfg: &IssuerConfig) -> Vec<Algorithm> {
    let with_secret = cfg.hmac_secret.is_some();
    cfg.algorithms
        .iter()
        .filter_map(|a| keys::parse_algorithm(a, with_secret).ok())
        .collect()
}

/// A token that passed every check, remembered by the hash of the token.
struct VerifiedToken {
    caller: Caller,
    /// The key epoch it was verified under; any key-set change since makes it stale.
    key_epoch: u64,
}

/// Unix seconds as the token store counts them (before 1970 is 0).
fn unix_seconds_u64(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}

/// Verifies tokens against every configured issuer.
pub struct Verifier {
    issuers: HashMap<String, Issuer>,
    subject_claim: String,
    max_token_bytes: usize,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    cache: Option<TokenStore<Arc<VerifiedToken>>>,
    key_epoch: Arc<AtomicU64>,
    /// Background JWKS refreshers; dropping the verifier stops them.
    refresh_tasks: Mutex<Vec<RefreshTask>>,
    /// When set, the only claims a [`Caller`] keeps (those the policy reads); the rest are
    /// dropped after verification, so a cached token costs little memory whatever it carries.
    kept_claims: Option<std::collections::HashSet<String>>,
    /// Shared by every caller that keeps no claims, so those cost no allocation each.
    no_claims: Arc<Map<String, Value>>,
}

impl Verifier {
    /// Keeps only these claims in the callers this verifier vouches for (see `kept_claims`).
    pub fn keeping_only_claims(mut self, names: std::collections::HashSet<String>) -> Verifier {
        self.kept_claims = Some(names);
        self
    }

    /// Builds the verifier, loading every issuer's local keys and resolving shared secrets.
    /// Remote key sets are fetched by [`Verifier::fetch_remote_keys`]. Problems are reported
    /// per config key.
    pub fn from_config(
        auth: &AuthConfig,
        base_dir: &std::path::Path,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Result<Verifier, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issuers = HashMap::new();
        let key_epoch = Arc::new(AtomicU64::new(0));
        for (i, cfg) in auth.issuers.iter().enumerate() {
            let key_path = format!("auth.issuers[{i}]");
            let algorithms = allowed_algorithms(cfg);
            let mut loaded = Vec::new();
            if let Some(file) = &cfg.jwks_file {
                match keys::load_jwks_file(&base_dir.join(file)) {
                    Ok(set) => loaded.push(set),
                    Err(e) => issues.push(ConfigIssue::new(format!("{key_path}.jwks_file"), e)),
                }
            }
            let mut pem = Vec::new();
            for (j, k) in cfg.pem_keys.iter().enumerate() {
                let alg = match keys::parse_algorithm(&k.alg, false) {
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
            if let Some(reference) = &cfg.hmac_secret {
                let secret = SecretRef::parse(reference).and_then(|r| r.resolve(base_dir));
                match secret {
                    Ok(secret) if secret.expose().len() < 32 => issues.push(ConfigIssue::new(
                        format!("{key_path}.hmac_secret"),
                        "the shared secret must be at least 32 bytes (RFC 7518, section 3.2)",
                    )),
                    Ok(secret) => {
                        match keys::shared_secret_key(secret.expose().as_bytes(), &algorithms) {
                            Some(key) => all.push(key),
                            None => issues.push(ConfigIssue::new(
                                format!("{key_path}.algorithms"),
                                "hmac_secret is set but no HS256/HS384/HS512 algorithm is allowed",
                            )),
                        }
                    }
                    Err(e) => issues.push(ConfigIssue::new(format!("{key_path}.hmac_secret"), e)),
                }
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
            let remote = match RemoteJwks::from_config(
                cfg,
                base_dir,
                clock.clone(),
                metrics.clone(),
                key_epoch.clone(),
            ) {
                Ok(remote) => remote,
                Err(e) => {
                    issues.push(ConfigIssue::new(key_path.clone(), e));
                    None
                }
            };
            if remote.is_none()
                && !all
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
                Issuer::new(cfg, key_path, algorithms, KeySet::new(all), remote),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Verifier::assemble(auth, issuers, clock, metrics, key_epoch))
    }

    /// A verifier over keys already in memory, one [`KeySet`] per `auth.issuers` entry in
    /// order, with no files read and no remote key sets (`jwks_url`/`discovery` are ignored).
    /// For the fuzz harness (`crate::fuzzing`), which must not depend on files or a network.
    pub(crate) fn with_local_keys(
        auth: &AuthConfig,
        keys: Vec<KeySet>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Verifier {
        let issuers = auth
            .issuers
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (cfg, keys))| {
                let issuer = Issuer::new(
                    cfg,
                    format!("auth.issuers[{i}]"),
                    allowed_algorithms(cfg),
                    keys,
                    None,
                );
                (cfg.issuer.clone(), issuer)
            })
            .collect();
        Verifier::assemble(auth, issuers, clock, metrics, Arc::new(AtomicU64::new(0)))
    }

    fn assemble(
        auth: &AuthConfig,
        issuers: HashMap<String, Issuer>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        key_epoch: Arc<AtomicU64>,
    ) -> Verifier {
        let cache =
            (auth.token_cache_max_entries > 0).then(|| token_store(auth.token_cache_max_entries));
        Verifier {
            issuers,
            subject_claim: auth.subject_claim.clone(),
            max_token_bytes: auth.max_token_bytes,
            clock,
            metrics,
            cache,
            key_epoch,
            refresh_tasks: Mutex::new(Vec::new()),
            kept_claims: None,
            no_claims: Arc::new(Map::new()),
        }
    }

    /// Fetches every remote key set (all at once), then starts their background refreshers.
    /// A failed first fetch is a start-up error: the gateway never serves without the keys.
    pub async fn fetch_remote_keys(&self) -> Result<(), Vec<ConfigIssue>> {
        let remotes: Vec<(&Issuer, &Arc<RemoteJwks>)> = self
            .issuers
            .values()
            .filter_map(|i| i.remote.as_ref().map(|r| (i, r)))
            .collect();
        let results =
            futures_util::future::join_all(remotes.iter().map(|(_, r)| r.initial_fetch())).await;
        let mut issues = Vec::new();
        for ((issuer, _), result) in remotes.iter().zip(results) {
            if let Err(e) = result {
                issues.push(ConfigIssue::new(
                    issuer.config_key.clone(),
                    format!("cannot load the identity provider's keys: {e}"),
                ));
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut tasks = self.refresh_tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.extend(remotes.iter().map(|(_, r)| r.spawn_refresh()));
        Ok(())
    }

    /// Total number of keys loaded across issuers (for readiness).
    pub fn key_count(&self) -> usize {
        self.issuers
            .values()
            .map(|i| i.local_keys.len() + i.remote.as_ref().map_or(0, |r| r.keys().len()))
            .sum()
    }

    /// Brings the key-set gauges up to date (before a scrape).
    pub fn update_gauges(&self) {
        for issuer in self.issuers.values() {
            if let Some(remote) = &issuer.remote {
                remote.update_gauges();
            }
        }
    }

    /// Verifies a bearer token, from the verified-token cache when it holds it.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::TooLarge);
        }
        let Some(cache) = &self.cache else {
            return self.verify_uncached(token).await;
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let epoch = self.key_epoch.load(Ordering::Acquire);
        if let Some((rejected_from, hit)) = cache.get(&key) {
            if hit.key_epoch == epoch {
                if unix_seconds_u64(self.clock.unix_seconds()) >= rejected_from {
                    cache.remove(&key);
                    return Err(AuthFailure::Expired);
                }
                self.metrics.count_token_cache(true);
                return Ok(hit.caller.clone());
            }
        }
        self.metrics.count_token_cache(false);
        let (caller, accept_until) = self.verify_checked(token).await?;
        if self.key_epoch.load(Ordering::Acquire) == epoch {
            cache.insert(
                key,
                // The first second it is refused.
                unix_seconds_u64(accept_until.saturating_add(1)),
                Arc::new(VerifiedToken {
                    caller: caller.clone(),
                    key_epoch: epoch,
                }),
                unix_seconds_u64(self.clock.unix_seconds()),
            );
        } else {
            // The keys changed while this token was checked: forget everything verified before.
            cache.clear();
        }
        Ok(caller)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Caller, AuthFailure> {
        self.verify_checked(token).await.map(|(caller, _)| caller)
    }

    /// Every check; returns the caller and the last second the token is accepted.
    async fn verify_checked(&self, token: &str) -> Result<(Caller, i64), AuthFailure> {
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
        let mut claims = decode_json_object(payload_b64)?;

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

        let mut candidates = issuer.candidates(kid, alg);
        if candidates.is_empty() {
            if let Some(remote) = &issuer.remote {
                // Perhaps the provider rotated: refetch (at most once per cool-down).
                // Boxed: the fetch's future is large and rarely needed; inlined, every
                // request's future would carry it.
                Box::pin(remote.refetch_for_unknown_kid()).await;
                candidates = issuer.candidates(kid, alg);
            }
        }
        if candidates.is_empty() {
            return Err(AuthFailure::UnknownKey);
        }
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = &token.as_bytes()[..signed_len];
        let mut verified = false;
        for key in &candidates {
            self.metrics.signature_verifications.inc();
            if key.verifies(alg, message, signature_b64) {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(AuthFailure::BadSignature);
        }

        let expires_at = self.check_times(&claims, issuer)?;
        check_audience(&claims, &issuer.audiences)?;
        let subject = match claims.get(&self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Arc::from(s.as_str()),
            _ => return Err(AuthFailure::BadClaims),
        };
        if let Some(kept) = &self.kept_claims {
            claims.retain(|name, _| kept.contains(name));
        }
        Ok((
            Caller {
                subject,
                issuer_name: issuer.name.clone(),
                claims: if claims.is_empty() {
                    self.no_claims.clone()
                } else {
                    Arc::new(claims)
                },
                expires_at,
            },
            expires_at.saturating_add(issuer.leeway),
        ))
    }

    /// Checks `exp` (required), `nbf` and `iat` against the clock, and the token's lifetime
    /// against the issuer's maximum; returns `exp`.
    fn check_times(
        &self,
        claims: &Map<String, Value>,
        issuer: &Issuer,
    ) -> Result<i64, AuthFailure> {
        let leeway = issuer.leeway;
        let now = self.clock.unix_seconds();
        let exp = numeric_claim(claims, "exp")?.ok_or(AuthFailure::BadClaims)?;
        if now > exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired);
        }
        let mut issued_at = None;
        for name in ["nbf", "iat"] {
            if let Some(t) = numeric_claim(claims, name)? {
                if t > now.saturating_add(leeway) {
                    return Err(AuthFailure::NotYetValid);
                }
                if name == "iat" {
                    issued_at = Some(t);
                }
            }
        }
        // Without `iat` the lifetime left is what counts: a token valid for a year is refused
        // whenever it was minted.
        let lifetime = exp.saturating_sub(issued_at.unwrap_or(now));
        if lifetime > issuer.max_lifetime {
            return Err(AuthFailure::LifetimeTooLong);
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
    match serde_json::from_slice::<StrictJson>(&bytes) {
        Ok(StrictJson(Value::Object(map))) => Ok(map),
        _ => Err(AuthFailure::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        assert!(decode_json_object(&enc(r#"{"a":1,"b":[{"c":2}]}"#)).is_ok());
        assert!(decode_json_object(&enc(r#"{"a":1,"a":2}"#)).is_err());
        assert!(decode_json_object(&enc(r#"{"a":{"b":1,"b":1}}"#)).is_err());
        assert!(decode_json_object(&enc(r#"[1]"#)).is_err());
    }
}
