//! Fuzz harness bodies: one `pub fn <target>(data: &[u8])` per cargo-fuzz target in `fuzz/`.
//!
//! Each function feeds arbitrary bytes to one parser or verifier the way untrusted input
//! reaches it in the running gateway, and checks a few invariants that are cheap to state.
//! A panic, from the code under test or from a broken invariant, is a finding. The same
//! functions run under libFuzzer (`scripts/fuzz`, nightly) and on stable over every committed
//! corpus and regression file (`tests/fuzz_corpus.rs`), so a crash once found stays fixed.
//!
//! Inputs are text where that lets a person read the corpus: `request_parse` and
//! `signer_canonical` read an HTTP/1-like message (a start line, `Name: value` lines, an empty
//! line, the body; see [`Message`]), `upstream_response` a status line and a body. Invalid
//! UTF-8 is replaced rather than refused, so byte-level mutations still reach the parsers.
//!
//! Not part of the gateway's API: hidden from the docs and free to change with the harness.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use crate::auth::keys::{self, KeySet};
use crate::auth::{Caller, Policy, Verifier};
use crate::bms::{self, ConsoleTarget, ProjectId, ServerId};
use crate::clock::Clock;
use crate::config::{AuthConfig, Config};
use crate::error::{AuthFailure, GatewayError, UpstreamError};
use crate::pipeline::{self, RequestContext, MAX_BODY_BYTES};
use crate::ratelimit::gcra::{self, Quota};
use crate::secret::Secret;
use crate::telemetry::Metrics;
use crate::upstream::iam;
use crate::upstream::signer::{self, SigningRequest};

/// A harness body: arbitrary bytes in, a panic on a finding.
pub type Harness = fn(&[u8]);

/// Every target: its name (the file in `fuzz/fuzz_targets/` and the folder under
/// `fuzz/corpus/` and `fuzz/regressions/`) and its body.
pub const TARGETS: &[(&str, Harness)] = &[
    ("request_parse", request_parse),
    ("jwt_verify", jwt_verify),
    ("upstream_response", upstream_response),
    ("config_parse", config_parse),
    ("signer_canonical", signer_canonical),
];

/// An HTTP/1-like message: the start line, then `Name: value` lines up to the first empty
/// line (`\r\n` or `\n`), then the body. A header line without `:` is a name with an empty
/// value. Values keep their spaces: trimming is the code under test's job.
struct Message<'a> {
    start: String,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl Message<'_> {
    fn parse(data: &[u8]) -> Message<'_> {
        let mut lines = Vec::new();
        let mut rest = data;
        let mut body: &[u8] = &[];
        loop {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if !rest.is_empty() || lines.is_empty() {
                    lines.push(String::from_utf8_lossy(rest).into_owned());
                }
                break;
            };
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            rest = &rest[end + 1..];
            if line.is_empty() && !lines.is_empty() {
                body = rest;
                break;
            }
            lines.push(String::from_utf8_lossy(line).into_owned());
        }
        let mut lines = lines.into_iter();
        let start = lines.next().unwrap_or_default();
        let headers = lines
            .map(|line| match line.split_once(':') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (line, String::new()),
            })
            .collect();
        Message {
            start,
            headers,
            body,
        }
    }
}

/// The request-line limit the harness applies (the config default).
const FUZZ_MAX_REQUEST_LINE_BYTES: usize = 8192;

