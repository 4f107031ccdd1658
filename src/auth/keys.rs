//! The public keys each issuer signs with, loaded from JWKS documents or PEM files.
//!
//! Every key is bound, when it is loaded, to the algorithms it may verify: the JWK's own `alg`
//! when it names one, else the algorithms of its key type (and curve). A token's `alg` must be
//! on that list *and* on the issuer's allow-list, so the algorithm is never taken from the token
//! alone and a public key can never be used as an HMAC secret: symmetric (`oct`) keys in a
//! JWKS are not loaded at all, and the only HMAC key is an issuer's own configured
//! `hmac_secret`, bound to that issuer's HS algorithms.
//!
//! Public keys are parsed into aws-lc-rs key objects once, when they are loaded, one per bound
//! algorithm: verifying a token then costs the signature check alone, not a DER or
//! modulus/exponent parse on every request.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    verifier: Verifier,
    /// Tried whatever `kid` the token names: only an issuer's configured shared secret, which
    /// has no id to match.
    pub any_kid: bool,
}

/// How a key checks a signature.
#[derive(Clone)]
enum Verifier {
    /// A public key, parsed once for each algorithm it is bound to.
    Public(Arc<[(Algorithm, ParsedPublicKey)]>),
    /// An issuer's shared secret (HS*), checked by jsonwebtoken's constant-time HMAC verifier.
    SharedSecret(DecodingKey),
}

impl VerifyKey {
    /// Binds a decoded key to the algorithms it may verify, parsing a public key once per
    /// algorithm. Algorithms the key cannot serve (a malformed point, say) are dropped; a key
    /// left with none is refused.
    pub fn new(
        kid: Option<String>,
        algorithms: Vec<Algorithm>,
        key: DecodingKey,
        any_kid: bool,
    ) -> Result<VerifyKey, String> {
        let verifier = if key.family() == AlgorithmFamily::Hmac {
            Verifier::SharedSecret(key)
        } else {
            let parsed: Vec<(Algorithm, ParsedPublicKey)> = algorithms
                .iter()
                .filter_map(|&alg| parse_public_key(&key, alg).map(|parsed| (alg, parsed)))
                .collect();
            if parsed.is_empty() {
                return Err("the key cannot verify any of its algorithms".into());
            }
            Verifier::Public(parsed.into())
        };
        let algorithms = match &verifier {
            Verifier::Public(parsed) => parsed.iter().map(|(alg, _)| *alg).collect(),
            Verifier::SharedSecret(_) => algorithms,
        };
        Ok(VerifyKey {
            kid,
            algorithms,
            verifier,
            any_kid,
        })
    }

    /// Whether `signature_b64` (the token's third part) signs `message` with `alg`.
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature_b64: &str) -> bool {
        match &self.verifier {
            Verifier::Public(parsed) => {
                let Some((_, key)) = parsed.iter().find(|(a, _)| *a == alg) else {
                    return false;
                };
                let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
                    return false;
                };
                key.verify_sig(message, &signature).is_ok()
            }
            Verifier::SharedSecret(key) => matches!(
                jsonwebtoken::crypto::verify(signature_b64, message, key, alg),
                Ok(true)
            ),
        }
    }
}

/// The key parsed for one JWS algorithm, or `None` when it does not fit that algorithm.
fn parse_public_key(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => {
            ParsedPublicKey::new(verification_algorithm(alg)?, bytes).ok()
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => signature::RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa_parameters(alg)?)
            .ok(),
    }
}

