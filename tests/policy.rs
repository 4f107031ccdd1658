//! The authorization policy through a real server: deny rules win, issuers, subjects and claim
//! values (string, array, space-separated `scope`) select callers, server ids match by prefix
//! glob, and each rule can carry its own rate-limit tier.

mod common;

use bms_console_gateway::clock::Clock;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const PARTNER: &str = "https://partner.test.invalid";

fn config() -> TestConfig {
    TestConfig {
        extra_issuers: r#"
[[auth.issuers]]
name = "partner"
issuer = "https://partner.test.invalid"
audiences = ["bms-console-gateway"]
algorithms = ["ES256"]
pem_keys = [{ kid = "es", alg = "ES256", file = "keys/es256-public.pem" }]
"#
        .into(),
        extra_rate_limit: "[rate_limit.tiers.single]\nrequests_per_second = 0.001\nburst = 1\n"
            .into(),
        policy: format!(
            r#"
[[policy.rules]]
name = "contractors-never"
effect = "deny"
claims = {{ roles = ["contractor"] }}
projects = ["*"]

[[policy.rules]]
name = "ops-everything"
issuers = ["test"]
claims = {{ groups = ["ops"] }}
projects = ["{PROJECT}"]

[[policy.rules]]
name = "scoped-linux-fleet"
claims = {{ scope = ["bms:console"] }}
projects = ["{PROJECT}"]
servers = ["cf2a8b97-*"]

[[policy.rules]]
name = "bot-one-at-a-time"
subjects = ["deploy-bot"]
projects = ["{PROJECT}"]
rate_limit_tier = "single"
"#
        ),
        ..TestConfig::default()
    }
}

async fn call(h: &Harness, claims: &Value, server: &str) -> Reply {
    let token = mint(Algorithm::ES256, claims);
    h.post(
        &console_path(PROJECT, server),
        &[("authorization", &format!("Bearer {token}"))],
        BODY,
    )
    .await
}

fn with(sub: &str, now: i64, extra: Value) -> Value {
    let mut c = claims(sub, now);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn deny_rules_win_and_rules_match_issuers_claims_and_server_globs() {
    let h = Harness::start(config()).await;
    let now = h.clock.unix_seconds();

    // Group in an array claim, from the named issuer: every server of the project.
    let ops = with("olga", now, json!({"groups": ["dev", "ops"]}));
    assert_eq!(call(&h, &ops, WINDOWS).await.status, 400); // allowed; the cloud refuses Windows
    assert_eq!(call(&h, &ops, LINUX).await.status, 200);
    // The same claims from another issuer do not match `issuers = ["test"]`.
    let mut partner_ops = ops.clone();
    partner_ops["iss"] = json!(PARTNER);
    call(&h, &partner_ops, LINUX)
        .await
        .assert_error(403, "BMSGW.0201");

    // An explicit deny beats the allow rule that would grant it (role as a plain string).
    let contractor = with(
        "carl",
        now,
        json!({"groups": ["ops"], "roles": "contractor"}),
    );
    call(&h, &contractor, LINUX)
        .await
        .assert_error(403, "BMSGW.0201");

    // A word of the space-separated scope; the server must match the prefix glob.
    let scoped = with("sam", now, json!({"scope": "openid bms:console profile"}));
    assert_eq!(call(&h, &scoped, LINUX).await.status, 200);
    call(&h, &scoped, WINDOWS)
        .await
        .assert_error(403, "BMSGW.0201");
    let near_miss = with("sam", now, json!({"scope": "openid bms:console:read"}));
    call(&h, &near_miss, LINUX)
        .await
        .assert_error(403, "BMSGW.0201");

    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, "bmsgw_authz_denied_total"), 4.0);
}

#[tokio::test]
async fn a_rule_assigns_its_own_rate_limit_tier() {
    let h = Harness::start(config()).await;
    let now = h.clock.unix_seconds();
    let bot = claims("deploy-bot", now);
    let reply = call(&h, &bot, LINUX).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("ratelimit-limit"), Some("1"));
    call(&h, &bot, LINUX).await.assert_error(429, "APIGW.0308");
    // Others keep the default tier.
    let ops = with("olga", now, json!({"groups": ["ops"]}));
    for _ in 0..3 {
        assert_eq!(call(&h, &ops, LINUX).await.status, 200);
    }
}

#[test]
fn policy_mistakes_are_config_errors() {
    let text = config()
        .render()
        .replace(r#"servers = ["cf2a8b97-*"]"#, r#"servers = ["web-*"]"#)
        .replace(r#"issuers = ["test"]"#, r#"issuers = ["tset"]"#)
        .replace(
            "claims = { roles = [\"contractor\"] }",
            "claims = { roles = [\"contractor\"] }\nrate_limit_tier = \"single\"",
        );
    let err = bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "p.toml")
        .unwrap_err()
        .to_string();
    for expected in [
        "p.toml: policy.rules[2].servers[0]: \"web-*\" is not a server id (UUID), a prefix glob",
        "p.toml: policy.rules[1].issuers[0]: no issuer is named \"tset\"",
        "p.toml: policy.rules[0].rate_limit_tier: a deny rule admits nobody",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
