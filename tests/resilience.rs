//! The upstream resilience layers through a real gateway and simulator: retries, throttling
//! pass-through and backoff, the upstream quota, lockout protection, the circuit breaker, the
//! negative cache, secret rotation, temporary keys and many accounts.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bms_console_gateway::sim::{self, Scripted};
use common::*;

const ACCOUNT: &str = r#"account="test-account""#;

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

/// One AK/SK account whose key files live in `dir`.
fn file_account(name: &str, endpoint: &str, project: &str, dir: &Path) -> String {
    format!(
        r#"
[[accounts]]
name = "{name}"
endpoint = "{endpoint}"
projects = ["{project}"]
access_key = "file:{dir}/ak"
secret_key = "file:{dir}/sk"
"#,
        dir = dir.display()
    )
}

fn key_dir(name: &str, ak: &str, sk: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("ak"), ak).unwrap();
    std::fs::write(dir.join("sk"), sk).unwrap();
    dir
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_attempt_cap() {
    let h = Harness::start(TestConfig {
        extra_upstream:
            "[upstream.retry]\nmax_attempts = 4\nbase_backoff_ms = 5\nmax_backoff_ms = 20\n".into(),
        cache_ttl_seconds: 0,
        ..TestConfig::default()
    })
    .await;
    // A 503, a reset before any answer, and BMS overload (a 400!) are all transient.
    h.sim()
        .faults()
        .script(&[Scripted::Unavailable, Scripted::Reset, Scripted::Overload]);
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(h.sim().stats().requests_total, 4);
    assert_eq!(
        h.metric(&series("bmsgw_upstream_retries_total", ACCOUNT))
            .await,
        3.0
    );

    // Past the cap the last failure is passed on: 4 attempts, no more.
    h.sim().faults().script(&[Scripted::BadGateway; 6]);
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error_code"], "APIGW.0202");
    assert_eq!(h.sim().stats().requests_total, 8);
}

#[tokio::test]
async fn nothing_is_retried_after_a_4xx() {
    let h = Harness::default().await;
    h.console("alice", UNKNOWN)
        .await
        .assert_error(400, "BMS.0040");
    h.console("alice", WINDOWS)
        .await
        .assert_error(400, "BMS.0395");
    assert_eq!(h.sim().stats().requests_total, 2);
    assert_eq!(
        h.metric(&series("bmsgw_upstream_retries_total", ACCOUNT))
            .await,
        0.0
    );
}

#[tokio::test]
async fn the_overall_deadline_bounds_all_attempts() {
    let h = Harness::start(TestConfig {
        upstream_timeout_ms: 300,
        extra_upstream:
            "[upstream.retry]\nmax_attempts = 10\nbase_backoff_ms = 1000\nmax_backoff_ms = 1000\n"
                .into(),
        ..TestConfig::default()
    })
    .await;
    h.sim().faults().set_error_5xx_rate(1.0);
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 503);
    // A backoff that would overrun the deadline is not slept: far fewer than 10 attempts.
    assert!(h.sim().stats().requests_total < 10);
}

#[tokio::test]
async fn a_cloud_429_is_passed_on_with_retry_after_and_the_account_backs_off() {
    let h = Harness::start(TestConfig {
        extra_upstream: "throttle_backoff_seconds = 7\n".into(),
        cache_ttl_seconds: 0,
        ..TestConfig::default()
    })
    .await;
    h.sim().set_account_limit_per_minute(1);
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    let throttled = h.console("alice", LINUX).await;
    throttled.assert_error(429, "APIGW.0308");
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert_eq!(h.sim().stats().throttled, 1);
    assert_eq!(h.sim().stats().requests_total, 2, "not retried");
    assert_eq!(
        h.metric(&series(
            "bmsgw_upstream_errors_total",
            &format!("{ACCOUNT},kind=\"throttled\"")
        ))
        .await,
        1.0
    );

    // Backing off: answered by the gateway, the cloud is not called.
    h.clock.advance(Duration::from_secs(3));
    let backed_off = h.console("alice", LINUX).await;
    backed_off.assert_error(429, "APIGW.0308");
    assert_eq!(backed_off.header("retry-after"), Some("4"));
    assert_eq!(h.sim().stats().requests_total, 2);
    assert_eq!(
        h.metric(r#"bmsgw_upstream_short_circuits_total{account="test-account",reason="throttle_backoff"}"#)
            .await,
        1.0
    );

    h.sim().set_account_limit_per_minute(0);
    h.clock.advance(Duration::from_secs(4));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.sim().stats().requests_total, 3);
}

