//! The Redis deployments people run: TLS (`rediss://`) with a private CA, ACL users with a
//! password from a secret reference, and the config checks that keep credentials out of URLs.

mod common;

use bms_console_gateway::clock::SystemClock;
use bms_console_gateway::config::Config;
use bms_console_gateway::state::Gateway;
use common::redis_server::{self, PrivateRedis};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

fn limited_in_redis(redis_lines: String) -> TestConfig {
    TestConfig {
        extra_rate_limit: "backend = \"redis\"\n".into(),
        extra_cache: format!(
            "backend = \"redis\"\nencryption_key = \"file:{}\"\n",
            redis_server::temp_file("key", b"0123456789abcdef0123456789abcdef0123").display()
        ),
        extra_sections: redis_lines,
        ..TestConfig::default()
    }
}

async fn decided_in_redis(h: &Harness) -> f64 {
    metric(
        &h.metrics().await,
        r#"bmsgw_rate_limit_decisions_total{backend="redis",result="allowed"}"#,
    )
}

#[tokio::test]
async fn rediss_is_verified_against_the_configured_ca() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_file = redis_server::temp_file("ca.pem", ca.pem().as_bytes());
    let cert_file = redis_server::temp_file("redis.pem", leaf.pem().as_bytes());
    let key_file = redis_server::temp_file("redis.key", leaf_key.serialize_pem().as_bytes());

    // TLS on one port for the gateway; a plain one for the test's own readiness check.
    let plain_port = closed_port();
    let tls_port = closed_port();
    let _redis = PrivateRedis::start_with(
        plain_port,
        [
            "--port".to_string(),
            plain_port.to_string(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert_file.display().to_string(),
            "--tls-key-file".into(),
            key_file.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca_file.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
        .to_vec(),
        None,
    )
    .await;
    let prefix = redis_server::unique_prefix("tls");
    let url = format!("rediss://localhost:{tls_port}");

    let trusted = Harness::start(limited_in_redis(redis_server::redis_section(
        &url,
        &prefix,
        &format!(
            "ca_file = {:?}\ntimeout_ms = 2000",
            ca_file.display().to_string()
        ),
    )))
    .await;
    assert_eq!(trusted.console("alice", LINUX).await.status, 200);
    assert_eq!(decided_in_redis(&trusted).await, 1.0);

    // Without the CA the certificate is not trusted: no shared state, the fallback applies.
    let untrusted = Harness::start(limited_in_redis(redis_server::redis_section(
        &url,
        &prefix,
        "timeout_ms = 2000",
    )))
    .await;
    assert_eq!(untrusted.console("alice", LINUX).await.status, 200);
    let scrape = untrusted.metrics().await;
    assert_eq!(decided_in_redis(&untrusted).await, 0.0);
    assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 1.0);
}

