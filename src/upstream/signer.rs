//! SDK-HMAC-SHA256: Huawei Cloud's AK/SK request signature, both directions.
//!
//! This module owns the byte-exact canonical forms (URI, query, headers, request, string to
//! sign), producing an `Authorization` header the way the official Python SDK
//! (`huaweicloudsdkcore.signer.signer.Signer`) does, and checking one that arrives on the
//! wire (used by the simulator, and by anything else that must accept SDK-signed requests).
//! It is pure: no I/O, no clock (callers pass dates in), and no policy such as the 15-minute
//! freshness window, which belongs to whoever verifies.
//!
//! Why byte-exact matters: the cloud recomputes the canonical request from what it receives
//! and compares MACs, so any difference (a missing trailing `/` in the canonical URI, `+`
//! instead of `%20`, an untrimmed header value) is an opaque `APIGW.0301` at run time. The
//! test `tests/signer_vectors.rs` pins every rule against requests signed by the SDK itself.
//!
//! Secrets: the secret key only ever enters [`hmac`] through [`Secret::expose`]. Signatures
//! are never logged; [`ParsedAuthorization`]'s `Debug` hides the signature.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, digest, hmac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime};

use crate::hex;
use crate::secret::Secret;

/// The algorithm name that opens the `Authorization` value and the string to sign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// Lower-case hex SHA-256 of zero bytes: the payload hash of a request without a body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The value of `X-Sdk-Content-Sha256` that opts the body out of the signature. The SDK sets
/// it for any `Content-Type` not starting with `application/json` or `application/bson`.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ` in UTC. Always signed.
const SDK_DATE: &str = "x-sdk-date";
/// Header that, when present, replaces the body hash in the canonical request.
const CONTENT_SHA256: &str = "x-sdk-content-sha256";

/// Everything except RFC 3986 unreserved characters is percent-encoded (upper-case hex), as
/// Python's `quote(s, safe='~')` does. Note that `/`, space and `+` are all encoded.
const SDK_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request as the signer sees it. Borrowed, so the caller keeps ownership of whatever it
/// will actually send: the signature covers exactly these bytes.
#[derive(Clone, Copy)]
pub struct SigningRequest<'a> {
    /// HTTP method, any case (it is upper-cased for signing).
    pub method: &'a str,
    /// Path as sent on the wire (may hold `%XX` escapes).
    pub path: &'a str,
    /// Decoded query pairs, any order.
    pub query: &'a [(String, String)],
    /// Header (name, value) pairs, any case, any order.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// Hand-written so that a stray `{:?}` shows the shape of a request but no header values
/// (they may hold an `X-Security-Token` or an `Authorization`) and no body.
impl fmt::Debug for SigningRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        f.debug_struct("SigningRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query_pairs", &self.query.len())
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why [`sign`] refused. Never carries a header value or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the request has no X-Sdk-Date header")]
    MissingSdkDate,
    #[error("X-Sdk-Date is not of the form YYYYMMDDTHHMMSSZ")]
    InvalidSdkDate,
    #[error("header {0:?} cannot be signed: invalid name, or a line break or NUL in its value")]
    InvalidHeader(String),
    #[error("the access key is empty or holds whitespace, ',' or '='")]
    InvalidAccessKey,
}

/// The canonical URI: percent-decode the path, split on `/`, percent-encode each segment
/// (keeping only the RFC 3986 unreserved `A-Z a-z 0-9 - _ . ~`), rejoin, and end with
/// exactly one added `/` if there is none.
///
/// So `/a/b` and `/a/b/` sign the same, and an escaped `%2F` becomes a real `/` (the SDK
/// decodes before splitting). Invalid UTF-8 after decoding becomes U+FFFD, as Python's
/// `unquote` does. An empty path is treated as `/` (the SDK would crash on it).
pub fn canonical_uri(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut out = decoded
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SDK_ENCODE_SET).to_string())
        .collect::<Vec<_>>()
        .join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string: pairs sorted by (key, value) on the decoded strings, each
/// side encoded like a URI segment (space is `%20`, never `+`), joined as `k=v` with
/// `&`. No pairs gives the empty string.
///
/// The SDK sends exactly this string as the URL query, and so should anyone forwarding a
/// signed request: a server decodes what arrives and re-canonicalises it, which round-trips.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, SDK_ENCODE_SET),
                utf8_percent_encode(v, SDK_ENCODE_SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of header `name` (compared case-insensitively). When a name occurs more than
/// once the last one wins, as in the SDK, which keeps headers in a dict keyed by the
/// lower-cased name. [`verify`] refuses duplicated signed headers before it gets here.
fn header_value<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::lower(digest::digest(&digest::SHA256, data).as_ref())
}

