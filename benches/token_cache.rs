//! Cost of authenticating a request with and without the verified-token cache.
//!
//! `cargo bench --bench token_cache` (release) or `cargo test --bench token_cache` (a quick
//! debug run). For each algorithm it times `Verifier::verify` on one token, repeated: with the
//! cache off every call checks the signature; with it on, the first call does and the rest are
//! a SHA-256 and a lookup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bms_console_gateway::auth::Verifier;
use bms_console_gateway::clock::SystemClock;
use bms_console_gateway::config::Config;
use bms_console_gateway::telemetry::Metrics;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISSUER: &str = "https://idp.bench.invalid";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys")
}

fn config(cache_entries: u64) -> Config {
    let text = format!(
        r#"
[auth]
token_cache_max_entries = {cache_entries}

[[auth.issuers]]
name = "bench"
issuer = "{ISSUER}"
audiences = ["bms-console-gateway"]
algorithms = ["ES256", "RS256", "EdDSA"]
pem_keys = [
  {{ kid = "es", alg = "ES256", file = "es256-public.pem" }},
  {{ kid = "rs", alg = "RS256", file = "rs256-public.pem" }},
  {{ kid = "ed", alg = "EdDSA", file = "ed25519-public.pem" }},
]

[[accounts]]
name = "bench"
endpoint = "embedded"
projects = ["bbf1946d374b44a0a2a95533562ba954"]
access_key = "env:UNUSED"
secret_key = "env:UNUSED"

[[policy.rules]]
name = "all"
subjects = ["*"]
projects = ["*"]
"#
    );
    Config::from_toml_str(&text, &keys_dir(), "bench.toml").expect("bench config")
}

fn token(alg: Algorithm, now: i64) -> String {
    let (file, kid) = match alg {
        Algorithm::ES256 => ("es256-private.pem", "es"),
        Algorithm::RS256 => ("rs256-private.pem", "rs"),
        _ => ("ed25519-private.pem", "ed"),
    };
    let pem = std::fs::read(keys_dir().join(file)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "bms-console-gateway", "sub": "alice",
        "groups": ["sre-oncall", "dba"], "iat": now, "exp": now + 600,
    });
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let clock = SystemClock::shared();
    let rounds: u32 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("verify one token {rounds} times (per call):");
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let token = token(alg, clock.unix_seconds());
        let mut line = format!("  {alg:?}:");
        for (label, entries) in [("no cache", 0), ("cache", 100_000)] {
            let config = config(entries);
            let verifier = Verifier::from_config(
                &config.auth,
                &config.base_dir,
                clock.clone(),
                Arc::new(Metrics::new(&[])),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..rounds {
                    verifier.verify(&token).await.expect("valid token");
                }
            });
            line.push_str(&format!(" {label} {:?},", started.elapsed() / rounds));
        }
        println!("{}", line.trim_end_matches(','));
    }
}
