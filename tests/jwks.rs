//! Keys from an identity provider over HTTPS: a local provider on loopback (real TLS, a test
//! CA) that the tests rotate, take down, slow down and make answer garbage, with every request
//! it sees counted. Time moves on the injected clock.

mod common;

use std::time::Duration;

use bms_console_gateway::clock::Clock;
use common::idp::{Idp, Mode, TestKey, JWKS_PATH};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const IDP_ISSUER: &str = "https://idp.example.test/realms/corp";

fn idp_claims(sub: &str, now: i64) -> Value {
    json!({"iss": IDP_ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

/// An issuer block for `idp`, reached by `jwks_url` (or discovery with `discovery = true` in
/// `extra`, which also sets the issuer to the provider's URL).
fn idp_issuer(name: &str, issuer: &str, idp: &Idp, source: &str, extra: &str) -> String {
    format!(
        r#"
[[auth.issuers]]
name = "{name}"
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
{source}
ca_file = "{ca}"
{extra}
"#,
        ca = idp.ca_file.display()
    )
}

fn with_idp(idp: &Idp, extra: &str) -> TestConfig {
    TestConfig {
        extra_issuers: idp_issuer(
            "idp",
            IDP_ISSUER,
            idp,
            &format!("jwks_url = \"{}\"", idp.jwks_url()),
            extra,
        ),
        ..TestConfig::default()
    }
}

async fn call(h: &Harness, token: &str) -> Reply {
    h.post(
        &console_path(PROJECT, LINUX),
        &[("authorization", &format!("Bearer {token}"))],
        BODY,
    )
    .await
}

fn now(h: &Harness) -> i64 {
    h.clock.unix_seconds()
}

/// Waits until a metric series reaches `at_least` (the gateway updates it after it has acted
/// on the provider's answer, so this is the moment the new state is in use).
async fn await_metric(h: &Harness, series: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = h.metrics().await;
        if scrape.contains(series) && metric(&scrape, series) >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FETCH_OK: &str = r#"bmsgw_jwks_fetches_total{issuer="idp",result="success"}"#;
const FETCH_FAILED: &str = r#"bmsgw_jwks_fetches_total{issuer="idp",result="failure"}"#;

#[tokio::test]
async fn keys_are_fetched_over_https_before_ready_and_every_algorithm_verifies() {
    let es256 = TestKey::es256("es256");
    let es384 = TestKey::es384("es384");
    let rsa = TestKey::rsa("rsa", Algorithm::RS256).without_alg();
    let ed = TestKey::ed25519("ed");
    let idp = Idp::start(&[&es256, &es384, &rsa, &ed]).await;
    let h = Harness::start(with_idp(&idp, "")).await;
    // Fetched once, during start-up: ready means the keys are there.
    assert_eq!(idp.jwks_fetches(), 1);
    let ready = send(
        &client(),
        http::Method::GET,
        &format!("{}/readyz", h.gateway.admin_url()),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(ready.status, 200);

    let mut signers = vec![es256.clone(), es384.clone(), ed.clone()];
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        signers.push(rsa.signing_with(alg));
    }
    for (i, key) in signers.iter().enumerate() {
        let reply = call(&h, &key.sign(&idp_claims(&format!("user{i}"), now(&h)))).await;
        assert_eq!(reply.status, 200, "{:?}: {}", key.alg, reply.text());
    }
    // Known kids never cause a fetch.
    assert_eq!(idp.jwks_fetches(), 1);
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, FETCH_OK), 1.0);
    assert_eq!(metric(&scrape, r#"bmsgw_jwks_keys{issuer="idp"}"#), 4.0);
    assert_eq!(
        metric(&scrape, "bmsgw_token_signature_verifications_total"),
        signers.len() as f64
    );

    // A key published with `alg` verifies only that algorithm: the ES256 key's kid on a token
    // that claims RS256 finds no key, so an EC key never checks an RSA signature.
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("es256".into());
    let rsa_pem = std::fs::read(data_dir().join("keys/rs256-private.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &idp_claims("mallory", now(&h)),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_pem).unwrap(),
    )
    .unwrap();
    call(&h, &token).await.assert_error(401, "APIGW.0301");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="unknown_key"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_token_and_random_kids_refetch_once_per_cooldown() {
    let old = TestKey::es256("2026-01");
    let new = TestKey::es256("2026-02");
    let idp = Idp::start(&[&old]).await;
    let h = Harness::start(with_idp(&idp, "")).await;
    assert_eq!(idp.jwks_fetches(), 1);

    // The provider rotates; the first token naming the new kid makes the gateway look again.
    idp.rotate(&[&old, &new]);
    let reply = call(&h, &new.sign(&idp_claims("alice", now(&h)))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(idp.jwks_fetches(), 2);

    // Unknown kids, some shaped like paths and queries: within the 30 s cool-down none of them
    // causes a fetch.
    let attacker = TestKey::es256("x");
    let hostile_kids = [
        "../../etc/passwd",
        "?kid=1&x=2",
        "%2e%2e%2fkeys",
        "https://evil/jwks",
    ];
    for kid in hostile_kids {
        let mut key = attacker.clone();
        key.kid = kid.into();
        call(&h, &key.sign(&idp_claims("mallory", now(&h))))
            .await
            .assert_error(401, "APIGW.0301");
    }
    assert_eq!(idp.jwks_fetches(), 2, "cool-down holds");

    // After the cool-down, one more unknown kid may refetch, once.
    h.clock.advance(Duration::from_secs(31));
    for n in 0..5 {
        let mut key = attacker.clone();
        key.kid = format!("random-{n}");
        call(&h, &key.sign(&idp_claims("mallory", now(&h))))
            .await
            .assert_error(401, "APIGW.0301");
    }
    assert_eq!(idp.jwks_fetches(), 3);

    // The kid was never used to build a URL: every request went to the configured path.
    let requests = idp.requests();
    assert!(
        requests.iter().all(|r| r == JWKS_PATH),
        "unexpected requests: {requests:?}"
    );
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="unknown_key"}"#
        ),
        9.0
    );
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let key = TestKey::es256("k1");
    let idp = Idp::start(&[&key]).await;
    let h = std::sync::Arc::new(Harness::start(with_idp(&idp, "")).await);
    idp.set_mode(Mode::Slow);
    let attacker = TestKey::es256("x");
    let mut calls = Vec::new();
    for n in 0..50 {
        let h = h.clone();
        let mut key = attacker.clone();
        key.kid = format!("storm-{n}");
        calls.push(tokio::spawn(async move {
            call(&h, &key.sign(&idp_claims("mallory", now(&h))))
                .await
                .status
        }));
    }
    // One request reaches the (slow) provider; release it once it has.
    idp.wait_until("a held JWKS request", |idp| idp.requests().len() == 2)
        .await;
    idp.set_mode(Mode::Normal);
    idp.release();
    for c in calls {
        assert_eq!(c.await.unwrap(), 401);
    }
    assert_eq!(
        idp.requests().len(),
        2,
        "start-up fetch plus one: {:?}",
        idp.requests()
    );
}

#[tokio::test]
async fn the_last_good_keys_stay_in_use_while_the_provider_is_down_slow_or_garbled() {
    let first = TestKey::es256("first");
    let second = TestKey::es256("second");
    let idp = Idp::start(&[&first]).await;
    idp.set_max_age(Some(120));
    let h = Harness::start(with_idp(
        &idp,
        "jwks_refresh_seconds = 300\njwks_min_refresh_seconds = 60\njwks_timeout_ms = 500",
    ))
    .await;
    let token = first.sign(&idp_claims("alice", now(&h)));
    assert_eq!(call(&h, &token).await.status, 200);

    // The answer said max-age=120 (below the 300 s interval): the refresh comes at 120 s.
    idp.set_mode(Mode::Down);
    h.clock.advance(Duration::from_secs(121));
    await_metric(&h, FETCH_FAILED, 1.0).await;
    assert_eq!(call(&h, &token).await.status, 200, "down: last good keys");

    // After a failure the gateway retries after the minimum interval.
    idp.set_mode(Mode::Garbage);
    h.clock.advance(Duration::from_secs(61));
    await_metric(&h, FETCH_FAILED, 2.0).await;
    let fresh = first.sign(&idp_claims("bob", now(&h)));
    assert_eq!(
        call(&h, &fresh).await.status,
        200,
        "garbage: last good keys"
    );

    idp.set_mode(Mode::Slow);
    h.clock.advance(Duration::from_secs(61));
    await_metric(&h, FETCH_FAILED, 3.0).await; // the 500 ms fetch deadline passed
    idp.set_mode(Mode::Normal);
    idp.release();
    assert_eq!(call(&h, &token).await.status, 200, "slow: last good keys");
    let scrape = h.metrics().await;
    assert!(metric(&scrape, r#"bmsgw_jwks_key_set_age_seconds{issuer="idp"}"#) >= 243.0);
    assert_eq!(metric(&scrape, FETCH_OK), 1.0);

    // Back up, with the first key rotated out: its tokens (even one verified and cached
    // before) are refused, the new key's are accepted.
    idp.rotate(&[&second]);
    h.clock.advance(Duration::from_secs(61));
    await_metric(&h, FETCH_OK, 2.0).await;
    call(&h, &token).await.assert_error(401, "APIGW.0301");
    let reply = call(&h, &second.sign(&idp_claims("alice", now(&h)))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let scrape = h.metrics().await;
    assert!(metric(&scrape, r#"bmsgw_jwks_key_set_age_seconds{issuer="idp"}"#) < 5.0);
}

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_and_several_issuers_work_at_once() {
    let a = TestKey::es256("a");
    let b = TestKey::rsa("b", Algorithm::PS256);
    let discovered = Idp::start(&[&a]).await;
    let by_url = Idp::start(&[&b]).await;
    let config = TestConfig {
        extra_issuers: format!(
            "{}{}",
            idp_issuer(
                "oidc",
                &discovered.base_url,
                &discovered,
                "discovery = true",
                ""
            ),
            idp_issuer(
                "idp",
                IDP_ISSUER,
                &by_url,
                &format!("jwks_url = \"{}\"", by_url.jwks_url()),
                ""
            )
        ),
        ..TestConfig::default()
    };
    let h = Harness::start(config).await;
    assert_eq!(
        discovered.requests(),
        vec![
            "/.well-known/openid-configuration".to_string(),
            JWKS_PATH.to_string()
        ]
    );
    let mut claims_a = idp_claims("alice", now(&h));
    claims_a["iss"] = json!(discovered.base_url);
    assert_eq!(call(&h, &a.sign(&claims_a)).await.status, 200);
    assert_eq!(
        call(&h, &b.sign(&idp_claims("bob", now(&h)))).await.status,
        200
    );
    // The file-keyed issuer still works beside them.
    assert_eq!(h.console("carol", LINUX).await.status, 200);
    // Each key belongs to its own issuer: `a` cannot sign for the other one.
    call(&h, &a.sign(&idp_claims("mallory", now(&h))))
        .await
        .assert_error(401, "APIGW.0301");
}

#[tokio::test]
async fn the_gateway_does_not_start_without_the_providers_keys() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    idp.set_mode(Mode::Down);
    let config = with_idp(&idp, "").build();
    let err = match bms_console_gateway::server::start(config).await {
        Ok(_) => panic!("started without keys"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("test.toml: auth.issuers[1]: cannot load the identity provider's keys"),
        "{err}"
    );

    // A provider whose certificate the gateway does not trust is as good as down.
    idp.set_mode(Mode::Normal);
    let mut config = with_idp(&idp, "");
    config.extra_issuers = config
        .extra_issuers
        .replace(&format!("ca_file = \"{}\"", idp.ca_file.display()), "");
    assert!(bms_console_gateway::server::start(config.build())
        .await
        .is_err());
}

#[tokio::test]
async fn key_headers_in_the_token_are_never_used_to_find_keys() {
    let trusted = TestKey::es256("trusted");
    let idp = Idp::start(&[&trusted]).await;
    let h = Harness::start(with_idp(&idp, "")).await;
    // The attacker signs with its own key and points at it every way a JWS header can.
    let attacker = TestKey::es256("trusted");
    let evil = format!("{}/attacker-keys", idp.base_url);
    let token = attacker.sign_with_header(
        &[
            ("jku", json!(evil)),
            ("x5u", json!(evil)),
            ("jwk", attacker.jwk.clone()),
        ],
        &idp_claims("mallory", now(&h)),
    );
    call(&h, &token).await.assert_error(401, "APIGW.0301");
    let token = attacker.sign_with_header(
        &[(
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        )],
        &idp_claims("mallory", now(&h)),
    );
    call(&h, &token).await.assert_error(401, "APIGW.0301");
    assert!(
        idp.requests().iter().all(|r| r == JWKS_PATH),
        "{:?}",
        idp.requests()
    );
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="bad_signature"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn dropping_the_gateway_stops_its_refresher() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let h = Harness::start(with_idp(&idp, "")).await;
    assert_eq!(
        idp.open_connections(),
        1,
        "the refresher keeps its connection"
    );
    let Harness { gateway, clock, .. } = h;
    gateway.shutdown(Duration::from_secs(1)).await;
    // Gone with the gateway: the refresher's connection closes and, with time moving far past
    // the refresh interval, nothing fetches again.
    idp.wait_until("the refresher's connection closed", |idp| {
        idp.open_connections() == 0
    })
    .await;
    clock.advance(Duration::from_secs(3600));
    assert_eq!(idp.jwks_fetches(), 1);
}

#[test]
fn remote_key_settings_are_checked_at_load() {
    let block = r#"
[[auth.issuers]]
name = "idp"
issuer = "http://idp.example.test"
audiences = ["bms-console-gateway"]
algorithms = ["ES256"]
jwks_url = "http://idp.example.test/keys"
discovery = true
jwks_refresh_seconds = 30
jwks_min_refresh_seconds = 60
jwks_unknown_kid_cooldown_seconds = 0
"#;
    let text = TestConfig {
        extra_issuers: block.into(),
        ..TestConfig::default()
    }
    .render();
    let err = bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "j.toml")
        .unwrap_err()
        .to_string();
    for expected in [
        "j.toml: auth.issuers[1].discovery: give jwks_url or discovery, not both",
        "j.toml: auth.issuers[1].jwks_url: must be an https:// URL",
        "j.toml: auth.issuers[1].discovery: needs an https:// issuer",
        "j.toml: auth.issuers[1].jwks_min_refresh_seconds: must be above 0 and at most jwks_refresh_seconds",
        "j.toml: auth.issuers[1].jwks_unknown_kid_cooldown_seconds: must be at least 1",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
