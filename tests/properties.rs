//! Property tests for the pure cores: for any input the generators can build, the GCRA never
//! admits more than its contract allows, the console-URL cache never serves an entry at or past
//! its TTL, and the signer's output does not depend on header order or a trailing slash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bms_console_gateway::bms::{ConsoleTarget, ConsoleUrl};
use bms_console_gateway::cache::{CacheKey, ConsoleCache, Fetched};
use bms_console_gateway::clock::{Clock, ManualClock};
use bms_console_gateway::config::RateTier;
use bms_console_gateway::ratelimit::gcra::{decide, Quota};
use bms_console_gateway::secret::Secret;
use bms_console_gateway::upstream::signer::{self, SigningRequest};
use proptest::prelude::*;

fn quota() -> impl Strategy<Value = Quota> {
    (1u32..=200, 1u32..=100).prop_map(|(rate, burst)| {
        Quota::from_tier(&RateTier {
            requests_per_second: rate as f64,
            burst,
        })
    })
}

proptest! {
    /// In every window [t_i, t_j] of arrivals, the admitted count is at most
    /// `burst + (t_j - t_i) / emission interval`: the bucket plus what it refilled.
    #[test]
    fn gcra_never_admits_more_than_rate_times_time_plus_burst(
        quota in quota(),
        gaps in prop::collection::vec(0u64..50_000_000, 1..300),
    ) {
        let mut now = 1_000_000_000u64;
        let mut tat = 0u64;
        let mut admitted_at = Vec::new();
        for gap in gaps {
            now += gap;
            let (outcome, next) = decide(tat, now, quota);
            tat = next;
            if outcome.allowed {
                admitted_at.push(now);
            }
            prop_assert!(outcome.remaining <= quota.burst);
        }
        for i in 0..admitted_at.len() {
            for j in i..admitted_at.len() {
                let window = admitted_at[j] - admitted_at[i];
                let allowed = quota.burst as u64 + window / quota.emission_nanos;
                prop_assert!(
                    (j - i + 1) as u64 <= allowed,
                    "{} admitted in {window} ns with {quota:?}", j - i + 1
                );
            }
        }
    }

    /// A refused request never changes the state, and the `Retry-After` it names is honest:
    /// one request arriving that much later is admitted.
    #[test]
    fn gcra_retry_after_is_enough(
        quota in quota(),
    ) {
        let now = 5_000_000_000u64;
        let mut tat = 0;
        loop {
            let (outcome, next) = decide(tat, now, quota);
            if !outcome.allowed {
                prop_assert_eq!(next, tat);
                let later = now + outcome.retry_after_nanos;
                prop_assert!(decide(tat, later, quota).0.allowed);
                break;
            }
            tat = next;
        }
    }
}

fn key(server: usize) -> CacheKey {
    CacheKey {
        target: ConsoleTarget::parse(
            "bbf1946d374b44a0a2a95533562ba954",
            &format!("00000000-0000-4000-8000-{server:012}"),
        )
        .unwrap()
        .key(),
        protocol: "serial",
        kind: "serial",
        user: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the sequence of clock steps and lookups, a URL handed out from the cache was
    /// fetched less than `ttl` ago; a lookup at or past the TTL fetches again.
    #[test]
    fn the_cache_never_serves_an_entry_at_or_past_its_ttl(
        // Small numbers, so that steps often land exactly on the TTL boundary.
        ttl_ms in 1u64..20,
        steps in prop::collection::vec((0u64..30, 0usize..4), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new();
            let cache = ConsoleCache::new(Duration::from_millis(ttl_ms), 1000, clock.clone());
            let fetches = Arc::new(AtomicUsize::new(0));
            for (advance_ms, server) in steps {
                clock.advance(Duration::from_millis(advance_ms));
                let fetched_now = clock.monotonic_nanos();
                let counter = fetches.clone();
                let (result, _) = cache
                    .get_or_fetch(key(server), false, move || async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        // The URL remembers when it was fetched, on the test's clock.
                        Ok(Fetched::new(
                            ConsoleUrl::new(format!("https://c.invalid/?t={fetched_now}")),
                            None,
                        ))
                    })
                    .await;
                let url = result.expect("the fetch never fails here");
                let born: u64 = url.url.expose().rsplit('=').next().unwrap().parse().unwrap();
                let age = clock.monotonic_nanos() - born;
                prop_assert!(age < ttl_ms * 1_000_000, "served a URL {age} ns old, ttl {ttl_ms} ms");
            }
            Ok(())
        })?;
    }
}

fn header_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("x-[a-z]{1,8}", "[ -~]{0,20}", 0..6).prop_map(|extra| {
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                "Host".to_string(),
                "bms.cn-north-4.myhuaweicloud.com".to_string(),
            ),
            ("X-Sdk-Date".to_string(), "20261203T120000Z".to_string()),
        ];
        headers.extend(extra);
        headers
    })
}

fn sign(path: &str, headers: &[(String, String)]) -> String {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = SigningRequest {
        method: "POST",
        path,
        query: &[],
        headers: &pairs,
        body: br#"{"remote_console":{"protocol":"serial","type":"serial"}}"#,
    };
    signer::sign(
        &req,
        "HPUAPROPERTYTEST0001",
        &Secret::new("property-secret"),
    )
    .unwrap()
}

proptest! {
    /// Header order and the case of header names do not change the signature; neither does a
    /// trailing slash on the path (the canonical URI always ends with exactly one).
    #[test]
    fn the_signature_ignores_header_order_name_case_and_a_trailing_slash(
        headers in header_strategy(),
        order in any::<u64>(),
        segments in prop::collection::vec("[a-zA-Z0-9_.~-]{1,12}", 1..5),
    ) {
        let path = format!("/{}", segments.join("/"));
        let reference = sign(&path, &headers);

        let mut shuffled = headers.clone();
        // A reordering chosen by the generated number: a rotation, then maybe a reversal.
        let len = shuffled.len();
        shuffled.rotate_left((order as usize) % len);
        if order % 2 == 1 {
            shuffled.reverse();
        }
        let recased: Vec<(String, String)> = shuffled
            .into_iter()
            .map(|(n, v)| (if order % 3 == 0 { n.to_ascii_uppercase() } else { n.to_ascii_lowercase() }, v))
            .collect();
        prop_assert_eq!(&sign(&path, &recased), &reference);
        prop_assert_eq!(&sign(&format!("{path}/"), &headers), &reference);
    }
}