#[tokio::test]
async fn the_upstream_quota_queues_briefly_then_refuses_with_retry_after() {
    let quota = |wait_ms: u64| {
        format!("[upstream.quota]\nrequests_per_second = 1\nburst = 1\nmax_queue = 1\nmax_wait_ms = {wait_ms}\n")
    };
    let h = Arc::new(
        Harness::start(TestConfig {
            extra_upstream: quota(20_000),
            cache_ttl_seconds: 0,
            ..TestConfig::default()
        })
        .await,
    );
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    // Two more at once: one waits in the queue (of 1), the other is refused at once.
    // (Different servers: requests for one server would share a single upstream call.)
    let spawn = |h: Arc<Harness>, server: &'static str| {
        tokio::spawn(async move { h.console("alice", server).await })
    };
    let (b, c) = (
        spawn(h.clone(), LINUX),
        spawn(h.clone(), sim::DEMO_LINUX_SERVER_2_ID),
    );
    wait_until("one request refused", || async {
        b.is_finished() || c.is_finished()
    })
    .await;
    let (refused, waiting) = if b.is_finished() { (b, c) } else { (c, b) };
    let refused = refused.await.unwrap();
    refused.assert_error(503, "BMSGW.0314");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        h.sim().stats().requests_total,
        1,
        "refused requests are not sent"
    );
    // A token refills after a second (on the injected clock): the waiting request is sent.
    h.clock.advance(Duration::from_secs(1));
    let sent = waiting.await.unwrap();
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert_eq!(h.sim().stats().requests_total, 2);
    assert_eq!(
        h.metric(r#"bmsgw_upstream_quota_waits_total{account="test-account",result="sent"}"#)
            .await,
        1.0
    );

    // With a short wait and no refill, a queued request gives up after the wait.
    let h = Harness::start(TestConfig {
        extra_upstream: quota(50),
        cache_ttl_seconds: 0,
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    h.console("alice", LINUX)
        .await
        .assert_error(503, "BMSGW.0314");
    assert_eq!(h.sim().stats().requests_total, 1);
}

#[tokio::test]
async fn lockout_protection_never_lets_the_cloud_see_a_fifth_bad_signature() {
    let simulator = start_simulator(TEST_AK, TEST_SK).await;
    let dir = key_dir("lockout", TEST_AK, "a-wrong-secret-key");
    let h = Arc::new(
        Harness::start(TestConfig {
            accounts: Some(file_account(
                "test-account",
                &simulator.endpoint(),
                PROJECT,
                &dir,
            )),
            extra_upstream: "secret_reload_interval_ms = 20\n".into(),
            ..TestConfig::default()
        })
        .await,
    );
    // A burst of 20 concurrent requests (distinct servers, so nothing coalesces) ...
    let token = h.token("alice");
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let (h, token) = (h.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let server = format!("00000000-0000-4000-8000-{i:012}");
            h.post(
                &console_path(PROJECT, &server),
                &[("authorization", &format!("Bearer {token}"))],
                BODY,
            )
            .await
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        codes.push(reply.json()["error_code"].as_str().unwrap().to_string());
        if reply.status == 503 {
            assert!(reply.header("retry-after").is_some());
        }
    }
    // ... costs exactly 3 bad signatures; the rest fail fast.
    assert_eq!(
        codes.iter().filter(|c| *c == "BMSGW.0304").count(),
        3,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "BMSGW.0312").count(),
        17,
        "{codes:?}"
    );
    let stats = simulator.stats();
    assert_eq!(stats.bad_signatures, 3);
    assert_eq!(stats.ak_lockouts, 0);
    assert_eq!(
        h.metric(&series("bmsgw_upstream_credentials_paused", ACCOUNT))
            .await,
        1.0
    );

    // After the cool-down, one probe; it fails, and the account is paused again at once.
    h.clock.advance(Duration::from_secs(600));
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0304");
    h.console("alice", LINUX)
        .await
        .assert_error(503, "BMSGW.0312");
    assert_eq!(
        h.metric(&series("bmsgw_upstream_credentials_paused", ACCOUNT))
            .await,
        1.0
    );
    assert_eq!(simulator.stats().bad_signatures, 4);
    assert!(simulator.stats().max_consecutive_bad_signatures < 5);

    // The operator fixes the secret file: the pause ends and calls work.
    std::fs::write(dir.join("sk"), TEST_SK).unwrap();
    wait_until("the secret reload", || async {
        h.metric(r#"bmsgw_secret_reloads_total{account="test-account",result="success"}"#)
            .await
            == 1.0
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().ak_lockouts, 0);
    assert_eq!(
        h.metric(&series("bmsgw_upstream_credentials_paused", ACCOUNT))
            .await,
        0.0
    );
}

#[tokio::test]
async fn the_breaker_opens_answers_503_fast_and_recovers_through_a_probe() {
    let h = Harness::start(TestConfig {
        extra_upstream:
            "[upstream.retry]\nmax_attempts = 1\n[upstream.breaker]\nconsecutive_failures = 3\nopen_seconds = 10\n"
                .into(),
        ..TestConfig::default()
    })
    .await;
    let state = series(
        "bmsgw_upstream_breaker_state",
        r#"account="test-account",endpoint="0""#,
    );
    h.sim().faults().set_error_5xx_rate(1.0);
    for _ in 0..3 {
        h.console("alice", LINUX)
            .await
            .assert_error(503, "APIGW.0202");
    }
    assert_eq!(h.metric(&state).await, 1.0, "open");
    assert_eq!(
        h.metric(&series(
            "bmsgw_upstream_requests_total",
            &format!("{ACCOUNT},status_class=\"5xx\"")
        ))
        .await,
        3.0
    );
    let fast = h.console("alice", LINUX).await;
    fast.assert_error(503, "BMSGW.0313");
    assert_eq!(fast.header("retry-after"), Some("10"));
    assert_eq!(
        h.sim().stats().requests_total,
        3,
        "open: the cloud is not called"
    );

    // Half-open after the period: a failed probe opens it again.
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(h.console("alice", LINUX).await.status, 503);
    assert_eq!(h.sim().stats().requests_total, 4);
    h.console("alice", LINUX)
        .await
        .assert_error(503, "BMSGW.0313");

    // The endpoint recovers: the next probe succeeds, from the cloud, and closes the breaker.
    h.sim().faults().set_error_5xx_rate(0.0);
    h.clock.advance(Duration::from_secs(10));
    h.assert_fresh_url_from(h.sim(), LINUX).await;
    assert_eq!(h.metric(&state).await, 0.0, "closed");
    assert_eq!(h.console("alice", WINDOWS).await.status, 400);
}

#[tokio::test]
async fn a_failing_primary_endpoint_hands_over_to_the_fallback() {
    let primary = start_simulator(TEST_AK, TEST_SK).await;
    let fallback = start_simulator(TEST_AK, TEST_SK).await;
    let dir = key_dir("fallback", TEST_AK, TEST_SK);
    let account = format!(
        "{}fallback_endpoints = [\"{}\"]\n",
        file_account("test-account", &primary.endpoint(), PROJECT, &dir),
        fallback.endpoint()
    );
    let h = Harness::start(TestConfig {
        accounts: Some(account),
        cache_ttl_seconds: 0,
        extra_upstream: "[upstream.retry]\nbase_backoff_ms = 1\nmax_backoff_ms = 5\n[upstream.breaker]\nconsecutive_failures = 2\nopen_seconds = 10\n".into(),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(primary.stats().requests_total, 1, "the primary first");

    // The primary fails: each request's retry goes to the fallback (signed for its host).
    primary.faults().set_error_5xx_rate(1.0);
    for _ in 0..2 {
        let reply = h.console("alice", LINUX).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(primary.stats().requests_total, 3);
    assert_eq!(fallback.stats().remote_console_ok, 2);
    // Two failures in a row opened the primary's breaker: it is skipped without a call.
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(primary.stats().requests_total, 3);
    assert_eq!(fallback.stats().remote_console_ok, 3);
    let scrape = h.metrics().await;
    for (endpoint, state) in [("0", 1.0), ("1", 0.0)] {
        assert_eq!(
            metric(
                &scrape,
                &format!(
                    r#"bmsgw_upstream_breaker_state{{account="test-account",endpoint="{endpoint}"}}"#
                )
            ),
            state
        );
    }

    // Both failing: the fallback's breaker opens too, and the answer is a fast 503.
    fallback.faults().set_error_5xx_rate(1.0);
    for _ in 0..2 {
        assert_eq!(h.console("alice", LINUX).await.status, 503);
    }
    h.console("alice", LINUX)
        .await
        .assert_error(503, "BMSGW.0313");

    // The primary recovers: after the open period its probe succeeds and it serves again.
    primary.faults().set_error_5xx_rate(0.0);
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(primary.stats().remote_console_ok, 2);
}

#[tokio::test]
async fn windows_and_unknown_servers_are_remembered_for_their_own_time() {
    let h = Harness::default().await;
    h.console("alice", WINDOWS)
        .await
        .assert_error(400, "BMS.0395");
    h.console("alice", UNKNOWN)
        .await
        .assert_error(400, "BMS.0040");
    let win = h.console("bob", WINDOWS).await;
    let msg = win.assert_error(400, "BMS.0395");
    assert!(msg.contains("windows"), "{msg}");
    assert_eq!(win.header("x-cache"), Some("hit"));
    let gone = h.console("bob", UNKNOWN).await;
    gone.assert_error(400, "BMS.0040");
    assert_eq!(gone.header("x-cache"), Some("hit"));
    assert_eq!(h.sim().stats().requests_total, 2);
    assert_eq!(
        h.metric(r#"bmsgw_negative_cache_hits_total{code="BMS.0395"}"#)
            .await,
        1.0
    );

    // `Cache-Control: no-cache` asks the cloud again.
    let token = h.token("alice");
    let fresh = h
        .post(
            &console_path(PROJECT, WINDOWS),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cache-control", "no-cache"),
            ],
            BODY,
        )
        .await;
    fresh.assert_error(400, "BMS.0395");
    assert_eq!(fresh.header("x-cache"), Some("miss"));
    assert_eq!(h.sim().stats().requests_total, 3);

    // 30 s for an unknown server, 5 min for a Windows server.
    h.clock.advance(Duration::from_secs(30));
    h.console("alice", UNKNOWN).await;
    assert_eq!(h.sim().stats().requests_total, 4);
    assert_eq!(
        h.console("alice", WINDOWS).await.header("x-cache"),
        Some("hit")
    );
    h.clock.advance(Duration::from_secs(270));
    assert_eq!(
        h.console("alice", WINDOWS).await.header("x-cache"),
        Some("miss")
    );
    assert_eq!(h.sim().stats().requests_total, 5);
}

#[tokio::test]
async fn a_rotated_secret_file_is_picked_up_and_a_broken_one_keeps_the_old_secret() {
    let simulator = start_simulator(TEST_AK, TEST_SK).await;
    let dir = key_dir("rotation", TEST_AK, TEST_SK);
    let h = Harness::start(TestConfig {
        accounts: Some(file_account(
            "test-account",
            &simulator.endpoint(),
            PROJECT,
            &dir,
        )),
        extra_upstream: "secret_reload_interval_ms = 20\n".into(),
        cache_ttl_seconds: 0,
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);

    // The key is rotated at the cloud and in the mounted file.
    let new_sk = "rotated-secret-key-0123456789";
    simulator.set_secret_key(TEST_AK, new_sk);
    std::fs::write(dir.join("sk"), new_sk).unwrap();
    wait_until("the reload", || async {
        h.metric(r#"bmsgw_secret_reloads_total{account="test-account",result="success"}"#)
            .await
            == 1.0
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);

    // A broken file (empty, as in a half-done rotation) keeps the old secret in use.
    std::fs::write(dir.join("sk"), "").unwrap();
    wait_until("the failed reload", || async {
        h.metric(r#"bmsgw_secret_reloads_total{account="test-account",result="failure"}"#)
            .await
            == 1.0
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().auth_failures, 0);
}

#[tokio::test]
async fn temporary_keys_send_a_signed_security_token() {
    let mut credential = sim_credential(TEST_AK, TEST_SK, &[PROJECT]);
    credential.security_token = Some(bms_console_gateway::secret::Secret::new("sts-token-abc"));
    let simulator =
        start_sim_with(sim::SimConfig::new(vec![credential], sim::Catalog::demo())).await;
    let dir = key_dir("sts", TEST_AK, TEST_SK);
    std::fs::write(dir.join("token"), "sts-token-abc").unwrap();
    let account = format!(
        "{}security_token = \"file:{}/token\"\n",
        file_account("test-account", &simulator.endpoint(), PROJECT, &dir),
        dir.display()
    );
    let h = Harness::start(TestConfig {
        accounts: Some(account),
        ..TestConfig::default()
    })
    .await;
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(simulator
        .stats()
        .last_request_headers
        .contains(&"x-security-token".to_string()));

    // Without the token the same keys are refused.
    let plain = start_sim_with(sim::SimConfig::new(
        vec![{
            let mut c = sim_credential(TEST_AK, TEST_SK, &[PROJECT]);
            c.security_token = Some(bms_console_gateway::secret::Secret::new("other"));
            c
        }],
        sim::Catalog::demo(),
    ))
    .await;
    let h = Harness::start(TestConfig {
        accounts: Some(file_account(
            "test-account",
            &plain.endpoint(),
            PROJECT,
            &dir,
        )),
        ..TestConfig::default()
    })
    .await;
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0304");
}

#[tokio::test]
async fn many_accounts_each_serve_their_projects_under_their_own_name() {
    const OTHER_PROJECT: &str = "0123456789abcdef0123456789abcdef";
    const NOBODYS_PROJECT: &str = "ffffffffffffffffffffffffffffffff";
    let mut catalog = sim::Catalog::demo();
    catalog
        .add_server(
            OTHER_PROJECT,
            sim::SimServer {
                id: LINUX.into(),
                name: "other-01".into(),
                os: sim::ServerOs::Linux,
            },
        )
        .unwrap();
    let a = start_sim_with(sim::SimConfig::new(
        vec![sim_credential(TEST_AK, TEST_SK, &[PROJECT])],
        catalog.clone(),
    ))
    .await;
    let b = start_sim_with(sim::SimConfig::new(
        vec![sim_credential(
            "HPUAOTHERACCOUNT0002",
            "second-secret",
            &[OTHER_PROJECT],
        )],
        catalog,
    ))
    .await;
    let dir_a = key_dir("acct-a", TEST_AK, TEST_SK);
    let dir_b = key_dir("acct-b", "HPUAOTHERACCOUNT0002", "second-secret");
    let mut accounts = file_account("cn-north-4", &a.endpoint(), PROJECT, &dir_a);
    accounts.push_str(&file_account(
        "ap-southeast-1",
        &b.endpoint(),
        OTHER_PROJECT,
        &dir_b,
    ));
    let h = Harness::start(TestConfig {
        accounts: Some(accounts),
        policy: r#"
[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["*"]
"#
        .into(),
        ..TestConfig::default()
    })
    .await;
    let token = h.token("alice");
    let auth = format!("Bearer {token}");
    for project in [PROJECT, OTHER_PROJECT] {
        let reply = h
            .post(
                &console_path(project, LINUX),
                &[("authorization", &auth)],
                BODY,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    h.post(
        &console_path(NOBODYS_PROJECT, LINUX),
        &[("authorization", &auth)],
        BODY,
    )
    .await
    .assert_error(404, "BMSGW.0202");
    assert_eq!(a.stats().requests_total, 1);
    assert_eq!(b.stats().requests_total, 1);
    let scrape = h.metrics().await;
    for name in ["cn-north-4", "ap-southeast-1"] {
        assert_eq!(
            metric(
                &scrape,
                &format!(r#"bmsgw_upstream_requests_total{{account="{name}",status_class="2xx"}}"#)
            ),
            1.0
        );
    }
}

#[test]
fn resilience_settings_are_validated() {
    let bad = |extra_upstream: &str, accounts: Option<String>| {
        let text = TestConfig {
            extra_upstream: extra_upstream.into(),
            accounts,
            ..TestConfig::default()
        }
        .render();
        bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "t.toml")
            .unwrap_err()
            .to_string()
    };
    let e = bad("[upstream.lockout]\nthreshold = 5\n", None);
    assert!(
        e.contains("t.toml: upstream.lockout.threshold: must be between 1 and 4"),
        "{e}"
    );
    let e = bad("[upstream.breaker]\nfailure_ratio = 1.5\n", None);
    assert!(e.contains("upstream.breaker.failure_ratio"), "{e}");
    let e = bad("[upstream.retry]\nmax_attempts = 0\n", None);
    assert!(e.contains("upstream.retry.max_attempts"), "{e}");
    let both = format!(
        "[[accounts]]\nname = \"x\"\nendpoint = \"embedded\"\nprojects = [\"{PROJECT}\"]\naccess_key = \"env:A\"\nsecret_key = \"env:B\"\n[accounts.iam]\nendpoint = \"embedded\"\nuser = \"env:U\"\ndomain = \"env:D\"\npassword = \"env:P\"\nproject_id = \"{PROJECT}\"\n"
    );
    let e = bad("", Some(both));
    assert!(
        e.contains("accounts[0]: an account uses either access_key/secret_key or [iam], not both"),
        "{e}"
    );
    let neither = format!(
        "[[accounts]]\nname = \"x\"\nendpoint = \"embedded\"\nprojects = [\"{PROJECT}\"]\n"
    );
    let e = bad("", Some(neither));
    assert!(
        e.contains("accounts[0]: needs access_key and secret_key"),
        "{e}"
    );
    let inline = format!(
        "[[accounts]]\nname = \"x\"\nendpoint = \"embedded\"\nprojects = [\"{PROJECT}\"]\n[accounts.iam]\nendpoint = \"embedded\"\nuser = \"env:U\"\ndomain = \"env:D\"\npassword = \"hunter2\"\nproject_id = \"{PROJECT}\"\n"
    );
    let e = bad("", Some(inline));
    assert!(
        e.contains("accounts[0].iam.password: must be a secret reference"),
        "{e}"
    );
    assert!(!e.contains("hunter2"));
}
