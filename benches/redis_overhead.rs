//! What the Redis backends add to a request: a bounded, sequential loop through a real
//! gateway (HTTP over loopback, embedded simulator) with the local backends and with both
//! Redis backends against the Redis on 127.0.0.1:6379, on the cache-hit path and on the
//! cache-miss path. Prints per-request latency percentiles and Redis calls per request (from
//! the gateway's own `bmsgw_redis_command_duration_seconds` counts).
//!
//! Run: `cargo bench --bench redis_overhead` (needs the Redis that `scripts/test` starts).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::redis_server::{self, SHARED_REDIS};
use common::*;

const REQUESTS: usize = 2_000;

fn config(redis: bool, per_user_cache: bool, prefix: &str, key_file: &str) -> TestConfig {
    let mut config = TestConfig {
        rate_per_second: 1_000_000.0,
        burst: 1_000_000,
        cache_scope: if per_user_cache { "per-user" } else { "shared" },
        ..TestConfig::default()
    };
    if redis {
        config.extra_rate_limit = "backend = \"redis\"\n".into();
        config.extra_cache = format!("backend = \"redis\"\nencryption_key = \"{key_file}\"\n");
        // A wide budget: this measures the steady state, and one call delayed past the budget
        // by a busy machine would switch the rest of the run to the fallback (the bench's
        // clock never moves, so it would not probe again).
        config.extra_sections =
            redis_server::redis_section(SHARED_REDIS, prefix, "timeout_ms = 200");
    }
    config
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn scenario(name: &str, redis: bool, misses: bool, key_file: &str) {
    let prefix = redis_server::unique_prefix("bench");
    let h = Harness::start(config(redis, misses, &prefix, key_file)).await;
    // Warm the connection pools and the script cache.
    for i in 0..50 {
        h.console(&format!("warm-{i}"), LINUX).await;
    }
    let before = redis_calls(&h.metrics().await);
    let mut times = Vec::with_capacity(REQUESTS);
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..REQUESTS {
        let sub = if misses {
            format!("user-{i}")
        } else {
            "alice".to_string()
        };
        let start = Instant::now();
        let reply = h.console(&sub, LINUX).await;
        times.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
        if Instant::now() > deadline {
            break;
        }
    }
    let calls = redis_calls(&h.metrics().await) - before;
    let redis_seconds = redis_seconds(&h.metrics().await);
    let fallback = metric(&h.metrics().await, "bmsgw_redis_fallback_active");
    times.sort();
    println!(
        "{name:<20} n={:<5} p50={:>5.0}µs p90={:>5.0}µs p99={:>6.0}µs redis calls/request={:.2} mean redis call={:.0}µs{}",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.90),
        percentile(&times, 0.99),
        calls / times.len() as f64,
        if calls > 0.0 { redis_seconds.1 / redis_seconds.0 * 1e6 } else { 0.0 },
        if fallback > 0.0 {
            "  (FALLBACK ACTIVE)"
        } else {
            ""
        }
    );
    h.gateway.shutdown(Duration::from_secs(1)).await;
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
}

/// (calls, seconds) summed over every command of the Redis latency histogram.
fn redis_seconds(scrape: &str) -> (f64, f64) {
    let sum = |prefix: &str| -> f64 {
        scrape
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        sum("bmsgw_redis_command_duration_seconds_count"),
        sum("bmsgw_redis_command_duration_seconds_sum"),
    )
}

/// Sum of `_count` over every command of the Redis latency histogram.
fn redis_calls(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("bmsgw_redis_command_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = redis_server::temp_file("bench-key", b"bench-only-key-material-0123456789abcdef");
    let key_file = format!("file:{}", key.display());
    runtime.block_on(async {
        scenario("local, cache hit", false, false, &key_file).await;
        scenario("redis, cache hit", true, false, &key_file).await;
        scenario("local, cache miss", false, true, &key_file).await;
        scenario("redis, cache miss", true, true, &key_file).await;
    });
}
