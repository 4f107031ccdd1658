//! End-to-end tests of the simulator over real loopback sockets, with a hyper client and
//! requests signed by our own signer (which the vector tests tie to the official SDK).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::*;
use crate::upstream::signer::{self, SigningRequest};

const AK: &str = "SIMTESTAK00000000001";
const SK: &str = "simTestSecretKey0123456789abcdefghijKLMN";
const OTHER_PROJECT: &str = "ffffffffffffffffffffffffffffffff";
/// The exact bytes the official Python SDK sends.
const SDK_BODY: &[u8] = br#"{"remote_console": {"protocol": "serial", "type": "serial"}}"#;

type TestClient = Client<HttpConnector, Full<Bytes>>;

async fn sim() -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let credential = SimCredential {
        access_key: AK.into(),
        secret_key: Secret::new(SK),
        projects: vec![DEMO_PROJECT_ID.into()],
        security_token: None,
    };
    start(SimConfig::new(vec![credential], Catalog::demo()), listener)
        .await
        .unwrap()
}

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn console_path(project: &str, server: &str) -> String {
    format!("/v1/{project}/baremetalservers/{server}/remote_console")
}

/// What to put in one signed request; tests change the fields they care about.
struct Call {
    path: String,
    project_header: String,
    body: Vec<u8>,
    date: SystemTime,
    secret_key: Secret,
    /// HTTP/2 carries the host as `:authority`; leave the `Host` header out then.
    send_host_header: bool,
    extra_headers: Vec<(&'static str, &'static str)>,
}

impl Call {
    fn to(server: &str) -> Call {
        Call {
            path: console_path(DEMO_PROJECT_ID, server),
            project_header: DEMO_PROJECT_ID.into(),
            body: SDK_BODY.to_vec(),
            date: SystemTime::now(),
            secret_key: Secret::new(SK),
            send_host_header: true,
            extra_headers: Vec::new(),
        }
    }

    /// Signs like the gateway will: content-type, host, x-project-id, x-sdk-date (plus any
    /// extra headers, which are signed too).
    fn request(&self, sim: &SimHandle) -> Request<Full<Bytes>> {
        let host = sim.addr().to_string();
        let date = signer::format_sdk_date(self.date);
        let mut headers: Vec<(&str, &str)> = vec![
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Host", &host),
            ("X-Project-Id", &self.project_header),
            ("X-Sdk-Date", &date),
        ];
        headers.extend(self.extra_headers.iter().copied());
        let auth = signer::sign(
            &SigningRequest {
                method: "POST",
                path: &self.path,
                query: &[],
                headers: &headers,
                body: &self.body,
            },
            AK,
            &self.secret_key,
        )
        .unwrap();
        let mut builder = Request::post(format!("{}{}", sim.endpoint(), self.path));
        for (name, value) in &headers {
            if self.send_host_header || !name.eq_ignore_ascii_case("host") {
                builder = builder.header(*name, *value);
            }
        }
        builder
            .header("Authorization", auth)
            .body(Full::new(Bytes::from(self.body.clone())))
            .unwrap()
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let resp = client.request(req).await.expect("an answer");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).expect("a JSON body"),
    }
}

async fn call(sim: &SimHandle, c: &Call) -> Answer {
    send(&client(), c.request(sim)).await
}

fn request_id(a: &Answer) -> String {
    let id = a.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "request id {id}");
    assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    id
}

fn assert_nested(a: &Answer, status: StatusCode, code: &str, message: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body, json!({"error": {"code": code, "message": message}}));
    request_id(a);
}

fn assert_flat(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error_code"], code);
    assert!(a.body["error_msg"].is_string());
    assert_eq!(a.body["request_id"], request_id(a).as_str());
}

fn token_of(a: &Answer) -> String {
    let url = a.body["remote_console"]["url"].as_str().unwrap();
    let token = url
        .strip_prefix(&format!("{DEFAULT_CONSOLE_BASE_URL}?token="))
        .unwrap_or_else(|| panic!("unexpected url {url}"));
    uuid::Uuid::parse_str(token).expect("token is a uuid");
    token.to_string()
}

#[tokio::test]
async fn linux_gets_a_console_url_with_a_fresh_token_every_call() {
    let sim = sim().await;
    let first = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.body["remote_console"]["type"], "serial");
    assert_eq!(first.body["remote_console"]["protocol"], "serial");
    let mut trailing = Call::to(DEMO_LINUX_SERVER_2_ID);
    trailing.path.push('/');
    let second = call(&sim, &trailing).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_ne!(token_of(&first), token_of(&second));
    assert_ne!(request_id(&first), request_id(&second));
}

