//! The public API contract, `docs/openapi.yaml`, against live gateways.
//!
//! Every status the spec documents that a test can provoke is provoked through a real server
//! (success, cache hit, each validation failure, 401, 403, 404, 405, 408, 413, 414, 415, 429,
//! 431, the cloud's errors passed on, and the gateway's own upstream failures), and each answer
//! is checked against the spec: the status is documented for the operation (the gateway's own
//! errors under their exact status, with their code in `x-error-codes`), the body conforms to
//! the documented schema, every required header is there, every header sent is documented, and
//! each header value conforms. Requests are raw HTTP/1.1 over TCP, so what is checked is exactly
//! what a client receives.
//!
//! Other tests keep the spec from falling behind the code: every `GatewayError` kind's status
//! and code are documented (and nothing else is), the path-parameter patterns accept exactly
//! what the gateway's parser accepts, and so does the request-body schema.

mod common;
#[path = "openapi_contract/spec.rs"]
mod spec;
#[path = "openapi_contract/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use bms_console_gateway::bms::{self, ProjectId, ServerId};
use bms_console_gateway::error::GatewayError;
use bms_console_gateway::sim::Scripted;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use spec::{Answer, Listener, Origin, Spec};
use wire::{exchange, Request, StubCloud};

/// A server the policy's deny rule names.
const DENIED: &str = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";
/// A well-formed project that no account serves (the policy grants every project).
const UNSERVED_PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// One listener of a live gateway and the spec its answers are checked against.
struct Live<'a> {
    spec: &'a Spec,
    listener: Listener,
    addr: SocketAddr,
}

