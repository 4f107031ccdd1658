//! Authentication and authorization through a real server: every way a token is refused, and
//! the policy's decisions.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

async fn call_with(h: &Harness, token: &str) -> Reply {
    h.post(
        &console_path(PROJECT, LINUX),
        &[("authorization", &format!("Bearer {token}"))],
        BODY,
    )
    .await
}

fn assert_invalid(reply: &Reply) {
    let msg = reply.assert_error(401, "APIGW.0301");
    assert!(msg.ends_with("invalid token"), "{msg}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="bms-console-gateway", error="invalid_token""#)
    );
    assert!(reply.header("ratelimit-limit").is_none());
}

#[tokio::test]
async fn es256_rs256_and_eddsa_tokens_are_accepted() {
    let h = Harness::default().await;
    let now = h_now(&h);
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let reply = call_with(&h, &mint(alg, &claims("alice", now))).await;
        assert_eq!(reply.status, 200, "{alg:?}: {}", reply.text());
    }
}

fn h_now(h: &Harness) -> i64 {
    use bms_console_gateway::clock::Clock;
    h.clock.unix_seconds()
}

#[tokio::test]
async fn missing_token_gets_a_bearer_challenge() {
    let h = Harness::default().await;
    let reply = h.post(&console_path(PROJECT, LINUX), &[], BODY).await;
    let msg = reply.assert_error(401, "APIGW.0301");
    assert!(msg.contains("bearer token required"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="bms-console-gateway""#)
    );
    let reply = h
        .post(
            &console_path(PROJECT, LINUX),
            &[("authorization", "Basic YWxpY2U6cHc=")],
            BODY,
        )
        .await;
    reply.assert_error(401, "APIGW.0301");
}

#[tokio::test]
async fn bad_signature_unknown_key_and_garbage_are_refused() {
    let h = Harness::default().await;
    let now = h_now(&h);
    assert_invalid(&call_with(&h, &mint_with_attacker_key(&claims("alice", now), "es")).await);
    assert_invalid(
        &call_with(
            &h,
            &mint_with_attacker_key(&claims("alice", now), "no-such-kid"),
        )
        .await,
    );
    assert_invalid(&call_with(&h, "not-a-jwt").await);
    assert_invalid(&call_with(&h, "a.b.c").await);
    // A valid token with one flipped signature character.
    let mut token = mint(Algorithm::ES256, &claims("alice", now));
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    assert_invalid(&call_with(&h, &token).await);

    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="bad_signature"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="unknown_key"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&scrape, r#"bmsgw_auth_failures_total{reason="malformed"}"#),
        2.0
    );
}

#[tokio::test]
async fn expiry_and_not_before_honour_the_leeway() {
    let h = Harness::default().await;
    let now = h_now(&h);
    let mut c = claims("alice", now);
    c["exp"] = json!(now - 120);
    let reply = call_with(&h, &mint(Algorithm::ES256, &c)).await;
    let msg = reply.assert_error(401, "APIGW.0301");
    assert!(msg.ends_with("token expired"), "{msg}");

    c["exp"] = json!(now - 30); // within the 60 s leeway
    assert_eq!(call_with(&h, &mint(Algorithm::ES256, &c)).await.status, 200);

    let mut c = claims("alice", now);
    c["nbf"] = json!(now + 120);
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &c)).await);
    c["nbf"] = json!(now + 30);
    assert_eq!(call_with(&h, &mint(Algorithm::ES256, &c)).await.status, 200);

    // Time moves on the injected clock: the same token expires.
    let token = mint(Algorithm::ES256, &claims("bob", now));
    assert_eq!(call_with(&h, &token).await.status, 200);
    h.clock.advance(std::time::Duration::from_secs(300 + 61));
    assert_eq!(call_with(&h, &token).await.status, 401);

    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_auth_failures_total{reason="expired"}"#),
        2.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="not_yet_valid"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn wrong_issuer_and_wrong_audience_are_refused() {
    let h = Harness::default().await;
    let now = h_now(&h);
    let mut c = claims("alice", now);
    c["iss"] = json!("https://evil.invalid");
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &c)).await);
    let mut c = claims("alice", now);
    c["aud"] = json!("some-other-service");
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &c)).await);
    c["aud"] = json!(["x", "other-audience-also-accepted"]);
    assert_eq!(call_with(&h, &mint(Algorithm::ES256, &c)).await.status, 200);
    let mut c = claims("alice", now);
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &c)).await);
}

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused() {
    let h = Harness::default().await;
    let c = claims("alice", h_now(&h));
    for alg in ["none", "None", "NONE", "nOnE"] {
        for sig in [&b""[..], b"sig"] {
            let token = raw_token(&json!({"alg": alg, "typ": "JWT", "kid": "es"}), &c, sig);
            assert_invalid(&call_with(&h, &token).await);
        }
    }
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    let h = Harness::default().await;
    let c = claims("alice", h_now(&h));
    let public_pem = std::fs::read(data_dir().join("keys/es256-public.pem")).unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384] {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some("es".into());
        let token = jsonwebtoken::encode(
            &header,
            &c,
            &jsonwebtoken::EncodingKey::from_secret(&public_pem).unwrap(),
        )
        .unwrap();
        assert_invalid(&call_with(&h, &token).await);
    }
}