/// The payload hash line: the (trimmed) `X-Sdk-Content-Sha256` value when that header is
/// present, else the hex SHA-256 of the body.
fn payload_hash(req: &SigningRequest) -> String {
    match header_value(req.headers, CONTENT_SHA256) {
        Some(v) => v.trim().to_string(),
        None => sha256_hex(req.body),
    }
}

/// The canonical request: six lines joined by `\n`, without a trailing newline:
/// method, canonical URI, canonical query, canonical headers (each `name:trimmed value\n`,
/// so this block ends in an empty line), the signed header list joined by `;`, and the
/// payload hash.
///
/// `signed_headers` must be lower-case and, for an SDK-compatible signature, sorted; they are
/// used in the given order, so a verifier can reproduce whatever list a client declared. A
/// listed header missing from the request contributes `name:` (the SDK would raise instead;
/// [`verify`] refuses such requests before building this).
pub fn canonical_request(req: &SigningRequest, signed_headers: &[String]) -> String {
    let mut headers_block = String::new();
    for name in signed_headers {
        let value = header_value(req.headers, name).unwrap_or("").trim();
        headers_block.push_str(name);
        headers_block.push(':');
        headers_block.push_str(value);
        headers_block.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        headers_block,
        signed_headers.join(";"),
        payload_hash(req)
    )
}

/// `SDK-HMAC-SHA256\n<X-Sdk-Date>\n<hex sha256(canonical request)>`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn mac(secret_key: &Secret, string_to_sign: &str) -> hmac::Tag {
    // The SK's UTF-8 bytes are the HMAC key directly: SDK-HMAC-SHA256 has no key derivation.
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret_key.expose().as_bytes());
    hmac::sign(&key, string_to_sign.as_bytes())
}

/// Lower-case hex HMAC-SHA256 of the string to sign, keyed with the secret key's bytes.
pub fn signature(secret_key: &Secret, string_to_sign: &str) -> String {
    hex::lower(mac(secret_key, string_to_sign).as_ref())
}

/// The headers the SDK signs: every header present except names containing `_` (the SDK's
/// rule, because some proxies drop such headers) and `authorization` (added after signing),
/// lower-cased, sorted and deduplicated.
pub fn signed_header_names(req: &SigningRequest) -> Vec<String> {
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !n.contains('_') && n != "authorization")
        .collect();
    names.sort();
    names.dedup();
    names
}

/// RFC 9110 `tchar`: what an HTTP header name may consist of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Signs like the SDK: returns the full `Authorization` header value.
///
/// Requires an `X-Sdk-Date` header among `req.headers` (use [`format_sdk_date`]); unlike the
/// SDK this function adds no headers itself, so the caller sets `Host`, `X-Project-Id`,
/// `Content-Type` and, for a non-JSON body, `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` first,
/// and then must send exactly those headers and that body. Every header given is signed
/// (see [`signed_header_names`]); pass only the headers that will be sent unchanged.
pub fn sign(
    req: &SigningRequest,
    access_key: &str,
    secret_key: &Secret,
) -> Result<String, SignError> {
    if access_key.is_empty()
        || access_key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '=')
    {
        return Err(SignError::InvalidAccessKey);
    }
    for (name, value) in req.headers {
        // A line break would let a value forge extra canonical header lines.
        if !is_token(name) || value.contains(['\r', '\n', '\0']) {
            return Err(SignError::InvalidHeader((*name).to_string()));
        }
    }
    let date = header_value(req.headers, SDK_DATE)
        .ok_or(SignError::MissingSdkDate)?
        .trim();
    if parse_sdk_date(date).is_none() {
        return Err(SignError::InvalidSdkDate);
    }
    let signed = signed_header_names(req);
    let canonical = canonical_request(req, &signed);
    let sig = signature(secret_key, &string_to_sign(date, &canonical));
    Ok(format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={sig}",
        signed.join(";")
    ))
}

/// The three parts of an `Authorization: SDK-HMAC-SHA256 ...` value.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub access_key: String,
    /// As declared by the client: lower-case, no duplicates, order preserved.
    pub signed_headers: Vec<String>,
    /// Hex, as sent.
    pub signature: String,
}

