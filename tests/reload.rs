//! Config reload through `POST /-/reload` (SIGHUP is driven through the real binary in
//! `tests/shutdown.rs`): under steady load no request fails and the new policy and limits take
//! effect; an invalid config is refused while the old one keeps serving; the old gateway is
//! dropped once its last request finished.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bms_console_gateway::clock::SharedClock;
use bms_console_gateway::config::Config;
use bms_console_gateway::server;
use common::*;
use http::Method;

const BOB_RULE: &str = r#"
[[policy.rules]]
name = "bob-too"
subjects = ["bob"]
projects = ["bbf1946d374b44a0a2a95533562ba954"]
"#;

/// A test config written to a file of its own (paths made absolute), so reload can re-read it.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(tag: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("bmsgw-reload-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ConfigFile {
            path: dir.join("gateway.toml"),
        }
    }

    fn write(&self, config: &TestConfig) {
        self.write_text(&absolute(&config.render()));
    }

    fn write_text(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

fn absolute(text: &str) -> String {
    let data = data_dir().display().to_string();
    text.replace("file = \"keys/", &format!("file = \"{data}/keys/"))
        .replace("\"file:test-", &format!("\"file:{data}/test-"))
}

fn reloadable(policy_extra: &str, burst: u32) -> TestConfig {
    let mut config = TestConfig {
        burst,
        cache_ttl_seconds: 0,
        extra_server: "admin_reload = true".into(),
        ..TestConfig::default()
    };
    config.policy = format!(
        r#"
[[policy.rules]]
name = "alice"
subjects = ["alice"]
projects = ["{PROJECT}"]
{policy_extra}"#
    );
    config
}

async fn start(file: &ConfigFile) -> Harness {
    let clock = bms_console_gateway::clock::ManualClock::new();
    let shared: SharedClock = clock.clone();
    let config = Config::load(&file.path).expect("valid config");
    let gateway = server::start_with_clock(config, shared).await.unwrap();
    Harness {
        gateway,
        clock,
        client: client(),
    }
}

async fn post_reload(h: &Harness) -> Reply {
    send(
        &h.client,
        Method::POST,
        &format!("{}/-/reload", h.gateway.admin_url()),
        &[],
        String::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_steady_load_fails_no_request_and_applies_the_new_policy_and_limits() {
    let file = ConfigFile::new("load");
    file.write(&reloadable("", 100_000));
    let h = Arc::new(start(&file).await);
    // Upstream calls take a while, so requests are in flight across the swap.
    h.sim().faults().set_latency(Duration::from_millis(20));
    assert_eq!(h.console("bob", LINUX).await.status, 403);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (h, stop, seen) = (h.clone(), stop.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = h.console("alice", LINUX).await;
                let limit = reply.header("ratelimit-limit").unwrap_or("").to_string();
                seen.lock().unwrap().push((reply.status.as_u16(), limit));
            }
        }));
    }
    let served = |n: usize| {
        let seen = seen.clone();
        async move {
            while seen.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    served(50).await;
    let in_flight_before = metric(&h.metrics().await, "bmsgw_http_requests_in_flight");

    file.write(&reloadable(BOB_RULE, 70_000));
    let reply = post_reload(&h).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "reloaded");
    let after = seen.lock().unwrap().len();
    served(after + 50).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.iter().all(|(status, _)| *status == 200),
        "a request failed during the reload: {:?}",
        seen.iter().find(|(s, _)| *s != 200)
    );
    // The burst (RateLimit-Limit) changed from 100000 to 70000 with the swap, and stayed.
    assert_eq!(seen.first().unwrap().1, "100000");
    assert_eq!(seen.last().unwrap().1, "70000");
    let switched = seen.iter().position(|(_, l)| l == "70000").unwrap();
    assert!(seen[switched..].iter().all(|(_, l)| l == "70000"));
    assert!(in_flight_before >= 1.0, "requests were in flight");

    // The new policy is in force; counters continued across the swap.
    assert_eq!(h.console("bob", LINUX).await.status, 200);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_config_reloads_total{result="success"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_http_requests_total{route="remote_console",status_class="2xx"}"#
        ),
        (seen.len() + 1) as f64
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let logs = LogCapture::start();
    let file = ConfigFile::new("invalid");
    file.write(&reloadable("", 1000));
    let h = start(&file).await;

    // A policy naming a project no account serves.
    let broken = BOB_RULE.replace(PROJECT, "ffffffffffffffffffffffffffffffff");
    let broken = absolute(&reloadable(&broken, 1000).render());
    file.write_text(&broken);
    let reply = post_reload(&h).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error_code"], "BMSGW.0702");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("policy.rules[1].projects[0]"), "{msg}");

    // Not TOML at all.
    file.write_text("[server\n");
    let reply = post_reload(&h).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.json()["error_msg"]
        .as_str()
        .unwrap()
        .contains("(syntax)"));

    // The old config still serves: alice yes, bob no (the refused config would allow him).
    assert_eq!(h.console("alice", LINUX).await.status, 200);
    assert_eq!(h.console("bob", LINUX).await.status, 403);
    let scrape = h.metrics().await;
    assert_eq!(
        metric(&scrape, r#"bmsgw_config_reloads_total{result="failure"}"#),
        2.0
    );
    assert_eq!(
        metric(&scrape, r#"bmsgw_config_reloads_total{result="success"}"#),
        0.0
    );
    let rejected = logs
        .events()
        .into_iter()
        .filter(|e| e["message"] == "config reload rejected; the previous config keeps running")
        .count();
    assert_eq!(rejected, 2);
}

#[tokio::test]
async fn changed_listener_settings_are_ignored_with_a_warning() {
    let logs = LogCapture::start();
    let file = ConfigFile::new("listen");
    file.write(&reloadable("", 1000));
    let h = start(&file).await;
    let mut moved = reloadable(BOB_RULE, 1000);
    moved.extra_server = "admin_reload = true\nmax_connections = 5\nbusy_poll_us = 100".into();
    let text = absolute(&moved.render()).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", closed_port()),
    );
    file.write_text(&text);
    assert_eq!(post_reload(&h).await.status, 200);
    // Still on the old address, with the new policy.
    assert_eq!(h.console("bob", LINUX).await.status, 200);
    let warning = logs
        .events()
        .into_iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("only take effect on restart")
        })
        .expect("a warning");
    let keys = warning["keys"].as_str().unwrap();
    assert!(keys.contains("server.listen"), "{keys}");
    assert!(keys.contains("server.max_connections"), "{keys}");
    assert!(keys.contains("server.busy_poll_us"), "{keys}");
}

#[tokio::test]
async fn the_old_gateway_is_dropped_once_its_last_request_finishes() {
    let file = ConfigFile::new("drop");
    file.write(&reloadable("", 1000));
    let h = Arc::new(start(&file).await);
    let old = Arc::downgrade(&h.gateway.state());
    h.sim().faults().set_latency(Duration::from_millis(300));
    let slow = {
        let h = h.clone();
        tokio::spawn(async move { h.console("alice", LINUX).await })
    };
    wait_for_metric(&h.gateway.admin_url(), "bmsgw_http_requests_in_flight", 1.0).await;
    file.write(&reloadable(BOB_RULE, 1000));
    assert_eq!(post_reload(&h).await.status, 200);
    assert!(
        old.upgrade().is_some(),
        "the in-flight request still holds the old gateway"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    for _ in 0..200 {
        if old.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the old gateway outlived its requests");
}

#[tokio::test]
async fn the_reload_endpoint_is_off_by_default() {
    let h = Harness::default().await;
    let reply = post_reload(&h).await;
    assert_eq!(reply.status, 404);
    // Started from config text: a reload has no file to read.
    assert!(matches!(
        h.gateway.reload().await,
        Err(bms_console_gateway::reload::ReloadError::NoConfigFile)
    ));
}