#[tokio::test]
async fn malformed_claims_are_refused() {
    let h = Harness::default().await;
    let now = h_now(&h);
    let mut missing_exp = claims("alice", now);
    missing_exp.as_object_mut().unwrap().remove("exp");
    let mut string_exp = claims("alice", now);
    string_exp["exp"] = json!((now + 300).to_string());
    let mut string_nbf = claims("alice", now);
    string_nbf["nbf"] = json!("0");
    let mut numeric_sub = claims("alice", now);
    numeric_sub["sub"] = json!(42);
    let mut aud_number = claims("alice", now);
    aud_number["aud"] = json!(7);
    for c in [missing_exp, string_exp, string_nbf, numeric_sub, aud_number] {
        assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &c)).await);
    }
}

#[tokio::test]
async fn crit_headers_and_oversized_tokens_are_refused() {
    let h = Harness::default().await;
    let now = h_now(&h);
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("es".into());
    header.extras.insert("crit", json!(["exp"]));
    let key = jsonwebtoken::EncodingKey::from_ec_pem(
        &std::fs::read(data_dir().join("keys/es256-private.pem")).unwrap(),
    )
    .unwrap();
    let token = jsonwebtoken::encode(&header, &claims("alice", now), &key).unwrap();
    assert_invalid(&call_with(&h, &token).await);

    let mut big = claims("alice", now);
    big["pad"] = json!("x".repeat(9000));
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &big)).await);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_auth_failures_total{reason="too_large"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="unsupported_header"}"#
        ),
        1.0
    );
}

fn policy_config() -> TestConfig {
    TestConfig {
        policy: format!(
            r#"
[[policy.rules]]
name = "ops-group"
claims = {{ groups = ["ops"] }}
projects = ["{PROJECT}"]

[[policy.rules]]
name = "alice-linux-only"
subjects = ["alice"]
projects = ["{PROJECT}"]
servers = ["{LINUX}"]
"#
        ),
        ..TestConfig::default()
    }
}

