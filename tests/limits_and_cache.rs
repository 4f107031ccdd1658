//! Rate limits and the console-URL cache through a real server and the simulator's counters.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bms_console_gateway::sim;
use common::*;

#[tokio::test]
async fn over_the_limit_gets_429_with_retry_after_and_recovers_with_time() {
    let h = Harness::start(TestConfig {
        rate_per_second: 1.0,
        burst: 3,
        ..TestConfig::default()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let reply = h.console("alice", LINUX).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit-limit"), Some("3"));
        assert_eq!(reply.header("ratelimit-remaining"), Some(remaining));
    }
    let reply = h.console("alice", LINUX).await;
    let msg = reply.assert_error(429, "APIGW.0308");
    assert!(msg.contains("throttling threshold"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header("ratelimit-reset"), Some("3"));
    // Another user is not affected.
    assert_eq!(h.console("bob", LINUX).await.status, 200);
    // One second later (on the injected clock) alice has one request again.
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.console("alice", LINUX).await.status, 429);
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, "bmsgw_rate_limited_total"), 2.0);
}

#[tokio::test]
async fn cache_hits_count_against_the_limit_and_tiers_apply() {
    let h = Harness::start(TestConfig {
        rate_per_second: 1.0,
        burst: 2,
        extra_rate_limit: "[rate_limit.tiers.bulk]\nrequests_per_second = 1\nburst = 5\n".into(),
        policy: format!(
            r#"
[[policy.rules]]
name = "robots"
subjects = ["robot"]
projects = ["{PROJECT}"]
rate_limit_tier = "bulk"

[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["{PROJECT}"]
"#
        ),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(
        h.console("alice", LINUX).await.header("x-cache"),
        Some("miss")
    );
    assert_eq!(
        h.console("alice", LINUX).await.header("x-cache"),
        Some("hit")
    );
    h.console("alice", LINUX)
        .await
        .assert_error(429, "APIGW.0308");
    for _ in 0..5 {
        let reply = h.console("robot", LINUX).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit-limit"), Some("5"));
    }
    h.console("robot", LINUX)
        .await
        .assert_error(429, "APIGW.0308");
}

#[tokio::test]
async fn cached_urls_are_served_until_the_ttl_and_no_cache_forces_a_fresh_one() {
    let h = Harness::default().await;
    let first = h.console("alice", LINUX).await;
    assert_eq!(first.header("x-cache"), Some("miss"));
    let second = h.console("bob", LINUX).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(
        first.url(),
        second.url(),
        "shared scope: one URL per server"
    );
    assert_eq!(h.sim().stats().remote_console_ok, 1);

    h.clock.advance(Duration::from_secs(29));
    assert_eq!(
        h.console("alice", LINUX).await.header("x-cache"),
        Some("hit")
    );
    h.clock.advance(Duration::from_secs(1));
    let expired = h.console("alice", LINUX).await;
    assert_eq!(
        expired.header("x-cache"),
        Some("miss"),
        "never served at or past the TTL"
    );
    assert_ne!(expired.url(), first.url());
    assert_eq!(h.sim().stats().remote_console_ok, 2);

    let token = h.token("alice");
    let forced = h
        .post(
            &console_path(PROJECT, LINUX),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cache-control", "no-cache"),
            ],
            BODY,
        )
        .await;
    assert_eq!(forced.header("x-cache"), Some("miss"));
    assert_ne!(forced.url(), expired.url());
    assert_eq!(h.sim().stats().remote_console_ok, 3);
    // The fresh URL replaced the cached one.
    assert_eq!(h.console("bob", LINUX).await.url(), forced.url());

    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_cache_requests_total{outcome="hit"}"#),
        3.0
    );
    assert_eq!(
        metric(&scrape, r#"bmsgw_cache_requests_total{outcome="miss"}"#),
        3.0
    );
}

/// Sends one console request per token for the Linux server, all at once; asserts each got a
/// 200 and returns the distinct URLs they got.
async fn concurrent_console_urls(h: &Harness, tokens: Vec<String>) -> HashSet<String> {
    let url = format!("{}{}", h.gateway.public_url(), console_path(PROJECT, LINUX));
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (client, url) = (h.client.clone(), url.clone());
            tokio::spawn(async move {
                send(
                    &client,
                    http::Method::POST,
                    &url,
                    &[
                        ("authorization", &format!("Bearer {token}")),
                        ("content-type", "application/json"),
                    ],
                    BODY.into(),
                )
                .await
            })
        })
        .collect();
    let mut urls = HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        urls.insert(reply.url());
    }
    urls
}

