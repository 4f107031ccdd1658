//! Secret hygiene through the real binary: one scenario that walks every path a secret could
//! leak through — a success and a cache hit, every error this gateway answers on its own
//! (401 of each kind, 403, 404, 405, 400, 413, 415, 429), the cloud's 4xx and 5xx, an upstream
//! timeout, broken upstream answers, rejected service credentials, the upstream quota, the
//! circuit breaker, a config reload (`SIGHUP`, accepted and rejected) and IAM going down — and
//! then looks for each secret in everything the gateway let out: its stdout and stderr (at
//! `debug` level), the audit file, `/metrics`, and every response's headers and body. The only
//! place a secret may appear is the console URL in a success body, where it is the answer.
//!
//! The secrets are distinctive values: the service AK/SK and the IAM password (from secret
//! files), the audit HMAC key, every caller JWT sent (good and bad, and each one's signature),
//! and what the simulator handed out: its IAM tokens and console-URL tokens, read back from it.
//! Each is also looked for base64-, URL- and hex-encoded.

mod common;

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bms_console_gateway::secret::Secret;
use bms_console_gateway::sim::{self, Scripted};
use common::binary::{serve_command, token_now, write_config_file, GatewayProcess};
use common::*;
use http::Method;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const ACCESS_KEY: &str = "HPUAHYGIENEAK7Q2W9E4R";
/// `+`, `/` and `=` make its URL-encoded form differ from it.
const SECRET_KEY: &str = "hygSK+Qz7/Wv3=Lp9xRt2Mn8Kd4Fs6";
const IAM_PASSWORD: &str = "hyg-iam-P@ss:w0rd/Zx81!";
const AUDIT_KEY: &str = "hyg-audit-hmac-key-5b1f9e0c2d7a4e8f3c6b";
const IAM_USER: &str = "svc-hygiene";
const IAM_DOMAIN: &str = "acme-hygiene";
/// Served by the IAM-token account.
const PROJECT_IAM: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// Served by an AK/SK account whose upstream quota holds one call.
const PROJECT_QUOTA: &str = "3d4e5f60718293a4b5c6d7e8f90a1b2c";

/// A simulator that owns the three projects, each with the Linux server, and knows the IAM user.
async fn simulator() -> sim::SimHandle {
    let mut catalog = sim::Catalog::demo();
    for project in [PROJECT_IAM, PROJECT_QUOTA] {
        catalog.add_project(project).unwrap();
        let server = sim::SimServer {
            id: LINUX.into(),
            name: "web-01".into(),
            os: sim::ServerOs::Linux,
        };
        catalog.add_server(project, server).unwrap();
    }
    let credential = sim_credential(ACCESS_KEY, SECRET_KEY, &[PROJECT, PROJECT_QUOTA]);
    let mut config = sim::SimConfig::new(vec![credential], catalog);
    config.users = vec![sim::SimIamUser {
        domain: IAM_DOMAIN.into(),
        name: IAM_USER.into(),
        password: Secret::new(IAM_PASSWORD),
        projects: vec![PROJECT_IAM.into()],
    }];
    start_sim_with(config).await
}