#[tokio::test]
async fn policy_allows_by_subject_and_claims_and_denies_by_default() {
    let h = Harness::start(policy_config()).await;
    let now = h_now(&h);
    // alice may open the Linux server only.
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    let reply = h.console("alice", WINDOWS).await;
    reply.assert_error(403, "BMSGW.0201");
    assert!(
        reply.header("ratelimit-limit").is_some(),
        "403 is an authenticated answer"
    );
    // mallory matches no rule.
    h.console("mallory", LINUX)
        .await
        .assert_error(403, "BMSGW.0201");
    // The ops group opens anything in the project.
    let mut c = claims("carol", now);
    c["groups"] = json!(["dev", "ops"]);
    let reply = call_with(&h, &mint(Algorithm::ES256, &c)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    c["groups"] = json!(["dev"]);
    call_with(&h, &mint(Algorithm::ES256, &c))
        .await
        .assert_error(403, "BMSGW.0201");
    let scrape = h.metrics().await;
    assert_eq!(metric(&scrape, "bmsgw_authz_denied_total"), 3.0);
    // carol was served alice's cached URL (shared scope, and the policy allowed both).
    assert_eq!(h.sim().stats().requests_total, 1);
}

#[tokio::test]
async fn the_subject_claim_is_configurable() {
    let config = TestConfig {
        policy: format!(
            r#"
[[policy.rules]]
name = "by-email"
subjects = ["alice@example.com"]
projects = ["{PROJECT}"]
"#
        ),
        ..TestConfig::default()
    };
    let text = config.render().replace(
        "[[auth.issuers]]",
        "[auth]\nsubject_claim = \"email\"\n\n[[auth.issuers]]",
    );
    let cfg =
        bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "t.toml").unwrap();
    let gw = bms_console_gateway::server::start(cfg).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut c = claims("ignored-sub", now);
    c["email"] = json!("alice@example.com");
    let reply = send(
        &client(),
        http::Method::POST,
        &format!("{}{}", gw.public_url(), console_path(PROJECT, LINUX)),
        &[
            (
                "authorization",
                &format!("Bearer {}", mint(Algorithm::ES256, &c)),
            ),
            ("content-type", "application/json"),
        ],
        BODY.into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A token whose header and claims are given as exact JSON text, correctly signed with the
/// ES256 test key: what a hand-crafted attack looks like when it gets the signature right.
fn signed_raw(header_json: &str, claims_json: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let key = jsonwebtoken::EncodingKey::from_ec_pem(
        &std::fs::read(data_dir().join("keys/es256-private.pem")).unwrap(),
    )
    .unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn ecdsa_zero_signatures_are_refused() {
    let h = Harness::default().await;
    let c = claims("alice", h_now(&h));
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 verified under every key in a broken
    // verifier. Raw (JWS) form, and a DER-encoded form for good measure.
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "es"});
    for sig in [
        vec![0u8; 64],
        vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
    ] {
        assert_invalid(&call_with(&h, &raw_token(&header, &c, &sig)).await);
    }
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
async fn duplicate_json_keys_in_header_or_claims_are_refused() {
    let h = Harness::default().await;
    let now = h_now(&h);
    let good_header = r#"{"alg":"ES256","typ":"JWT","kid":"es"}"#;
    let good_claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","iat":{now},"exp":{}}}"#,
        now + 300
    );
    // The hand-signing path itself is sound: the clean token is accepted.
    assert_eq!(
        call_with(&h, &signed_raw(good_header, &good_claims))
            .await
            .status,
        200
    );
    let dup_claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","sub":"root","iat":{now},"exp":{}}}"#,
        now + 300
    );
    assert_invalid(&call_with(&h, &signed_raw(good_header, &dup_claims)).await);
    let dup_header = r#"{"alg":"ES256","typ":"JWT","kid":"es","kid":"rs"}"#;
    assert_invalid(&call_with(&h, &signed_raw(dup_header, &good_claims)).await);
    let nested = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","iat":{now},"exp":{},"x":{{"groups":1,"groups":2}}}}"#,
        now + 300
    );
    assert_invalid(&call_with(&h, &signed_raw(good_header, &nested)).await);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_auth_failures_total{reason="malformed"}"#),
        3.0
    );
}

#[tokio::test]
async fn lifetimes_above_the_maximum_are_refused() {
    let config = TestConfig::default();
    let text = config.render().replace(
        "leeway_seconds = 60",
        "leeway_seconds = 60\nmax_token_lifetime_seconds = 3600",
    );
    let cfg =
        bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "t.toml").unwrap();
    let clock = bms_console_gateway::clock::ManualClock::new();
    let gw = bms_console_gateway::server::start_with_clock(cfg, clock.clone())
        .await
        .unwrap();
    let now = {
        use bms_console_gateway::clock::Clock;
        clock.unix_seconds()
    };
    let post = |token: String| {
        let url = format!("{}{}", gw.public_url(), console_path(PROJECT, LINUX));
        async move {
            send(
                &client(),
                http::Method::POST,
                &url,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                ],
                BODY.into(),
            )
            .await
        }
    };
    let mut c = claims("alice", now);
    c["exp"] = json!(now + 3600);
    assert_eq!(post(mint(Algorithm::ES256, &c)).await.status, 200);
    c["exp"] = json!(now + 3601);
    assert_invalid(&post(mint(Algorithm::ES256, &c)).await);
    // Without `iat`, the lifetime left counts.
    c.as_object_mut().unwrap().remove("iat");
    c["exp"] = json!(now + 365 * 86400);
    assert_invalid(&post(mint(Algorithm::ES256, &c)).await);
    // An `iat` in the past does not make a long-lived token acceptable either.
    c["iat"] = json!(now - 86400);
    c["exp"] = json!(now + 1000);
    assert_invalid(&post(mint(Algorithm::ES256, &c)).await);
    let scrape = send(
        &client(),
        http::Method::GET,
        &format!("{}/metrics", gw.admin_url()),
        &[],
        String::new(),
    )
    .await
    .text();
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="lifetime_too_long"}"#
        ),
        3.0
    );
}

