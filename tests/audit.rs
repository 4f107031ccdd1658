//! The audit trail through a real server: one JSON line per console URL issued or refused,
//! written by the writer task to a file (rotated by size) and read back here.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bms_console_gateway::clock::Clock;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const HASH_KEY: &str = "audit-hmac-key-for-tests-0123456789";

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bmsgw-audit-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn audit_config(audit: &str) -> TestConfig {
    TestConfig {
        extra_rate_limit: "[rate_limit.tiers.single]\nrequests_per_second = 0.001\nburst = 1\n"
            .into(),
        policy: format!(
            r#"
[[policy.rules]]
name = "no-contractors"
effect = "deny"
claims = {{ roles = ["contractor"] }}
projects = ["*"]

[[policy.rules]]
name = "bots-slowly"
subjects = ["deploy-bot"]
projects = ["{PROJECT}"]
rate_limit_tier = "single"

[[policy.rules]]
name = "everyone"
subjects = ["*"]
projects = ["{PROJECT}"]
"#
        ),
        extra_config: audit.to_string(),
        ..TestConfig::default()
    }
}

async fn call(h: &Harness, claims: &Value, server: &str, forwarded_for: &str) -> Reply {
    let token = mint(Algorithm::ES256, claims);
    h.post(
        &console_path(PROJECT, server),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-forwarded-for", forwarded_for),
        ],
        BODY,
    )
    .await
}