impl<'a> Live<'a> {
    fn public(spec: &'a Spec, h: &Harness) -> Live<'a> {
        Live {
            spec,
            listener: Listener::Public,
            addr: h.gateway.public_addr,
        }
    }

    fn admin(spec: &'a Spec, h: &Harness) -> Live<'a> {
        Live {
            spec,
            listener: Listener::Admin,
            addr: h.gateway.admin_addr,
        }
    }

    /// Sends `request`, asserts the status (and, for errors, the code and the request id in
    /// the body), then asserts the answer conforms to the spec.
    async fn expect(
        &self,
        request: Request,
        status: u16,
        code: Option<&str>,
        origin: Origin,
    ) -> Answer {
        let answer = exchange(self.addr, &request).await;
        let what = format!("{} {}", request.method, request.target);
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        assert_eq!(answer.status, status, "{what}: {body}");
        if let Some(code) = code {
            let body = answer.json();
            assert_eq!(body["error_code"], code, "{what}: {body}");
            let request_id = answer.header("x-request-id");
            assert_eq!(body["request_id"].as_str(), request_id, "{what}");
        }
        let problems = self.spec.check(
            self.listener,
            request.method,
            &request.target,
            &answer,
            origin,
        );
        assert!(
            problems.is_empty(),
            "{what} → {status} departs from docs/openapi.yaml:\n  {}",
            problems.join("\n  ")
        );
        answer
    }

    /// The gateway's own error.
    async fn gateway_error(&self, request: Request, status: u16, code: &str) -> Answer {
        self.expect(request, status, Some(code), Origin::Gateway)
            .await
    }

    /// A 405 for `request`; HEAD's comes without a body, so its code is not read.
    async fn method_not_allowed(&self, request: Request) -> Answer {
        if request.method == "HEAD" {
            let answer = self.expect(request, 405, None, Origin::Gateway).await;
            assert!(answer.body.is_empty());
            answer
        } else {
            self.gateway_error(request, 405, "BMSGW.0107").await
        }
    }

    /// An error the cloud answered, passed on.
    async fn cloud_error(&self, request: Request, status: u16, code: &str) -> Answer {
        self.expect(request, status, Some(code), Origin::Cloud)
            .await
    }

    async fn success(&self, request: Request) -> Answer {
        self.expect(request, 200, None, Origin::Gateway).await
    }
}

/// The policy: one denied server, a tight rate-limit tier for the subject `tight`, and every
/// project granted (so an unserved one reaches the account lookup).
fn contract_config() -> TestConfig {
    TestConfig {
        policy: format!(
            r#"
[[policy.rules]]
name = "no-denied-server"
effect = "deny"
subjects = ["*"]
projects = ["*"]
servers = ["{DENIED}"]

[[policy.rules]]
name = "tight-caller"
subjects = ["tight"]
projects = ["*"]
rate_limit_tier = "tight"

[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["*"]
"#
        ),
        extra_rate_limit: "[rate_limit.tiers.tight]\nrequests_per_second = 0.001\nburst = 1\n".into(),
        // One attempt per request, so each scripted fault is one answer; a breaker that those
        // few failures do not open.
        extra_upstream: "[upstream.retry]\nmax_attempts = 1\n[upstream.breaker]\nconsecutive_failures = 1000\nwindow = 1000\nfailure_ratio = 1.0\n".into(),
        upstream_timeout_ms: 1000,
        extra_server: "admin_reload = true".into(),
        ..TestConfig::default()
    }
}

#[tokio::test]
async fn successes_and_cache_hits_conform() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::public(&spec, &h);
    let miss = live
        .success(Request::console(&h, "alice", PROJECT, LINUX))
        .await;
    assert_eq!(miss.header("x-cache"), Some("miss"));
    let hit = live
        .success(Request::console(&h, "alice", PROJECT, LINUX))
        .await;
    assert_eq!(hit.header("x-cache"), Some("hit"));
    assert_eq!(hit.json(), miss.json());
    // The trailing-slash form the spec describes, and the caller's request id kept.
    let mut slash =
        Request::console(&h, "alice", PROJECT, LINUX).header("X-Request-Id", "runbook-1");
    slash.target.push('/');
    let answer = live.success(slash).await;
    assert_eq!(answer.header("x-request-id"), Some("runbook-1"));
    let fresh = live
        .success(Request::console(&h, "alice", PROJECT, LINUX).header("Cache-Control", "no-cache"))
        .await;
    assert_eq!(fresh.header("x-cache"), Some("miss"));
    assert_eq!(h.sim().stats().remote_console_ok, 2);
}

#[tokio::test]
async fn validation_failures_conform() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::public(&spec, &h);
    let path = console_path(PROJECT, LINUX);
    let token = h.token("alice");
    let post = |body: &str| Request::new("POST", path.clone()).bearer(&token).json(body);

    // Path parameters are checked before the token.
    for (project, server, code) in [
        ("not-hex", LINUX, "BMSGW.0101"),
        (&PROJECT[..31], LINUX, "BMSGW.0101"),
        (PROJECT, "cf2a8b97b5c647ef9714eb27adf26e5b", "BMSGW.0102"),
    ] {
        let request = Request::new("POST", console_path(project, server)).json(BODY);
        live.gateway_error(request, 400, code).await;
    }
    for body in [
        "{not json",
        r#"{"remote_console":{"protocol":"serial","protocol":"serial","type":"serial"}}"#,
    ] {
        live.gateway_error(post(body), 400, "BMSGW.0103").await;
    }
    for (body, field) in [
        ("{}", "remote_console"),
        (r#"[["serial","serial"]]"#, "remote_console"),
        (r#"{"remote_console":5}"#, "remote_console"),
        (
            r#"{"remote_console":{"type":"serial"}}"#,
            "remote_console.protocol",
        ),
        (
            r#"{"remote_console":{"protocol":"serial","type":"vnc"}}"#,
            "remote_console.type",
        ),
    ] {
        let answer = live.gateway_error(post(body), 400, "BMSGW.0104").await;
        let message = answer.json()["error_msg"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("field {field}:")),
            "{body}: {message}"
        );
    }
    let mut oversized = post(BODY);
    oversized.body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    oversized.body_sent = Some(0);
    live.gateway_error(oversized, 413, "BMSGW.0105").await;
    let plain = Request::new("POST", path.clone())
        .bearer(&token)
        .header("Content-Type", "text/plain");
    live.gateway_error(plain, 415, "BMSGW.0106").await;
    let untyped = Request::new("POST", path.clone()).bearer(&token);
    live.gateway_error(untyped, 415, "BMSGW.0106").await;
    // The body never arrives in full: refused after server.body_read_timeout_ms (1 s here).
    let mut stalled = post(BODY);
    stalled.body_sent = Some(10);
    live.gateway_error(stalled, 408, "BMSGW.0108").await;
    let long = Request::new("POST", format!("{path}?pad={}", "q".repeat(9000))).json(BODY);
    live.gateway_error(long, 414, "BMSGW.0701").await;
    // Over server.max_header_bytes (16 KiB): the HTTP layer's empty 431.
    let padded = post(BODY).header("X-Pad", &"a".repeat(17 * 1024));
    let answer = live.expect(padded, 431, None, Origin::Gateway).await;
    assert!(answer.body.is_empty());
    assert_eq!(
        h.sim().stats().requests_total,
        0,
        "no refused request reached the cloud"
    );
}

#[tokio::test]
async fn refusals_of_the_caller_conform() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::public(&spec, &h);
    let console = || Request::new("POST", console_path(PROJECT, LINUX)).json(BODY);

    let missing = live.gateway_error(console(), 401, "APIGW.0301").await;
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="bms-console-gateway""#)
    );
    let invalid = live
        .gateway_error(console().bearer("not.a.token"), 401, "APIGW.0301")
        .await;
    assert!(invalid
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let long_ago = h.clock_now() - 3600;
    let expired = mint(Algorithm::ES256, &claims("alice", long_ago));
    let answer = live
        .gateway_error(console().bearer(&expired), 401, "APIGW.0301")
        .await;
    assert!(answer.json()["error_msg"]
        .as_str()
        .unwrap()
        .ends_with("token expired"));

    let denied = Request::console(&h, "alice", PROJECT, DENIED);
    let answer = live.gateway_error(denied, 403, "BMSGW.0201").await;
    assert!(answer.header("ratelimit-remaining").is_some());
    let unserved = Request::console(&h, "alice", UNSERVED_PROJECT, LINUX);
    live.gateway_error(unserved, 404, "BMSGW.0202").await;

    // The tight tier holds one request; the second is refused with Retry-After.
    live.success(Request::console(&h, "tight", PROJECT, LINUX))
        .await;
    let limited = Request::console(&h, "tight", PROJECT, LINUX);
    let answer = live.gateway_error(limited, 429, "APIGW.0308").await;
    assert_eq!(answer.header("ratelimit-remaining"), Some("0"));
    assert!(
        answer
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn other_methods_and_paths_conform() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::public(&spec, &h);
    let path = console_path(PROJECT, LINUX);
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"] {
        let answer = live
            .method_not_allowed(Request::new(method, path.clone()))
            .await;
        assert_eq!(answer.header("allow"), Some("POST"), "{method}");
    }
    // The method is checked before the path parameters.
    let odd = Request::new("GET", console_path("not-hex", "not-a-uuid"));
    live.gateway_error(odd, 405, "BMSGW.0107").await;
    for (method, target) in [
        ("POST", "/v1/nothing/here".to_string()),
        ("GET", "/".to_string()),
        ("POST", format!("{path}/extra")),
        ("GET", "/healthz".to_string()),
    ] {
        let request = Request::new(method, target).json(BODY);
        live.gateway_error(request, 404, "APIGW.0101").await;
    }
}

#[tokio::test]
async fn cloud_errors_and_upstream_failures_conform() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::public(&spec, &h);
    let fresh = |server: &str| {
        Request::console(&h, "alice", PROJECT, server).header("Cache-Control", "no-cache")
    };

