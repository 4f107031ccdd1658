//! The shutdown order, in process: readiness turns false while the public listener still
//! accepts for `server.shutdown_delay_ms`; requests that outlive the drain deadline are cut and
//! the shutdown still completes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Method;

async fn readyz(admin: &str) -> u16 {
    send(
        &client(),
        Method::GET,
        &format!("{admin}/readyz"),
        &[],
        String::new(),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn readiness_turns_false_before_the_listener_stops_accepting() {
    let h = Harness::start(TestConfig {
        extra_server: "shutdown_delay_ms = 3000".into(),
        ..TestConfig::default()
    })
    .await;
    let admin = h.gateway.admin_url();
    let public = h.gateway.public_url();
    let token = h.token("alice");
    let Harness { gateway, .. } = h;
    let shutdown = tokio::spawn(gateway.shutdown_gracefully());
    while readyz(&admin).await != 503 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Not ready, yet a caller that has not heard still gets served (on a new connection).
    let reply = send(
        &client(),
        Method::POST,
        &format!("{public}{}", console_path(PROJECT, LINUX)),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        BODY.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(public.trim_start_matches("http://"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn requests_that_outlive_the_drain_deadline_are_cut_and_shutdown_completes() {
    let h = Arc::new(Harness::default().await);
    // An upstream call far longer than the drain deadline.
    h.sim().faults().set_latency(Duration::from_secs(4));
    let slow = {
        let h = h.clone();
        let token = h.token("alice");
        let url = format!("{}{}", h.gateway.public_url(), console_path(PROJECT, LINUX));
        tokio::spawn(async move {
            let request = http::Request::post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(http_body_util::Full::new(bytes::Bytes::from(BODY)))
                .unwrap();
            client().request(request).await
        })
    };
    wait_for_metric(&h.gateway.admin_url(), "bmsgw_http_requests_in_flight", 1.0).await;
    let h = Arc::into_inner(h).expect("only the test holds the harness now");
    tokio::time::timeout(
        Duration::from_secs(20),
        h.gateway.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown completes after the drain deadline");
    let outcome = slow.await.unwrap();
    assert!(outcome.is_err(), "the request was cut: {outcome:?}");
}
