//! Busy polling (`server.busy_poll_us`): while requests keep arriving, the runtime keeps
//! polling its sockets instead of going to sleep between them.
//!
//! A gateway that sleeps whenever it has nothing to do is woken by the kernel for each packet.
//! On a virtual machine that wake-up is slow: the idle virtual CPU was halted (a hypervisor
//! exit), waking it is an inter-processor interrupt (another exit), and by the time it runs
//! again its caches hold someone else's data. A cache hit waits for one such wake-up, a request
//! that goes to the cloud for two (when it arrives and when the cloud answers). On the benchmark
//! machine, with a window longer than the gaps between requests, a cache hit's p50 went from 155
//! to 76 µs at 4,700 requests/s, and one request at a time with the URL cache off from 168 to
//! 100 µs (BENCHMARKS.md, sixth run). HAProxy offers the same trade with its `busy-polling`
//! directive.
//!
//! The price is up to a whole core per worker while traffic flows, so it is off by default,
//! and bounded: one polling task per runtime worker ([`BusyPoll::spawn`]) yields in a loop
//! (tokio then polls the I/O driver with a zero timeout before running it again, instead of
//! sleeping in `epoll_wait`) until no request has arrived for `busy_poll_us`; then it sleeps
//! until the next request. The time spent polling is counted in
//! `bmsgw_busy_poll_seconds_total` as it passes, so an operator sees what it costs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Counter;
use tokio::sync::{watch, Notify};

/// How often a polling task adds its time to the counter, so the metric moves while traffic
/// flows rather than only when it pauses.
const COUNT_EVERY: Duration = Duration::from_millis(10);

/// What the request path and the polling tasks share.
pub struct BusyPoll {
    /// How long polling goes on after the last request arrived.
    window: Duration,
    /// Requests seen so far; a poller compares it between rounds to tell traffic from quiet.
    requests: AtomicU64,
    pollers: Vec<PollerState>,
    seconds: Counter,
}

struct PollerState {
    /// Whether this poller is polling now (a request then need not wake it).
    polling: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Shared state for `pollers` polling tasks (one per runtime worker).
    pub fn new(window: Duration, pollers: usize, seconds: Counter) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window,
            requests: AtomicU64::new(0),
            pollers: (0..pollers.max(1))
                .map(|_| PollerState {
                    polling: AtomicBool::new(false),
                    wake: Notify::new(),
                })
                .collect(),
            seconds,
        })
    }

    /// A request arrived: pollers that went to sleep start polling again.
    pub fn note_request(&self) {
        // SeqCst here and in the poller's last look: of "count the request, then see the poller
        // polling" and "stop polling, then see no new request", one must see the other.
        self.requests.fetch_add(1, Ordering::SeqCst);
        for poller in &self.pollers {
            if !poller.polling.load(Ordering::SeqCst) {
                // A permit is kept if the poller is between deciding to sleep and sleeping.
                poller.wake.notify_one();
            }
        }
    }

    /// Starts the polling tasks on the current runtime; they end when `stopped` turns true.
    pub fn spawn(self: &Arc<Self>, stopped: watch::Receiver<bool>) {
        for index in 0..self.pollers.len() {
            tokio::spawn(self.clone().run(index, stopped.clone()));
        }
    }

    async fn run(self: Arc<Self>, index: usize, mut stopped: watch::Receiver<bool>) {
        let state = &self.pollers[index];
        loop {
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            state.polling.store(true, Ordering::SeqCst);
            let mut seen = self.requests.load(Ordering::SeqCst);
            let mut quiet_since = Instant::now();
            let mut counted_until = quiet_since;
            loop {
                // Back of the queue, behind every task the I/O driver wakes meanwhile: the
                // worker polls its sockets with a zero timeout instead of sleeping.
                tokio::task::yield_now().await;
                let now = Instant::now();
                let stopping = *stopped.borrow();
                let count = self.requests.load(Ordering::Relaxed);
                if count != seen {
                    seen = count;
                    quiet_since = now;
                }
                let done = stopping || now.duration_since(quiet_since) >= self.window;
                if done || now.duration_since(counted_until) >= COUNT_EVERY {
                    self.seconds
                        .inc_by(now.duration_since(counted_until).as_secs_f64());
                    counted_until = now;
                }
                if !done {
                    continue;
                }
                // A request that came after the last look but before this store found the
                // poller still polling and did not wake it: look once more.
                state.polling.store(false, Ordering::SeqCst);
                if stopping || self.requests.load(Ordering::SeqCst) == seen {
                    break;
                }
                state.polling.store(true, Ordering::SeqCst);
            }
        }
    }
}
