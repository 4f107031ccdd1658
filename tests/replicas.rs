//! Several gateway replicas sharing the Redis on 127.0.0.1:6379: one rate-limit bucket per
//! user across all of them, one cached URL (and one upstream call) per server.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::redis_server::{self, SHARED_REDIS};
use common::*;
use futures_util::future::join_all;

/// Key material for the URL encryption, in a file as a deployment would mount it.
fn encryption_key_file() -> String {
    let path = redis_server::temp_file(
        "cache-key",
        b"kJ3x9+T2vQm8Lw1ZpR6yN4cF7hB0sD5eGaUoXiYtVnM=\n",
    );
    format!("file:{}", path.display())
}

fn replica_config(prefix: &str, rate: f64, burst: u32) -> TestConfig {
    TestConfig {
        rate_per_second: rate,
        burst,
        extra_rate_limit: "backend = \"redis\"\n".into(),
        // Generous budget: this test is about exactness under load, not about the budget; a
        // fault would answer 503 (deny), never an extra admission.
        extra_sections: redis_server::redis_section(
            SHARED_REDIS,
            prefix,
            "timeout_ms = 2000\nfallback = \"deny\"",
        ),
        ..TestConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_admit_exactly_the_burst_under_concurrent_load() {
    let prefix = redis_server::unique_prefix("exact");
    // 0.01 requests per second: over the few seconds of this test the bucket refills by a
    // hundredth of a request, so exactly `burst` requests may pass.
    let burst = 20;
    let replicas =
        join_all((0..3).map(|_| Harness::start(replica_config(&prefix, 0.01, burst)))).await;

    let requests = replicas
        .iter()
        .cycle()
        .take(90)
        .map(|h| h.console("alice", LINUX));
    let replies = join_all(requests).await;

    let admitted: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        admitted.len(),
        burst as usize,
        "exactly the burst, not three times it"
    );
    assert_eq!(
        refused.len(),
        90 - burst as usize,
        "everything else is refused, nothing failed"
    );
    // One bucket: every admitted request saw a different number of requests left.
    let remaining: HashSet<u32> = admitted
        .iter()
        .map(|r| r.header("ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    assert_eq!(remaining, (0..burst).collect::<HashSet<_>>());
    for reply in &replies {
        assert_eq!(reply.header("ratelimit-limit"), Some("20"));
    }
    for reply in &refused {
        reply.assert_error(429, "APIGW.0308");
        assert_eq!(reply.header("ratelimit-remaining"), Some("0"));
        // The next request is 100 s away at 0.01 per second.
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((99..=100).contains(&retry), "{retry}");
    }

    // Every decision was made in Redis, none by a replica on its own.
    let mut allowed_in_redis = 0.0;
    for h in &replicas {
        let scrape = h.metrics().await;
        allowed_in_redis += metric(
            &scrape,
            r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#,
        );
        assert_eq!(
            metric(
                &scrape,
                r#"bmsgw_rate_limit_decisions_total{backend="local",result="allowed"}"#
            ),
            0.0
        );
        assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 0.0);
    }
    assert_eq!(allowed_in_redis, burst as f64);
    // Another user has a bucket of their own, on any replica.
    assert_eq!(replicas[2].console("bob", LINUX).await.status, 200);
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn the_redis_bucket_gives_the_same_headers_and_expires_when_full_again() {
    let prefix = redis_server::unique_prefix("headers");
    let h = Harness::start(replica_config(&prefix, 1.0, 3)).await;
    for remaining in ["2", "1", "0"] {
        let reply = h.console("alice", LINUX).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit-limit"), Some("3"));
        assert_eq!(reply.header("ratelimit-remaining"), Some(remaining));
    }
    let reply = h.console("alice", LINUX).await;
    reply.assert_error(429, "APIGW.0308");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("ratelimit-reset"), Some("3"));

    // One key for alice, and it lives only until her bucket is full again (3 s): an idle user
    // leaves nothing behind in Redis. The key does not name her.
    let keys = redis_server::keys(SHARED_REDIS, &prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains("alice"));
    let mut conn = redis_server::connect(SHARED_REDIS).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 3_000, "{pttl}");
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

fn cache_replica_config(prefix: &str, endpoint: &str, key_file: &str) -> TestConfig {
    TestConfig {
        endpoint: endpoint.to_string(),
        extra_cache: format!("backend = \"redis\"\nencryption_key = \"{key_file}\"\n"),
        extra_sections: redis_server::redis_section(
            SHARED_REDIS,
            prefix,
            "timeout_ms = 2000\nfallback = \"deny\"",
        ),
        ..TestConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_across_three_replicas_makes_one_upstream_call() {
    let prefix = redis_server::unique_prefix("coalesce");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    // A slow cloud, so every request of the burst arrives while the first call is in flight.
    sim.faults().set_latency(Duration::from_millis(300));
    let key_file = encryption_key_file();
    let replicas = join_all(
        (0..3).map(|_| Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file))),
    )
    .await;

    let replies = join_all(
        replicas
            .iter()
            .cycle()
            .take(30)
            .enumerate()
            .map(|(i, h)| async move { h.console(&format!("user-{i}"), LINUX).await }),
    )
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let urls: HashSet<String> = replies.iter().map(Reply::url).collect();
    assert_eq!(urls.len(), 1, "one URL for everyone");
    assert_eq!(
        sim.stats().remote_console_ok,
        1,
        "one upstream call for the whole burst"
    );

    let mut misses = 0.0;
    for h in &replicas {
        misses += metric(
            &h.metrics().await,
            r#"bmsgw_cache_requests_total{outcome="miss"}"#,
        );
    }
    assert_eq!(misses, 1.0);

    // A replica that joins later is served from Redis without calling the cloud.
    let late = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let reply = late.console("carol", LINUX).await;
    assert_eq!(reply.header("x-cache"), Some("hit"));
    assert_eq!(reply.url(), *urls.iter().next().unwrap());
    assert_eq!(
        metric(
            &late.metrics().await,
            r#"bmsgw_cache_requests_total{outcome="shared_hit"}"#
        ),
        1.0
    );
    assert_eq!(sim.stats().remote_console_ok, 1);

    // At rest the URL is sealed: neither its token nor its host is readable in Redis, and the
    // entry dies with the cache TTL.
    let url = urls.into_iter().next().unwrap();
    let token = url.rsplit('=').next().unwrap().to_string();
    let keys = redis_server::keys(SHARED_REDIS, &prefix).await;
    assert_eq!(keys.len(), 1, "the value; the lock is gone: {keys:?}");
    let mut conn = redis_server::connect(SHARED_REDIS).await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored_text = String::from_utf8_lossy(&stored);
    assert!(!stored_text.contains(&token));
    assert!(!stored_text.contains("console.bms"));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "{pttl}");
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn a_url_from_redis_is_kept_locally_only_as_long_as_redis_keeps_it() {
    let prefix = redis_server::unique_prefix("expiry");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let key_file = encryption_key_file();
    let a = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let b = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let first = a.console("alice", LINUX).await;
    assert_eq!(first.header("x-cache"), Some("miss"));

    // Redis will drop the URL in 5 s (as if it had been fetched 25 s ago).
    let keys = redis_server::keys(SHARED_REDIS, &prefix).await;
    let mut conn = redis_server::connect(SHARED_REDIS).await;
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(5_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    let from_redis = b.console("bob", LINUX).await;
    assert_eq!(from_redis.header("x-cache"), Some("hit"));
    assert_eq!(from_redis.url(), first.url());
    assert_eq!(b.console("bob", LINUX).await.header("x-cache"), Some("hit"));
    let scrape = b.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_cache_requests_total{outcome="shared_hit"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&scrape, r#"bmsgw_cache_requests_total{outcome="hit"}"#),
        1.0
    );

    // Five seconds later on b's clock its local copy is gone (a locally fetched URL would
    // have lived 30 s), so b asks Redis again.
    b.clock.advance(Duration::from_secs(5));
    b.console("bob", LINUX).await;
    let scrape = b.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_cache_requests_total{outcome="shared_hit"}"#
        ),
        2.0
    );
    assert_eq!(sim.stats().remote_console_ok, 1);
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn a_value_sealed_under_another_key_is_replaced_not_served() {
    let prefix = redis_server::unique_prefix("rekey");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let a = Harness::start(cache_replica_config(
        &prefix,
        &sim.endpoint(),
        &encryption_key_file(),
    ))
    .await;
    let other_key = redis_server::temp_file(
        "other-key",
        b"a-completely-different-key-material-0123456789",
    );
    let b = Harness::start(cache_replica_config(
        &prefix,
        &sim.endpoint(),
        &format!("file:{}", other_key.display()),
    ))
    .await;
    let first = a.console("alice", LINUX).await;
    let second = b.console("alice", LINUX).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("miss"));
    assert_ne!(second.url(), first.url());
    assert_eq!(sim.stats().remote_console_ok, 2);
    let scrape = b.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_redis_errors_total{kind="decode"}"#),
        1.0
    );
    assert_eq!(
        metric(&scrape, "bmsgw_redis_fallback_active"),
        0.0,
        "Redis itself is fine"
    );
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn no_cache_on_one_replica_replaces_the_url_every_replica_serves() {
    let prefix = redis_server::unique_prefix("nocache");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let key_file = encryption_key_file();
    let a = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let b = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let first = a.console("alice", LINUX).await;

    let token = b.token("bob");
    let forced = b
        .post(
            &console_path(PROJECT, LINUX),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cache-control", "no-cache"),
            ],
            BODY,
        )
        .await;
    assert_eq!(forced.status, 200);
    assert_eq!(forced.header("x-cache"), Some("miss"));
    assert_ne!(forced.url(), first.url());
    assert_eq!(sim.stats().remote_console_ok, 2);

    // A replica without a local copy now gets the replacement from Redis.
    let c = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    let reply = c.console("carol", LINUX).await;
    assert_eq!(reply.header("x-cache"), Some("hit"));
    assert_eq!(reply.url(), forced.url());
    assert_eq!(sim.stats().remote_console_ok, 2);
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

/// The Redis keys of the demo Linux server's shared URL and its fetch lock.
fn url_keys(prefix: &str) -> (String, String) {
    let digest =
        bms_console_gateway::shared::store::digest(&format!("{PROJECT}|{LINUX}|serial|serial|"));
    let value = format!("{prefix}url:{{{digest}}}");
    (value.clone(), format!("{value}:lock"))
}

async fn cache_reads(h: &Harness) -> f64 {
    metric(
        &h.metrics().await,
        r#"bmsgw_redis_command_duration_seconds_count{command="cache_read"}"#,
    )
}

#[tokio::test]
async fn a_replica_waits_for_the_fetch_another_replica_holds_the_lock_for() {
    let prefix = redis_server::unique_prefix("waiter");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let key_file = encryption_key_file();
    let h = Harness::start(cache_replica_config(&prefix, &sim.endpoint(), &key_file)).await;
    // Another replica holds the lock: it is calling the cloud.
    let (value_key, lock_key) = url_keys(&prefix);
    let mut conn = redis_server::connect(SHARED_REDIS).await;
    let _: () = redis::cmd("SET")
        .arg(&lock_key)
        .arg("other-replica")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    let waiting = tokio::spawn({
        let client = h.client.clone();
        let url = format!("{}{}", h.gateway.public_url(), console_path(PROJECT, LINUX));
        let auth = format!("Bearer {}", h.token("alice"));
        async move {
            send(
                &client,
                http::Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                BODY.to_string(),
            )
            .await
        }
    });
    // Once this replica has looked (and found the lock), the other replica's URL arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache_reads(&h).await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never looked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let material = std::fs::read_to_string(key_file.strip_prefix("file:").unwrap()).unwrap();
    let sealer = bms_console_gateway::shared::seal::Sealer::new(
        &bms_console_gateway::secret::Secret::new(material.trim_end()),
    )
    .unwrap();
    let url = "https://console.bms.sim.invalid/serial/?token=fetched-by-the-other-replica";
    let sealed = sealer.seal(
        &value_key,
        serde_json::json!({"url": url, "upstream_request_id": null})
            .to_string()
            .as_bytes(),
    );
    let _: () = redis::cmd("SET")
        .arg(&value_key)
        .arg(sealed)
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&lock_key)
        .query_async(&mut conn)
        .await
        .unwrap();

    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.url(),
        url,
        "the other replica's URL, not one of its own"
    );
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(
        sim.stats().remote_console_ok,
        0,
        "this replica never called the cloud"
    );
    assert_eq!(
        metric(
            &h.metrics().await,
            r#"bmsgw_cache_requests_total{outcome="coalesced"}"#
        ),
        1.0
    );
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

#[tokio::test]
async fn a_lock_left_by_a_replica_that_died_only_delays_the_next_fetch() {
    let prefix = redis_server::unique_prefix("deadlock");
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let h = Harness::start(cache_replica_config(
        &prefix,
        &sim.endpoint(),
        &encryption_key_file(),
    ))
    .await;
    // A replica took the fetch lock and vanished: the URL never comes, the lock expires by
    // itself (here after 300 ms).
    let (_, lock_key) = url_keys(&prefix);
    let mut conn = redis_server::connect(SHARED_REDIS).await;
    let _: () = redis::cmd("SET")
        .arg(&lock_key)
        .arg("a-replica-that-died")
        .arg("PX")
        .arg(300)
        .query_async(&mut conn)
        .await
        .unwrap();

    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-cache"),
        Some("miss"),
        "this replica took over the fetch"
    );
    assert_eq!(sim.stats().remote_console_ok, 1);
    assert!(cache_reads(&h).await >= 2.0, "it waited for the lock first");
    let keys = redis_server::keys(SHARED_REDIS, &prefix).await;
    assert_eq!(
        keys.len(),
        1,
        "the URL is stored and the lock released: {keys:?}"
    );
    assert!(!keys[0].ends_with(":lock"));
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}