/// `request_parse`: phase 1 of the pipeline (request-line length, route, method, path
/// parameters, content type, declared and actual body size, body JSON into the BMS request
/// type) plus the header readers (bearer token, `Cache-Control`, `X-Request-Id`).
///
/// Input: `METHOD TARGET` start line, headers, empty line, body. Requests hyper itself would
/// refuse (a bad method or target) stop early; header lines hyper would refuse are dropped.
pub fn request_parse(data: &[u8]) {
    let message = Message::parse(data);
    let mut start = message.start.split(' ');
    let (method, target) = (start.next().unwrap_or(""), start.next().unwrap_or(""));
    // The route matcher also sees paths that no `Uri` would hold.
    let _ = bms::match_route(target);
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), target.parse::<Uri>())
    else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in &message.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            // hyper passes on any byte but control characters (obs-text included).
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (head, ()) = request.into_parts();

    let request_id = pipeline::request_id(&head.headers);
    assert!(
        (1..=128).contains(&request_id.len()) && request_id.bytes().all(|b| b.is_ascii_graphic()),
        "request ids are 1-128 visible ASCII characters"
    );
    let _ = pipeline::wants_no_cache(&head.headers);
    if let Ok(token) = pipeline::bearer_token(&head.headers) {
        assert!(!token.is_empty() && token.trim() == token);
    }

    let mut ctx = RequestContext::new(request_id);
    let parsed =
        pipeline::check_head(&head, FUZZ_MAX_REQUEST_LINE_BYTES, &mut ctx).and_then(|target| {
            // What `Limited` does to a body longer than the cap while it is read.
            if message.body.len() > MAX_BODY_BYTES {
                return Err(GatewayError::BodyTooLarge);
            }
            bms::parse_request_body(message.body).map(|kind| (target, kind))
        });
    match parsed {
        Ok((target, kind)) => {
            assert_eq!(head.method, Method::POST);
            assert_eq!(ctx.route, "remote_console");
            assert_eq!(ctx.target.as_ref(), Some(&target));
            assert_eq!(
                ProjectId::parse(target.project.as_str()).as_ref(),
                Ok(&target.project)
            );
            assert_eq!(
                ServerId::parse(target.server.as_str()).as_ref(),
                Ok(&target.server)
            );
            assert_eq!((kind.protocol, kind.kind), (bms::SERIAL, bms::SERIAL));
            // A second, generic JSON reader agrees that the body asked for a serial console.
            let body: Value = serde_json::from_slice(message.body).expect("accepted body is JSON");
            assert_eq!(body["remote_console"]["protocol"], bms::SERIAL);
            assert_eq!(body["remote_console"]["type"], bms::SERIAL);
        }
        Err(error) => {
            assert!(
                error.status().is_client_error(),
                "phase 1 refuses with a 4xx: {error:?}"
            );
            assert_error_body(&error);
        }
    }
}

/// The error body is the documented flat JSON shape with the error's own code.
fn assert_error_body(error: &GatewayError) {
    let body: Value = serde_json::from_slice(&error.body("fuzz")).expect("error body is JSON");
    assert_eq!(body["error_code"], error.code());
    assert!(body["error_msg"].is_string());
    assert_eq!(body["request_id"], "fuzz");
}

/// The fixed "now" of `jwt_verify`, so seed tokens stay valid: 2025-06-15T15:06:40Z.
pub const FUZZ_NOW: i64 = 1_750_000_000;

/// The shared secret of the harness's HS256 issuer (at least 32 bytes, as config requires).
const FUZZ_HMAC_SECRET: &[u8] = b"bmsgw-fuzz-only-shared-secret-0123456789";

/// The issuers `jwt_verify` trusts: the dev issuer of `config/gateway.toml` with the dev
/// ES256 key (`config/dev/jwks.json`) and the test RSA and Ed25519 keys, and an HS256 issuer.
const FUZZ_AUTH_TOML: &str = r#"
subject_claim = "sub"
token_cache_max_entries = 1000

[[issuers]]
name = "dev"
issuer = "https://idp.dev.bms-console-gateway.invalid"
audiences = ["bms-console-gateway"]
algorithms = ["ES256", "RS256", "PS256", "EdDSA"]
leeway_seconds = 60

[[issuers]]
name = "shared-secret"
issuer = "https://hmac.fuzz.bms-console-gateway.invalid"
audiences = ["bms-console-gateway", "second-audience"]
algorithms = ["HS256"]
hmac_secret = "env:UNUSED_THE_HARNESS_BUILDS_THE_KEY"
max_token_lifetime_seconds = 3600
leeway_seconds = 0
"#;

struct FixedClock;

impl Clock for FixedClock {
    fn unix_seconds(&self) -> i64 {
        FUZZ_NOW
    }
    fn monotonic_nanos(&self) -> u64 {
        0
    }
}