#[tokio::test]
async fn http2_requests_verify_with_the_authority_as_host() {
    let sim = sim().await;
    let mut c = Call::to(DEMO_LINUX_SERVER_ID);
    c.send_host_header = false;
    let a = send(&h2_client(), c.request(&sim)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(!sim
        .stats()
        .last_request_headers
        .contains(&"host".to_string()));
}

#[tokio::test]
async fn windows_unknown_and_foreign_project_errors() {
    let sim = sim().await;
    assert_nested(
        &call(&sim, &Call::to(DEMO_WINDOWS_SERVER_ID)).await,
        StatusCode::BAD_REQUEST,
        "BMS.0395",
        &format!("The server[{DEMO_WINDOWS_SERVER_ID}] is windows system and cannot support remote login."),
    );
    assert_nested(
        &call(&sim, &Call::to("00000000-0000-0000-0000-000000000000")).await,
        StatusCode::BAD_REQUEST,
        "BMS.0040",
        "The server does not exist.",
    );

    let tenant = "tenantId in token is not the same with in URL.";
    let mut foreign = Call::to(DEMO_LINUX_SERVER_ID);
    foreign.path = console_path(OTHER_PROJECT, DEMO_LINUX_SERVER_ID);
    foreign.project_header = OTHER_PROJECT.into();
    assert_nested(
        &call(&sim, &foreign).await,
        StatusCode::BAD_REQUEST,
        "Common.0018",
        tenant,
    );
    let mut mismatch = Call::to(DEMO_LINUX_SERVER_ID);
    mismatch.project_header = OTHER_PROJECT.into();
    assert_nested(
        &call(&sim, &mismatch).await,
        StatusCode::BAD_REQUEST,
        "Common.0018",
        tenant,
    );
}

#[tokio::test]
async fn bad_bodies_are_bms_errors() {
    let sim = sim().await;
    let mut not_json = Call::to(DEMO_LINUX_SERVER_ID);
    not_json.body = b"serial please".to_vec();
    let a = call(&sim, &not_json).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "BMS.0001");

    let mut vnc = Call::to(DEMO_LINUX_SERVER_ID);
    vnc.body = br#"{"remote_console": {"protocol": "vnc", "type": "novnc"}}"#.to_vec();
    assert_nested(
        &call(&sim, &vnc).await,
        StatusCode::BAD_REQUEST,
        "BMS.0018",
        "Request parameter is invalid.",
    );

    let mut huge = Call::to(DEMO_LINUX_SERVER_ID);
    huge.body = vec![b' '; 100 * 1024];
    assert_flat(
        &call(&sim, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "APIGW.0201",
    );
}

#[tokio::test]
async fn authentication_failures_are_401_apigw_0301() {
    let sim = sim().await;
    let verify_fail = "Incorrect IAM authentication information: verify aksk signature fail";

    let mut wrong_key = Call::to(DEMO_LINUX_SERVER_ID);
    wrong_key.secret_key = Secret::new("not-the-secret-key");
    let a = call(&sim, &wrong_key).await;
    assert_flat(&a, StatusCode::UNAUTHORIZED, "APIGW.0301");
    assert_eq!(a.body["error_msg"], verify_fail);

    // Signed correctly, then the body is swapped in transit.
    let mut req = Call::to(DEMO_LINUX_SERVER_ID).request(&sim);
    *req.body_mut() = Full::new(Bytes::from_static(
        br#"{"remote_console": {"protocol": "serial", "type": "serial"} }"#,
    ));
    let a = send(&client(), req).await;
    assert_flat(&a, StatusCode::UNAUTHORIZED, "APIGW.0301");

    // A signed header changed in transit.
    let mut c = Call::to(DEMO_LINUX_SERVER_ID);
    c.extra_headers.push(("X-Trace", "a"));
    let mut req = c.request(&sim);
    req.headers_mut()
        .insert("x-trace", http::HeaderValue::from_static("b"));
    assert_flat(
        &send(&client(), req).await,
        StatusCode::UNAUTHORIZED,
        "APIGW.0301",
    );

    let mut stale = Call::to(DEMO_LINUX_SERVER_ID);
    stale.date = SystemTime::now() - Duration::from_secs(20 * 60);
    let a = call(&sim, &stale).await;
    assert_flat(&a, StatusCode::UNAUTHORIZED, "APIGW.0301");
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("signature expired"));

    let mut unsigned = Call::to(DEMO_LINUX_SERVER_ID).request(&sim);
    unsigned.headers_mut().remove("authorization");
    let a = send(&client(), unsigned).await;
    assert_flat(&a, StatusCode::UNAUTHORIZED, "APIGW.0301");
    assert_eq!(
        a.body["error_msg"],
        "Incorrect IAM authentication information: x-auth-token not found"
    );

    let mut unknown_ak = Call::to(DEMO_LINUX_SERVER_ID).request(&sim);
    let value = unknown_ak.headers()["authorization"]
        .to_str()
        .unwrap()
        .replace(AK, "UNKNOWNAK");
    unknown_ak
        .headers_mut()
        .insert("authorization", value.parse().unwrap());
    let a = send(&client(), unknown_ak).await;
    assert_eq!(a.body["error_msg"], verify_fail);

    let stats = sim.stats();
    assert_eq!(stats.auth_failures, 6);
    assert_eq!(stats.remote_console_errors, 6);
    assert_eq!(stats.remote_console_ok, 0);
}