    // The cloud's refusals, passed on; the second unknown-server answer is remembered.
    live.cloud_error(fresh(WINDOWS), 400, "BMS.0395").await;
    let first = live
        .cloud_error(
            Request::console(&h, "alice", PROJECT, UNKNOWN),
            400,
            "BMS.0040",
        )
        .await;
    assert_eq!(first.header("x-cache"), Some("miss"));
    let remembered = live
        .cloud_error(
            Request::console(&h, "alice", PROJECT, UNKNOWN),
            400,
            "BMS.0040",
        )
        .await;
    assert_eq!(remembered.header("x-cache"), Some("hit"));

    // Scripted faults, one per request (upstream.retry.max_attempts = 1).
    let sim = h.sim();
    let before = sim.stats().requests_total;
    for (fault, status, code, origin) in [
        (Scripted::BadGateway, 502, None, Origin::Cloud),
        (Scripted::Unavailable, 503, None, Origin::Cloud),
        (Scripted::GatewayTimeout, 504, None, Origin::Cloud),
        (Scripted::Overload, 400, Some("BMS.0212"), Origin::Cloud),
        (Scripted::Reset, 502, Some("BMSGW.0301"), Origin::Gateway),
    ] {
        sim.faults().script(&[fault]);
        let answer = live.expect(fresh(LINUX), status, code, origin).await;
        assert!(answer.header("ratelimit-limit").is_some(), "{fault:?}");
    }
    assert_eq!(
        sim.stats().requests_total - before,
        5,
        "each fault was one cloud call"
    );