/// Hides the signature: it is not a secret, but a logged signature plus a logged request is
/// a replayable request for the next 15 minutes.
impl fmt::Debug for ParsedAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedAuthorization")
            .field("access_key", &self.access_key)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"[redacted]")
            .finish()
    }
}

/// Parses `SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2>, Signature=<hex>`.
///
/// The three parts may come in any order, separated by commas with optional spaces; each
/// must appear exactly once. Refused (`None`): another algorithm, an empty access key, an
/// empty or upper-case or duplicated signed header name, a signature that is not 64 hex
/// characters. Other algorithms (`V11-HMAC-SHA256`, SM3, ECDSA) are not supported.
pub fn parse_authorization(value: &str) -> Option<ParsedAuthorization> {
    let rest = value.trim().strip_prefix(ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut access, mut headers, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        let slot = match key {
            "Access" => &mut access,
            "SignedHeaders" => &mut headers,
            "Signature" => &mut sig,
            _ => return None,
        };
        if slot.replace(val.trim()).is_some() {
            return None;
        }
    }
    let (access, headers, sig) = (access?, headers?, sig?);
    if access.is_empty() || access.contains(char::is_whitespace) {
        return None;
    }
    let mut signed_headers: Vec<String> = Vec::new();
    for name in headers.split(';') {
        let lower_token = is_token(name) && !name.bytes().any(|b| b.is_ascii_uppercase());
        if !lower_token || signed_headers.iter().any(|h| h == name) {
            return None;
        }
        signed_headers.push(name.to_string());
    }
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(ParsedAuthorization {
        access_key: access.to_string(),
        signed_headers,
        signature: sig.to_string(),
    })
}

/// Rebuilds the canonical request from the headers the client declared in `SignedHeaders`
/// and compares MACs in constant time.
///
/// Refuses, before any MAC work: a declaration without `x-sdk-date`; a declared header that
/// is absent or occurs more than once (which copy did the client sign?); an `X-Sdk-Date` that
/// does not parse; and an `X-Sdk-Content-Sha256` that is neither `UNSIGNED-PAYLOAD` nor the
/// real body hash (otherwise a relay could swap the body and state the old hash). It does
/// not check the access key (the caller picked `secret_key` by it) or the date's age (policy
/// that needs a clock).
pub fn verify(req: &SigningRequest, auth: &ParsedAuthorization, secret_key: &Secret) -> bool {
    if !auth.signed_headers.iter().any(|h| h == SDK_DATE) {
        return false;
    }
    for name in &auth.signed_headers {
        let count = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count();
        if count != 1 {
            return false;
        }
    }
    let Some(date) = header_value(req.headers, SDK_DATE).map(str::trim) else {
        return false;
    };
    if parse_sdk_date(date).is_none() {
        return false;
    }
    if let Some(declared) = header_value(req.headers, CONTENT_SHA256).map(str::trim) {
        if declared != UNSIGNED_PAYLOAD && declared != sha256_hex(req.body) {
            return false;
        }
    }
    let Some(claimed) = hex::decode(&auth.signature) else {
        return false;
    };
    let canonical = canonical_request(req, &auth.signed_headers);
    let expected = mac(secret_key, &string_to_sign(date, &canonical));
    constant_time::verify_slices_are_equal(expected.as_ref(), &claimed).is_ok()
}