#[tokio::test]
async fn an_acl_user_with_a_password_from_a_secret_file() {
    let port = closed_port();
    let redis = PrivateRedis::start_with(
        port,
        vec![
            "--port".into(),
            port.to_string(),
            "--requirepass".into(),
            "admin-only-password".into(),
        ],
        Some(format!("redis://:admin-only-password@127.0.0.1:{port}")),
    )
    .await;
    // The gateway's user may touch only keys under the test prefixes, with only the commands
    // the README lists.
    redis
        .command(&[
            "ACL",
            "SETUSER",
            "gateway",
            "on",
            ">gw-password-1",
            "~bmsgw-test:*",
            "+evalsha",
            "+script|load",
            "+ping",
            "+time",
            "+get",
            "+set",
            "+del",
            "+pttl",
        ])
        .await;
    let password_file = redis_server::temp_file("redis-password", b"gw-password-1\n");
    let section = |password_ref: &str| {
        redis_server::redis_section(
            &redis.url(),
            &redis_server::unique_prefix("acl"),
            &format!("username = \"gateway\"\npassword = \"{password_ref}\"\ntimeout_ms = 2000"),
        )
    };

    let h = Harness::start(limited_in_redis(section(&format!(
        "file:{}",
        password_file.display()
    ))))
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(
        h.console("alice", LINUX).await.header("x-cache"),
        Some("hit")
    );
    let scrape = h.metrics().await;
    assert_eq!(decided_in_redis(&h).await, 2.0);
    assert_eq!(metric(&scrape, "bmsgw_redis_fallback_active"), 0.0);
    let errors: f64 = ["timeout", "connection", "auth", "server", "decode"]
        .iter()
        .map(|kind| {
            metric(
                &scrape,
                &format!(r#"bmsgw_redis_errors_total{{kind="{kind}"}}"#),
            )
        })
        .sum();
    assert_eq!(errors, 0.0, "every command the gateway sends is allowed");

    let wrong_file = redis_server::temp_file("wrong", b"not-the-password");
    let wrong = Harness::start(limited_in_redis(section(&format!(
        "file:{}",
        wrong_file.display()
    ))))
    .await;
    assert_eq!(wrong.console("alice", LINUX).await.status, 200);
    let scrape = wrong.metrics().await;
    assert_eq!(decided_in_redis(&wrong).await, 0.0);
    assert!(metric(&scrape, r#"bmsgw_redis_errors_total{kind="auth"}"#) >= 1.0);
    assert!(!scrape.contains("not-the-password"));
}

async fn config_errors(config: TestConfig) -> String {
    match Config::from_toml_str(&config.render(), &data_dir(), "test.toml") {
        Err(e) => e.to_string(),
        Ok(config) => match Gateway::build(&config, SystemClock::shared(), None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("config accepted"),
        },
    }
}

#[tokio::test]
async fn misconfigurations_stop_start_up_with_the_key_that_is_wrong() {
    let err = config_errors(limited_in_redis(redis_server::redis_section(
        "redis://:hunter2-secret@127.0.0.1:6379",
        "p:",
        "",
    )))
    .await;
    assert!(
        err.contains("test.toml: redis.url: must not hold credentials"),
        "{err}"
    );
    assert!(!err.contains("hunter2-secret"), "{err}");

    let err = config_errors(limited_in_redis(String::new())).await;
    assert!(
        err.contains("test.toml: redis: rate_limit.backend or cache.backend"),
        "{err}"
    );

    let err = config_errors(TestConfig {
        extra_cache: "backend = \"redis\"\n".into(),
        extra_sections: redis_server::redis_section("redis://127.0.0.1:6379", "p:", ""),
        ..TestConfig::default()
    })
    .await;
    assert!(
        err.contains("test.toml: cache.encryption_key: required"),
        "{err}"
    );

    let short = redis_server::temp_file("short-key", b"too-short");
    let err = config_errors(TestConfig {
        extra_cache: format!(
            "backend = \"redis\"\nencryption_key = \"file:{}\"\n",
            short.display()
        ),
        extra_sections: redis_server::redis_section("redis://127.0.0.1:6379", "p:", ""),
        ..TestConfig::default()
    })
    .await;
    assert!(
        err.contains("test.toml: cache.encryption_key: key material must be at least 32 bytes"),
        "{err}"
    );

    let err = config_errors(limited_in_redis(redis_server::redis_section(
        "redis://127.0.0.1:6379",
        "a{b}:",
        "password = \"inline-password\"\ntimeout_ms = 0",
    )))
    .await;
    assert!(
        err.contains("redis.key_prefix: must not contain braces"),
        "{err}"
    );
    assert!(
        err.contains("redis.password: must be a secret reference"),
        "{err}"
    );
    assert!(err.contains("redis: timeout_ms"), "{err}");
    assert!(!err.contains("inline-password"), "{err}");
}

#[tokio::test]
async fn a_redis_config_builds_offline_as_check_config_does() {
    // Nothing listening: building must not need a connection.
    let config = limited_in_redis(redis_server::redis_section(
        &format!("redis://127.0.0.1:{}", closed_port()),
        "p:",
        "",
    ))
    .build();
    let gateway = Gateway::build(&config, SystemClock::shared(), None)
        .await
        .expect("builds offline");
    assert!(gateway.redis.is_some());
}

#[test]
fn check_config_accepts_the_replicas_example_offline_and_names_a_missing_secret() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/replicas.example.toml");
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bms-console-gateway"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let secrets = [
        ("BMSGW_CN_NORTH_4_AK", "ak1"),
        ("BMSGW_CN_NORTH_4_SK", "sk1"),
        ("BMSGW_AP_SE_1_AK", "ak2"),
        ("BMSGW_AP_SE_1_SK", "sk2"),
        ("BMSGW_REDIS_PASSWORD", "redis-password-value"),
        (
            "BMSGW_CACHE_KEY",
            "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5LW1hdGVyaWFs",
        ),
    ];
    // The example's Redis host does not exist: check-config never connects.
    let (ok, stdout, stderr) = run(&secrets);
    assert!(ok, "{stderr}");
    assert!(stdout.ends_with("replicas.example.toml: ok\n"), "{stdout}");
    let (ok, _, stderr) = run(&secrets[..4]);
    assert!(!ok);
    assert!(
        stderr.contains("redis.password: environment variable BMSGW_REDIS_PASSWORD is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cache.encryption_key: environment variable BMSGW_CACHE_KEY is not set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_real_binary_warns_once_about_redis_and_logs_no_redis_secret() {
    use common::binary::GatewayProcess;

    let port = closed_port();
    let _redis = PrivateRedis::start_with(
        port,
        vec![
            "--port".into(),
            port.to_string(),
            "--requirepass".into(),
            "the-real-redis-password".into(),
        ],
        Some(format!("redis://:the-real-redis-password@127.0.0.1:{port}")),
    )
    .await;
    let wrong_password = "wrong-redis-password-do-not-log";
    let key_material = "cache-key-material-that-must-never-be-logged-0123";
    let password_file = redis_server::temp_file("pw", wrong_password.as_bytes());
    let key_file = redis_server::temp_file("key", key_material.as_bytes());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("config/gateway.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("burst = 50\n", "burst = 50\nbackend = \"redis\"\n")
        .replace(
            "scope = \"shared\"\n",
            &format!(
                "scope = \"shared\"\nbackend = \"redis\"\nencryption_key = \"file:{}\"\n",
                key_file.display()
            ),
        )
        + &format!(
            "\n[redis]\nurl = \"redis://127.0.0.1:{port}\"\npassword = \"file:{}\"\n",
            password_file.display()
        );
    let config = repo.join(format!("config/test-redis-{}.toml", std::process::id()));
    std::fs::write(&config, text).unwrap();

    // Start-up completes (the gateway serves without Redis), then it is stopped.
    let gateway = GatewayProcess::serve(&config);
    let (_, all) = gateway.process.terminate();
    std::fs::remove_file(&config).unwrap();
    let seen: Vec<&str> = all.lines().collect();
    let warnings: Vec<&&str> = seen
        .iter()
        .filter(|l| l.contains("Redis unavailable; applying the fallback"))
        .collect();
    assert_eq!(warnings.len(), 1, "{all}");
    let warning: serde_json::Value = serde_json::from_str(warnings[0]).unwrap();
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["error"], "auth", "{warning}");
    assert_eq!(warning["fallback"], "local");
    for secret in [wrong_password, "the-real-redis-password", key_material] {
        assert!(!all.contains(secret), "{secret} in the log:\n{all}");
    }
}