    // Too slow: the gateway's own 504 after upstream.timeout_ms (1 s here).
    sim.faults().set_latency(Duration::from_secs(3));
    live.gateway_error(fresh(LINUX), 504, "BMSGW.0302").await;
    sim.faults().set_latency(Duration::ZERO);

    // The cloud throttles: 429 with Retry-After, and the account is backed off (30 s).
    sim.faults().script(&[Scripted::Throttle]);
    let throttled = live.gateway_error(fresh(LINUX), 429, "APIGW.0308").await;
    assert!(throttled.header("retry-after").is_some());
    let calls = sim.stats().requests_total;
    live.gateway_error(fresh(LINUX), 429, "APIGW.0308").await;
    assert_eq!(sim.stats().requests_total, calls, "backed off: no call");
    h.clock.advance(Duration::from_secs(30));
    live.success(fresh(LINUX)).await;
}

#[tokio::test]
async fn the_gateways_own_upstream_refusals_conform() {
    let spec = Spec::load();
    // Wrong service credentials: the first rejection is a 502, then lockout protection pauses
    // the account (threshold 1) and answers 503 with Retry-After without calling.
    let cloud = start_simulator(TEST_AK, "not-the-gateways-secret").await;
    let h = Harness::start(TestConfig {
        endpoint: cloud.endpoint(),
        extra_upstream: "[upstream.lockout]\nthreshold = 1\n".into(),
        ..contract_config()
    })
    .await;
    let live = Live::public(&spec, &h);
    live.gateway_error(
        Request::console(&h, "alice", PROJECT, LINUX),
        502,
        "BMSGW.0304",
    )
    .await;
    let paused = live
        .gateway_error(
            Request::console(&h, "alice", PROJECT, LINUX),
            503,
            "BMSGW.0312",
        )
        .await;
    assert!(paused.header("retry-after").is_some());
    assert_eq!(cloud.stats().requests_total, 1);

    // A breaker that opens on the first failure answers 503 BMSGW.0313 for the next request.
    let h = Harness::start(TestConfig {
        extra_upstream:
            "[upstream.retry]\nmax_attempts = 1\n[upstream.breaker]\nconsecutive_failures = 1\n"
                .into(),
        ..contract_config()
    })
    .await;
    let live = Live::public(&spec, &h);
    h.sim().faults().set_error_5xx_rate(1.0);
    live.expect(
        Request::console(&h, "alice", PROJECT, LINUX),
        503,
        None,
        Origin::Cloud,
    )
    .await;
    let open = live
        .gateway_error(
            Request::console(&h, "alice", PROJECT, LINUX),
            503,
            "BMSGW.0313",
        )
        .await;
    assert!(open.header("retry-after").is_some());

    // An upstream rate cap of one call, with a short wait: the second call is refused.
    let h = Harness::start(TestConfig {
        extra_upstream: "[upstream.quota]\nrequests_per_second = 1\nburst = 1\nmax_queue = 1\nmax_wait_ms = 50\n".into(),
        ..contract_config()
    })
    .await;
    let live = Live::public(&spec, &h);
    live.success(Request::console(&h, "alice", PROJECT, LINUX))
        .await;
    let capped = Request::console(&h, "alice", PROJECT, LINUX).header("Cache-Control", "no-cache");
    let answer = live.gateway_error(capped, 503, "BMSGW.0314").await;
    assert!(answer.header("retry-after").is_some());
}

