//! The simulator's API-gateway authentication: who signed this request, if anyone.
//!
//! Mirrors what Huawei's API gateway checks for AK/SK (`SDK-HMAC-SHA256`) requests: parse
//! `Authorization`, find the secret key by access key, rebuild the canonical request from the
//! headers the client declared in `SignedHeaders` (which must include `x-sdk-date`), compare
//! MACs, then require `X-Sdk-Date` within 15 minutes of the server clock. Any failure is a
//! `401 APIGW.0301`; the variants here only pick the message and the debug log line.
//!
//! `Host` for the canonical request comes from the `Host` header (HTTP/1.1) or, when there
//! is none, the URI authority (HTTP/2 carries it as `:authority`).
//!
//! Pure apart from reading the request: the clock is a parameter, so tests can verify a
//! request captured at a known time (reference section 6).

use std::time::{Duration, SystemTime};

use http::request::Parts;

use super::SimCredential;
use crate::upstream::signer::{self, SigningRequest};

/// How far `X-Sdk-Date` may be from the server clock, either way.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was not authenticated. Carries no secret, signature or header value except
/// the (public) signing date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization` header at all.
    Missing,
    /// An `Authorization` header that is not a well-formed `SDK-HMAC-SHA256` value, or more
    /// than one of them.
    Malformed,
    UnknownAccessKey,
    /// The MAC did not match, or a declared header was absent, duplicated or not UTF-8, or
    /// `x-sdk-date` was not declared.
    BadSignature,
    /// The credential is a temporary (STS) key and the request did not carry its
    /// `X-Security-Token`, signed.
    SecurityToken,
    /// Correctly signed, but `X-Sdk-Date` is more than [`MAX_CLOCK_SKEW`] away.
    Expired {
        signed_at: String,
        server_time: String,
    },
}

impl AuthFailure {
    /// The `error_msg` of the `APIGW.0301` answer.
    ///
    /// The real gateway's wording is documented only for some cases: `x-auth-token not
    /// found` is what it says to a request with no credentials at all (it falls back to token
    /// auth), and `verify aksk signature fail` covers signature problems. The expiry wording
    /// is modelled on APIG's documented app-auth message (`signature expired, signature
    /// time:...,server time:...`); the IAM variant's exact text is undocumented.
    pub(crate) fn message(&self) -> String {
        const PREFIX: &str = "Incorrect IAM authentication information";
        match self {
            AuthFailure::Missing => format!("{PREFIX}: x-auth-token not found"),
            AuthFailure::Malformed
            | AuthFailure::UnknownAccessKey
            | AuthFailure::BadSignature
            | AuthFailure::SecurityToken => {
                format!("{PREFIX}: verify aksk signature fail")
            }
            AuthFailure::Expired {
                signed_at,
                server_time,
            } => format!(
                "{PREFIX}: signature expired, signature time:{signed_at},server time:{server_time}"
            ),
        }
    }
}

