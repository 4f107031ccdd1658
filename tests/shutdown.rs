//! Signals to the real binary: `SIGTERM` during load (readiness turns false, every in-flight
//! request finishes, the listener closes, exit status 0), on several cores and pinned to one,
//! where the gateway runs its current-thread runtime, and `SIGHUP` (the config file is read
//! again; a broken one is refused and the old config keeps serving); and the optional OTLP
//! trace export, whose last spans are flushed on the way out.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{
    console, serve_command, serve_command_on_one_core, token_now, write_config_file,
    GatewayProcess, BIN,
};
use common::*;
use http::Method;

async fn get(url: &str) -> Reply {
    send(&client(), Method::GET, url, &[], String::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_lets_every_in_flight_request_finish_and_exits_0() {
    sigterm_during_load("term", serve_command).await;
}

/// The same on one core, where the gateway runs its current-thread runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_single_core_sigterm_during_load_lets_every_request_finish_and_exits_0() {
    sigterm_during_load("term-one-core", serve_command_on_one_core).await;
}

async fn sigterm_during_load(tag: &str, serve: impl Fn(&std::path::Path) -> Command) {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    // Every request goes upstream and takes a second there.
    sim.faults().set_latency(Duration::from_millis(1000));
    let config = write_config_file(
        tag,
        &TestConfig {
            endpoint: sim.endpoint(),
            cache_ttl_seconds: 0,
            extra_server: "shutdown_delay_ms = 200\ndrain_timeout_seconds = 20".into(),
            ..TestConfig::default()
        },
    );
    let mut gateway = GatewayProcess::serve_command(serve(&config));
    assert_eq!(get(&format!("{}/readyz", gateway.admin)).await.status, 200);

    let in_flight: Vec<_> = (0..12)
        .map(|i| {
            let public = gateway.public.clone();
            tokio::spawn(async move { console(&public, &format!("user-{i}")).await })
        })
        .collect();
    wait_for_metric(&gateway.admin, "bmsgw_http_requests_in_flight", 12.0).await;

    gateway.signal("TERM");
    // Readiness turns false while the admin listener still answers.
    for _ in 0..600 {
        if get(&format!("{}/readyz", gateway.admin)).await.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(&format!("{}/readyz", gateway.admin)).await.status, 503);

    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(
            reply.status,
            200,
            "an in-flight request failed: {}",
            reply.text()
        );
    }
    let status = gateway.wait_exit();
    assert!(status.success(), "exit status {status:?}");
    // The twelve concurrent misses for one server shared one upstream call, still in flight
    // when the signal came.
    assert_eq!(sim.stats().remote_console_ok, 1);
    // After the drain the listener is gone.
    let public_addr = gateway.public.trim_start_matches("http://").to_string();
    assert!(tokio::net::TcpStream::connect(public_addr).await.is_err());
    gateway.wait_for("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_a_broken_one_keeps_the_old() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let alice_only = format!(
        "[[policy.rules]]\nname = \"alice\"\nsubjects = [\"alice\"]\nprojects = [\"{PROJECT}\"]\n"
    );
    let mut config = TestConfig {
        endpoint: sim.endpoint(),
        policy: alice_only.clone(),
        ..TestConfig::default()
    };
    let path = write_config_file("hup", &config);
    let mut gateway = GatewayProcess::serve(&path);
    assert_eq!(console(&gateway.public, "bob").await.status, 403);
    // `probe` (the container HEALTHCHECK) sees the admin listener.
    let readyz = format!("{}/readyz", gateway.admin);
    assert!(probe(&readyz).success());

    config.policy = format!("{alice_only}[[policy.rules]]\nname = \"bob\"\nsubjects = [\"bob\"]\nprojects = [\"{PROJECT}\"]\n");
    write_config_file("hup", &config);
    gateway.signal("HUP");
    gateway.wait_for("config reloaded");
    assert_eq!(console(&gateway.public, "bob").await.status, 200);

    std::fs::write(&path, "[server]\nlisten = 12\n").unwrap();
    gateway.signal("HUP");
    let rejected = gateway.wait_for("config reload rejected; the previous config keeps running");
    assert!(
        rejected["problems"]
            .as_str()
            .unwrap()
            .contains("server.listen"),
        "{rejected}"
    );
    assert_eq!(console(&gateway.public, "bob").await.status, 200);
    let scrape = get(&format!("{}/metrics", gateway.admin)).await.text();
    assert_eq!(
        metric(&scrape, r#"bmsgw_config_reloads_total{result="failure"}"#),
        1.0
    );

    gateway.signal("TERM");
    assert!(gateway.wait_exit().success());
    assert!(!probe(&readyz).success());
}

fn probe(url: &str) -> std::process::ExitStatus {
    tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["probe", "--url", url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
    })
}

/// A stand-in OpenTelemetry collector: records each OTLP/HTTP request (path, content type, body).
async fn fake_collector() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, Vec<u8>)>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            let content_type = request
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = request.into_body().collect().await?.to_bytes().to_vec();
                            let _ = tx.send((path, content_type, body));
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_as_children_of_the_callers_trace() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let (collector, mut received) = fake_collector().await;
    let mut config = TestConfig {
        endpoint: sim.endpoint(),
        ..TestConfig::default()
    };
    config.policy.push_str(&format!(
        "\n[tracing]\notlp_endpoint = \"http://{collector}/v1/traces\"\nservice_name = \"gw-under-test\"\n"
    ));
    let path = write_config_file("otlp", &config);
    let mut gateway = GatewayProcess::serve(&path);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let reply = send(
        &client(),
        Method::POST,
        &format!("{}{}", gateway.public, console_path(PROJECT, LINUX)),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {}", token_now("alice"))),
            ("traceparent", &format!("00-{trace_id}-{parent_id}-01")),
        ],
        BODY.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The access log names the caller's trace too.
    let access = gateway.wait_for("request");
    assert_eq!(access["trace_id"], trace_id);

    // SIGTERM flushes the batch that holds the span.
    gateway.signal("TERM");
    assert!(gateway.wait_exit().success());
    let (path, content_type, body) = tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("an export reached the collector")
        .unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    // Protobuf holds ids as raw bytes: the span's trace id and its parent's span id are the
    // caller's, and the resource names the service.
    assert!(
        contains(&body, &hex_bytes(trace_id)),
        "trace id not in the export"
    );
    assert!(
        contains(&body, &hex_bytes(parent_id)),
        "parent span id not in the export"
    );
    assert!(contains(&body, b"gw-under-test"));
    assert!(contains(&body, b"remote_console"));
}