#[tokio::test]
async fn answers_the_simulator_never_gives_conform() {
    let spec = Spec::load();
    let cloud = StubCloud::start().await;
    let h = Harness::start(TestConfig {
        endpoint: format!("http://{}", cloud.addr),
        ..contract_config()
    })
    .await;
    let live = Live::public(&spec, &h);
    let fresh =
        || Request::console(&h, "alice", PROJECT, LINUX).header("Cache-Control", "no-cache");
    let json_type = "application/json";
    // Cloud 4xx other than 400, in both of the cloud's shapes, keep status and code.
    cloud.answer(
        "403 Forbidden",
        json_type,
        r#"{"error":{"code":"BMS.0403","message":"no"}}"#,
    );
    live.cloud_error(fresh(), 403, "BMS.0403").await;
    cloud.answer(
        "409 Conflict",
        json_type,
        r#"{"error_code":"BMS.0409","error_msg":"busy","request_id":"x"}"#,
    );
    live.cloud_error(fresh(), 409, "BMS.0409").await;
    // A bare 500 (no JSON) is passed on with the status as its code.
    cloud.answer(
        "500 Internal Server Error",
        "text/html",
        "<html>oops</html>",
    );
    live.cloud_error(fresh(), 500, "500").await;
    // Neither a console nor an error: the gateway's 502, never the cloud's status.
    cloud.answer("302 Found", "text/html", "");
    live.gateway_error(fresh(), 502, "BMSGW.0303").await;
    cloud.answer(
        "200 OK",
        json_type,
        r#"{"remote_console":{"url":"http://plain.example/"}}"#,
    );
    live.gateway_error(fresh(), 502, "BMSGW.0303").await;
    // A cloud 401 is about the gateway's own credentials: 502, with the cloud's text hidden.
    cloud.answer(
        "401 Unauthorized",
        json_type,
        r#"{"error_code":"APIGW.0301","error_msg":"canonical request: secret"}"#,
    );
    let answer = live.gateway_error(fresh(), 502, "BMSGW.0304").await;
    assert!(!answer.json()["error_msg"]
        .as_str()
        .unwrap()
        .contains("canonical"));
}

#[tokio::test]
async fn the_admin_listener_conforms() {
    let spec = Spec::load();
    let h = Harness::start(contract_config()).await;
    let live = Live::admin(&spec, &h);
    for (method, target, status) in [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        // Started from config text, so there is no file to re-read.
        ("POST", "/-/reload", 409),
    ] {
        live.expect(Request::new(method, target), status, None, Origin::Gateway)
            .await;
    }
    // Other methods: 405 with Allow, as the admin tag and the reload operation describe.
    for (method, target, response, allow) in [
        ("POST", "/healthz", "AdminMethodNotAllowed", "GET, HEAD"),
        ("PUT", "/readyz", "AdminMethodNotAllowed", "GET, HEAD"),
        ("DELETE", "/metrics", "AdminMethodNotAllowed", "GET, HEAD"),
        ("GET", "/-/reload", "AdminReloadMethodNotAllowed", "POST"),
    ] {
        let answer = exchange(live.addr, &Request::new(method, target)).await;
        assert_eq!(answer.status, 405, "{method} {target}");
        assert_eq!(answer.header("allow"), Some(allow));
        let documented = spec.resolve(&spec.doc()["components"]["responses"][response]);
        let problems = spec.check_response("405", documented, method, &answer, Origin::Gateway);
        assert!(problems.is_empty(), "{method} {target}: {problems:?}");
    }
    // An unknown admin path is a 404 whatever the method.
    for method in ["GET", "POST"] {
        let answer = exchange(live.addr, &Request::new(method, "/nope")).await;
        assert_eq!(answer.status, 404, "{method} /nope");
    }
}