/// Waits until the writer has written `n` records (the metric moves after each write).
async fn await_written(h: &Harness, series: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if metric(&h.metrics().await, series) >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WRITTEN: &str = r#"bmsgw_audit_records_total{result="written"}"#;

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn hmac_hex(key: &str, data: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    aws_lc_rs::hmac::sign(&key, data.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn every_console_url_issued_or_refused_is_one_audit_record() {
    let dir = temp_dir("records");
    std::fs::write(dir.join("hash-key"), format!("{HASH_KEY}\n")).unwrap();
    let file = dir.join("audit.log");
    let h = Harness::start(audit_config(&format!(
        r#"
[audit]
sink = "file"
file = "{}"
token_hash_key = "file:{}"
trusted_proxies = ["127.0.0.1"]
"#,
        file.display(),
        dir.join("hash-key").display()
    )))
    .await;
    let now = h.clock.unix_seconds();
    let xff = "203.0.113.7, 10.0.0.2";

    let issued = call(&h, &claims("alice", now), LINUX, xff).await;
    assert_eq!(issued.status, 200);
    let from_cache = call(&h, &claims("bob", now), LINUX, xff).await;
    assert_eq!(from_cache.header("x-cache"), Some("hit"));
    let mut contractor = claims("carl", now);
    contractor["roles"] = json!(["contractor"]);
    call(&h, &contractor, LINUX, xff)
        .await
        .assert_error(403, "BMSGW.0201");
    call(&h, &claims("alice", now), WINDOWS, xff)
        .await
        .assert_error(400, "BMS.0395");
    assert_eq!(
        call(&h, &claims("deploy-bot", now), LINUX, xff)
            .await
            .status,
        200
    );
    call(&h, &claims("deploy-bot", now), LINUX, xff)
        .await
        .assert_error(429, "APIGW.0308");
    // Not audited: no authenticated caller (the access log and auth metrics cover these).
    h.post(
        &console_path(PROJECT, LINUX),
        &[("authorization", "Bearer not-a-token")],
        BODY,
    )
    .await
    .assert_error(401, "APIGW.0301");

    await_written(&h, WRITTEN, 6.0).await;
    let records = records(&file);
    assert_eq!(records.len(), 6, "{records:#?}");

    let first = &records[0];
    assert_eq!(first["log"], "audit");
    assert_eq!(first["request_id"], issued.header("x-request-id").unwrap());
    assert_eq!(first["subject"], "alice");
    assert_eq!(first["issuer"], "test");
    assert!(first["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(first["forwarded_for"], xff);
    assert_eq!(first["project"], PROJECT);
    assert_eq!(first["server"], LINUX);
    assert_eq!(first["decision"], "issued");
    assert_eq!(first["rule"], "everyone");
    assert_eq!(first["cache"], "miss");
    assert_eq!(first["status"], 200);
    assert!(first["upstream_request_id"].as_str().is_some());
    assert!(time::OffsetDateTime::parse(
        first["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());
    // The URL token is recorded only as its keyed hash, so a session can be traced back.
    let url = issued.url();
    let url_token = url.split("token=").nth(1).unwrap();
    assert_eq!(first["url_token_hmac"], hmac_hex(HASH_KEY, url_token));

    assert_eq!(records[1]["subject"], "bob");
    assert_eq!(records[1]["cache"], "hit");
    assert_eq!(records[1]["url_token_hmac"], first["url_token_hmac"]);

    assert_eq!(records[2]["decision"], "denied");
    assert_eq!(records[2]["rule"], "no-contractors");
    assert_eq!(records[2]["reason"], "BMSGW.0201");
    assert_eq!(records[2]["status"], 403);
    assert!(records[2]["url_token_hmac"].is_null());

    assert_eq!(records[3]["decision"], "upstream_refused");
    assert_eq!(records[3]["reason"], "BMS.0395");
    assert_eq!(records[3]["server"], WINDOWS);
    assert!(records[3]["upstream_request_id"].as_str().is_some());

    assert_eq!(records[4]["decision"], "issued");
    assert_eq!(records[4]["rule"], "bots-slowly");
    assert_eq!(records[5]["decision"], "rate_limited");
    assert_eq!(records[5]["reason"], "APIGW.0308");
    assert_eq!(records[5]["status"], 429);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(url_token), "URL token in the audit log");
    assert!(!text.contains("eyJ"), "a JWT in the audit log");
}

#[tokio::test]
async fn the_audit_file_rotates_by_size_and_forwarded_for_needs_a_trusted_proxy() {
    let dir = temp_dir("rotate");
    let file = dir.join("audit.log");
    let h = Harness::start(audit_config(&format!(
        "[audit]\nsink = \"file\"\nfile = \"{}\"\nmax_file_bytes = 4096\nmax_files = 2\n",
        file.display()
    )))
    .await;
    let now = h.clock.unix_seconds();
    let mut last_id = String::new();
    for i in 0..40 {
        let reply = call(
            &h,
            &claims(&format!("user-{i}"), now),
            LINUX,
            "198.51.100.1",
        )
        .await;
        assert_eq!(reply.status, 200);
        last_id = reply.header("x-request-id").unwrap().to_string();
    }
    await_written(&h, WRITTEN, 40.0).await;
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", file.display()));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(
        !rotated(3).exists(),
        "max_files = 2 keeps two rotated files"
    );
    for path in [file.clone(), rotated(1), rotated(2)] {
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        for record in records(&path) {
            // The peer (127.0.0.1) is not a trusted proxy here: its header is not recorded.
            assert!(record["forwarded_for"].is_null());
        }
    }
    let current = records(&file);
    assert_eq!(current.last().unwrap()["request_id"], last_id.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "audit file is not world-readable");
    }
}

#[tokio::test]
async fn a_failing_sink_is_counted_and_never_fails_the_request() {
    let h = Harness::start(audit_config(
        "[audit]\nsink = \"file\"\nfile = \"/dev/full\"\n",
    ))
    .await;
    let now = h.clock.unix_seconds();
    assert_eq!(
        call(&h, &claims("alice", now), LINUX, "-").await.status,
        200
    );
    await_written(&h, r#"bmsgw_audit_records_total{result="failed"}"#, 1.0).await;
    assert_eq!(metric(&h.metrics().await, WRITTEN), 0.0);
}

#[tokio::test]
async fn a_full_queue_drops_records_without_blocking_requests() {
    // A FIFO nobody reads from: once its buffer is full the writer blocks, the one-slot queue
    // fills, and further records are dropped while requests keep being answered.
    let dir = temp_dir("fifo");
    let fifo = dir.join("audit.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader_path = fifo.clone();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let (drain_tx, drain) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut pipe = std::fs::File::open(&reader_path).unwrap();
        opened_tx.send(()).unwrap();
        drain.recv().unwrap();
        let mut all = String::new();
        pipe.read_to_string(&mut all).unwrap();
        all
    });
    let h = Harness::start(audit_config(&format!(
        "[audit]\nsink = \"file\"\nfile = \"{}\"\nqueue_capacity = 1\n",
        fifo.display()
    )))
    .await;
    opened.recv().unwrap();
    let now = h.clock.unix_seconds();
    let dropped = r#"bmsgw_audit_records_total{result="dropped"}"#;
    let mut sent = 0;
    while sent < 5000 {
        for _ in 0..50 {
            assert_eq!(
                call(&h, &claims("alice", now), LINUX, "-").await.status,
                200
            );
            sent += 1;
        }
        if metric(&h.metrics().await, dropped) > 0.0 {
            break;
        }
    }
    let scrape = h.metrics().await;
    let dropped_count = metric(&scrape, dropped);
    assert!(
        dropped_count > 0.0,
        "no record dropped after {sent} requests"
    );
    // Let the reader drain; shutting the gateway down flushes what is queued and closes the
    // FIFO, so every record not dropped arrives, each one whole.
    drain_tx.send(()).unwrap();
    let Harness { gateway, .. } = h;
    gateway.shutdown(Duration::from_secs(1)).await;
    let text = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as f64 + dropped_count, sent as f64);
}

#[tokio::test]
async fn an_audit_file_that_cannot_be_opened_stops_start_up() {
    let config = audit_config("[audit]\nsink = \"file\"\nfile = \"/nonexistent-dir/audit.log\"\n");
    let err = match bms_console_gateway::server::start(config.build()).await {
        Ok(_) => panic!("started without its audit file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("test.toml: audit.file: cannot open audit file /nonexistent-dir/audit.log"),
        "{err}"
    );
    let text = audit_config("[audit]\nsink = \"file\"\n").render();
    let err = bms_console_gateway::config::Config::from_toml_str(&text, &data_dir(), "a.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.toml: audit.file: sink = \"file\" needs a file"),
        "{err}"
    );
}