#[tokio::test]
async fn unknown_routes_are_404_apigw_0101_and_not_counted() {
    let sim = sim().await;
    let get = |path: String| {
        Request::get(format!("{}{path}", sim.endpoint()))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = send(&client(), get("/v1/nothing/here".into())).await;
    assert_flat(&a, StatusCode::NOT_FOUND, "APIGW.0101");
    let a = send(
        &client(),
        get(console_path(DEMO_PROJECT_ID, DEMO_LINUX_SERVER_ID)),
    )
    .await;
    assert_flat(&a, StatusCode::NOT_FOUND, "APIGW.0101");
    let only_connections = SimStats {
        connections_accepted: 2,
        ..SimStats::default()
    };
    assert_eq!(sim.stats(), only_connections);
}

#[tokio::test]
async fn latency_fault_delays_the_answer() {
    let sim = sim().await;
    sim.faults().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let a = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.stats().faults_injected, 1);
}

#[tokio::test]
async fn throttle_and_5xx_faults_answer_before_authentication() {
    let sim = sim().await;
    sim.faults().set_throttle_rate(1.0);
    let mut unsigned = Call::to(DEMO_LINUX_SERVER_ID).request(&sim);
    unsigned.headers_mut().remove("authorization");
    let a = send(&client(), unsigned).await;
    assert_flat(&a, StatusCode::TOO_MANY_REQUESTS, "APIGW.0308");
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .starts_with("The throttling threshold has been reached"));

    sim.faults().set_throttle_rate(0.0);
    sim.faults().set_error_5xx_rate(1.0);
    let a = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_flat(&a, StatusCode::SERVICE_UNAVAILABLE, "APIGW.0202");

    sim.faults().set_error_5xx_rate(0.0);
    let a = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(a.status, StatusCode::OK);

    let s = sim.stats();
    assert_eq!(
        (
            s.requests_total,
            s.remote_console_ok,
            s.remote_console_errors
        ),
        (3, 1, 2)
    );
    assert_eq!((s.faults_injected, s.auth_failures), (2, 0));
}

#[tokio::test]
async fn close_connection_fault_drops_without_an_answer() {
    let sim = sim().await;
    sim.faults().set_close_connection_rate(1.0);
    let err = client()
        .request(Call::to(DEMO_LINUX_SERVER_ID).request(&sim))
        .await
        .expect_err("no answer");
    assert!(
        !err.is_connect(),
        "the connection was made, then dropped: {err}"
    );

    sim.faults().set_close_connection_rate(0.0);
    let a = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(a.status, StatusCode::OK);
    let s = sim.stats();
    assert_eq!(
        (
            s.requests_total,
            s.remote_console_ok,
            s.remote_console_errors
        ),
        (2, 1, 1)
    );
    assert_eq!(s.faults_injected, 1);
}

