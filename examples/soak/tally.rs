//! What the driver saw: answers counted by intent and outcome, and the latency histogram.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::mix::{CacheHeader, Intent, Outcome, OK};

/// Latencies up to a minute are recorded at three significant digits; longer ones (there
/// should be none: requests time out sooner) are clamped to the top.
const MAX_LATENCY_US: u64 = 60_000_000;

pub struct Tally {
    pub counts: BTreeMap<(Intent, Outcome), u64>,
    pub latency_us: Histogram<u64>,
    /// The furthest a request was sent behind its scheduled time.
    pub max_lag: Duration,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            counts: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            max_lag: Duration::ZERO,
        }
    }
}

impl Tally {
    pub fn record(&mut self, intent: Intent, outcome: Outcome, latency: Duration, lag: Duration) {
        *self.counts.entry((intent, outcome)).or_insert(0) += 1;
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency_us.record(us).expect("clamped into range");
        self.max_lag = self.max_lag.max(lag);
    }

    pub fn merge(&mut self, other: Tally) {
        for (key, n) in other.counts {
            *self.counts.entry(key).or_insert(0) += n;
        }
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.max_lag = self.max_lag.max(other.max_lag);
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Answers counted under an intent the outcome does not belong to.
    pub fn unexpected(&self) -> impl Iterator<Item = (&(Intent, Outcome), &u64)> {
        self.counts.iter().filter(|((i, o), _)| !i.accepts(o))
    }

    pub fn unexpected_total(&self) -> u64 {
        self.unexpected().map(|(_, n)| n).sum()
    }

    /// Expected answers by outcome, whatever the intent.
    pub fn expected_by_outcome(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for ((intent, outcome), n) in &self.counts {
            if intent.accepts(outcome) {
                *by.entry(outcome.to_string()).or_insert(0) += n;
            }
        }
        by
    }

    /// Answers matching `wanted`, over every intent.
    pub fn count(&self, wanted: impl Fn(Intent, u16, &str, Option<CacheHeader>) -> bool) -> u64 {
        self.counts
            .iter()
            .filter_map(|((intent, outcome), n)| match outcome {
                Outcome::Answer {
                    status,
                    code,
                    cache,
                } => wanted(*intent, *status, code, *cache).then_some(*n),
                _ => None,
            })
            .sum()
    }

    /// Requests sent with this intent, whatever came back.
    pub fn sent(&self, intent: Intent) -> u64 {
        self.counts
            .iter()
            .filter(|((i, _), _)| *i == intent)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn ok_200(&self, cache: CacheHeader) -> u64 {
        self.count(|_, s, c, x| s == 200 && c == OK && x == Some(cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_split_expected_from_unexpected_and_merge() {
        let hit = Outcome::Answer {
            status: 200,
            code: OK.into(),
            cache: Some(CacheHeader::Hit),
        };
        let mut a = Tally::default();
        a.record(
            Intent::Normal,
            hit.clone(),
            Duration::from_micros(300),
            Duration::ZERO,
        );
        a.record(
            Intent::NoCache,
            hit.clone(),
            Duration::from_micros(900),
            Duration::ZERO,
        );
        let mut b = Tally::default();
        b.record(
            Intent::Normal,
            hit,
            Duration::from_micros(500),
            Duration::from_millis(3),
        );
        b.record(
            Intent::Normal,
            Outcome::Timeout,
            Duration::from_secs(5),
            Duration::ZERO,
        );
        a.merge(b);
        assert_eq!(a.total(), 4);
        assert_eq!(a.sent(Intent::Normal), 3);
        // A no-cache request answered from the cache is wrong, and so is a timeout.
        assert_eq!(a.unexpected_total(), 2);
        assert_eq!(a.expected_by_outcome()["200 hit"], 2);
        assert_eq!(a.ok_200(CacheHeader::Hit), 3);
        assert_eq!(a.latency_us.len(), 4);
        assert_eq!(a.max_lag, Duration::from_millis(3));
    }
}