/// `%Y%m%dT%H%M%SZ` in UTC, the `X-Sdk-Date` format. Sub-second precision is dropped.
pub fn format_sdk_date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    // Out of range only for times thousands of years away; the epoch is a harmless stand-in.
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Parses an `X-Sdk-Date` value strictly: exactly `YYYYMMDDTHHMMSSZ`, a real calendar time.
pub fn parse_sdk_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || !s.is_ascii() {
        return None;
    }
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    let dt = PrimitiveDateTime::parse(s, format).ok()?.assume_utc();
    let secs = dt.unix_timestamp();
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Splits a raw URL query (without `?`) into decoded pairs, for verifying what arrives on
/// the wire: `&`-separated, empty pieces skipped, a piece without `=` is a key with an empty
/// value (the SDK signs it as `k=`). `+` stays `+`: the SDK never sends a raw `+` (it sends
/// `%2B`) and encodes space as `%20`, so reading `+` as space would only break signatures.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "HPUAEXAMPLEAK0000001";
    const SK: &str = "exampleSecretKey0123456789abcdefghijKLMN";
    const PATH: &str =
        "/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/baremetalservers/cf2a8b97-b5c6-47ef-9714-eb27adf26e5b/remote_console";
    const BODY: &[u8] = br#"{"remote_console": {"protocol": "serial", "type": "serial"}}"#;
    const DOC_SIGNATURE: &str = "4a17519bd179a95ac2dda11533861c3bf639b2186abc0b083ee6132991b557ee";

    fn sk() -> Secret {
        Secret::new(SK)
    }

    fn headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Content-Type", "application/json;charset=UTF-8"),
            ("X-Sdk-Date", "20240102T030405Z"),
            ("X-Project-Id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
            ("Host", "bms.cn-north-4.myhuaweicloud.com"),
        ]
    }

    fn req<'a>(
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a [u8],
    ) -> SigningRequest<'a> {
        SigningRequest {
            method: "POST",
            path,
            query: &[],
            headers,
            body,
        }
    }

    fn sign_parsed(r: &SigningRequest) -> ParsedAuthorization {
        parse_authorization(&sign(r, AK, &sk()).unwrap()).unwrap()
    }

    #[test]
    fn reproduces_the_reference_worked_example() {
        let h = headers();
        let auth = sign(&req(PATH, &h, BODY), AK, &sk()).unwrap();
        assert_eq!(
            auth,
            format!(
                "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature={DOC_SIGNATURE}"
            )
        );
    }

    #[test]
    fn trailing_slash_does_not_change_the_signature() {
        let h = headers();
        let with_slash = format!("{PATH}/");
        let a = sign(&req(PATH, &h, BODY), AK, &sk()).unwrap();
        let b = sign(&req(&with_slash, &h, BODY), AK, &sk()).unwrap();
        assert_eq!(a, b);
        assert_eq!(canonical_uri("/a/b"), canonical_uri("/a/b/"));
        // A signature made for one form verifies against a request sent with the other.
        let parsed = parse_authorization(&a).unwrap();
        assert!(verify(&req(&with_slash, &h, BODY), &parsed, &sk()));
    }

    #[test]
    fn header_order_and_name_case_do_not_change_the_signature() {
        let h = headers();
        let mut reversed = h.clone();
        reversed.reverse();
        let lower: Vec<(String, &str)> = h
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), *v))
            .collect();
        let lower: Vec<(&str, &str)> = lower.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let a = sign(&req(PATH, &h, BODY), AK, &sk()).unwrap();
        assert_eq!(a, sign(&req(PATH, &reversed, BODY), AK, &sk()).unwrap());
        assert_eq!(a, sign(&req(PATH, &lower, BODY), AK, &sk()).unwrap());
    }

    #[test]
    fn query_order_does_not_change_the_canonical_query() {
        let q1 = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "x y".to_string()),
        ];
        let q2: Vec<_> = q1.iter().rev().cloned().collect();
        assert_eq!(canonical_query(&q1), "a=x%20y&b=2");
        assert_eq!(canonical_query(&q1), canonical_query(&q2));
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn verify_accepts_the_untouched_request() {
        let h = headers();
        let r = req(PATH, &h, BODY);
        assert!(verify(&r, &sign_parsed(&r), &sk()));
    }

    #[test]
    fn verify_rejects_a_tampered_header() {
        let h = headers();
        let auth = sign_parsed(&req(PATH, &h, BODY));
        let mut tampered = h.clone();
        tampered[2] = ("X-Project-Id", "ffffffffffffffffffffffffffffffff");
        assert!(!verify(&req(PATH, &tampered, BODY), &auth, &sk()));
        // A signed header removed, or sent twice, is refused too.
        assert!(!verify(&req(PATH, &h[..3], BODY), &auth, &sk()));
        let mut doubled = h.clone();
        doubled.push(("x-project-id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
        assert!(!verify(&req(PATH, &doubled, BODY), &auth, &sk()));
        // An unsigned extra header does not matter.
        let mut extra = h.clone();
        extra.push(("Accept", "*/*"));
        assert!(verify(&req(PATH, &extra, BODY), &auth, &sk()));
    }

    #[test]
    fn verify_rejects_a_tampered_body_path_or_method() {
        let h = headers();
        let auth = sign_parsed(&req(PATH, &h, BODY));
        let other_body = br#"{"remote_console": {"protocol": "vnc", "type": "novnc"}}"#;
        assert!(!verify(&req(PATH, &h, other_body), &auth, &sk()));
        assert!(!verify(&req("/v1/other", &h, BODY), &auth, &sk()));
        let mut get = req(PATH, &h, BODY);
        get.method = "GET";
        assert!(!verify(&get, &auth, &sk()));
    }

    #[test]
    fn verify_rejects_a_stated_hash_that_does_not_match_the_body() {
        let h = headers();
        let auth = sign_parsed(&req(PATH, &h, BODY));
        // A relay swaps the body and states the original hash in an unsigned header.
        let mut swapped = h.clone();
        let original_hash = sha256_hex(BODY);
        swapped.push(("X-Sdk-Content-Sha256", &original_hash));
        assert!(!verify(&req(PATH, &swapped, b"{}"), &auth, &sk()));
    }

    #[test]
    fn verify_rejects_a_tampered_signature_or_wrong_key() {
        let h = headers();
        let r = req(PATH, &h, BODY);
        let auth = sign_parsed(&r);
        let mut bad = auth.clone();
        let flipped = if bad.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        bad.signature.replace_range(0..1, flipped);
        assert!(!verify(&r, &bad, &sk()));
        assert!(!verify(&r, &auth, &Secret::new("another-secret-key")));
        let mut no_date = auth.clone();
        no_date.signed_headers.retain(|h| h != "x-sdk-date");
        assert!(!verify(&r, &no_date, &sk()));
    }

    #[test]
    fn verify_accepts_upper_case_hex_signatures() {
        let h = headers();
        let r = req(PATH, &h, BODY);
        let mut auth = sign_parsed(&r);
        auth.signature = auth.signature.to_ascii_uppercase();
        assert!(verify(&r, &auth, &sk()));
    }

    /// Reference section 6: what `BmsClient.show_server_remote_console` put on the wire.
    #[test]
    fn the_captured_sdk_request_verifies() {
        let h = [
            ("User-Agent", "huaweicloud-usdk-python/3.0; os/Linux##1_SMP_PREEMPT_DYNAMIC_@0#x86_64 python/3.11.7 impl/CPython; app/392a970b-cfba-4fec-9c3e-3a0c4c00d9e3"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Accept", "*/*"),
            ("Connection", "keep-alive"),
            ("Content-Type", "application/json;charset=utf-8"),
            ("X-Project-Id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
            ("X-Sdk-Date", "20261203T190858Z"),
            ("Host", "127.0.0.1:8099"),
            ("Authorization", "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=56e5af4aa4213f5e0e810fb2572e08a5354f753a988693d50640c316fad1f5ef"),
            ("Content-Length", "60"),
        ];
        let r = req(PATH, &h, BODY);
        let auth = parse_authorization(h[8].1).unwrap();
        assert_eq!(auth.access_key, AK);
        assert!(verify(&r, &auth, &sk()));
    }

    #[test]
    fn sign_refuses_bad_input_without_panicking() {
        let no_date = [("Host", "h")];
        assert_eq!(
            sign(&req("/", &no_date, b""), AK, &sk()),
            Err(SignError::MissingSdkDate)
        );
        let bad_date = [("X-Sdk-Date", "2024-01-02T03:04:05Z")];
        assert_eq!(
            sign(&req("/", &bad_date, b""), AK, &sk()),
            Err(SignError::InvalidSdkDate)
        );
        let injected = [("X-Sdk-Date", "20240102T030405Z"), ("X-A", "v\nx-b:forged")];
        assert!(matches!(
            sign(&req("/", &injected, b""), AK, &sk()),
            Err(SignError::InvalidHeader(n)) if n == "X-A"
        ));
        let ok = [("X-Sdk-Date", "20240102T030405Z")];
        assert_eq!(
            sign(&req("/", &ok, b""), "", &sk()),
            Err(SignError::InvalidAccessKey)
        );
        assert_eq!(
            sign(&req("/", &ok, b""), "A, B", &sk()),
            Err(SignError::InvalidAccessKey)
        );
    }

    #[test]
    fn underscore_and_authorization_headers_are_not_signed() {
        let h = [
            ("X-Sdk-Date", "20240102T030405Z"),
            ("X_Under", "x"),
            ("Authorization", "old"),
            ("host", "a"),
            ("Host", "a"),
        ];
        assert_eq!(
            signed_header_names(&req("/", &h, b"")),
            vec!["host", "x-sdk-date"]
        );
    }

    #[test]
    fn canonical_uri_decodes_then_encodes_each_segment() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(
            canonical_uri("/v1/a b/%E4%B8%AD/x~y*z/"),
            "/v1/a%20b/%E4%B8%AD/x~y%2Az/"
        );
        assert_eq!(canonical_uri("/a%2Fb"), "/a/b/");
        // Invalid escapes and invalid UTF-8 do not panic.
        assert_eq!(canonical_uri("/%zz/%E4%B8"), "/%25zz/%EF%BF%BD/");
    }

    #[test]
    fn parse_authorization_accepts_the_sdk_form_and_refuses_garbage() {
        let sig = "a".repeat(64);
        let ok =
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature={sig}");
        let p = parse_authorization(&ok).unwrap();
        assert_eq!(p.access_key, "AK1");
        assert_eq!(p.signed_headers, vec!["host", "x-sdk-date"]);
        assert_eq!(p.signature, sig);
        assert!(!format!("{p:?}").contains(&sig));
        let reordered =
            format!("SDK-HMAC-SHA256 Signature={sig},SignedHeaders=x-sdk-date,Access=AK1");
        assert!(parse_authorization(&reordered).is_some());
        for bad in [
            String::new(),
            "SDK-HMAC-SHA256".to_string(),
            format!("SDK-HMAC-SHA256Access=AK1, SignedHeaders=x-sdk-date, Signature={sig}"),
            format!("V11-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=, SignedHeaders=x-sdk-date, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=Host;x-sdk-date, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;host, Signature={sig}"),
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=a;;b, Signature={sig}"),
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, Signature=abc".to_string(),
            format!(
                "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, Signature={}",
                "g".repeat(64)
            ),
            format!(
                "SDK-HMAC-SHA256 Access=AK1, Access=AK2, SignedHeaders=x-sdk-date, Signature={sig}"
            ),
            format!(
                "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, Signature={sig}, Extra=1"
            ),
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date".to_string(),
        ] {
            assert!(parse_authorization(&bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn sdk_dates_round_trip_and_bad_ones_are_refused() {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_164_645); // 2024-01-02T03:04:05Z
        assert_eq!(format_sdk_date(t), "20240102T030405Z");
        assert_eq!(parse_sdk_date("20240102T030405Z"), Some(t));
        assert_eq!(
            format_sdk_date(t + Duration::from_millis(999)),
            "20240102T030405Z"
        );
        for bad in [
            "",
            "20240102T030405",
            "20240102 030405Z",
            "20241302T030405Z",
            "20240230T030405Z",
            "2024010T2030405Z",
            "+2024010T030405Z",
            "２0240102T030405Z",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "accepted {bad:?}");
        }
    }

    #[test]
    fn parse_query_decodes_and_round_trips_through_canonical_query() {
        let raw = "b=2&a=x%20y&flag&&c=%E4%B8%AD&p=1+1";
        let pairs = parse_query(raw);
        assert_eq!(
            pairs,
            vec![
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "x y".to_string()),
                ("flag".to_string(), String::new()),
                ("c".to_string(), "中".to_string()),
                ("p".to_string(), "1+1".to_string()),
            ]
        );
        let canonical = canonical_query(&pairs);
        assert_eq!(canonical, "a=x%20y&b=2&c=%E4%B8%AD&flag=&p=1%2B1");
        assert_eq!(canonical_query(&parse_query(&canonical)), canonical);
    }

    #[test]
    fn non_json_bodies_use_the_unsigned_payload_marker() {
        let h = [
            ("X-Sdk-Date", "20240102T030405Z"),
            ("X-Sdk-Content-Sha256", UNSIGNED_PAYLOAD),
        ];
        let r = SigningRequest {
            method: "put",
            path: "/f",
            query: &[],
            headers: &h,
            body: b"hi",
        };
        let cr = canonical_request(&r, &signed_header_names(&r));
        assert!(cr.starts_with("PUT\n/f/\n\n"));
        assert!(cr.ends_with("\nUNSIGNED-PAYLOAD"));
        let auth = sign_parsed(&r);
        let other = SigningRequest {
            body: b"changed",
            ..r
        };
        assert!(
            verify(&other, &auth, &sk()),
            "the body is not covered by design"
        );
        let empty = [("X-Sdk-Date", "20240102T030405Z")];
        assert!(canonical_request(&req("/", &empty, b""), &[]).ends_with(EMPTY_BODY_SHA256));
    }
}
