//! Mints many JWTs at once, on every core, with the library's `mint`: shared by the load
//! benchmark's token minter (`bench_tokens`) and the soak driver (`soak`). An RS256 signature
//! costs about a millisecond, so tens of thousands of tokens are worth the threads.

use bms_console_gateway::config::Config;
use bms_console_gateway::mint::{mint, MintOptions};

/// Token `i` (0..count) is minted from `options(i)` as if at Unix time `now`, in order.
/// Panics with the library's message when a token does not sign (a bad key is a setup error).
pub fn mint_many(
    config: &Config,
    count: usize,
    now: i64,
    options: impl Fn(usize) -> MintOptions + Sync,
) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let options = &options;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(|i| {
                            mint(config, &options(i), now)
                                .unwrap_or_else(|e| panic!("token {i} does not sign: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("signing thread"))
            .collect()
    })
}
