//! Redis faults: a Redis that dies, pauses or was never there. Each test runs a private
//! `redis-server` on a free port (the shared one on 6379 is left alone) and checks what a
//! caller sees: the configured fallback, no hanging request, and automatic recovery.

mod common;

use std::time::Duration;

use common::redis_server::{self, PrivateRedis};
use common::*;

/// An answer must come long before the client would give up; a hang fails the test.
async fn bounded(reply: impl std::future::Future<Output = Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(4), reply)
        .await
        .expect("the gateway answered without waiting for Redis")
}

fn config(redis_url: &str, fallback: &str, burst: u32, cache_too: bool) -> TestConfig {
    let key_file = redis_server::temp_file("k", b"0123456789abcdef0123456789abcdef0123");
    TestConfig {
        rate_per_second: 1.0,
        burst,
        extra_rate_limit: "backend = \"redis\"\n".into(),
        extra_cache: if cache_too {
            format!(
                "backend = \"redis\"\nencryption_key = \"file:{}\"\n",
                key_file.display()
            )
        } else {
            String::new()
        },
        extra_sections: redis_server::redis_section(
            redis_url,
            &redis_server::unique_prefix("faults"),
            &format!("timeout_ms = 500\nretry_interval_ms = 1000\nfallback = \"{fallback}\""),
        ),
        ..TestConfig::default()
    }
}

/// Moves the gateway's clock past the retry interval and sends requests until `done` holds
/// for the scrape (bounded: Redis may need a moment to accept connections again).
async fn until_metrics(h: &Harness, sub: &str, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        h.clock.advance(Duration::from_millis(1_000));
        bounded(h.console(sub, LINUX)).await;
        if done(&h.metrics().await) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_redis_falls_back_to_local_limits_and_recovers_when_it_returns() {
    let mut redis = PrivateRedis::start().await;
    let h = Harness::start(config(&redis.url(), "local", 2, false)).await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#
        ),
        1.0
    );

    redis.kill();
    // Per-process limits now: a fresh local bucket of 2, then 429.
    assert_eq!(bounded(h.console("alice", LINUX)).await.status, 200);
    assert_eq!(bounded(h.console("alice", LINUX)).await.status, 200);
    bounded(h.console("alice", LINUX))
        .await
        .assert_error(429, "APIGW.0308");
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 1.0);
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_redis_fallbacks_total{action="local",component="rate_limit"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_rate_limit_decisions_total{backend="local",result="limited"}"#
        ),
        1.0
    );
    assert!(metric(&scrape, r#"bmsgw_redis_errors_total{kind="connection"}"#) >= 1.0);

    redis.restart().await;
    until_metrics(&h, "bob", |scrape| {
        metric(scrape, "bmsgw_redis_fallback_active") == 0.0
    })
    .await;
    let before = metric(
        &h.metrics().await,
        r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#,
    );
    assert_eq!(h.console("carol", LINUX).await.status, 200);
    let after = metric(
        &h.metrics().await,
        r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#,
    );
    assert_eq!(after, before + 1.0, "decisions are made in Redis again");
}

#[tokio::test]
async fn a_paused_redis_costs_at_most_the_budget_and_deny_answers_503() {
    let redis = PrivateRedis::start().await;
    let h = Harness::start(config(&redis.url(), "deny", 50, true)).await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);

    // Redis stops answering for 3 s (a paused Redis blocks even CLIENT UNPAUSE, so the pause
    // runs out by itself); the budget is 500 ms. A request that waited for Redis would get a
    // 200 once the pause ends: the 503 shows it gave up at the budget.
    redis.command(&["CLIENT", "PAUSE", "3000", "ALL"]).await;
    let reply = bounded(h.console("alice", LINUX)).await;
    reply.assert_error(503, "BMSGW.0601");
    assert_eq!(reply.header("retry-after"), Some("1"));
    // While Redis is down, requests fail closed at once, without another try.
    bounded(h.console("alice", LINUX))
        .await
        .assert_error(503, "BMSGW.0601");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_redis_errors_total{kind="timeout"}"#),
        1.0
    );
    assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 1.0);
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_redis_fallbacks_total{action="deny",component="rate_limit"}"#
        ),
        2.0
    );
    assert_eq!(
        h.sim().stats().remote_console_ok,
        1,
        "no upstream call while denying"
    );

    until_metrics(&h, "bob", |scrape| {
        metric(scrape, "bmsgw_redis_fallback_active") == 0.0
    })
    .await;
    assert_eq!(h.console("carol", LINUX).await.status, 200);
}

#[tokio::test]
async fn nothing_listening_the_gateway_starts_and_serves_from_local_state() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let h = Harness::start(config(&url, "local", 50, true)).await;
    let first = bounded(h.console("alice", LINUX)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    // The local cache still works, and the cloud was called once.
    let second = bounded(h.console("bob", LINUX)).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.url(), first.url());
    assert_eq!(h.sim().stats().remote_console_ok, 1);
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 1.0);
    assert!(
        metric(
            &scrape,
            r#"bmsgw_redis_fallbacks_total{action="local",component="cache"}"#
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_rate_limit_decisions_total{backend="local",result="allowed"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn a_redis_that_restarts_empty_gets_its_script_and_urls_again() {
    let mut redis = PrivateRedis::start().await;
    let h = Harness::start(config(&redis.url(), "local", 50, true)).await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    redis.restart().await;
    // The script cache and the stored URL are gone; the gateway reconnects, reloads the
    // script (NOSCRIPT → load) and carries on through Redis.
    until_metrics(&h, "bob", |scrape| {
        metric(scrape, "bmsgw_redis_fallback_active") == 0.0
            && metric(
                scrape,
                r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#,
            ) >= 2.0
    })
    .await;
}
