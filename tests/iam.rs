//! IAM token credentials through a real gateway and simulator: the token is obtained, used,
//! refreshed ahead of expiry on the injected clock, fetched once for 500 concurrent requests,
//! dropped and refreshed once after a revocation, and kept while IAM is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bms_console_gateway::secret::Secret;
use bms_console_gateway::sim;
use common::*;

const USER: &str = "svc-bms-console";
const DOMAIN: &str = "acme-cloud";
const PASSWORD: &str = "iam-password-7d3f0a";

async fn iam_harness(extra_upstream: &str) -> (Harness, sim::SimHandle) {
    iam_harness_with(extra_upstream, TestConfig::default().upstream_timeout_ms).await
}

async fn iam_harness_with(
    extra_upstream: &str,
    upstream_timeout_ms: u64,
) -> (Harness, sim::SimHandle) {
    let (h, simulator, _) = iam_harness_full(extra_upstream, upstream_timeout_ms, PASSWORD).await;
    (h, simulator)
}

/// The gateway's password file holds `file_password`; returns the directory of the files.
async fn iam_harness_full(
    extra_upstream: &str,
    upstream_timeout_ms: u64,
    file_password: &str,
) -> (Harness, sim::SimHandle, std::path::PathBuf) {
    let mut config = sim::SimConfig::new(Vec::new(), sim::Catalog::demo());
    config.users = vec![sim::SimIamUser {
        domain: DOMAIN.into(),
        name: USER.into(),
        password: Secret::new(PASSWORD),
        projects: vec![PROJECT.into()],
    }];
    let simulator = start_sim_with(config).await;
    let dir = temp_dir("iam");
    for (file, value) in [
        ("user", USER),
        ("domain", DOMAIN),
        ("password", file_password),
    ] {
        std::fs::write(dir.join(file), value).unwrap();
    }
    let accounts = format!(
        r#"
[[accounts]]
name = "iam-account"
endpoint = "{sim}"
region = "cn-north-4"
projects = ["{PROJECT}"]

[accounts.iam]
endpoint = "{sim}"
user = "file:{dir}/user"
domain = "file:{dir}/domain"
password = "file:{dir}/password"
project_id = "{PROJECT}"
"#,
        sim = simulator.endpoint(),
        dir = dir.display()
    );
    let h = Harness::start(TestConfig {
        accounts: Some(accounts),
        extra_upstream: extra_upstream.into(),
        cache_ttl_seconds: 0,
        upstream_timeout_ms,
        ..TestConfig::default()
    })
    .await;
    (h, simulator, dir)
}

const FAST_CHECKS: &str = "[upstream.iam]\ncheck_interval_ms = 10\n";