/// aws-lc-rs's verifier for a JWS algorithm (RFC 7518: ECDSA signatures are fixed-size r||s).
fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        _ => rsa_parameters(alg)?,
    })
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// All keys of one issuer.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyKey>) -> KeySet {
        KeySet { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify a token with this `kid` and `alg`. The `kid` is only ever compared
    /// with the ids of keys already loaded, never used to find a key anywhere else.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.algorithms.contains(&alg)
                && (k.any_kid
                    || match kid {
                        Some(kid) => k.kid.as_deref() == Some(kid),
                        None => true,
                    })
        })
    }

    pub fn into_keys(self) -> Vec<VerifyKey> {
        self.keys
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parses an algorithm name from config. HMAC algorithms are refused unless the issuer is
/// configured with a shared secret (`with_shared_secret`): otherwise a token could only be
/// "verified" with a public key as the HMAC secret.
pub fn parse_algorithm(name: &str, with_shared_secret: bool) -> Result<Algorithm, String> {
    let alg: Algorithm = name.parse().map_err(|_| {
        format!("unknown algorithm {name:?}; use one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (or HS256/384/512 with hmac_secret)")
    })?;
    if alg.family() == AlgorithmFamily::Hmac && !with_shared_secret {
        return Err(format!(
            "{name} needs a shared secret: set hmac_secret (a secret reference) on this issuer, or use an asymmetric algorithm"
        ));
    }
    Ok(alg)
}

/// The key of an issuer that signs with a shared secret. It verifies only the HMAC algorithms
/// on the issuer's allow-list, and nothing else ever does.
pub fn shared_secret_key(secret: &[u8], allowed: &[Algorithm]) -> Option<VerifyKey> {
    let algorithms: Vec<Algorithm> = allowed
        .iter()
        .copied()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    VerifyKey::new(
        None,
        algorithms,
        DecodingKey::from_secret(secret).ok()?,
        true,
    )
    .ok()
}

/// Loads a JWKS document. Keys marked for encryption, symmetric keys and keys of unsupported
/// types are skipped; a document with no usable key is an error.
pub fn load_jwks_file(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    parse_jwks(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a JWKS document (see [`load_jwks_file`]).
pub fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(family_algs) = algorithms_for_key(&jwk.algorithm) else {
            continue;
        };
        let algorithms = match jwk.common.key_algorithm {
            None => family_algs,
            Some(declared) => match key_algorithm(declared) {
                Some(alg) if family_algs.contains(&alg) => vec![alg],
                // A JWK whose `alg` contradicts its key type is unusable, not a wildcard.
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let Ok(key) = VerifyKey::new(jwk.common.key_id.clone(), algorithms, key, false) else {
            continue;
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("the JWKS holds no usable signing key".into());
    }
    Ok(KeySet { keys })
}

/// Loads one PEM public key for the given algorithm.
pub fn load_pem_key(path: &Path, alg: Algorithm, kid: Option<String>) -> Result<VerifyKey, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    parse_pem_key(&pem, alg, kid).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses one PEM public key for the given algorithm (see [`load_pem_key`]).
pub fn parse_pem_key(pem: &[u8], alg: Algorithm, kid: Option<String>) -> Result<VerifyKey, String> {
    let key = match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return Err("HMAC keys are not accepted".into()),
    }
    .map_err(|e| format!("not a {alg:?} public key in PEM form: {e}"))?;
    VerifyKey::new(kid, vec![alg], key, false)
}

/// The algorithms a JWK's key type (and curve) can verify; `None` for key types never used.
fn algorithms_for_key(params: &AlgorithmParameters) -> Option<Vec<Algorithm>> {
    match params {
        AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa.algorithms().to_vec()),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(vec![Algorithm::ES256]),
            EllipticCurve::P384 => Some(vec![Algorithm::ES384]),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Some(vec![Algorithm::EdDSA]),
            _ => None,
        },
        // Symmetric keys are never loaded: a JWKS is public, an HMAC secret is not.
        _ => None,
    }
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_algorithms_are_refused_in_config() {
        assert!(parse_algorithm("HS256", false).is_err());
        assert_eq!(parse_algorithm("HS256", true).unwrap(), Algorithm::HS256);
        assert!(parse_algorithm("none", true).is_err());
        assert_eq!(parse_algorithm("ES256", false).unwrap(), Algorithm::ES256);
    }

    #[test]
    fn symmetric_jwks_keys_are_never_loaded() {
        let jwks = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"h"}]}"#;
        assert!(parse_jwks(jwks).is_err());
    }
}
