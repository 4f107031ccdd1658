//! Mints the tokens the load benchmark (`bench/run`) sends: one JWT per line on stdout.
//!
//! `cargo run --release --example bench_tokens -- CONFIG KEY_PEM KID COUNT USERS`
//!
//! Token `i` is for subject `bench-user-{i % USERS}`, so with COUNT == USERS every user keeps
//! one token, and with COUNT > USERS the same users come back with fresh tokens (a new `jti`
//! each). Signing runs on every core: an RS256 signature costs about a millisecond.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bms_console_gateway::config::Config;
use bms_console_gateway::mint::MintOptions;

#[path = "support/tokens.rs"]
mod tokens;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, key, kid, count, users] = args.as_slice() else {
        eprintln!("usage: bench_tokens CONFIG KEY_PEM KID COUNT USERS");
        std::process::exit(2);
    };
    let config = Config::load(PathBuf::from(config).as_path()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let count: usize = count.parse().expect("COUNT is a number");
    let users: usize = users.parse().expect("USERS is a number");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let tokens = tokens::mint_many(&config, count, now, |i| MintOptions {
        subject: format!("bench-user-{}", i % users),
        issuer_name: None,
        key_file: Some(PathBuf::from(key)),
        kid: Some(kid.clone()),
        lifetime_seconds: 3600,
        claims: vec![("jti".into(), format!("bench-{i}"))],
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for token in tokens {
        writeln!(out, "{token}").expect("stdout");
    }
}
