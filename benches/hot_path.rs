//! Micro benchmarks (criterion) of the pieces every request goes through:
//! token verification without and with the verified-token cache, the rate-limit decision
//! (in process, and in Redis when one answers on 127.0.0.1:6379), a console-URL cache hit,
//! request parsing, and the SDK-HMAC-SHA256 signer.
//!
//! `cargo bench --bench hot_path` (add `-- NAME` to run one group). The whole-request numbers
//! and the comparison with HAProxy come from the load benchmark, `bench/run`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use bms_console_gateway::bms::{self, ConsoleTarget, ConsoleUrl, RouteMatch};
use bms_console_gateway::cache::{CacheKey, Fetched};
use bms_console_gateway::clock::SystemClock;
use bms_console_gateway::config::Config;
use bms_console_gateway::secret::Secret;
use bms_console_gateway::state::Gateway;
use bms_console_gateway::upstream::signer::{self, SigningRequest};
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISSUER: &str = "https://idp.bench.invalid";
const PROJECT: &str = "bbf1946d374b44a0a2a95533562ba954";
const SERVER: &str = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b";
const BODY: &[u8] = br#"{"remote_console":{"protocol":"serial","type":"serial"}}"#;

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys")
}

/// A gateway config; `extra` goes at the end (e.g. a `[redis]` section).
fn config(token_cache_entries: u64, rate_limit_backend: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[auth]
token_cache_max_entries = {token_cache_entries}

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

[rate_limit]
backend = "{rate_limit_backend}"
requests_per_second = 1000000
burst = 1000000

[[accounts]]
name = "bench"
endpoint = "embedded"
projects = ["{PROJECT}"]
access_key = "env:BMSGW_BENCH_UNUSED"
secret_key = "env:BMSGW_BENCH_UNUSED"

[[policy.rules]]
name = "all"
subjects = ["*"]
projects = ["*"]

{extra}
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
        "groups": ["sre-oncall", "dba"], "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn build(rt: &tokio::runtime::Runtime, config: &Config) -> Gateway {
    std::env::set_var("BMSGW_BENCH_UNUSED", "unused");
    rt.block_on(Gateway::build(config, SystemClock::shared(), None))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn verification(c: &mut Criterion) {
    let rt = runtime();
    let cold = build(&rt, &config(0, "local", ""));
    let cached = build(&rt, &config(100_000, "local", ""));
    let now = SystemClock::shared().unix_seconds();
    let mut group = c.benchmark_group("jwt_verify");
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let token = token(alg, now);
        group.bench_function(format!("{alg:?}/signature_checked"), |b| {
            b.iter(|| {
                rt.block_on(cold.verifier.verify(black_box(&token)))
                    .unwrap()
            })
        });
        group.bench_function(format!("{alg:?}/cached"), |b| {
            b.iter(|| {
                rt.block_on(cached.verifier.verify(black_box(&token)))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let rt = runtime();
    let gateway = build(&rt, &config(0, "local", ""));
    let quota = gateway.quota_for(None);
    let mut group = c.benchmark_group("rate_limit");
    group.bench_function("local", |b| {
        b.iter(|| rt.block_on(gateway.limiter.check(black_box("bench/alice"), quota)))
    });
    if std::net::TcpStream::connect("127.0.0.1:6379").is_ok() {
        let prefix = format!("bmsgw-bench:{}:", std::process::id());
        let redis = build(
            &rt,
            &config(
                0,
                "redis",
                &format!(
                    "[redis]\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 1000\n"
                ),
            ),
        );
        if let Some(store) = &redis.redis {
            rt.block_on(store.warm_up());
        }
        group.bench_function("redis", |b| {
            b.iter(|| rt.block_on(redis.limiter.check(black_box("bench/alice"), quota)))
        });
    } else {
        eprintln!("rate_limit/redis skipped: nothing answers on 127.0.0.1:6379");
    }
    group.finish();
}

fn cache_lookup(c: &mut Criterion) {
    let rt = runtime();
    let gateway = build(&rt, &config(0, "local", ""));
    let key = CacheKey {
        target: ConsoleTarget::parse(PROJECT, SERVER).unwrap().key(),
        protocol: "serial",
        kind: "serial",
        user: None,
    };
    let fetch = || async {
        Ok(Fetched::new(
            ConsoleUrl::new("https://console.bench.invalid/serial/?token=t".into()),
            None,
        ))
    };
    rt.block_on(gateway.cache.get_or_fetch(key.clone(), false, fetch))
        .0
        .unwrap();
    c.bench_function("cache/hit", |b| {
        b.iter(|| {
            rt.block_on(
                gateway
                    .cache
                    .get_or_fetch(black_box(key.clone()), false, fetch),
            )
        })
    });
}

fn parsing(c: &mut Criterion) {
    let path = format!("/v1/{PROJECT}/baremetalservers/{SERVER}/remote_console");
    c.bench_function("parse/route_and_body", |b| {
        b.iter(|| {
            let RouteMatch::RemoteConsole(target) = bms::match_route(black_box(&path)) else {
                panic!("the route matches");
            };
            (
                target.unwrap(),
                bms::parse_request_body(black_box(BODY)).unwrap(),
            )
        })
    });
}

fn signing(c: &mut Criterion) {
    let secret = Secret::new("bench-secret-key-not-a-real-one");
    let path = format!("/v1/{PROJECT}/baremetalservers/{SERVER}/remote_console");
    let headers = [
        ("Content-Type", "application/json"),
        ("Host", "bms.cn-north-4.myhuaweicloud.com"),
        ("X-Project-Id", PROJECT),
        ("X-Sdk-Date", "20261203T120000Z"),
    ];
    c.bench_function("signer/sign", |b| {
        b.iter(|| {
            let req = SigningRequest {
                method: "POST",
                path: &path,
                query: &[],
                headers: &headers,
                body: BODY,
            };
            signer::sign(black_box(&req), "HPUABENCHAK00000001", &secret).unwrap()
        })
    });
}

criterion_group!(
    hot_path,
    verification,
    rate_limit,
    cache_lookup,
    parsing,
    signing
);
criterion_main!(hot_path);
