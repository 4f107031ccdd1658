//! The soak: runs the real gateway (`serve`, release build) against the real simulator
//! (`simulate`) for a fixed time at a fixed rate with mixed traffic, then checks that every
//! answer was the documented one, that the gateway's and the simulator's counters agree with
//! what was sent, and that the gateway's RSS stayed flat after warm-up. Exits 0 when every
//! check passes, 1 when one fails, 2 when the soak could not run.
//!
//! `./bench/soak [--duration 60s] [--rate 500] [--users 5000] [--servers 1000]
//! [--rss-growth-mib 32] [--connections 16] [--warmup 6s]` (README, "Benchmarks"); the warm-up
//! defaults to the first 10% of the duration.

mod args;
mod client;
mod driver;
mod mix;
mod report;
mod tally;
#[path = "../support/tokens.rs"]
mod tokens;
mod verify;
mod world;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::sync::watch;

use args::Args;
use driver::Schedule;
use mix::Mix;
use report::{Report, Rss};
use verify::{Check, Scrape, Seen};
use world::{rss_bytes, World};

/// How long the counters may take to settle after the last answer (the audit writer is a
/// thread behind a queue).
const SETTLE: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("soak: {e}");
        return ExitCode::from(2);
    }
    let dir = std::env::temp_dir().join(format!("bmsgw-soak-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("soak: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    match soak(&args, &dir).await {
        Ok(true) => {
            let _ = std::fs::remove_dir_all(&dir);
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("soak: FAILED; configs and logs kept in {}", dir.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}; configs and logs kept in {}", dir.display());
            ExitCode::from(2)
        }
    }
}

/// Runs the soak and prints the report; `Ok(passed)`, or why it could not run.
async fn soak(args: &Args, dir: &Path) -> Result<bool, String> {
    let world = World::start(args, dir.to_path_buf()).await?;
    let serving_log_from = log_len(&world.dir);
    let mix = Arc::new(Mix {
        tokens: world.mint_tokens(args)?,
        servers: args.servers,
    });
    let pid = world.gateway.pid();
    let rss_start = rss_bytes(pid).ok_or("cannot read the gateway's RSS")?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "soak: gateway pid {pid} ready at {}, {:.1} MiB resident; sending for {} s",
        world.public,
        rss_start as f64 / (1024.0 * 1024.0),
        args.duration.as_secs()
    );

    let schedule = Arc::new(Schedule::new(
        Instant::now() + Duration::from_millis(100),
        args.rate,
        args.total_requests(),
    ));
    let (stop_sampling, stopped) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(pid, schedule.start, stopped));
    let tally = driver::run(mix, schedule.clone(), world.public, args.connections).await;
    let elapsed = schedule.start.elapsed();
    let _ = stop_sampling.send(true);
    let samples = sampler.await.map_err(|e| e.to_string())?;
    let warmup = args.warmup().as_secs_f64();
    let rss = Rss {
        start: rss_start,
        after_warmup: samples
            .iter()
            .find(|(t, _)| *t >= warmup)
            .map_or(rss_start, |(_, b)| *b),
        end: rss_bytes(pid).ok_or("cannot read the gateway's RSS at the end")?,
        samples,
    };

    let seen = Seen::from(&tally);
    let mut checks = vec![
        Check {
            name: "answers for every scheduled request".into(),
            expected: schedule.total.to_string(),
            actual: tally.total().to_string(),
            ok: tally.total() == schedule.total,
        },
        Check {
            name: "unexpected outcomes".into(),
            expected: "0".into(),
            actual: tally.unexpected_total().to_string(),
            ok: tally.unexpected_total() == 0,
        },
        rss.check(args.rss_growth_mib),
        verify::hot_users_within_their_limit(&seen, &world.limits, elapsed),
    ];
    checks.extend(settled_counters(&world, &seen).await?);

    let World {
        gateway, simulator, ..
    } = world;
    let exit = gateway.stop(Duration::from_secs(30));
    checks.push(Check {
        name: "gateway exit after SIGTERM".into(),
        expected: "exit status 0".into(),
        actual: match &exit {
            Ok(status) => status.to_string(),
            Err(e) => e.clone(),
        },
        ok: exit.is_ok_and(|s| s.success()),
    });
    let _ = simulator.stop(Duration::from_secs(10));
    let (warnings, errors) = scan_log(dir, serving_log_from);
    checks.push(Check {
        name: "ERROR lines or panics in the gateway's log".into(),
        expected: "0".into(),
        actual: errors.len().to_string(),
        ok: errors.is_empty(),
    });
    for e in errors.iter().take(5) {
        eprintln!("gateway log: {e}");
    }

    let report = Report {
        args,
        started_unix,
        scheduled: schedule.total,
        elapsed,
        tally: &tally,
        rss: &rss,
        checks,
        warnings,
    };
    print!("{}", report.human());
    println!("SOAK-JSON {}", report.json());
    Ok(report.passed())
}

/// The counter checks, retried until they agree or [`SETTLE`] has passed (the last
/// comparison is what is reported).
async fn settled_counters(world: &World, seen: &Seen) -> Result<Vec<Check>, String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, metrics) = client::get(world.admin, "/metrics").await?;
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        let (_, stats) = client::get(world.simulator_addr, "/sim/stats").await?;
        let stats: serde_json::Value =
            serde_json::from_str(&stats).map_err(|e| format!("/sim/stats: {e}"))?;
        let calls = stats["requests_total"]
            .as_u64()
            .ok_or("/sim/stats has no requests_total")?;
        let checks = verify::compare(seen, &Scrape::parse(&metrics), calls);
        if checks.iter().all(|c| c.ok) || Instant::now() > deadline {
            return Ok(checks);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gateway's RSS about once a second until told to stop.
async fn sample_rss(pid: u32, start: Instant, mut stop: watch::Receiver<bool>) -> Vec<(f64, u64)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start.into(), Duration::from_secs(1));
    // A tick the busy runtime ran late is not made up with a burst of samples.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(bytes) = rss_bytes(pid) {
                    samples.push((start.elapsed().as_secs_f64(), bytes));
                }
            }
            _ = stop.changed() => return samples,
        }
    }
}

fn gateway_log(dir: &Path) -> PathBuf {
    dir.join("gateway.log")
}

fn log_len(dir: &Path) -> usize {
    std::fs::metadata(gateway_log(dir)).map_or(0, |m| m.len() as usize)
}

/// The gateway's WARN lines after `from` (start-up warnings are about the config, not the
/// soak) and its ERROR or panic lines anywhere.
fn scan_log(dir: &Path, from: usize) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(gateway_log(dir)).unwrap_or_default();
    let errors = text
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#) || l.contains("panicked"))
        .map(str::to_string)
        .collect();
    let warnings = text
        .get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#))
        .map(str::to_string)
        .collect();
    (warnings, errors)
}