#[tokio::test]
async fn stats_record_counts_and_forwarded_header_names() {
    let sim = sim().await;
    call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    call(&sim, &Call::to(DEMO_WINDOWS_SERVER_ID)).await;
    let mut c = Call::to(DEMO_LINUX_SERVER_ID);
    c.extra_headers.push(("X-Caller-Trace", "t"));
    call(&sim, &c).await;
    let s = sim.stats();
    assert_eq!(
        (
            s.requests_total,
            s.remote_console_ok,
            s.remote_console_errors
        ),
        (3, 2, 1)
    );
    for name in [
        "authorization",
        "content-type",
        "host",
        "x-caller-trace",
        "x-project-id",
        "x-sdk-date",
    ] {
        assert!(
            s.last_request_headers.contains(&name.to_string()),
            "{name} in {:?}",
            s.last_request_headers
        );
    }
    let mut sorted = s.last_request_headers.clone();
    sorted.sort();
    assert_eq!(sorted, s.last_request_headers);

    sim.reset();
    assert_eq!(sim.stats(), SimStats::default());
}

async fn control(sim: &SimHandle, method: Method, path: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", sim.endpoint()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let sim = sim().await;
    call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    let a = control(&sim, Method::GET, "/sim/stats", "").await;
    assert_eq!(a.status, StatusCode::OK);
    request_id(&a);
    let stats: SimStats = serde_json::from_value(a.body).unwrap();
    assert_eq!(stats, sim.stats());
    assert_eq!(stats.remote_console_ok, 1);

    let a = control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"latency_ms":0,"error_5xx_rate":0.0,"throttle_rate":1.0,"close_connection_rate":0.0}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["throttle_rate"], 1.0);
    assert_eq!(sim.faults().throttle_rate(), 1.0);
    let throttled = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);

    // Partial update leaves the other knobs alone; GET reports all of them.
    control(&sim, Method::POST, "/sim/faults", r#"{"latency_ms":5}"#).await;
    let a = control(&sim, Method::GET, "/sim/faults", "").await;
    assert_eq!(
        a.body,
        json!({"latency_ms":5,"error_5xx_rate":0.0,"throttle_rate":1.0,"close_connection_rate":0.0,"trickle_interval_ms":100,"next":[],
               "iam_token_lifetime_seconds":86400,"iam_down":false,"account_limit_per_minute":0})
    );

    for bad in [r#"{"throttle_rate":2}"#, r#"{"nonsense":1}"#, "not json"] {
        let a = control(&sim, Method::POST, "/sim/faults", bad).await;
        assert_flat(&a, StatusCode::BAD_REQUEST, "SIM.0001");
    }
    assert_eq!(sim.faults().throttle_rate(), 1.0);

    let a = control(&sim, Method::POST, "/sim/reset", "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(sim.stats(), SimStats::default());
    assert_eq!(sim.faults().settings(), Faults::new().settings());
    let ok = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_the_task() {
    let sim = sim().await;
    assert_eq!(
        call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await.status,
        StatusCode::OK
    );
    let endpoint = sim.endpoint();
    sim.shutdown();
    tokio::time::timeout(Duration::from_secs(10), sim.stopped())
        .await
        .expect("the server task ends");
    let req = Request::get(format!("{endpoint}/sim/stats"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(client().request(req).await.is_err());
}

#[tokio::test]
async fn duplicate_access_keys_are_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = SimCredential {
        access_key: AK.into(),
        secret_key: Secret::new(SK),
        projects: vec![],
        security_token: None,
    };
    let err = start(
        SimConfig::new(vec![c.clone(), c], Catalog::demo()),
        listener,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn endpoint_replaces_a_wildcard_address() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sim = start(SimConfig::new(vec![], Catalog::demo()), listener)
            .await
            .unwrap();
        assert_eq!(sim.endpoint(), format!("http://127.0.0.1:{port}"));
        sim.shutdown();
    });
}

#[tokio::test]
async fn scripted_faults_hit_exactly_the_next_calls() {
    let sim = sim().await;
    let a = control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"next":["503","overload","ok","throttle"]}"#,
    )
    .await;
    assert_eq!(a.body["next"], json!(["503", "overload", "ok", "throttle"]));
    let linux = Call::to(DEMO_LINUX_SERVER_ID);
    assert_flat(
        &call(&sim, &linux).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "APIGW.0202",
    );
    assert_nested(
        &call(&sim, &linux).await,
        StatusCode::BAD_REQUEST,
        "BMS.0212",
        "System is overloaded, please try again later.",
    );
    assert_eq!(call(&sim, &linux).await.status, StatusCode::OK);
    assert_flat(
        &call(&sim, &linux).await,
        StatusCode::TOO_MANY_REQUESTS,
        "APIGW.0308",
    );
    assert_eq!(
        call(&sim, &linux).await.status,
        StatusCode::OK,
        "script used up"
    );
    assert_eq!(sim.stats().faults_injected, 3);
}

