//! The public API through a real server: the happy path, request validation, routing, request ids.

mod common;

use common::*;
use http::Method;

#[tokio::test]
async fn happy_path_returns_the_bms_shape_with_headers() {
    let h = Harness::default().await;
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["remote_console"]["type"], "serial");
    assert_eq!(v["remote_console"]["protocol"], "serial");
    assert!(reply.url().starts_with("https://"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(reply.header("ratelimit-limit"), Some("1000"));
    assert_eq!(reply.header("ratelimit-remaining"), Some("999"));
    assert!(reply.header("ratelimit-reset").is_some());
    assert_eq!(h.sim().stats().remote_console_ok, 1);
}

#[tokio::test]
async fn caller_credentials_are_never_forwarded() {
    let h = Harness::default().await;
    let token = h.token("alice");
    let reply = h
        .post(
            &console_path(PROJECT, LINUX),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cookie", "session=caller-cookie"),
                ("x-auth-token", "caller-iam-token"),
                ("x-security-token", "caller-sts-token"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-project-id", "ffffffffffffffffffffffffffffffff"),
            ],
            BODY,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut seen = h.sim().stats().last_request_headers;
    seen.sort();
    assert_eq!(
        seen,
        [
            "authorization",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-project-id",
            "x-sdk-date"
        ],
        "the upstream request carries only the gateway's own headers"
    );
}

#[tokio::test]
async fn path_parameters_are_validated_before_anything_else() {
    let h = Harness::default().await;
    // No token at all: the path is checked first.
    let reply = h.post(&console_path("not-hex", LINUX), &[], BODY).await;
    let msg = reply.assert_error(400, "BMSGW.0101");
    assert!(msg.contains("project_id"));
    let short = &PROJECT[..31];
    h.post(&console_path(short, LINUX), &[], BODY)
        .await
        .assert_error(400, "BMSGW.0101");
    let reply = h
        .post(
            &console_path(PROJECT, "cf2a8b97b5c647ef9714eb27adf26e5b"),
            &[],
            BODY,
        )
        .await;
    let msg = reply.assert_error(400, "BMSGW.0102");
    assert!(msg.contains("server_id"));
    h.post(&console_path(PROJECT, "../../etc"), &[], BODY)
        .await
        .assert_error(404, "APIGW.0101");
    assert_eq!(h.sim().stats().requests_total, 0);
}

#[tokio::test]
async fn body_limits_and_content_type_are_enforced() {
    let h = Harness::default().await;
    let auth = format!("Bearer {}", h.token("alice"));
    let path = console_path(PROJECT, LINUX);

    let big = format!(
        r#"{{"remote_console":{{"protocol":"serial","type":"serial"}},"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    h.post(&path, &[("authorization", &auth)], &big)
        .await
        .assert_error(413, "BMSGW.0105");

    let reply = common::send(
        &h.client,
        Method::POST,
        &format!("{}{path}", h.gateway.public_url()),
        &[("authorization", &auth), ("content-type", "text/plain")],
        BODY.into(),
    )
    .await;
    reply.assert_error(415, "BMSGW.0106");
    let reply = common::send(
        &h.client,
        Method::POST,
        &format!("{}{path}", h.gateway.public_url()),
        &[("authorization", &auth)],
        BODY.into(),
    )
    .await;
    reply.assert_error(415, "BMSGW.0106");
    // A charset parameter is fine, as the official SDK sends it.
    let reply = common::send(
        &h.client,
        Method::POST,
        &format!("{}{path}", h.gateway.public_url()),
        &[
            ("authorization", &auth),
            ("content-type", "application/json;charset=utf-8"),
        ],
        BODY.into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn oversized_chunked_body_is_refused() {
    use bytes::Bytes;
    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let h = Harness::default().await;
    // A body with no Content-Length, streamed in chunks past the cap.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 1024]))))
        .collect();
    let body = StreamBody::new(stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let request = http::Request::post(format!(
        "{}{}",
        h.gateway.public_url(),
        console_path(PROJECT, LINUX)
    ))
    .header("content-type", "application/json")
    .header("authorization", format!("Bearer {}", h.token("alice")))
    .body(body)
    .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error_code"], "BMSGW.0105");
}

#[tokio::test]
async fn body_fields_are_validated_and_named() {
    let h = Harness::default().await;
    let auth = format!("Bearer {}", h.token("alice"));
    let path = console_path(PROJECT, LINUX);
    h.post(&path, &[("authorization", &auth)], "{not json")
        .await
        .assert_error(400, "BMSGW.0103");
    let msg = h
        .post(
            &path,
            &[("authorization", &auth)],
            r#"{"remote_console":{"type":"serial"}}"#,
        )
        .await
        .assert_error(400, "BMSGW.0104");
    assert!(msg.contains("remote_console.protocol"), "{msg}");
    let msg = h
        .post(
            &path,
            &[("authorization", &auth)],
            r#"{"remote_console":{"protocol":"serial","type":"vnc"}}"#,
        )
        .await
        .assert_error(400, "BMSGW.0104");
    assert!(msg.contains("remote_console.type"), "{msg}");
    let msg = h
        .post(&path, &[("authorization", &auth)], "{}")
        .await
        .assert_error(400, "BMSGW.0104");
    assert!(msg.contains("remote_console"), "{msg}");
    assert_eq!(h.sim().stats().requests_total, 0);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let h = Harness::default().await;
    h.post("/v1/nothing/here", &[], BODY)
        .await
        .assert_error(404, "APIGW.0101");
    h.post("/", &[], BODY).await.assert_error(404, "APIGW.0101");
    let reply = common::send(
        &h.client,
        Method::GET,
        &format!("{}{}", h.gateway.public_url(), console_path(PROJECT, LINUX)),
        &[],
        String::new(),
    )
    .await;
    reply.assert_error(405, "BMSGW.0107");
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
    let h = Harness::default().await;
    let auth = format!("Bearer {}", h.token("alice"));
    let path = console_path(PROJECT, LINUX);
    let reply = h
        .post(
            &path,
            &[("authorization", &auth), ("x-request-id", "trace-abc.123")],
            BODY,
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc.123"));
    let long = "a".repeat(129);
    let reply = h
        .post(
            &path,
            &[("authorization", &auth), ("x-request-id", &long)],
            BODY,
        )
        .await;
    let id = reply.header("x-request-id").unwrap();
    assert_ne!(id, long);
    assert_eq!(id.len(), 32);
    let reply = h.post(&path, &[("x-request-id", "has space")], BODY).await;
    let msg_id = reply.json()["request_id"].as_str().unwrap().to_string();
    assert_ne!(msg_id, "has space");
}

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::default().await;
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let url = format!("{}{path}", h.gateway.admin_url());
        let reply = common::send(&h.client, Method::GET, &url, &[], String::new()).await;
        assert_eq!(reply.status, status, "{path}");
    }
}
