//! The end-of-run cross-checks: the gateway's `/metrics` and the simulator's `/sim/stats`
//! must count exactly what the driver saw, so a request lost or double-counted anywhere
//! (driver, gateway, audit writer, upstream) fails the soak; and the hot users' admissions
//! must stay within what their GCRA tier allows.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::mix::{CacheHeader, Intent, OK};
use crate::tally::Tally;
use crate::world::Limits;

/// One comparison, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

impl Check {
    fn equal(name: &str, driver: u64, gateway: f64) -> Check {
        Check {
            name: name.into(),
            expected: driver.to_string(),
            actual: gateway.to_string(),
            ok: gateway == driver as f64,
        }
    }

    fn at_most(name: &str, bound: u64, actual: u64) -> Check {
        Check {
            name: name.into(),
            expected: format!("<= {bound}"),
            actual: actual.to_string(),
            ok: actual <= bound,
        }
    }
}

/// A Prometheus text scrape, as `(name, labels) → value`.
pub struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
                    None => (series, BTreeMap::new()),
                };
                Some((name.to_string(), labels, value))
            })
            .collect();
        Scrape(series)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, have, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            // A fold from +0.0: an empty `sum` of floats is -0.0, which prints as "-0".
            .fold(0.0, |total, (_, _, v)| total + v)
    }
}

/// `a="x",b="y"` (our label values hold no quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// What the driver counted, in the terms the gateway's metrics use.
pub struct Seen {
    pub ok: u64,
    pub ok_hit: u64,
    pub ok_miss: u64,
    pub console_4xx: u64,
    pub other_4xx: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub rate_limited: u64,
    pub negative_hit: u64,
    pub negative_miss: u64,
    /// Answers to requests that named a caller: everything but 401s and the unrouted path.
    pub authenticated: u64,
    pub hot_admitted: u64,
}

impl Seen {
    pub fn from(tally: &Tally) -> Seen {
        let negative = |s: u16, c: &str| s == 400 && c.starts_with("BMS.");
        let unrouted = |c: &str| c == "APIGW.0101";
        let answers = tally.count(|_, _, _, _| true);
        let unauthorized = tally.count(|_, s, _, _| s == 401);
        let other_4xx = tally.count(|_, s, c, _| (400..500).contains(&s) && unrouted(c));
        Seen {
            ok: tally.count(|_, s, _, _| s == 200),
            ok_hit: tally.ok_200(CacheHeader::Hit),
            ok_miss: tally.ok_200(CacheHeader::Miss),
            console_4xx: tally.count(|_, s, c, _| (400..500).contains(&s) && !unrouted(c)),
            other_4xx,
            server_errors: tally.count(|_, s, _, _| s >= 500),
            unauthorized,
            forbidden: tally.count(|_, s, _, _| s == 403),
            rate_limited: tally.count(|_, s, _, _| s == 429),
            negative_hit: tally.count(|_, s, c, x| negative(s, c) && x == Some(CacheHeader::Hit)),
            negative_miss: tally.count(|_, s, c, x| negative(s, c) && x == Some(CacheHeader::Miss)),
            authenticated: answers - unauthorized - other_4xx,
            hot_admitted: tally.count(|i, s, c, _| i == Intent::HotUser && s == 200 && c == OK),
        }
    }
}

/// Compares the gateway's counters (and the simulator's) with what the driver saw.
pub fn compare(seen: &Seen, gateway: &Scrape, simulator_calls: u64) -> Vec<Check> {
    let console = |class: &str| {
        gateway.sum(
            "bmsgw_http_requests_total",
            &[("route", "remote_console"), ("status_class", class)],
        )
    };
    let cache = |outcome: &str| gateway.sum("bmsgw_cache_requests_total", &[("outcome", outcome)]);
    let upstream_calls = gateway.sum("bmsgw_upstream_requests_total", &[]);
    vec![
        Check::equal(
            "200 answers (http_requests_total 2xx)",
            seen.ok,
            console("2xx"),
        ),
        Check::equal(
            "4xx answers on the API route",
            seen.console_4xx,
            console("4xx"),
        ),
        Check::equal(
            "404 answers off the API route",
            seen.other_4xx,
            gateway.sum("bmsgw_http_requests_total", &[("route", "other")]),
        ),
        Check::equal(
            "5xx answers",
            seen.server_errors,
            gateway.sum("bmsgw_http_requests_total", &[("status_class", "5xx")]),
        ),
        Check::equal(
            "401 answers (auth_failures_total)",
            seen.unauthorized,
            gateway.sum("bmsgw_auth_failures_total", &[]),
        ),
        Check::equal(
            "403 answers (authz_denied_total)",
            seen.forbidden,
            gateway.sum("bmsgw_authz_denied_total", &[]),
        ),
        Check::equal(
            "429 answers (rate_limited_total)",
            seen.rate_limited,
            gateway.sum("bmsgw_rate_limited_total", &[]),
        ),
        Check::equal(
            "console URLs issued",
            seen.ok,
            gateway.sum("bmsgw_console_urls_issued_total", &[]),
        ),
        Check::equal(
            "X-Cache: hit on 200s (cache hit)",
            seen.ok_hit,
            cache("hit"),
        ),
        Check::equal(
            "X-Cache: miss (cache miss + coalesced)",
            seen.ok_miss + seen.negative_miss,
            cache("miss") + cache("coalesced"),
        ),
        Check::equal(
            "BMS.0395/BMS.0040 from memory (negative_cache_hits_total)",
            seen.negative_hit,
            gateway.sum("bmsgw_negative_cache_hits_total", &[]),
        ),
        Check::equal(
            "calls the simulator counted = upstream_requests_total",
            simulator_calls,
            upstream_calls,
        ),
        Check::equal(
            "calls the simulator counted = cache misses",
            simulator_calls,
            cache("miss"),
        ),
        Check::equal(
            "upstream_errors_total",
            0,
            gateway.sum("bmsgw_upstream_errors_total", &[]),
        ),
        Check::equal(
            "audit records written",
            seen.authenticated,
            gateway.sum("bmsgw_audit_records_total", &[("result", "written")]),
        ),
        Check::equal(
            "audit records dropped or failed",
            0,
            gateway.sum("bmsgw_audit_records_total", &[("result", "dropped")])
                + gateway.sum("bmsgw_audit_records_total", &[("result", "failed")]),
        ),
    ]
}

