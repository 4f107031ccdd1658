//! Upstream behaviour through a real server: cloud errors passed through, timeouts, refused
//! connections, throttling, rejected credentials, and the metrics that count them.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn windows_and_unknown_servers_reach_the_caller_as_the_cloud_said() {
    let h = Harness::default().await;
    let reply = h.console("alice", WINDOWS).await;
    let msg = reply.assert_error(400, "BMS.0395");
    assert!(msg.contains("windows"), "{msg}");
    let msg = h
        .console("alice", UNKNOWN)
        .await
        .assert_error(400, "BMS.0040");
    assert_eq!(msg, "The server does not exist.");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_requests_total{account="test-account",status_class="4xx"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn an_upstream_timeout_is_504() {
    let h = Harness::start(TestConfig {
        upstream_timeout_ms: 200,
        ..TestConfig::default()
    })
    .await;
    h.sim().faults().set_latency(Duration::from_secs(3));
    h.console("alice", LINUX)
        .await
        .assert_error(504, "BMSGW.0302");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_errors_total{account="test-account",kind="timeout"}"#
        ),
        1.0
    );
    // The timeout was not cached: once the cloud is fast again the URL comes from it.
    h.sim().faults().set_latency(Duration::ZERO);
    h.assert_fresh_url_from(h.sim(), LINUX).await;
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    let h = Harness::start(TestConfig {
        endpoint: format!("http://127.0.0.1:{}", closed_port()),
        ..TestConfig::default()
    })
    .await;
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0301");
    let scrape = h.metrics().await;
    // A refused connection is transient: the default 3 attempts were made.
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_errors_total{account="test-account",kind="connect"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_retries_total{account="test-account"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn cloud_server_errors_and_throttling_pass_through() {
    let h = Harness::default().await;
    h.sim().faults().set_error_5xx_rate(1.0);
    let reply = h.console("alice", LINUX).await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    assert!(reply.json()["error_code"].as_str().is_some());
    h.sim().faults().set_error_5xx_rate(0.0);
    h.sim().faults().set_throttle_rate(1.0);
    let reply = h.console("alice", LINUX).await;
    reply.assert_error(429, "APIGW.0308");
    assert!(reply.header("retry-after").is_some());
    h.sim().faults().set_throttle_rate(0.0);
    // The account is backed off for upstream.throttle_backoff_seconds (30 s by default).
    h.clock.advance(Duration::from_secs(30));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
}

#[tokio::test]
async fn rejected_service_credentials_are_a_502_that_hides_the_cloud_text() {
    let sim = start_simulator(TEST_AK, "a-different-secret-key").await;
    let h = Harness::start(TestConfig {
        endpoint: sim.endpoint(),
        ..TestConfig::default()
    })
    .await;
    let reply = h.console("alice", LINUX).await;
    let msg = reply.assert_error(502, "BMSGW.0304");
    assert!(!msg.contains("canonical"), "{msg}");
    assert_eq!(sim.stats().auth_failures, 1);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_errors_total{account="test-account",kind="credentials_rejected"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_standalone_simulator_accepts_the_gateways_signature() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let h = Harness::start(TestConfig {
        endpoint: sim.endpoint(),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(sim.stats().remote_console_ok, 1);
    assert_eq!(sim.stats().auth_failures, 0);
}

#[tokio::test]
async fn metrics_move_and_pass_promtool() {
    let h = Harness::default().await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    h.post(&console_path(PROJECT, LINUX), &[], BODY).await;
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_http_requests_total{route="remote_console",status_class="2xx"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_http_requests_total{route="remote_console",status_class="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_http_request_duration_seconds_count{route="remote_console"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_requests_total{account="test-account",status_class="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_request_duration_seconds_count{account="test-account"}"#
        ),
        1.0
    );
    assert_eq!(metric(&scrape, "bmsgw_http_requests_in_flight"), 0.0);
    assert_eq!(metric(&scrape, "bmsgw_console_urls_issued_total"), 2.0);
    assert_eq!(metric(&scrape, "bmsgw_ready"), 1.0);
    assert!(scrape.contains("bmsgw_build_info{version="));
    for forbidden in ["alice", "token=", PROJECT] {
        assert!(
            !scrape.contains(forbidden),
            "{forbidden} must not be a label value"
        );
    }

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (.ci/run installs Debian's prometheus package)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