/// One caller (so only the cache is in play, and the token is verified once), 1,000 requests
/// at once for one server on a cold cache: one upstream call, one URL for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_requests_make_one_upstream_call() {
    let h = Harness::start(TestConfig {
        rate_per_second: 1.0,
        burst: 1000,
        ..TestConfig::default()
    })
    .await;
    h.sim().faults().set_latency(Duration::from_millis(300));
    let token = h.token("alice");
    let urls = concurrent_console_urls(&h, vec![token; 1000]).await;
    assert_eq!(urls.len(), 1, "all 1,000 callers got the same URL");
    assert_eq!(
        h.sim().stats().requests_total,
        1,
        "exactly one upstream call"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_cold_requests_make_one_upstream_call() {
    let h = Harness::default().await;
    // Slow the cloud down so every request arrives while the first call is in flight.
    h.sim().faults().set_latency(Duration::from_millis(300));
    let tokens: Vec<String> = (0..200).map(|i| h.token(&format!("user-{i}"))).collect();
    let urls = concurrent_console_urls(&h, tokens).await;
    assert_eq!(urls.len(), 1, "all 200 callers got the same URL");
    assert_eq!(
        h.sim().stats().requests_total,
        1,
        "exactly one upstream call"
    );
    let scrape = h.metrics().await;
    let coalesced = metric(
        &scrape,
        r#"bmsgw_cache_requests_total{outcome="coalesced"}"#,
    );
    let hits = metric(&scrape, r#"bmsgw_cache_requests_total{outcome="hit"}"#);
    assert_eq!(
        metric(&scrape, r#"bmsgw_cache_requests_total{outcome="miss"}"#),
        1.0
    );
    assert_eq!(coalesced + hits, 199.0);
}

#[tokio::test]
async fn concurrent_no_cache_requests_are_still_coalesced() {
    let h = Harness::default().await;
    h.sim().faults().set_latency(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = h.client.clone();
        let url = format!("{}{}", h.gateway.public_url(), console_path(PROJECT, LINUX));
        let token = h.token(&format!("u{i}"));
        tasks.push(tokio::spawn(async move {
            send(
                &client,
                http::Method::POST,
                &url,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                    ("cache-control", "no-cache"),
                ],
                BODY.into(),
            )
            .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(h.sim().stats().requests_total, 1);
}

#[tokio::test]
async fn per_user_scope_never_hands_one_users_url_to_another() {
    let h = Harness::start(TestConfig {
        cache_scope: "per-user",
        ..TestConfig::default()
    })
    .await;
    let alice = h.console("alice", LINUX).await;
    let bob = h.console("bob", LINUX).await;
    assert_eq!(bob.header("x-cache"), Some("miss"));
    assert_ne!(alice.url(), bob.url());
    let alice_again = h.console("alice", LINUX).await;
    assert_eq!(alice_again.header("x-cache"), Some("hit"));
    assert_eq!(alice_again.url(), alice.url());
    assert_eq!(h.sim().stats().remote_console_ok, 2);
}

#[tokio::test]
async fn errors_are_never_cached() {
    // (BMS.0395 and BMS.0040 are the two remembered answers: see tests/resilience.rs.)
    let h = Harness::default().await;
    h.sim().faults().script(&[sim::Scripted::Unavailable; 3]);
    let failed = h.console("alice", LINUX).await;
    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(failed.header("x-cache"), Some("miss"));
    let again = h.console("alice", LINUX).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-cache"), Some("miss"));
    assert_eq!(
        h.sim().stats().requests_total,
        4,
        "3 attempts, then one more"
    );
}

#[tokio::test]
async fn cache_can_be_turned_off() {
    let h = Harness::start(TestConfig {
        cache_ttl_seconds: 0,
        ..TestConfig::default()
    })
    .await;
    let a = h.console("alice", LINUX).await;
    let b = h.console("alice", LINUX).await;
    assert_eq!(b.header("x-cache"), Some("miss"));
    assert_ne!(a.url(), b.url());
    assert_eq!(h.sim().stats().remote_console_ok, 2);
}