/// The gateway's config: three accounts reading their secrets from files in `dir`, the audit
/// to a file, logs at `debug`; `denied` are refused by policy (the reload changes that).
fn gateway_config(sim: &str, dir: &Path, denied: &[&str]) -> TestConfig {
    let d = dir.display();
    let accounts = format!(
        r#"
[[accounts]]
name = "aksk"
endpoint = "{sim}"
projects = ["{PROJECT}"]
access_key = "file:{d}/ak"
secret_key = "file:{d}/sk"

[[accounts]]
name = "quota"
endpoint = "{sim}"
projects = ["{PROJECT_QUOTA}"]
access_key = "file:{d}/ak"
secret_key = "file:{d}/sk"
quota = {{ requests_per_second = 0.001, burst = 1, max_queue = 1, max_wait_ms = 1 }}

[[accounts]]
name = "iam"
endpoint = "{sim}"
region = "cn-north-4"
projects = ["{PROJECT_IAM}"]
[accounts.iam]
endpoint = "{sim}"
user = "file:{d}/iam-user"
domain = "file:{d}/iam-domain"
password = "file:{d}/iam-password"
project_id = "{PROJECT_IAM}"
"#
    );
    let policy = format!(
        r#"
[[policy.rules]]
name = "denied"
effect = "deny"
subjects = {denied:?}
projects = ["*"]

[[policy.rules]]
name = "ratty-is-slow"
subjects = ["ratty"]
projects = ["*"]
rate_limit_tier = "tiny"

[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["{PROJECT}", "{PROJECT_IAM}", "{PROJECT_QUOTA}"]
"#
    );
    TestConfig {
        upstream_timeout_ms: 500,
        extra_rate_limit: "[rate_limit.tiers.tiny]\nrequests_per_second = 0.001\nburst = 1\n"
            .into(),
        extra_upstream: "[upstream.retry]\nbase_backoff_ms = 1\nmax_backoff_ms = 5\n\
             [upstream.breaker]\nconsecutive_failures = 6\nfailure_ratio = 1.0\n"
            .into(),
        accounts: Some(accounts),
        policy,
        extra_config: format!(
            "[logging]\nlevel = \"debug\"\n\n[audit]\nsink = \"file\"\nfile = \"{d}/audit.log\"\ntoken_hash_key = \"file:{d}/audit-key\"\n"
        ),
        ..TestConfig::default()
    }
}

/// The running gateway, and everything it answered.
struct Scenario {
    gateway: GatewayProcess,
    replies: Vec<(String, Reply)>,
    /// Every bearer token sent, valid or not.
    jwts: Vec<String>,
}

impl Scenario {
    /// Sends one request and keeps its answer for the final scan.
    async fn request(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> &Reply {
        let url = format!("{}{path}", self.gateway.public);
        let reply = send(&client(), method, &url, headers, body.to_string()).await;
        self.replies.push((what.to_string(), reply));
        &self.replies.last().unwrap().1
    }

    /// The console request for `server` of `project` with `token`, past the cache.
    async fn console_with(
        &mut self,
        what: &str,
        token: &str,
        project: &str,
        server: &str,
    ) -> &Reply {
        self.jwts.push(token.to_string());
        let auth = format!("Bearer {token}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
            ("cache-control", "no-cache"),
        ];
        self.request(
            what,
            Method::POST,
            &console_path(project, server),
            &headers,
            BODY,
        )
        .await
    }

    /// The console request as `sub`, with a fresh valid token.
    async fn console(&mut self, what: &str, sub: &str, project: &str, server: &str) -> &Reply {
        self.console_with(what, &token_now(sub), project, server)
            .await
    }

    /// The console request as `sub`, which must succeed.
    async fn console_ok(&mut self, what: &str, sub: &str, project: &str, server: &str) {
        let reply = self.console(what, sub, project, server).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    }

    /// A request with a fresh valid token for alice and the given content type (no
    /// `Cache-Control`, so a cached URL may answer).
    async fn with_token(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> &Reply {
        let token = token_now("alice");
        self.jwts.push(token.clone());
        let auth = format!("Bearer {token}");
        let headers = [("content-type", content_type), ("authorization", &auth)];
        self.request(what, method, path, &headers, body).await
    }

    async fn admin(&mut self, path: &str) -> &Reply {
        let url = format!("{}{path}", self.gateway.admin);
        let reply = send(&client(), Method::GET, &url, &[], String::new()).await;
        self.replies.push((format!("admin {path}"), reply));
        &self.replies.last().unwrap().1
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The forms a leaked secret could take: as is, base64 (standard and URL-safe), URL-encoded
/// and hex.
fn encodings(secret: &str) -> Vec<String> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let url_encoded =
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut forms = vec![
        secret.to_string(),
        STANDARD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        url_encoded,
        hex,
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// One place a secret must not be: its name and its text.
struct Place {
    name: String,
    text: String,
}

/// A reply as text (status, headers, body), with the console URL of a success body taken out:
/// that URL is the answer, and the only place its token may be.
fn reply_text(what: &str, reply: &Reply, console_tokens: &[String]) -> Place {
    let mut text = format!("{}\n", reply.status);
    for (name, value) in &reply.headers {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut body = reply.text();
    if reply.status == 200 {
        if let Some(url) = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["remote_console"]["url"].as_str().map(str::to_string))
        {
            let token = url.rsplit("token=").next().unwrap();
            assert!(
                console_tokens.iter().any(|t| t == token),
                "{what}: the URL's token came from the simulator"
            );
            assert!(body.contains(token), "the scan would see the token");
            body = body.replace(&url, "<the console URL>");
        }
    }
    text.push_str(&body);
    Place {
        name: format!("the answer to {what}"),
        text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_audit_metrics_or_any_answer_but_the_console_url() {
    let sim = simulator().await;
    let dir = temp_dir("hygiene");
    for (file, value) in [
        ("ak", ACCESS_KEY),
        ("sk", SECRET_KEY),
        ("iam-user", IAM_USER),
        ("iam-domain", IAM_DOMAIN),
        ("iam-password", IAM_PASSWORD),
        ("audit-key", AUDIT_KEY),
    ] {
        std::fs::write(dir.join(file), value).unwrap();
    }
    let config_path = write_config_file(
        "hygiene",
        &gateway_config(&sim.endpoint(), &dir, &["mallory", "newcomer"]),
    );
    let mut command = serve_command(&config_path);
    command.env_remove("RUST_LOG");
    let mut s = Scenario {
        gateway: GatewayProcess::serve_command(command),
        replies: Vec::new(),
        jwts: Vec::new(),
    };

    // Successes: AK/SK, a cache hit, an IAM token, and the quota account's one call.
    s.console_ok("issued", "alice", PROJECT, LINUX).await;
    let path = console_path(PROJECT, LINUX);
    let json_type = "application/json";
    let hit = s
        .with_token("a cache hit", Method::POST, &path, json_type, BODY)
        .await;
    assert_eq!(hit.header("x-cache"), Some("hit"));
    s.console_ok("issued with an IAM token", "alice", PROJECT_IAM, LINUX)
        .await;
    s.console_ok("quota", "alice", PROJECT_QUOTA, LINUX).await;
    s.console("quota used up", "alice", PROJECT_QUOTA, LINUX)
        .await
        .assert_error(503, "BMSGW.0314");

    // 401 of every kind, each token a secret of its own.
    s.request(
        "no token",
        Method::POST,
        &path,
        &[("content-type", "application/json")],
        BODY,
    )
    .await
    .assert_error(401, "APIGW.0301");
    let t = now();
    let expired =
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": t - 1000, "exp": t - 500});
    let wrong_audience =
        json!({"iss": ISSUER, "aud": "someone-else", "sub": "alice", "iat": t, "exp": t + 300});
    let unknown_kid = {
        let key = std::fs::read(data_dir().join("keys/es256-private.pem")).unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("not-a-known-kid".into());
        jsonwebtoken::encode(
            &header,
            &claims("alice", t),
            &jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap(),
        )
        .unwrap()
    };
    let bad_tokens = [
        ("garbage", "hyg-garbage-bearer-0123456789abcdef".to_string()),
        ("expired", mint(Algorithm::ES256, &expired)),
        ("forged", mint_with_attacker_key(&claims("alice", t), "es")),
        ("wrong audience", mint(Algorithm::ES256, &wrong_audience)),
        ("unknown kid", unknown_kid),
        (
            "alg none",
            raw_token(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims("alice", t),
                b"",
            ),
        ),
        (
            "too large",
            mint(
                Algorithm::ES256,
                &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": t, "exp": t + 300,
                        "padding": "p".repeat(9000)}),
            ),
        ),
    ];
    for (what, token) in &bad_tokens {
        s.console_with(what, token, PROJECT, LINUX)
            .await
            .assert_error(401, "APIGW.0301");
    }

    // The gateway's own refusals.
    s.console("denied by policy", "mallory", PROJECT, LINUX)
        .await
        .assert_error(403, "BMSGW.0201");
    s.with_token(
        "no such route",
        Method::POST,
        "/v1/nothing",
        json_type,
        BODY,
    )
    .await
    .assert_error(404, "APIGW.0101");
    s.with_token("wrong method", Method::GET, &path, json_type, "")
        .await
        .assert_error(405, "BMSGW.0107");
    let bad_project = console_path("not-a-project", LINUX);
    s.with_token(
        "bad project id",
        Method::POST,
        &bad_project,
        json_type,
        BODY,
    )
    .await
    .assert_error(400, "BMSGW.0101");
    let bad_field = r#"{"remote_console":{"protocol":"vnc","type":"serial"}}"#;
    s.with_token("bad field", Method::POST, &path, json_type, bad_field)
        .await
        .assert_error(400, "BMSGW.0104");
    s.with_token("not JSON", Method::POST, &path, json_type, "{nope")
        .await
        .assert_error(400, "BMSGW.0103");
    let too_big = format!("{{\"x\":\"{}\"}}", "y".repeat(5000));
    s.with_token("body too large", Method::POST, &path, json_type, &too_big)
        .await
        .assert_error(413, "BMSGW.0105");
    s.with_token(
        "wrong content type",
        Method::POST,
        &path,
        "text/plain",
        BODY,
    )
    .await
    .assert_error(415, "BMSGW.0106");
    s.console_ok("rate limit", "ratty", PROJECT, LINUX).await;
    s.console("rate limited", "ratty", PROJECT, LINUX)
        .await
        .assert_error(429, "APIGW.0308");

    // The cloud refuses, fails, stalls, answers garbage, or rejects the service credentials.
    s.console("Windows", "alice", PROJECT, WINDOWS)
        .await
        .assert_error(400, "BMS.0395");
    s.console("no such server", "alice", PROJECT, UNKNOWN)
        .await
        .assert_error(400, "BMS.0040");
    sim.faults().script(&[Scripted::Unavailable; 3]);
    s.console("cloud 503", "alice", PROJECT, LINUX)
        .await
        .assert_error(503, "APIGW.0202");
    sim.faults()
        .set_latency(std::time::Duration::from_millis(1500));
    s.console("cloud too slow", "alice", PROJECT, LINUX)
        .await
        .assert_error(504, "BMSGW.0302");
    sim.faults().set_latency(std::time::Duration::ZERO);
    s.console_ok("recovered", "alice", PROJECT, LINUX).await;
    for fault in [
        Scripted::HttpUrl,
        Scripted::NotJson,
        Scripted::Truncated,
        Scripted::HugeBody,
    ] {
        sim.faults().script(&[fault]);
        s.console(&format!("{fault:?}"), "alice", PROJECT, LINUX)
            .await
            .assert_error(502, "BMSGW.0303");
    }
    sim.set_secret_key(ACCESS_KEY, "the-cloud-rotated-this-key");
    s.console("credentials rejected", "alice", PROJECT, LINUX)
        .await
        .assert_error(502, "BMSGW.0304");
    sim.set_secret_key(ACCESS_KEY, SECRET_KEY);
    s.console_ok("recovered", "alice", PROJECT, LINUX).await;

    // Config reloads: one accepted (newcomer is allowed from then on), one rejected.
    s.console("before the reload", "newcomer", PROJECT, LINUX)
        .await
        .assert_error(403, "BMSGW.0201");
    write_config_file(
        "hygiene",
        &gateway_config(&sim.endpoint(), &dir, &["mallory"]),
    );
    s.gateway.signal("HUP");
    s.gateway.wait_for("config reloaded");
    s.console_ok("after the reload", "newcomer", PROJECT, LINUX)
        .await;
    std::fs::write(&config_path, "[server]\nlisten = 12\n").unwrap();
    s.gateway.signal("HUP");
    s.gateway
        .wait_for("config reload rejected; the previous config keeps running");
    s.console_ok("IAM after the reload", "alice", PROJECT_IAM, LINUX)
        .await;

    // IAM goes down and every token it issued is revoked.
    sim.set_iam_down(true);
    sim.revoke_tokens();
    s.console("IAM down", "alice", PROJECT_IAM, LINUX)
        .await
        .assert_error(503, "BMSGW.0310");

    // A 5xx storm opens the breaker.
    sim.faults().set_error_5xx_rate(1.0);
    let mut breaker_open = false;
    for _ in 0..4 {
        let reply = s.console("5xx storm", "alice", PROJECT, LINUX).await;
        if reply.json()["error_code"] == "BMSGW.0313" {
            breaker_open = true;
            break;
        }
        reply.assert_error(503, "APIGW.0202");
    }
    assert!(breaker_open, "the breaker opened");

    let scrape = s.admin("/metrics").await;
    assert!(scrape.text().contains("bmsgw_upstream_errors_total"));
    for path in ["/healthz", "/readyz"] {
        s.admin(path).await;
    }

    let (status, logs) = s.gateway.process.terminate();
    assert!(status.success(), "{status:?}");
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();

    // The scan would see what it looks for: the logs are the gateway's, at debug level, and
    // the audit file holds the records with their token hashes.
    assert!(logs.contains("\"level\":\"DEBUG\""), "debug logging is on");
    assert!(logs.contains("config reloaded"));
    assert!(audit.lines().count() >= 20, "{audit}");
    assert!(audit.contains("\"url_token_hmac\":\""));

    let iam_tokens = sim.issued_iam_tokens();
    let console_tokens = sim.issued_console_tokens();
    assert!(iam_tokens.len() >= 2, "a token before and after the reload");
    assert!(console_tokens.len() >= 8);
    let mut secrets: Vec<(String, String)> = vec![
        ("the access key".into(), ACCESS_KEY.into()),
        ("the secret key".into(), SECRET_KEY.into()),
        ("the IAM password".into(), IAM_PASSWORD.into()),
        ("the audit HMAC key".into(), AUDIT_KEY.into()),
    ];
    for token in &iam_tokens {
        secrets.push(("an IAM token".into(), token.clone()));
    }
    for token in &console_tokens {
        secrets.push(("a console-URL token".into(), token.clone()));
    }
    for jwt in &s.jwts {
        secrets.push(("a caller's JWT".into(), jwt.clone()));
        if let Some(signature) = jwt.split('.').nth(2).filter(|sig| sig.len() >= 16) {
            secrets.push(("a caller's JWT signature".into(), signature.to_string()));
        }
    }

    let mut places = vec![
        Place {
            name: "stdout and stderr".into(),
            text: logs,
        },
        Place {
            name: "the audit file".into(),
            text: audit,
        },
    ];
    places.extend(
        s.replies
            .iter()
            .map(|(what, reply)| reply_text(what, reply, &console_tokens)),
    );
    assert!(places.len() > 40, "{} places", places.len());
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for form in encodings(secret) {
            for place in places.iter().filter(|p| p.text.contains(&form)) {
                leaks.push(format!("{what} ({form:.12}...) in {}", place.name));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