/// Two verifiers over the same keys (with and without the verified-token cache) and the
/// private keys that sign structured inputs.
struct JwtFixture {
    cached: Verifier,
    uncached: Verifier,
    signing: Vec<(Algorithm, Option<&'static str>, EncodingKey)>,
}

fn jwt_fixture() -> &'static JwtFixture {
    static FIXTURE: OnceLock<JwtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pem = |text: &str, alg, kid: &str| {
            keys::parse_pem_key(text.as_bytes(), alg, Some(kid.to_string()))
                .expect("built-in test key parses")
        };
        let rsa_public = include_str!("../tests/data/keys/rs256-public.pem");
        let mut dev_keys = keys::parse_jwks(include_str!("../config/dev/jwks.json"))
            .expect("built-in dev JWKS parses")
            .into_keys();
        dev_keys.push(pem(rsa_public, Algorithm::RS256, "rsa"));
        dev_keys.push(pem(rsa_public, Algorithm::PS256, "rsa"));
        dev_keys.push(pem(
            include_str!("../tests/data/keys/ed25519-public.pem"),
            Algorithm::EdDSA,
            "ed",
        ));
        let hmac = keys::shared_secret_key(FUZZ_HMAC_SECRET, &[Algorithm::HS256])
            .expect("HS256 key builds");
        let key_sets = || {
            vec![
                KeySet::new(dev_keys.clone()),
                KeySet::new(vec![hmac.clone()]),
            ]
        };
        let mut auth: AuthConfig = toml::from_str(FUZZ_AUTH_TOML).expect("built-in auth config");
        let metrics = Arc::new(Metrics::new(&[]));
        let cached =
            Verifier::with_local_keys(&auth, key_sets(), Arc::new(FixedClock), metrics.clone());
        auth.token_cache_max_entries = 0;
        let uncached = Verifier::with_local_keys(&auth, key_sets(), Arc::new(FixedClock), metrics);
        let rsa_private =
            EncodingKey::from_rsa_pem(include_bytes!("../tests/data/keys/rs256-private.pem"))
                .expect("built-in RSA key");
        let signing = vec![
            (
                Algorithm::ES256,
                Some(crate::mint::DEV_KEY_ID),
                EncodingKey::from_ec_pem(include_bytes!("../config/dev/es256-private.pem"))
                    .expect("built-in dev key"),
            ),
            (Algorithm::RS256, Some("rsa"), rsa_private.clone()),
            (Algorithm::PS256, Some("rsa"), rsa_private),
            (
                Algorithm::EdDSA,
                Some("ed"),
                EncodingKey::from_ed_pem(include_bytes!("../tests/data/keys/ed25519-private.pem"))
                    .expect("built-in Ed25519 key"),
            ),
            (
                Algorithm::HS256,
                None,
                EncodingKey::from_secret(FUZZ_HMAC_SECRET).expect("HS256 key"),
            ),
        ];
        JwtFixture {
            cached,
            uncached,
            signing,
        }
    })
}

/// A compact JWT over exactly these header and claims bytes (base64url-encoded as they are,
/// so they need not be JSON), signed by the harness's key for the header's `alg` when it has
/// one, else with an empty signature.
pub fn signed_token(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let alg = serde_json::from_slice::<Value>(header)
        .ok()
        .and_then(|h| h["alg"].as_str().and_then(|a| a.parse::<Algorithm>().ok()));
    let key = jwt_fixture()
        .signing
        .iter()
        .find(|(a, _, _)| Some(*a) == alg)
        .map(|(_, _, key)| key);
    let signature = key
        .and_then(|key| jsonwebtoken::crypto::sign(message.as_bytes(), key, alg?).ok())
        .unwrap_or_default();
    format!("{message}.{signature}")
}

/// What a verification came to, comparable across verifiers.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted {
        subject: String,
        issuer: String,
        expires_at: i64,
    },
    Refused(AuthFailure),
}

/// Runs a verification to completion. With local keys only it never waits on anything, so
/// one poll must finish it; a verification that suspends would be a hang in the harness.
fn verify_now(verifier: &Verifier, token: &str) -> Verdict {
    let mut future = std::pin::pin!(verifier.verify(token));
    let Poll::Ready(result) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("verification with local keys suspended");
    };
    match result {
        Ok(Caller {
            subject,
            issuer_name,
            expires_at,
            claims,
        }) => {
            assert!(
                expires_at.saturating_add(60) >= FUZZ_NOW,
                "an accepted token is not expired"
            );
            assert_eq!(claims.get("sub").and_then(Value::as_str), Some(&*subject));
            assert!(!subject.is_empty());
            Verdict::Accepted {
                subject: subject.to_string(),
                issuer: issuer_name.to_string(),
                expires_at,
            }
        }
        Err(reason) => Verdict::Refused(reason),
    }
}

/// The subject `jwt_verify`'s verifier accepts `token` for, or why it refuses it.
pub fn jwt_subject(token: &str) -> Result<String, AuthFailure> {
    match verify_now(&jwt_fixture().cached, token) {
        Verdict::Accepted { subject, .. } => Ok(subject),
        Verdict::Refused(reason) => Err(reason),
    }
}