/// The GCRA bound on the hot users over the time the schedule ran.
pub fn hot_users_within_their_limit(seen: &Seen, limits: &Limits, elapsed: Duration) -> Check {
    Check::at_most(
        "hot users admitted (burst + rate x time each)",
        limits.hot_admissions_at_most(elapsed),
        seen.hot_admitted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Outcome;

    const SCRAPE: &str = r#"# HELP bmsgw_http_requests_total Requests answered.
# TYPE bmsgw_http_requests_total counter
bmsgw_http_requests_total{route="remote_console",status_class="2xx"} 3
bmsgw_http_requests_total{route="remote_console",status_class="4xx"} 1
bmsgw_http_requests_total{route="other",status_class="4xx"} 0
bmsgw_rate_limited_total 1
bmsgw_cache_requests_total{outcome="hit"} 2
bmsgw_cache_requests_total{outcome="miss"} 1
bmsgw_cache_requests_total{outcome="coalesced"} 0
bmsgw_console_urls_issued_total 3
bmsgw_upstream_requests_total{account="soak",status_class="2xx"} 1
bmsgw_audit_records_total{result="written"} 4
"#;

    fn tally() -> Tally {
        let mut t = Tally::default();
        let answer = |status, code: &str, cache| Outcome::Answer {
            status,
            code: code.into(),
            cache,
        };
        let d = Duration::from_millis(1);
        for cache in [CacheHeader::Hit, CacheHeader::Hit, CacheHeader::Miss] {
            t.record(Intent::Normal, answer(200, OK, Some(cache)), d, d);
        }
        t.record(Intent::HotUser, answer(429, "APIGW.0308", None), d, d);
        t
    }

    #[test]
    fn scrapes_sum_over_matching_labels() {
        let scrape = Scrape::parse(SCRAPE);
        assert_eq!(scrape.sum("bmsgw_http_requests_total", &[]), 4.0);
        assert_eq!(
            scrape.sum("bmsgw_http_requests_total", &[("status_class", "4xx")]),
            1.0
        );
        assert_eq!(scrape.sum("bmsgw_rate_limited_total", &[]), 1.0);
        assert_eq!(scrape.sum("bmsgw_not_there", &[]), 0.0);
    }

    #[test]
    fn counters_that_agree_pass_and_a_lost_request_fails() {
        let seen = Seen::from(&tally());
        let checks = compare(&seen, &Scrape::parse(SCRAPE), 1);
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
        assert!(failed.is_empty(), "{failed:?}");

        // One 429 the gateway never counted: the driver saw a request the gateway did not.
        let lost = SCRAPE.replace("bmsgw_rate_limited_total 1", "bmsgw_rate_limited_total 0");
        let checks = compare(&seen, &Scrape::parse(&lost), 1);
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| &c.name).collect();
        assert_eq!(failed, ["429 answers (rate_limited_total)"]);
    }

    #[test]
    fn hot_users_admitted_past_their_bucket_fail() {
        let limits = Limits {
            user_per_second: 10.0,
            hot_per_second: 1.0,
        };
        let mut seen = Seen::from(&tally());
        seen.hot_admitted = 4 * (5 + 10);
        assert!(hot_users_within_their_limit(&seen, &limits, Duration::from_secs(10)).ok);
        seen.hot_admitted += 1;
        assert!(!hot_users_within_their_limit(&seen, &limits, Duration::from_secs(10)).ok);
    }
}