fn hmac_issuer(secret_file: &std::path::Path) -> TestConfig {
    TestConfig {
        extra_issuers: format!(
            r#"
[[auth.issuers]]
name = "legacy-hs"
issuer = "https://legacy.test.invalid"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]
hmac_secret = "file:{}"
"#,
            secret_file.display()
        ),
        ..TestConfig::default()
    }
}

#[tokio::test]
async fn hs256_is_accepted_only_from_an_issuer_configured_with_a_shared_secret() {
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let file = std::env::temp_dir().join(format!("bmsgw-hs-{}", std::process::id()));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let h = Harness::start(hmac_issuer(&file)).await;
    let now = h_now(&h);
    let hs = |claims: &serde_json::Value, key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    };
    let mut legacy = claims("alice", now);
    legacy["iss"] = json!("https://legacy.test.invalid");
    let reply = call_with(&h, &hs(&legacy, secret.as_bytes())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Same secret, but claiming the asymmetric issuer: HS256 is not on its list.
    assert_invalid(&call_with(&h, &hs(&claims("alice", now), secret.as_bytes())).await);
    // The shared-secret issuer with a public key as the "secret": wrong secret.
    let public_pem = std::fs::read(data_dir().join("keys/es256-public.pem")).unwrap();
    assert_invalid(&call_with(&h, &hs(&legacy, &public_pem)).await);
    // And an ES256 token for the shared-secret issuer: ES256 is not on its list.
    assert_invalid(&call_with(&h, &mint(Algorithm::ES256, &legacy)).await);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_auth_failures_total{reason="algorithm_not_allowed"}"#
        ),
        2.0
    );

    // Configuration: HS256 without a secret, an inline secret, and a short secret are errors.
    let no_secret = TestConfig::default().render().replace(
        r#"algorithms = ["ES256", "RS256", "EdDSA"]"#,
        r#"algorithms = ["ES256", "HS256"]"#,
    );
    let err = bms_console_gateway::config::Config::from_toml_str(&no_secret, &data_dir(), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml: auth.issuers[0].algorithms[1]: HS256 needs a shared secret"),
        "{err}"
    );
    let inline = hmac_issuer(&file)
        .render()
        .replace(&format!("file:{}", file.display()), secret);
    let err = bms_console_gateway::config::Config::from_toml_str(&inline, &data_dir(), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.issuers[1].hmac_secret: must be a secret reference"),
        "{err}"
    );
    std::fs::write(&file, "short").unwrap();
    let cfg = hmac_issuer(&file).build();
    let err = match bms_console_gateway::server::start(cfg).await {
        Ok(_) => panic!("started with a short secret"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("auth.issuers[1].hmac_secret: the shared secret must be at least 32 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn repeated_tokens_skip_signature_checks_until_they_expire() {
    let h = Harness::default().await;
    let token = mint(Algorithm::ES256, &claims("alice", h_now(&h)));
    for _ in 0..5 {
        assert_eq!(call_with(&h, &token).await.status, 200);
    }
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, "bmsgw_token_signature_verifications_total"),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_token_cache_requests_total{outcome="hit"}"#
        ),
        4.0
    );
    // A different token for the same user is verified on its own.
    let other = mint(Algorithm::RS256, &claims("alice", h_now(&h)));
    assert_eq!(call_with(&h, &other).await.status, 200);
    // Past `exp` plus leeway the cached token is refused, without a new signature check.
    h.clock.advance(std::time::Duration::from_secs(300 + 61));
    let msg = call_with(&h, &token).await.assert_error(401, "APIGW.0301");
    assert!(msg.ends_with("token expired"), "{msg}");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, "bmsgw_token_signature_verifications_total"),
        2.0
    );
    // A tampered copy of a cached token is a different token: checked, and refused.
    let mut tampered = other.clone();
    tampered.pop();
    assert_invalid(&call_with(&h, &tampered).await);
}

#[tokio::test]
async fn the_token_cache_can_be_turned_off() {
    let h = Harness::start(TestConfig {
        extra_config: "[auth]\ntoken_cache_max_entries = 0\n".into(),
        ..TestConfig::default()
    })
    .await;
    let token = mint(Algorithm::ES256, &claims("alice", h_now(&h)));
    for _ in 0..3 {
        assert_eq!(call_with(&h, &token).await.status, 200);
    }
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, "bmsgw_token_signature_verifications_total"),
        3.0
    );
}
