//! The soak's result: every check with its verdict, the outcome counts, latency, throughput
//! and the gateway's RSS, printed for people and as one `SOAK-JSON {...}` line for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::Args;
use crate::mix::Intent;
use crate::tally::Tally;
use crate::verify::Check;

const MIB: f64 = 1024.0 * 1024.0;

/// The gateway's resident memory over the run.
pub struct Rss {
    pub start: u64,
    pub after_warmup: u64,
    pub end: u64,
    /// `(seconds since the schedule started, bytes)`, about one a second.
    pub samples: Vec<(f64, u64)>,
}

impl Rss {
    pub fn peak(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, b)| *b)
            .chain([self.start, self.after_warmup, self.end])
            .max()
            .unwrap_or(0)
    }

    /// Signed growth from the end of warm-up to the end, in MiB.
    pub fn growth_mib(&self) -> f64 {
        (self.end as f64 - self.after_warmup as f64) / MIB
    }

    /// One sample at each tenth of the run, to show the trend.
    fn deciles(&self) -> Vec<(f64, u64)> {
        let Some(&(last, _)) = self.samples.last() else {
            return vec![];
        };
        (1..=10)
            .filter_map(|d| {
                let t = last * f64::from(d) / 10.0;
                self.samples.iter().find(|(s, _)| *s >= t).copied()
            })
            .collect()
    }

    pub fn check(&self, bound_mib: u64) -> Check {
        Check {
            name: "gateway RSS growth after warm-up (MiB)".into(),
            expected: format!("<= {bound_mib}"),
            actual: format!("{:.1}", self.growth_mib()),
            ok: self.growth_mib() <= bound_mib as f64,
        }
    }
}

pub struct Report<'a> {
    pub args: &'a Args,
    pub started_unix: u64,
    pub scheduled: u64,
    pub elapsed: Duration,
    pub tally: &'a Tally,
    pub rss: &'a Rss,
    pub checks: Vec<Check>,
    /// WARN lines the gateway logged while serving (reported, not failed on).
    pub warnings: Vec<String>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report<'_> {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn throughput(&self) -> f64 {
        self.tally.total() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn human(&self) -> String {
        let (a, t, r) = (self.args, self.tally, self.rss);
        let h = &t.latency_us;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: {} s at {} req/s ({} requests), {} users, {} servers, {} connections, warm-up {:.1} s",
            a.duration.as_secs(),
            a.rate,
            self.scheduled,
            a.users,
            a.servers,
            a.connections,
            a.warmup().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "answered {} in {:.1} s: {:.1} req/s",
            t.total(),
            self.elapsed.as_secs_f64(),
            self.throughput()
        );
        let sent: Vec<String> = Intent::ALL
            .iter()
            .map(|i| format!("{} {}", i.label(), t.sent(*i)))
            .collect();
        let _ = writeln!(out, "sent by intent: {}", sent.join(", "));
        let _ = writeln!(out, "expected outcomes:");
        for (outcome, n) in t.expected_by_outcome() {
            let _ = writeln!(out, "  {outcome:<24} {n:>10}");
        }
        let _ = writeln!(out, "unexpected outcomes: {}", t.unexpected_total());
        for ((intent, outcome), n) in t.unexpected() {
            let _ = writeln!(out, "  {} -> {outcome}: {n}", intent.label());
        }
        let _ = writeln!(
            out,
            "latency from the scheduled send: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms \
             (the driver ran at most {:.1} ms behind schedule)",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            t.max_lag.as_secs_f64() * 1000.0
        );
        let _ = writeln!(
            out,
            "gateway RSS: start {:.1} MiB, after warm-up {:.1} MiB, end {:.1} MiB, peak {:.1} MiB \
             (growth after warm-up {:+.1} MiB, bound {} MiB)",
            mib(r.start),
            mib(r.after_warmup),
            mib(r.end),
            mib(r.peak()),
            r.growth_mib(),
            a.rss_growth_mib
        );
        let trend: Vec<String> = r
            .deciles()
            .iter()
            .map(|(s, b)| format!("{s:.1}s {:.1}", mib(*b)))
            .collect();
        let _ = writeln!(out, "RSS at each tenth (MiB): {}", trend.join(", "));
        let _ = writeln!(out, "checks:");
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark} {}: expected {}, got {}",
                c.name, c.expected, c.actual
            );
        }
        let _ = writeln!(
            out,
            "gateway warnings while serving: {}",
            self.warnings.len()
        );
        for w in self.warnings.iter().take(5) {
            let _ = writeln!(out, "  {w}");
        }
        let _ = writeln!(out, "{}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }

    pub fn json(&self) -> Value {
        let (a, t, r) = (self.args, self.tally, self.rss);
        let h = &t.latency_us;
        let unexpected: Vec<Value> = t
            .unexpected()
            .map(|((i, o), n)| json!({"intent": i.label(), "outcome": o.to_string(), "count": n}))
            .collect();
        json!({
            "passed": self.passed(),
            "started_unix": self.started_unix,
            "duration_s": a.duration.as_secs(),
            "rate": a.rate,
            "users": a.users,
            "servers": a.servers,
            "connections": a.connections,
            "warmup_s": a.warmup().as_secs_f64(),
            "scheduled": self.scheduled,
            "answered": t.total(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_rps": self.throughput(),
            "sent": Intent::ALL.iter().map(|i| (i.label(), t.sent(*i))).collect::<BTreeMap<_, _>>(),
            "expected": t.expected_by_outcome(),
            "unexpected": unexpected,
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
            "max_schedule_lag_ms": t.max_lag.as_secs_f64() * 1000.0,
            "rss_mib": {
                "start": mib(r.start),
                "after_warmup": mib(r.after_warmup),
                "end": mib(r.end),
                "peak": mib(r.peak()),
                "growth_after_warmup": r.growth_mib(),
                "bound": a.rss_growth_mib,
            },
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name, "expected": c.expected, "actual": c.actual, "ok": c.ok,
            })).collect::<Vec<_>>(),
            "gateway_warnings": self.warnings.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_is_measured_from_the_end_of_warm_up() {
        let rss = Rss {
            start: 10 << 20,
            after_warmup: 20 << 20,
            end: 53 << 20,
            samples: (0..=100)
                .map(|s| (f64::from(s), (20 + s as u64 / 3) << 20))
                .collect(),
        };
        assert_eq!(rss.growth_mib(), 33.0);
        assert!(!rss.check(32).ok);
        assert!(rss.check(33).ok);
        assert_eq!(rss.peak(), 53 << 20);
        let deciles = rss.deciles();
        assert_eq!(deciles.len(), 10);
        assert_eq!(deciles[9].0, 100.0);
    }
}