/// Authenticates a request: `Ok` with the credential whose secret key signed it.
pub(crate) fn authenticate<'c>(
    credentials: &'c [SimCredential],
    parts: &Parts,
    body: &[u8],
    now: SystemTime,
) -> Result<&'c SimCredential, AuthFailure> {
    let mut values = parts.headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let auth = signer::parse_authorization(value).ok_or(AuthFailure::Malformed)?;
    let credential = credentials
        .iter()
        .find(|c| c.access_key == auth.access_key)
        .ok_or(AuthFailure::UnknownAccessKey)?;

    // Header values that are not UTF-8 are left out; if one of them was signed, verify()
    // sees it as missing and fails, which is the right answer for bytes nobody can sign.
    let mut headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), std::str::from_utf8(v.as_bytes()).ok()?)))
        .collect();
    let authority = parts.uri.authority().map(|a| a.as_str());
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(authority) = authority {
            headers.push(("host", authority));
        }
    }
    let query = signer::parse_query(parts.uri.query().unwrap_or(""));
    let req = SigningRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: &query,
        headers: &headers,
        body,
    };
    if !signer::verify(&req, &auth, &credential.secret_key) {
        return Err(AuthFailure::BadSignature);
    }
    if let Some(expected) = &credential.security_token {
        let sent = parts
            .headers
            .get("x-security-token")
            .and_then(|v| v.to_str().ok());
        let signed = auth.signed_headers.iter().any(|h| h == "x-security-token");
        if !signed || sent != Some(expected.expose()) {
            return Err(AuthFailure::SecurityToken);
        }
    }

    // verify() has checked that exactly one X-Sdk-Date exists and parses.
    let signed_at = parts
        .headers
        .get("x-sdk-date")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let Some(signed_time) = signer::parse_sdk_date(signed_at) else {
        return Err(AuthFailure::BadSignature);
    };
    let skew = now
        .duration_since(signed_time)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(AuthFailure::Expired {
            signed_at: signed_at.to_string(),
            server_time: signer::format_sdk_date(now),
        });
    }
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const AK: &str = "HPUAEXAMPLEAK0000001";
    const SK: &str = "exampleSecretKey0123456789abcdefghijKLMN";
    const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const BODY: &[u8] = br#"{"remote_console": {"protocol": "serial", "type": "serial"}}"#;

    fn creds() -> Vec<SimCredential> {
        vec![SimCredential {
            access_key: AK.into(),
            secret_key: Secret::new(SK),
            projects: vec![PROJECT.into()],
            security_token: None,
        }]
    }

    /// The request the official Python SDK sent (reference section 6), as hyper parses it.
    fn captured() -> Parts {
        let (parts, ()) = http::Request::post(
            "/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/baremetalservers/cf2a8b97-b5c6-47ef-9714-eb27adf26e5b/remote_console",
        )
        .header("User-Agent", "huaweicloud-usdk-python/3.0; os/Linux##1_SMP_PREEMPT_DYNAMIC_@0#x86_64 python/3.11.7 impl/CPython; app/392a970b-cfba-4fec-9c3e-3a0c4c00d9e3")
        .header("Accept-Encoding", "gzip, deflate")
        .header("Accept", "*/*")
        .header("Connection", "keep-alive")
        .header("Content-Type", "application/json;charset=utf-8")
        .header("X-Project-Id", PROJECT)
        .header("X-Sdk-Date", "20261203T190858Z")
        .header("Host", "127.0.0.1:8099")
        .header("Authorization", "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=56e5af4aa4213f5e0e810fb2572e08a5354f753a988693d50640c316fad1f5ef")
        .header("Content-Length", "60")
        .body(())
        .unwrap()
        .into_parts();
        parts
    }

    fn at(date: &str) -> SystemTime {
        signer::parse_sdk_date(date).unwrap()
    }

    #[test]
    fn the_official_sdk_request_authenticates() {
        let creds = creds();
        let now = at("20261203T191000Z");
        let cred = authenticate(&creds, &captured(), BODY, now).unwrap();
        assert_eq!(cred.access_key, AK);
    }

    #[test]
    fn stale_or_future_dates_are_refused_after_the_signature_checks_out() {
        let creds = creds();
        let err = authenticate(&creds, &captured(), BODY, at("20261203T192400Z")).unwrap_err();
        assert_eq!(
            err,
            AuthFailure::Expired {
                signed_at: "20261203T190858Z".into(),
                server_time: "20261203T192400Z".into()
            }
        );
        assert!(err.message().contains("signature expired"));
        let early = at("20261203T185300Z");
        assert!(matches!(
            authenticate(&creds, &captured(), BODY, early),
            Err(AuthFailure::Expired { .. })
        ));
        // Exactly 15 minutes is still accepted.
        assert!(authenticate(&creds, &captured(), BODY, at("20261203T192358Z")).is_ok());
    }

    #[test]
    fn failures_are_classified() {
        let creds = creds();
        let now = at("20261203T191000Z");
        let mut p = captured();
        p.headers.remove("authorization");
        assert_eq!(
            authenticate(&creds, &p, BODY, now).unwrap_err(),
            AuthFailure::Missing
        );
        assert!(AuthFailure::Missing
            .message()
            .ends_with("x-auth-token not found"));

        let mut p = captured();
        p.headers
            .insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(
            authenticate(&creds, &p, BODY, now).unwrap_err(),
            AuthFailure::Malformed
        );

        let mut p = captured();
        let dup = p.headers["authorization"].clone();
        p.headers.append("authorization", dup);
        assert_eq!(
            authenticate(&creds, &p, BODY, now).unwrap_err(),
            AuthFailure::Malformed
        );

        let other = vec![SimCredential {
            access_key: "OTHER".into(),
            ..creds[0].clone()
        }];
        assert_eq!(
            authenticate(&other, &captured(), BODY, now).unwrap_err(),
            AuthFailure::UnknownAccessKey
        );

        assert_eq!(
            authenticate(&creds, &captured(), b"{}", now).unwrap_err(),
            AuthFailure::BadSignature
        );
        let mut p = captured();
        p.headers.insert("host", "127.0.0.1:8100".parse().unwrap());
        assert_eq!(
            authenticate(&creds, &p, BODY, now).unwrap_err(),
            AuthFailure::BadSignature
        );
        for f in [AuthFailure::Malformed, AuthFailure::BadSignature] {
            assert!(f.message().ends_with("verify aksk signature fail"));
        }
    }

    #[test]
    fn host_falls_back_to_the_uri_authority() {
        let creds = creds();
        let now = at("20261203T191000Z");
        let mut p = captured();
        p.headers.remove("host");
        assert_eq!(
            authenticate(&creds, &p, BODY, now).unwrap_err(),
            AuthFailure::BadSignature
        );
        p.uri = format!("http://127.0.0.1:8099{}", p.uri.path())
            .parse()
            .unwrap();
        assert!(authenticate(&creds, &p, BODY, now).is_ok());
    }
}