#[tokio::test]
async fn a_token_is_obtained_used_and_refreshed_ahead_of_expiry() {
    let (h, simulator) = iam_harness(FAST_CHECKS).await;
    assert_eq!(
        simulator.stats().iam_tokens_issued,
        1,
        "fetched at start-up"
    );
    assert_eq!(h.readyz().await, 200);
    let expiry = h
        .metric(r#"bmsgw_iam_token_expiry_timestamp_seconds{account="iam-account"}"#)
        .await;
    assert!(expiry > h.clock_now() as f64 + 23.0 * 3600.0, "{expiry}");

    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Later tokens must outlive the gateway's moved clock (the simulator keeps real time).
    simulator.set_token_lifetime(Duration::from_secs(48 * 3600));
    let headers = simulator.stats().last_request_headers;
    assert!(headers.contains(&"x-auth-token".to_string()), "{headers:?}");
    assert!(
        !headers.contains(&"authorization".to_string()),
        "{headers:?}"
    );

    // 22 h 59 min later the token is still outside the 1 h margin: no refresh.
    h.clock.advance(Duration::from_secs(22 * 3600 + 59 * 60));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().iam_token_requests, 1);

    // Inside the margin the background refresher fetches a new one, ahead of expiry.
    h.clock.advance(Duration::from_secs(61));
    wait_until("a background refresh", || async {
        simulator.stats().iam_tokens_issued == 2
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().iam_token_requests, 2);
    assert_eq!(
        h.metric(r#"bmsgw_iam_token_refreshes_total{account="iam-account",result="success"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn five_hundred_concurrent_requests_at_expiry_make_one_iam_call() {
    // A slow background check so that the requests, not the refresher, find the token expired.
    // A generous deadline: 500 requests at once on a busy 2-core CI machine take a while.
    let (h, simulator) = iam_harness_with(
        "[upstream.iam]\ncheck_interval_ms = 600000\n[upstream.quota]\nrequests_per_second = 100000\nburst = 100000\n",
        18_000,
    )
    .await;
    assert_eq!(simulator.stats().iam_token_requests, 1);
    // The simulator is the cloud and keeps real time; tokens it issues from now on must
    // outlive the gateway's moved clock.
    simulator.set_token_lifetime(Duration::from_secs(48 * 3600));
    h.clock.advance(Duration::from_secs(25 * 3600));
    let h = Arc::new(h);
    let token = h.token("alice");
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let h = h.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct (unknown) servers, so the console cache cannot coalesce them.
            let server = format!("00000000-0000-4000-8000-{i:012}");
            h.post(
                &console_path(PROJECT, &server),
                &[("authorization", &format!("Bearer {token}"))],
                BODY,
            )
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap().assert_error(400, "BMS.0040");
    }
    let stats = simulator.stats();
    assert_eq!(stats.iam_token_requests, 2, "one IAM call for 500 requests");
    assert_eq!(stats.requests_total, 500);
}

#[tokio::test]
async fn a_token_shorter_than_twice_the_margin_is_refreshed_half_way() {
    let (h, simulator) = iam_harness(FAST_CHECKS).await;
    // Tokens of 10 seconds from now on (the default margin is an hour).
    simulator.set_token_lifetime(Duration::from_secs(10));
    simulator.revoke_tokens();
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().iam_tokens_issued, 2);
    h.clock.advance(Duration::from_secs(4));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().iam_tokens_issued, 2, "not yet half-way");
    h.clock.advance(Duration::from_secs(2));
    wait_until("a half-way refresh", || async {
        simulator.stats().iam_tokens_issued == 3
    })
    .await;
}

#[tokio::test]
async fn a_revoked_token_is_dropped_refreshed_once_and_the_request_retried_once() {
    let (h, simulator) = iam_harness("").await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    simulator.revoke_tokens();
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = simulator.stats();
    assert_eq!(stats.iam_token_requests, 2);
    assert_eq!(stats.auth_failures, 1);
    assert_eq!(stats.requests_total, 3);

    // Revoked again while IAM is down: one refresh attempt, no second BMS retry, 503.
    simulator.revoke_tokens();
    simulator.set_iam_down(true);
    let reply = h.console("alice", LINUX).await;
    reply.assert_error(503, "BMSGW.0310");
    let stats = simulator.stats();
    assert_eq!(stats.iam_token_requests, 3);
    assert_eq!(stats.requests_total, 4);
}

