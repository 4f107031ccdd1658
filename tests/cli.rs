//! The real binary, as a new user runs it: `serve` with the shipped default config, a token
//! from `mint-token`, the demo request, `check-config` and `simulate`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::{Binary, BIN};
use common::*;
use http::Method;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `BIN args...` run from the repository root, as the README's commands are.
fn spawn_in_repo(args: &[&str]) -> Binary {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(repo());
    Binary::spawn_command(command)
}

/// The shipped default config, with ephemeral ports so tests never collide with a real one.
fn default_config_on_free_ports(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("config/gateway.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    std::fs::create_dir_all(dir).unwrap();
    let path = repo()
        .join("config")
        .join(format!("test-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn mint_token(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("mint-token")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_readme_quick_start_works_and_logs_no_secret() {
    let config = default_config_on_free_ports(&repo().join("config"));
    let _cleanup = RemoveOnDrop(config.clone());
    let mut gateway = spawn_in_repo(&["serve", "--config", config.to_str().unwrap()]);
    let listening = gateway.wait_for("bms-console-gateway listening");
    let public = listening["public"].as_str().unwrap().to_string();
    let admin = listening["admin"].as_str().unwrap().to_string();

    let token = mint_token(&["--sub", "alice"]);
    let client = client();
    let demo = |server: &str| {
        let url = format!("http://{public}{}", console_path(PROJECT, server));
        let auth = format!("Bearer {token}");
        let client = client.clone();
        async move {
            send(
                &client,
                Method::POST,
                &url,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                BODY.into(),
            )
            .await
        }
    };
    let reply = demo(LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let url = reply.url();
    let url_token = url
        .split("token=")
        .nth(1)
        .expect("URL carries a token")
        .to_string();
    demo(WINDOWS).await.assert_error(400, "BMS.0395");

    let ready = send(
        &client,
        Method::GET,
        &format!("http://{admin}/readyz"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(ready.status, 200);

    let (status, logs) = gateway.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the gateway cleanly: {status:?}"
    );
    assert!(
        logs.contains("EMBEDDED BMS SIMULATOR"),
        "loud simulator warning"
    );
    assert!(
        logs.contains("PUBLIC DEV SIGNING KEY"),
        "loud dev-key warning"
    );
    let access: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert_eq!(access.len(), 2);
    assert_eq!(access[0]["subject"], "alice");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["cache"], "miss");
    assert_eq!(access[0]["project"], PROJECT);
    assert_eq!(access[0]["server"], LINUX);
    assert_eq!(
        access[0]["request_id"],
        reply.header("x-request-id").unwrap()
    );
    assert_ne!(access[0]["upstream_request_id"], "-");
    assert_eq!(access[1]["error_code"], "BMS.0395");
    // The default audit sink is stdout, one line per console URL issued or refused, told
    // apart from the access log by `"log":"audit"`.
    let audit: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["log"] == "audit")
        .collect();
    assert_eq!(audit.len(), 2, "{logs}");
    assert_eq!(audit[0]["decision"], "issued");
    assert_eq!(audit[0]["request_id"], access[0]["request_id"]);
    assert_eq!(audit[1]["decision"], "upstream_refused");
    assert_eq!(audit[1]["reason"], "BMS.0395");
    for secret in [
        token.as_str(),
        url_token.as_str(),
        "dev-only-secret-key-do-not-use-in-production",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// The caches' memory should be what they hold: the server turns transparent huge pages off
/// for itself, so the kernel does not fill 2 MiB regions around the allocator's pages.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let config = default_config_on_free_ports(&repo().join("config"));
    let _cleanup = RemoveOnDrop(config.clone());
    let mut gateway = spawn_in_repo(&["serve", "--config", config.to_str().unwrap()]);
    gateway.wait_for("bms-console-gateway listening");
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "{status}");
}

#[test]
fn serve_reports_an_unreadable_config_with_its_path() {
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent.toml: (file): cannot read"),
        "{err}"
    );
}

#[test]
fn pretty_log_format_prints_for_people() {
    let config = default_config_on_free_ports(&repo().join("config"));
    let _cleanup = RemoveOnDrop(config.clone());
    let mut gateway = spawn_in_repo(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--log-format",
        "pretty",
    ]);
    loop {
        let line = gateway
            .next_line(Duration::from_secs(30))
            .expect("the gateway logs its start");
        assert!(
            serde_json::from_str::<Value>(&line).is_err(),
            "not JSON: {line}"
        );
        if line.contains("bms-console-gateway listening") {
            break;
        }
    }
    let (status, rest) = gateway.terminate();
    assert!(status.success(), "{status:?}: {rest}");
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_config(path: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
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
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    let (ok, stdout, stderr) = check_config(&repo().join("config/gateway.toml"), &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.ends_with("gateway.toml: ok\n"));

    let prod = repo().join("config/production.example.toml");
    let secrets = [
        ("BMSGW_EU_WEST_101_IAM_USER", "svc"),
        ("BMSGW_EU_WEST_101_IAM_DOMAIN", "acme"),
        ("BMSGW_EU_WEST_101_IAM_PASSWORD", "pw"),
        ("BMSGW_CN_NORTH_4_AK", "ak1"),
        ("BMSGW_CN_NORTH_4_SK", "sk1"),
        ("BMSGW_AP_SE_1_AK", "ak2"),
        ("BMSGW_AP_SE_1_SK", "sk2"),
    ];
    let (ok, _, stderr) = check_config(&prod, &secrets);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = check_config(&prod, &secrets[..secrets.len() - 1]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!(
            "{}: accounts[1].secret_key: environment variable BMSGW_AP_SE_1_SK is not set",
            prod.display()
        )
    );
}

#[test]
fn check_config_names_file_key_and_problem() {
    let dir = std::env::temp_dir().join(format!("bmsgw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[auth]\nissuers = []\nunknown_key = 1\n", "auth.unknown_key: unknown field `unknown_key`"),
        (
            &TestConfig::default().render().replace("ttl_seconds = 30", "ttl_seconds = \"soon\""),
            "cache.ttl_seconds: invalid type: string \"soon\", expected u64",
        ),
        (
            &TestConfig::default().render().replace("keys/es256-public.pem", "keys/missing.pem"),
            "auth.issuers[0].pem_keys[0].file: cannot read key file",
        ),
        (
            &TestConfig::default().render().replace("file:test-secret-key", "inline-secret"),
            "accounts[0].secret_key: must be a secret reference",
        ),
        (
            &TestConfig::default().render().replace(
                &format!("projects = [\"{PROJECT}\"]\n\n"),
                &format!("projects = [\"{PROJECT}\"]\n\n[[policy.rules]]\nname = \"x\"\nsubjects = [\"*\"]\nprojects = [\"ffffffffffffffffffffffffffffffff\"]\n"),
            ),
            "policy.rules[",
        ),
        (
            &TestConfig::default().render().replace("algorithms = [\"ES256\", \"RS256\", \"EdDSA\"]", "algorithms = [\"HS256\"]"),
            "auth.issuers[0].algorithms[0]: HS256 needs a shared secret",
        ),
        (
            &TestConfig {
                extra_server: "busy_poll_us = 2000000".into(),
                ..TestConfig::default()
            }
            .render(),
            "server.busy_poll_us: must be at most 1000000",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        // Relative references resolve against the file's directory: give it the test data.
        for f in ["test-access-key", "test-secret-key"] {
            let _ = std::fs::copy(data_dir().join(f), dir.join(f));
        }
        let _ = std::fs::create_dir_all(dir.join("keys"));
        for f in ["es256-public.pem", "rs256-public.pem", "ed25519-public.pem"] {
            let _ = std::fs::copy(data_dir().join("keys").join(f), dir.join("keys").join(f));
        }
        let (ok, _, stderr) = check_config(&path, &[]);
        assert!(!ok, "case {i} must fail");
        let prefix = format!("{}: ", path.display());
        assert!(stderr.starts_with(&prefix), "case {i}: {stderr}");
        assert!(
            stderr.contains(expected),
            "case {i}: expected {expected:?} in {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn simulate_serves_the_bms_api_on_its_own() {
    let mut sim = spawn_in_repo(&[
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--access-key",
        TEST_AK,
        "--secret-key",
        TEST_SK,
        "--iam-user",
        "acme/svc:sim-iam-password",
    ]);
    let started = sim.wait_for("BMS simulator listening");
    let endpoint = started["endpoint"].as_str().unwrap().to_string();
    // The gateway, configured against it, gets a URL through it.
    let h = Harness::start(TestConfig {
        endpoint: endpoint.clone(),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    let stats = send(
        &client(),
        Method::GET,
        &format!("{endpoint}/sim/stats"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(stats.json()["remote_console_ok"], 1);
    // The IAM user from --iam-user gets a token.
    let body = format!(
        r#"{{"auth":{{"identity":{{"methods":["password"],"password":{{"user":{{"domain":{{"name":"acme"}},"name":"svc","password":"sim-iam-password"}}}}}},"scope":{{"project":{{"id":"{PROJECT}"}}}}}}}}"#
    );
    let token = send(
        &client(),
        Method::POST,
        &format!("{endpoint}/v3/auth/tokens?nocatalog=true"),
        &[("content-type", "application/json;charset=utf8")],
        body,
    )
    .await;
    assert_eq!(token.status, 201, "{}", token.text());
    assert!(token
        .header("x-subject-token")
        .is_some_and(|t| t.starts_with("MII")));
    let (status, _) = sim.terminate();
    assert!(status.success());
}

fn explain(config: &Path, claims: &Value, server: &str) -> (Option<i32>, String, String) {
    let claims_file = config.with_extension(format!("claims-{}.json", server.len()));
    std::fs::write(&claims_file, claims.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["explain", "--config"])
        .arg(config)
        .arg("--claims")
        .arg(&claims_file)
        .args(["--project", PROJECT, "--server", server])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_prints_the_decision_and_the_rule_that_made_it() {
    let dir = std::env::temp_dir().join(format!("bmsgw-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    let policy = format!(
        r#"
[[policy.rules]]
name = "no-contractors"
effect = "deny"
claims = {{ roles = ["contractor"] }}
projects = ["*"]

[[policy.rules]]
name = "ops-linux"
claims = {{ groups = ["ops"] }}
projects = ["{PROJECT}"]
servers = ["cf2a8b97-*"]
rate_limit_tier = "automation"
"#
    );
    let text = TestConfig {
        policy,
        extra_rate_limit: "[rate_limit.tiers.automation]\nrequests_per_second = 5\nburst = 50\n"
            .into(),
        ..TestConfig::default()
    }
    .render();
    std::fs::write(&config, text).unwrap();

    let ops = serde_json::json!({"iss": ISSUER, "sub": "olga", "groups": ["ops"]});
    let (code, out, err) = explain(&config, &ops, LINUX);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "subject: olga\nissuer: test\ndecision: allow\nrule: ops-linux\nrate_limit_tier: automation\n"
    );

    let (code, out, _) = explain(&config, &ops, WINDOWS);
    assert_eq!(code, Some(3));
    assert!(
        out.contains("decision: deny\nrule: none (no allow rule matches: default deny)"),
        "{out}"
    );

    let contractor = serde_json::json!({"iss": ISSUER, "sub": "carl", "groups": ["ops"], "roles": ["contractor"]});
    let (code, out, _) = explain(&config, &contractor, LINUX);
    assert_eq!(code, Some(3));
    assert!(
        out.contains("decision: deny\nrule: no-contractors (explicit deny)"),
        "{out}"
    );

    let stranger = serde_json::json!({"iss": "https://elsewhere", "sub": "x", "groups": ["ops"]});
    let (_, out, _) = explain(&config, &stranger, LINUX);
    assert!(
        out.starts_with("note: iss \"https://elsewhere\" is no configured issuer"),
        "{out}"
    );

    let (code, _, err) = explain(&config, &serde_json::json!({"groups": ["ops"]}), LINUX);
    assert_eq!(code, Some(1));
    assert!(err.contains("the claims have no string \"sub\""), "{err}");
    let (code, _, err) = explain(&config, &ops, "not-a-uuid");
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a server id"), "{err}");
}