/// The public operation's responses, by status key.
fn console_responses(spec: &Spec) -> &serde_json::Map<String, Value> {
    spec.console_operation()["responses"].as_object().unwrap()
}

#[test]
fn every_error_the_gateway_can_answer_is_documented() {
    let spec = Spec::load();
    let operation = spec.console_operation();
    for error in GatewayError::catalogue() {
        let status = error.status().as_u16();
        if let GatewayError::Upstream(_) = error {
            // The cloud's own statuses: every 4xx and 5xx is covered.
            for range in ["4XX", "5XX"] {
                assert!(console_responses(&spec).contains_key(range), "{range}");
            }
            continue;
        }
        let response = if let GatewayError::NotFound = error {
            // No such path: the answer for every path the spec does not name.
            spec.resolve(&spec.doc()["x-unmatched-path-response"])
        } else if let GatewayError::MethodNotAllowed = error {
            // The answer for every method the route does not list.
            spec.resolve(&spec.doc()["x-unsupported-method-response"])
        } else {
            console_responses(&spec)
                .get(&status.to_string())
                .map(|r| spec.resolve(r))
                .unwrap_or_else(|| panic!("{status} ({}) is not in the spec", error.code()))
        };
        assert!(
            spec.error_codes(response)
                .contains(&error.code().to_string()),
            "{} is not in the x-error-codes of {status}",
            error.code()
        );
        let body: Value =
            serde_json::from_slice(&error.body("3eca308128e04e99b077a7f9fda67883")).unwrap();
        let schema = &response["content"]["application/json"]["schema"];
        let problems = spec.schema_errors(schema, &body);
        assert!(problems.is_empty(), "{body}: {problems:?}");
        if error.retry_after_secs().is_some() {
            assert!(
                response["headers"].get("Retry-After").is_some(),
                "{} carries Retry-After; {status} does not document it",
                error.code()
            );
        }
        if !matches!(
            error,
            GatewayError::NotFound | GatewayError::MethodNotAllowed
        ) {
            assert!(spec.response(operation, status).is_some());
        }
    }
}

#[test]
fn the_spec_lists_no_code_the_gateway_lacks() {
    let spec = Spec::load();
    let known: Vec<(u16, String)> = GatewayError::catalogue()
        .iter()
        .map(|e| (e.status().as_u16(), e.code().to_string()))
        .collect();
    let elsewhere = [
        (
            "404".to_string(),
            spec.doc()["x-unmatched-path-response"].clone(),
        ),
        (
            "405".to_string(),
            spec.doc()["x-unsupported-method-response"].clone(),
        ),
    ];
    let listed = console_responses(&spec)
        .iter()
        .map(|(status, response)| (status.clone(), response.clone()))
        .chain(elsewhere);
    for (status, response) in listed {
        for code in spec.error_codes(spec.resolve(&response)) {
            let status: u16 = status.parse().expect("only exact statuses list codes");
            assert!(
                known.contains(&(status, code.clone())),
                "the spec lists {code} under {status}; the gateway never answers that"
            );
        }
    }
}