#[tokio::test]
async fn while_iam_is_down_a_valid_token_keeps_serving_and_without_one_readyz_fails() {
    let (h, simulator) = iam_harness(FAST_CHECKS).await;
    simulator.set_token_lifetime(Duration::from_secs(48 * 3600));
    simulator.set_iam_down(true);
    // Inside the refresh margin: the refresh fails, the old token keeps working.
    h.clock.advance(Duration::from_secs(23 * 3600 + 30 * 60));
    wait_until("a failed refresh", || async {
        h.metric(r#"bmsgw_iam_token_refreshes_total{account="iam-account",result="failure"}"#)
            .await
            >= 1.0
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.readyz().await, 200);

    // Past expiry with IAM still down: not ready, and requests get a clear 503.
    h.clock.advance(Duration::from_secs(3600));
    h.console("alice", LINUX)
        .await
        .assert_error(503, "BMSGW.0310");
    assert_eq!(h.readyz().await, 503);
    assert_eq!(
        h.metric(r#"bmsgw_upstream_short_circuits_total{account="iam-account",reason="no_token"}"#)
            .await,
        1.0
    );

    // IAM is back: after the failure backoff the refresher recovers and the gateway is ready.
    simulator.set_iam_down(false);
    h.clock.advance(Duration::from_secs(300));
    wait_until("ready again", || async { h.readyz().await == 200 }).await;
    h.assert_fresh_url_from(&simulator, LINUX).await;
}

#[tokio::test]
async fn background_tasks_end_when_their_gateway_is_dropped() {
    // As a config reload does: build a Gateway, start its tasks, drop it.
    let (h, simulator) = iam_harness("[upstream.iam]\ncheck_interval_ms = 600000\n").await;
    let config = {
        // The same config the harness runs, pointed at the same simulator.
        let accounts = format!(
            "[[accounts]]\nname = \"iam-account\"\nendpoint = \"{sim}\"\nprojects = [\"{PROJECT}\"]\n[accounts.iam]\nendpoint = \"{sim}\"\nuser = \"env:BMSGW_TEST_IAM_USER\"\ndomain = \"env:BMSGW_TEST_IAM_DOMAIN\"\npassword = \"env:BMSGW_TEST_IAM_PASSWORD\"\nproject_name = \"cn-north-4\"\n",
            sim = simulator.endpoint()
        );
        std::env::set_var("BMSGW_TEST_IAM_USER", USER);
        std::env::set_var("BMSGW_TEST_IAM_DOMAIN", DOMAIN);
        std::env::set_var("BMSGW_TEST_IAM_PASSWORD", PASSWORD);
        TestConfig {
            accounts: Some(accounts),
            extra_upstream:
                "secret_reload_interval_ms = 600000\n[upstream.iam]\ncheck_interval_ms = 600000\n"
                    .into(),
            ..TestConfig::default()
        }
        .build()
    };
    let gateway = Arc::new(
        bms_console_gateway::state::Gateway::build(&config, h.clock.clone(), None)
            .await
            .unwrap(),
    );
    gateway.start_background().await;
    assert!(gateway.upstream_ready(), "a token scoped by project name");
    let handles = gateway.background.handles();
    assert_eq!(handles.len(), 2, "one IAM refresher and the secret poller");
    assert!(handles.iter().all(|t| !t.is_finished()));
    drop(gateway);
    wait_until("the tasks to end", || async {
        handles.iter().all(|t| t.is_finished())
    })
    .await;
}

#[tokio::test]
async fn the_embedded_simulator_serves_iam_accounts_too() {
    let dir = temp_dir("iam-embedded");
    for (file, value) in [("user", USER), ("domain", DOMAIN), ("password", PASSWORD)] {
        std::fs::write(dir.join(file), value).unwrap();
    }
    let accounts = format!(
        "[[accounts]]\nname = \"demo-iam\"\nendpoint = \"embedded\"\nprojects = [\"{PROJECT}\"]\n[accounts.iam]\nendpoint = \"embedded\"\nuser = \"file:{d}/user\"\ndomain = \"file:{d}/domain\"\npassword = \"file:{d}/password\"\nproject_name = \"cn-north-4\"\n",
        d = dir.display()
    );
    let h = Harness::start(TestConfig {
        accounts: Some(accounts),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.readyz().await, 200);
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.sim().stats().iam_tokens_issued, 1);
}

#[tokio::test]
async fn a_wrong_iam_password_is_not_retried_in_a_loop_and_a_fixed_file_recovers() {
    let (h, simulator, dir) = iam_harness_full(
        "secret_reload_interval_ms = 20\n[upstream.iam]\ncheck_interval_ms = 10\n",
        5000,
        "not-the-password",
    )
    .await;
    // The first fetch at start-up was refused: not ready, and requests get a clear 503.
    assert_eq!(h.readyz().await, 503);
    for _ in 0..5 {
        h.console("alice", LINUX)
            .await
            .assert_error(503, "BMSGW.0310");
    }
    // The failure backoff (1 s, doubling, on the injected clock) kept IAM from being asked
    // again by the requests or the refresher.
    assert_eq!(simulator.stats().iam_token_requests, 1);
    assert_eq!(
        simulator.stats().requests_total,
        0,
        "no BMS call without a token"
    );

    // The operator fixes the password file: the backoff is forgotten and a token arrives.
    std::fs::write(dir.join("password"), PASSWORD).unwrap();
    wait_until("ready", || async { h.readyz().await == 200 }).await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(simulator.stats().iam_tokens_issued, 1);
}