/// `jwt_verify`: the bearer-token verifier end to end (size cap, base64url parts, duplicate-key
/// refusal, `crit`, `alg` against the issuer's list and the key's binding, `kid` lookup,
/// signature, `exp`/`nbf`/`iat`/lifetime, `aud`, subject) on a fixed clock ([`FUZZ_NOW`]).
///
/// Input: a raw compact token; or, when it starts with `{`, a header line and the claims,
/// which the harness encodes and signs with its own key for the header's `alg` (so mutated
/// claims get past the signature and reach claim validation).
///
/// Invariants: the cached verifier answers a token the same twice in a row and the same as
/// an uncached one; an accepted token names its subject and is not expired.
pub fn jwt_verify(data: &[u8]) {
    let fixture = jwt_fixture();
    let token = if data.first() == Some(&b'{') {
        let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let claims = data.get(split + 1..).unwrap_or_default();
        signed_token(&data[..split], claims)
    } else {
        String::from_utf8_lossy(data).into_owned()
    };
    let first = verify_now(&fixture.cached, &token);
    let second = verify_now(&fixture.cached, &token);
    assert_eq!(first, second, "a cached answer differs from the first");
    let uncached = verify_now(&fixture.uncached, &token);
    assert_eq!(first, uncached, "the token cache changed the answer");
}

/// `upstream_response`: what the gateway reads from the cloud. Every body goes through the
/// success parser (a 200's `remote_console.url`), the error parser (flat `error_code`,
/// `errorCode`, `code` at any depth, with the given status) and the IAM token-answer parser
/// (`token.expires_at`).
///
/// Input: a status line (e.g. `404`; anything else reads as 500), then the body.
///
/// Invariants: an accepted console URL is `https://` and at most 4096 bytes, and the success
/// body the gateway renders reads back as the same URL; a parsed error's code and message are
/// bounded, and the flat error body the gateway re-sends reads back as the same code and
/// message (so an SDK sees what the cloud said).
pub fn upstream_response(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let status = std::str::from_utf8(&data[..split])
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = data.get(split + 1..).unwrap_or_default();

    if let Ok(url) = bms::parse_upstream_success(body) {
        assert!(url.expose().starts_with("https://") && url.expose().len() <= 4096);
        let kind = bms::parse_request_body(bms::UPSTREAM_REQUEST_BODY).expect("serial request");
        let rendered = bms::render_console(&kind, &url);
        let again = bms::parse_upstream_success(&rendered).expect("rendered success reads back");
        assert!(
            again == url,
            "the rendered console URL reads back unchanged"
        );
    }

    let error = bms::parse_upstream_error(status, body);
    assert_eq!(error.status, status);
    assert!(error.code.len() <= 64 && error.message.len() <= 512);
    let resent = GatewayError::Upstream(error.clone());
    assert_error_body(&resent);
    let UpstreamError { code, message, .. } =
        bms::parse_upstream_error(status, &resent.body("fuzz"));
    assert_eq!(
        (code, message),
        (error.code, error.message),
        "the re-sent error reads back unchanged"
    );

    let _ = iam::token_expiry(body);
}

/// `config_parse`: a config file's text through TOML syntax, the typed structs (unknown keys
/// refused) and every validation that needs no other file ([`Config::from_toml_str`]), then
/// the policy compiled from an accepted config and asked one question, and each rate-limit
/// tier turned into a GCRA quota. Key files, secret
/// references and JWKS URLs are resolved only when the gateway is built, which is not fuzzed
/// (the base directory given does not exist).
///
/// Invariants: a refused config names at least one problem, each with a key path; an
/// accepted one has an account and a policy rule, and each of its tiers admits a new user.
pub fn config_parse(data: &[u8]) {
    // `Config::load` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, Path::new("/nonexistent/bms-fuzz"), "fuzz.toml") {
        Ok(config) => {
            assert!(!config.accounts.is_empty() && !config.policy.rules.is_empty());
            let policy = Policy::from_config(&config.policy);
            let project = config.accounts[0].projects[0].clone();
            let target = ConsoleTarget {
                project: ProjectId::parse(&project).expect("validated project id"),
                server: ServerId::parse("cf2a8b97-b5c6-47ef-9714-eb27adf26e5b").expect("uuid"),
            };
            let caller = Caller {
                subject: "alice".into(),
                issuer_name: Arc::from(config.auth.issuers.first().map_or("", |i| i.name.as_str())),
                claims: Arc::new(serde_json::Map::from_iter([(
                    "groups".to_string(),
                    Value::from(vec!["ops"]),
                )])),
                expires_at: FUZZ_NOW,
            };
            let _ = policy.decide_with_client_cert(&caller, Some("CN=fuzz"), &target);
            let tiers = std::iter::once(config.rate_limit.default_tier())
                .chain(config.rate_limit.tiers.values().cloned());
            for tier in tiers {
                let (outcome, _) = gcra::decide(0, FUZZ_NOW as u64, Quota::from_tier(&tier));
                assert!(
                    outcome.allowed,
                    "every valid tier admits a new user's first request"
                );
            }
        }
        Err(error) => {
            assert!(!error.issues.is_empty(), "a refused config names a problem");
            assert!(error.issues.iter().all(|i| !i.key.is_empty()));
            let _ = error.to_string();
        }
    }
}