#[tokio::test]
async fn iam_tokens_are_issued_checked_revoked_and_expire() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = SimConfig::new(Vec::new(), Catalog::demo());
    config.users = vec![SimIamUser {
        domain: "acme".into(),
        name: "svc".into(),
        password: Secret::new("pw"),
        projects: vec![DEMO_PROJECT_ID.into()],
    }];
    let sim = start(config, listener).await.unwrap();
    let body = format!(
        r#"{{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{"domain": {{"name": "acme"}}, "name": "svc", "password": "pw"}}}}}}, "scope": {{"project": {{"id": "{DEMO_PROJECT_ID}"}}}}}}}}"#
    );
    let issue = || async {
        let req = Request::post(format!("{}/v3/auth/tokens?nocatalog=true", sim.endpoint()))
            .header("content-type", "application/json;charset=utf8")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        client().request(req).await.unwrap()
    };
    let resp = issue().await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["token"]["expires_at"].as_str().unwrap().ends_with('Z'));

    let with_token = |token: String| {
        Request::post(format!(
            "{}{}",
            sim.endpoint(),
            console_path(DEMO_PROJECT_ID, DEMO_LINUX_SERVER_ID)
        ))
        .header("content-type", "application/json;charset=utf-8")
        .header("x-auth-token", token)
        .body(Full::new(Bytes::from_static(SDK_BODY)))
        .unwrap()
    };
    assert_eq!(
        send(&client(), with_token(token.clone())).await.status,
        StatusCode::OK
    );
    control(&sim, Method::POST, "/sim/iam/revoke", "").await;
    let revoked = send(&client(), with_token(token)).await;
    assert_flat(&revoked, StatusCode::UNAUTHORIZED, "APIGW.0301");
    assert!(revoked.body["error_msg"]
        .as_str()
        .unwrap()
        .ends_with("decrypt token fail"));

    // Lifetime down to seconds, and the outage switch, over /sim/faults.
    control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"iam_token_lifetime_seconds":1}"#,
    )
    .await;
    let resp = issue().await;
    let short = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    // The simulator is the cloud and keeps real time: wait for the 1 s token to run out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let a = send(&client(), with_token(short.clone())).await;
        if a.status != StatusCode::OK || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(expired.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("token expires, expires_at:"));
    control(&sim, Method::POST, "/sim/faults", r#"{"iam_down":true}"#).await;
    assert_eq!(issue().await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.stats().iam_token_requests, 3);
    assert_eq!(sim.stats().iam_tokens_issued, 2);
}

#[tokio::test]
async fn five_bad_signatures_lock_the_access_key() {
    let sim = sim().await;
    let mut bad = Call::to(DEMO_LINUX_SERVER_ID);
    bad.secret_key = Secret::new("wrong");
    for _ in 0..5 {
        assert_flat(
            &call(&sim, &bad).await,
            StatusCode::UNAUTHORIZED,
            "APIGW.0301",
        );
    }
    let locked = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_flat(&locked, StatusCode::UNAUTHORIZED, "APIGW.0301");
    assert!(locked.body["error_msg"]
        .as_str()
        .unwrap()
        .ends_with("AK access failed to reach the limit,forbidden"));
    let stats = sim.stats();
    assert_eq!((stats.bad_signatures, stats.ak_lockouts), (5, 1));
    assert_eq!(stats.max_consecutive_bad_signatures, 5);
}

#[tokio::test]
async fn per_account_limit_and_sts_tokens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let credential = SimCredential {
        access_key: AK.into(),
        secret_key: Secret::new(SK),
        projects: vec![DEMO_PROJECT_ID.into()],
        security_token: Some(Secret::new("sts-token")),
    };
    let sim = start(SimConfig::new(vec![credential], Catalog::demo()), listener)
        .await
        .unwrap();
    let plain = Call::to(DEMO_LINUX_SERVER_ID);
    assert_flat(
        &call(&sim, &plain).await,
        StatusCode::UNAUTHORIZED,
        "APIGW.0301",
    );
    let mut with_token = Call::to(DEMO_LINUX_SERVER_ID);
    with_token.extra_headers = vec![("X-Security-Token", "sts-token")];
    assert_eq!(call(&sim, &with_token).await.status, StatusCode::OK);

    control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"account_limit_per_minute":1}"#,
    )
    .await;
    assert_eq!(call(&sim, &with_token).await.status, StatusCode::OK);
    let throttled = call(&sim, &with_token).await;
    assert_flat(&throttled, StatusCode::TOO_MANY_REQUESTS, "APIGW.0308");
    assert!(throttled.body["error_msg"]
        .as_str()
        .unwrap()
        .ends_with("policy user over ratelimit,limit:1,time:1 minute"));
    assert_eq!(sim.stats().throttled, 1);
}