#[test]
fn the_path_parameter_patterns_accept_what_the_gateway_accepts() {
    let spec = Spec::load();
    let parameter =
        |name: &str| spec.resolve(&spec.doc()["components"]["parameters"][name])["schema"].clone();
    let (project_schema, server_schema) = (parameter("ProjectId"), parameter("ServerId"));
    let samples = [
        PROJECT,
        "BBF1946D374B44A0A2A95533562BA954",
        &PROJECT[..31],
        "bbf1946d374b44a0a2a95533562ba9544",
        "gbf1946d374b44a0a2a95533562ba954",
        "bbf1946d-374b-44a0-a2a9-5533562ba954",
        LINUX,
        "CF2A8B97-B5C6-47EF-9714-EB27ADF26E5B",
        "cf2a8b97b5c647ef9714eb27adf26e5b",
        "cf2a8b97-b5c6-47ef-9714-eb27adf26e5",
        "cf2a8b97-b5c6-47ef-9714-eb27adf26e5bb",
        "cf2a8b97_b5c6_47ef_9714_eb27adf26e5b",
        "{cf2a8b97-b5c6-47ef-9714-eb27adf26e5b}",
        "cf2a8b97-b5c6-47ef-9714-eb27adf26e5\u{e9}",
        "",
        "%62bf1946d374b44a0a2a95533562ba95",
    ];
    for sample in samples {
        let value = Value::String(sample.to_string());
        assert_eq!(
            spec.schema_errors(&project_schema, &value).is_empty(),
            ProjectId::parse(sample).is_ok(),
            "project id {sample:?}"
        );
        assert_eq!(
            spec.schema_errors(&server_schema, &value).is_empty(),
            ServerId::parse(sample).is_ok(),
            "server id {sample:?}"
        );
    }
}

#[test]
fn the_request_body_schema_accepts_what_the_gateway_accepts() {
    let spec = Spec::load();
    let schema = &spec.console_operation()["requestBody"]["content"]["application/json"]["schema"];
    for body in [
        json!({"remote_console": {"protocol": "serial", "type": "serial"}}),
        json!({"remote_console": {"protocol": "serial", "type": "serial", "extra": [1]}, "x": null}),
        json!({}),
        json!([["serial", "serial"]]),
        json!(null),
        json!("serial"),
        json!({"remote_console": null}),
        json!({"remote_console": ["serial", "serial"]}),
        json!({"remote_console": {"protocol": "serial"}}),
        json!({"remote_console": {"protocol": "vnc", "type": "serial"}}),
        json!({"remote_console": {"protocol": "serial", "type": null}}),
        json!({"remote_console": {"protocol": "serial", "type": 1}}),
        json!({"remote_console": {"protocol": "SERIAL", "type": "serial"}}),
    ] {
        assert_eq!(
            spec.schema_errors(schema, &body).is_empty(),
            bms::parse_request_body(body.to_string().as_bytes()).is_ok(),
            "{body}"
        );
    }
}

#[test]
fn the_examples_in_the_spec_conform_to_their_schemas() {
    let spec = Spec::load();
    let schemas = spec.doc()["components"]["schemas"].as_object().unwrap();
    let mut checked = 0;
    for (name, schema) in schemas {
        if let Some(example) = schema.get("example") {
            let problems = spec.schema_errors(schema, example);
            assert!(problems.is_empty(), "{name}: {problems:?}");
            checked += 1;
        }
    }
    let request = &spec.console_operation()["requestBody"]["content"]["application/json"];
    assert!(spec
        .schema_errors(&request["schema"], &request["example"])
        .is_empty());
    assert!(checked >= 2, "the success and error examples");
}

#[test]
fn the_spec_describes_this_version_and_its_listeners() {
    let spec = Spec::load();
    assert_eq!(spec.doc()["info"]["version"], env!("CARGO_PKG_VERSION"));
    // The servers are the default config's listeners.
    let config = bms_console_gateway::config::Config::from_toml_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml"))
            .unwrap(),
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config")),
        "gateway.toml",
    )
    .expect("the default config");
    assert_eq!(
        spec.doc()["servers"][0]["url"],
        format!("http://{}", config.server.listen)
    );
    assert_eq!(
        spec.doc()["paths"]["/healthz"]["servers"][0]["url"],
        format!("http://{}", config.server.admin_listen)
    );
}

#[test]
fn every_gateway_code_is_in_the_readme_error_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for error in GatewayError::catalogue() {
        if let GatewayError::Upstream(_) = error {
            continue;
        }
        let row = format!("| {} | `{}` |", error.status().as_u16(), error.code());
        assert!(
            readme.contains(&row),
            "the README's error table lacks {row}"
        );
    }
}
