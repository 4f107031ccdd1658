//! Fault injection: each test makes the simulated cloud misbehave in one way (through the
//! simulator's fault knobs) and checks three things through a real gateway: what the caller
//! sees (status and error code), the metric that moves, and that nothing of the fault was
//! cached (the next request gets an `https` URL fresh from the simulator).
//!
//! The faults that other files already cover this way (latency, 5xx and 429 storms, IAM,
//! JWKS and Redis down) are listed with their tests in `docs/reliability.md`.

mod common;

use std::time::{Duration, Instant};

use bms_console_gateway::sim::Scripted;
use common::*;

fn upstream_errors(kind: &str) -> String {
    format!(r#"bmsgw_upstream_errors_total{{account="test-account",kind="{kind}"}}"#)
}

const UPSTREAM_2XX: &str =
    r#"bmsgw_upstream_requests_total{account="test-account",status_class="2xx"}"#;

/// A gateway in front of its embedded simulator that makes one attempt per request, so one
/// scripted fault is one failed request.
async fn one_attempt_gateway(upstream_timeout_ms: u64) -> Harness {
    Harness::start(TestConfig {
        upstream_timeout_ms,
        extra_upstream: "[upstream.retry]\nmax_attempts = 1\n".into(),
        ..TestConfig::default()
    })
    .await
}

/// What the gateway does with a connection whose answer was a fault.
#[derive(Debug, PartialEq)]
enum Connection {
    /// The whole body was read: the connection goes back to the pool and serves the next call.
    Reused,
    /// The body was not read to its end: the connection is closed, the next call opens another.
    Dropped,
}

/// Warms a pooled connection up (on the other Linux server, so the cache does not answer for
/// the faulty one), scripts `fault` for the next call, asks for a console URL and checks the
/// caller got `502 BMSGW.0303`, that `bad_response` and the cloud's `2xx` count moved, that
/// the connection was handled as `connection` says, and that the next request gets a fresh URL.
/// Returns the error message and the fresh URL.
async fn a_broken_answer_is_refused(fault: Scripted, connection: Connection) -> (String, String) {
    let h = one_attempt_gateway(5000).await;
    let sim = h.sim();
    assert_eq!(h.console("alice", LINUX_2).await.status, 200);
    let connections = sim.stats().connections_accepted;

    sim.faults().script(&[fault]);
    let reply = h.console("alice", LINUX).await;
    let message = reply.assert_error(502, "BMSGW.0303");
    assert_eq!(reply.header("x-cache"), Some("miss"));
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, &upstream_errors("bad_response")), 1.0);
    assert_eq!(
        metric(&scrape, UPSTREAM_2XX),
        2.0,
        "the cloud's head said 200"
    );
    assert_eq!(
        sim.stats().connections_accepted,
        connections,
        "the fault came on the pooled connection"
    );

    let url = h.assert_fresh_url_from(sim, LINUX).await;
    let reopened = sim.stats().connections_accepted - connections;
    let expected = match connection {
        Connection::Reused => 0,
        Connection::Dropped => 1,
    };
    assert_eq!(reopened, expected, "{fault:?}: connection {connection:?}");
    (message, url)
}

#[tokio::test]
async fn a_reset_before_the_headers_is_502_bmsgw_0301_after_every_attempt_counted_as_connect() {
    let h = Harness::start(TestConfig {
        extra_upstream: "[upstream.retry]\nbase_backoff_ms = 1\nmax_backoff_ms = 5\n".into(),
        ..TestConfig::default()
    })
    .await;
    // The default three attempts each meet a connection closed without an answer.
    h.sim().faults().set_close_connection_rate(1.0);
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0301");
    h.sim().faults().set_close_connection_rate(0.0);
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, &upstream_errors("connect")), 3.0);
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_upstream_retries_total{account="test-account"}"#
        ),
        2.0
    );
    assert_eq!(h.sim().stats().requests_total, 3);
    h.assert_fresh_url_from(h.sim(), LINUX).await;
}

#[tokio::test]
async fn a_reset_after_the_headers_is_502_bmsgw_0303_and_the_connection_is_dropped() {
    a_broken_answer_is_refused(Scripted::ResetAfterHeaders, Connection::Dropped).await;
}

#[tokio::test]
async fn a_truncated_body_is_502_bmsgw_0303_and_the_connection_is_dropped() {
    a_broken_answer_is_refused(Scripted::Truncated, Connection::Dropped).await;
}

#[tokio::test]
async fn a_huge_body_is_refused_at_the_size_cap_with_502_bmsgw_0303_and_its_connection_dropped() {
    // The simulator's huge body is a valid console answer with an https URL: only the cap
    // stops it.
    let (message, _) = a_broken_answer_is_refused(Scripted::HugeBody, Connection::Dropped).await;
    assert_eq!(
        message,
        "The BMS endpoint answered with an unexpected response"
    );
}

#[tokio::test]
async fn a_200_that_is_not_json_is_502_bmsgw_0303() {
    a_broken_answer_is_refused(Scripted::NotJson, Connection::Reused).await;
}

#[tokio::test]
async fn a_200_without_a_url_is_502_bmsgw_0303() {
    a_broken_answer_is_refused(Scripted::NoUrl, Connection::Reused).await;
}

#[tokio::test]
async fn a_200_with_an_http_url_is_502_bmsgw_0303_and_the_url_is_never_handed_out() {
    let (message, fresh) = a_broken_answer_is_refused(Scripted::HttpUrl, Connection::Reused).await;
    assert!(!message.contains("http://"), "{message}");
    assert!(fresh.starts_with("https://"));
}

#[tokio::test]
async fn a_body_trickling_past_the_deadline_is_504_bmsgw_0302_counted_as_timeout() {
    let h = one_attempt_gateway(300).await;
    let sim = h.sim();
    // The head comes at once; the body would take about 13 s at one byte per 100 ms.
    sim.faults().script(&[Scripted::Trickle]);
    let started = Instant::now();
    h.console("alice", LINUX)
        .await
        .assert_error(504, "BMSGW.0302");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the deadline covers the body: {:?}",
        started.elapsed()
    );
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, &upstream_errors("timeout")), 1.0);
    assert_eq!(metric(&scrape, UPSTREAM_2XX), 1.0, "the head said 200");
    let connections = sim.stats().connections_accepted;
    h.assert_fresh_url_from(sim, LINUX).await;
    assert_eq!(
        sim.stats().connections_accepted,
        connections + 1,
        "the trickling connection was abandoned"
    );
}