/// What a client that reads frame by frame sees of one answer: the head, the body bytes that
/// arrived, and whether the body ended in an error (a dropped connection).
struct RawAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    broken: bool,
}

async fn call_raw(sim: &SimHandle) -> RawAnswer {
    let resp = client()
        .request(Call::to(DEMO_LINUX_SERVER_ID).request(sim))
        .await
        .expect("a head");
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    RawAnswer {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
        broken,
    }
}

#[tokio::test]
async fn broken_answers_break_exactly_as_documented_and_count_as_errors() {
    let sim = sim().await;
    let a = control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"next":["reset_after_headers","truncated","huge_body","not_json","no_url","http_url"]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let reset = call_raw(&sim).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert!(reset.broken && reset.body.is_empty(), "head, then nothing");

    let truncated = call_raw(&sim).await;
    let announced: usize = truncated.headers["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(truncated.broken);
    assert_eq!(
        truncated.body.len(),
        announced / 2,
        "half of what was announced"
    );

    let huge = call_raw(&sim).await;
    assert!(!huge.broken);
    assert_eq!(huge.body.len(), HUGE_BODY_BYTES);
    assert_eq!(
        huge.headers["content-length"],
        HUGE_BODY_BYTES.to_string().as_str()
    );
    let value: Value = serde_json::from_slice(&huge.body).unwrap();
    assert!(value["remote_console"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let html = call_raw(&sim).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(serde_json::from_slice::<Value>(&html.body).is_err());

    let no_url = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    assert_eq!(no_url.status, StatusCode::OK);
    assert_eq!(
        no_url.body,
        json!({"remote_console": {"type": "serial", "protocol": "serial"}})
    );
    let http = call(&sim, &Call::to(DEMO_LINUX_SERVER_ID)).await;
    let url = http.body["remote_console"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://console.bms.sim.invalid/serial/?token="),
        "{url}"
    );

    let s = sim.stats();
    assert_eq!((s.remote_console_ok, s.remote_console_errors), (0, 6));
    assert_eq!(s.faults_injected, 6);
    // Each call above had a client of its own, and so did the control call.
    assert_eq!(s.connections_accepted, 7);
    let tokens = sim.issued_console_tokens();
    assert_eq!(
        tokens.len(),
        3,
        "truncated, huge and http_url each minted a URL"
    );
    assert!(url.ends_with(&tokens[2]));

    // Script used up; one client's calls share one connection, counted once.
    let shared = client();
    for _ in 0..2 {
        let a = send(&shared, Call::to(DEMO_LINUX_SERVER_ID).request(&sim)).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let s = sim.stats();
    assert_eq!((s.remote_console_ok, s.connections_accepted), (2, 8));
}

#[tokio::test]
async fn a_trickle_sends_the_head_at_once_and_the_body_one_byte_per_interval() {
    let sim = sim().await;
    control(
        &sim,
        Method::POST,
        "/sim/faults",
        r#"{"trickle_interval_ms":5,"next":["trickle"]}"#,
    )
    .await;
    let started = Instant::now();
    let resp = client()
        .request(Call::to(DEMO_LINUX_SERVER_ID).request(&sim))
        .await
        .unwrap();
    let head_after = started.elapsed();
    let length: u32 = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let value: Value = serde_json::from_slice(&body).expect("a whole console answer");
    assert!(value["remote_console"]["url"].is_string());
    assert!(
        started.elapsed() >= Duration::from_millis(5) * length,
        "{length} bytes at 5 ms each"
    );
    assert!(
        head_after < Duration::from_millis(5) * length / 2,
        "the head came first"
    );
    assert_eq!(sim.faults().trickle_interval(), Duration::from_millis(5));
    assert_eq!(sim.stats().remote_console_ok, 0);
}
