//! `mint-token`: signs a JWT that a gateway config accepts, for demos and tests.
//!
//! It reads the issuer, audience and algorithm from the config's first issuer (or the one
//! named), and signs with a private key file, by default the public dev key under
//! `config/dev/`. A real identity provider replaces all of this in production.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::Config;

/// What to put in the token.
pub struct MintOptions {
    pub subject: String,
    /// Issuer `name` from the config; the first issuer when absent.
    pub issuer_name: Option<String>,
    pub key_file: Option<PathBuf>,
    pub kid: Option<String>,
    pub lifetime_seconds: i64,
    /// Extra claims, `name=value`; a value given several times becomes an array.
    pub claims: Vec<(String, String)>,
}

/// The dev signing key and its id, relative to the config directory.
pub const DEV_KEY_FILE: &str = "dev/es256-private.pem";
pub const DEV_KEY_ID: &str = "bmsgw-dev-only-es256";

pub fn mint(config: &Config, options: &MintOptions, now: i64) -> Result<String, String> {
    let issuer = match &options.issuer_name {
        Some(name) => config
            .auth
            .issuers
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| format!("no issuer named {name:?} in {}", config.source_name))?,
        None => config
            .auth
            .issuers
            .first()
            .ok_or_else(|| format!("{} configures no issuer", config.source_name))?,
    };
    let alg: Algorithm = issuer
        .algorithms
        .first()
        .ok_or("the issuer lists no algorithm")?
        .parse()
        .map_err(|_| "the issuer's first algorithm is unknown".to_string())?;
    let (key_path, kid) = match &options.key_file {
        Some(path) => (path.clone(), options.kid.clone()),
        None => (
            config.resolve_path(Path::new(DEV_KEY_FILE)),
            Some(
                options
                    .kid
                    .clone()
                    .unwrap_or_else(|| DEV_KEY_ID.to_string()),
            ),
        ),
    };
    let pem = std::fs::read(&key_path)
        .map_err(|e| format!("cannot read signing key {}: {e}", key_path.display()))?;
    let key = match alg.family() {
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Hmac => return Err("HMAC issuers are not supported".into()),
    }
    .map_err(|e| format!("{} is not a {alg:?} private key: {e}", key_path.display()))?;

    let mut claims = Map::new();
    claims.insert("iss".into(), Value::from(issuer.issuer.clone()));
    claims.insert(
        "aud".into(),
        Value::from(issuer.audiences.first().cloned().unwrap_or_default()),
    );
    claims.insert(
        config.auth.subject_claim.clone(),
        Value::from(options.subject.clone()),
    );
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + options.lifetime_seconds));
    for (name, value) in &options.claims {
        match claims.get_mut(name) {
            Some(Value::Array(items)) => items.push(Value::from(value.clone())),
            Some(existing) if !matches!(name.as_str(), "iss" | "aud" | "exp" | "iat") => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::from(value.clone())]);
            }
            _ => {
                claims.insert(name.clone(), Value::from(value.clone()));
            }
        }
    }
    let mut header = Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing failed: {e}"))
}