/// The keys `signer_canonical` signs with when the input names none (the SDK guide's example).
const FUZZ_SECRET_KEY: &str = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc";
const FUZZ_ACCESS_KEY: &str = "QTWAOYTTINDUT2QVKYUC";

/// `signer_canonical`: SDK-HMAC-SHA256 on arbitrary requests: canonical URI, query, headers
/// and request, `sign`, `parse_authorization` and `verify` (what the simulator runs on every
/// request it receives), and the `X-Sdk-Date` parser.
///
/// Input: `METHOD PATH[?QUERY] [ACCESS-KEY [SECRET-KEY]]`, headers, empty line, body. An
/// `Authorization` header is also parsed and verified, as the simulator does with a client's.
///
/// Invariants: canonicalising a canonical URI or query changes nothing; the canonical request
/// has one line per signed header plus six; signing twice gives the same value; a signature
/// parses back to its access key and header list and, when every signed header occurs once
/// and any stated body hash is honest, verifies, and does not verify under another key; a
/// parsed `X-Sdk-Date` formats back to itself.
pub fn signer_canonical(data: &[u8]) {
    let message = Message::parse(data);
    let mut start = message.start.split(' ');
    let method = start.next().unwrap_or("");
    let target = start.next().unwrap_or("");
    let access_key = start.next().unwrap_or(FUZZ_ACCESS_KEY);
    let secret = Secret::new(start.next().unwrap_or(FUZZ_SECRET_KEY));
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = signer::parse_query(raw_query);
    let headers: Vec<(&str, &str)> = message
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = SigningRequest {
        method,
        path,
        query: &query,
        headers: &headers,
        body: message.body,
    };

    let uri = signer::canonical_uri(path);
    assert!(uri.ends_with('/'));
    assert_eq!(
        signer::canonical_uri(&uri),
        uri,
        "canonical URI is a fixed point"
    );
    let canonical_query = signer::canonical_query(&query);
    assert_eq!(
        signer::canonical_query(&signer::parse_query(&canonical_query)),
        canonical_query,
        "the canonical query round-trips through the wire form"
    );
    let signed = signer::signed_header_names(&request);
    let canonical = signer::canonical_request(&request, &signed);
    assert_eq!(canonical.split('\n').count(), signed.len() + 6);

    let signature = signer::sign(&request, access_key, &secret);
    assert_eq!(signature, signer::sign(&request, access_key, &secret));
    if let Ok(authorization) = &signature {
        let parsed = signer::parse_authorization(authorization).expect("own signature parses");
        assert_eq!(parsed.access_key, access_key);
        assert_eq!(parsed.signed_headers, signed);
        if signed_headers_unique(&request, &signed) && stated_hash_is_honest(&request) {
            assert!(
                signer::verify(&request, &parsed, &secret),
                "own signature verifies"
            );
        }
        let other = Secret::new(format!("{}-other", secret.expose()));
        assert!(!signer::verify(&request, &parsed, &other));
    }

    if let Some((_, value)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        if let Some(parsed) = signer::parse_authorization(value) {
            let _ = signer::verify(&request, &parsed, &secret);
        }
    }
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-sdk-date"))
    {
        if let Some(time) = signer::parse_sdk_date(value.trim()) {
            assert_eq!(signer::format_sdk_date(time), value.trim());
        }
    }
}

fn signed_headers_unique(request: &SigningRequest, signed: &[String]) -> bool {
    signed.iter().all(|name| {
        request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
            == 1
    })
}

/// `verify` refuses a stated body hash that is neither `UNSIGNED-PAYLOAD` nor the body's.
fn stated_hash_is_honest(request: &SigningRequest) -> bool {
    let stated = request
        .headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-sdk-content-sha256"))
        .map(|(_, v)| v.trim());
    match stated {
        None => true,
        Some(v) => v == signer::UNSIGNED_PAYLOAD || v == signer::sha256_hex(request.body),
    }
}
