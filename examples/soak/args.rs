//! The soak command line: how long, how fast, how many users and servers, and the memory bound.

use std::time::Duration;

use clap::Parser;

/// Drives mixed traffic through a real gateway for a fixed time and checks that nothing
/// unexpected happened and that its memory stayed flat.
#[derive(Parser, Debug, Clone)]
#[command(name = "soak")]
pub struct Args {
    /// How long to send: `90`, `60s`, `10m`, `2h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests per second, on a fixed schedule (open loop).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Distinct users, one token each.
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
    /// Linux servers in the simulated project (each a separate cached URL).
    #[arg(long, default_value_t = 1000)]
    pub servers: usize,
    /// Largest allowed growth of the gateway's RSS from the end of warm-up to the end, in MiB.
    #[arg(long, default_value_t = 32)]
    pub rss_growth_mib: u64,
    /// Keep-alive connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Warm-up before the RSS baseline is taken (default: 10% of the duration).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
}

impl Args {
    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or(self.duration / 10)
    }

    /// Requests the schedule holds: `rate` per second for `duration`.
    pub fn total_requests(&self) -> u64 {
        (self.duration.as_secs_f64() * f64::from(self.rate)).round() as u64
    }

    /// Problems with the numbers, before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.rate == 0 || self.users == 0 || self.servers == 0 || self.connections == 0 {
            return Err("--rate, --users, --servers and --connections must be at least 1".into());
        }
        if self.duration < Duration::from_secs(1) {
            return Err("--duration must be at least 1s".into());
        }
        if self.warmup() >= self.duration {
            return Err("--warmup must be shorter than --duration".into());
        }
        Ok(())
    }
}

/// `90` (seconds), `90s`, `15m`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 10m or 2h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_warm_up_defaults_to_a_tenth_and_must_end_before_the_run() {
        let args = Args::parse_from(["soak", "--duration", "10m"]);
        assert_eq!(args.warmup(), Duration::from_secs(60));
        assert_eq!(args.total_requests(), 300_000);
        assert_eq!(args.check(), Ok(()));
        let args = Args::parse_from(["soak", "--duration", "10s", "--warmup", "10s"]);
        assert!(args.check().is_err());
        let args = Args::parse_from(["soak", "--rate", "0"]);
        assert!(args.check().is_err());
    }
}
