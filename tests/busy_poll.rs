//! Busy polling (`server.busy_poll_us`) through the real binary: off by default; when on, the
//! runtime polls while requests keep coming (counted in `bmsgw_busy_poll_seconds_total` as it
//! goes) and goes back to sleep once they stop, which the kernel's count of the process's CPU
//! time confirms. On several cores (the multi-threaded runtime, a poller per worker) and pinned
//! to one (the current-thread runtime, as the benchmark runs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{
    console, serve_command, serve_command_on_one_core, write_config_file, GatewayProcess,
};
use common::*;
use http::Method;

const SERIES: &str = "bmsgw_busy_poll_seconds_total";

async fn polled_seconds(admin: &str) -> f64 {
    let scrape = send(
        &client(),
        Method::GET,
        &format!("{admin}/metrics"),
        &[],
        String::new(),
    )
    .await;
    metric(&scrape.text(), SERIES)
}

/// User plus system CPU time the kernel has charged to the process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// Sends requests one after another for `length`, and returns the polled seconds of the last
/// scrape made while they came.
async fn requests_for(gateway: &GatewayProcess, length: Duration) -> f64 {
    let started = Instant::now();
    let mut counted = 0.0;
    while started.elapsed() < length {
        assert_eq!(console(&gateway.public, "alice").await.status, 200);
        counted = polled_seconds(&gateway.admin).await;
    }
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_is_off_by_default() {
    let gateway =
        GatewayProcess::serve(&write_config_file("busy-poll-off", &TestConfig::default()));
    // Long enough for a polling gateway to count: it adds its time every 10 ms, and the tests
    // below see it counted within the same stretch of requests.
    assert_eq!(
        requests_for(&gateway, Duration::from_millis(200)).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_runs_while_requests_come_and_stops_when_they_stop() {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    polls_while_requests_come_and_sleeps_after("busy-poll-on", serve_command, workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_single_core_busy_polling_runs_while_requests_come_and_stops_when_they_stop() {
    polls_while_requests_come_and_sleeps_after("busy-poll-one-core", serve_command_on_one_core, 1)
        .await;
}

/// The gateway started by `serve` with busy polling on, whose runtime has `workers` workers
/// (one poller each).
async fn polls_while_requests_come_and_sleeps_after(
    tag: &str,
    serve: impl Fn(&Path) -> Command,
    workers: usize,
) {
    let config = TestConfig {
        // 100 ms: long enough to bridge a busy test machine's slowest gaps between requests.
        extra_server: "busy_poll_us = 100000".into(),
        ..TestConfig::default()
    };
    let gateway = GatewayProcess::serve_command(serve(&write_config_file(tag, &config)));
    assert_eq!(
        polled_seconds(&gateway.admin).await,
        0.0,
        "nothing is polled before the first request"
    );

    // Requests one after another for half a second: the runtime polls all along, and the
    // counter moves while they come, not only once they stop.
    let traffic = Duration::from_millis(500);
    let started = Instant::now();
    assert!(
        requests_for(&gateway, traffic).await > 0.0,
        "no polling counted while requests came"
    );

    // Once the requests stop, the pollers go back to sleep: the counter settles.
    let mut last = polled_seconds(&gateway.admin).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = polled_seconds(&gateway.admin).await;
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still polling 20 s after the last request"
        );
        last = now;
    }
    // At least most of the traffic window (the machine may have been slow to answer some
    // requests, and a gap longer than busy_poll_us ends a stint), and at most the time since
    // the first request for each of the runtime's workers.
    assert!(
        last >= traffic.as_secs_f64() * 0.5,
        "polled {last} s over {traffic:?} of traffic"
    );
    assert!(
        last <= started.elapsed().as_secs_f64() * workers as f64,
        "polled {last} s, more than {workers} workers could in {:?}",
        started.elapsed()
    );

    // And a sleeping runtime costs nothing: over a quiet half second the kernel charges the
    // process a small part of it (a spinning one would be charged most of it).
    let cpu_before = cpu_seconds(gateway.pid());
    let quiet = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds(gateway.pid()) - cpu_before;
    let wall = quiet.elapsed().as_secs_f64();
    assert!(
        cpu < wall * 0.4,
        "{cpu} s of CPU in {wall} s of quiet: the runtime did not go back to sleep"
    );
    assert_eq!(polled_seconds(&gateway.admin).await, last);
}
