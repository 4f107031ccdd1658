//! Connection hardening, each limit driven by a raw TCP client writing bytes: head size, header
//! count, request-line length, body size, open connections, HTTP/2 streams, the header-read
//! timeout (slowloris), the idle timeout, and pipelined requests answered in order.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` and reads until the server closes (or 20 s pass, which fails the test).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

fn console_request(extra_headers: &str, body: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        console_path(PROJECT, LINUX),
        body.len()
    )
}

/// Sends the console request with `extra_headers` on a fresh connection and asserts the status.
async fn assert_status_with_headers(addr: SocketAddr, extra_headers: &str, status: u16) {
    let answer = exchange(addr, console_request(extra_headers, BODY).as_bytes()).await;
    assert_eq!(status_of(&answer), status, "{answer}");
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let h = Harness::default().await;
    // Default server.max_header_bytes is 16 KiB.
    let pad = format!("X-Pad: {}\r\n", "a".repeat(17 * 1024));
    assert_status_with_headers(h.gateway.public_addr, &pad, 431).await;
    // Just under the limit is fine (the token is refused, which means the head was read).
    let pad = format!("X-Pad: {}\r\n", "a".repeat(14 * 1024));
    assert_status_with_headers(h.gateway.public_addr, &pad, 401).await;
}

#[tokio::test]
async fn more_headers_than_max_headers_get_431() {
    let h = Harness::start(TestConfig {
        extra_server: "max_headers = 20".into(),
        ..TestConfig::default()
    })
    .await;
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_status_with_headers(h.gateway.public_addr, &many, 431).await;
    let few: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_status_with_headers(h.gateway.public_addr, &few, 401).await;
}

#[tokio::test]
async fn a_request_line_over_max_request_line_bytes_gets_414_in_the_error_shape() {
    let h = Harness::start(TestConfig {
        extra_server: "max_request_line_bytes = 512".into(),
        ..TestConfig::default()
    })
    .await;
    let long_path = format!("{}?{}", console_path(PROJECT, LINUX), "q".repeat(600));
    let request = format!(
        "POST {long_path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let answer = exchange(h.gateway.public_addr, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 414, "{answer}");
    assert_eq!(json_body(&answer)["error_code"], "BMSGW.0701");
    let scrape = h.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"bmsgw_http_requests_total{route="other",status_class="4xx"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_body_over_4_kib_gets_413_declared_or_chunked() {
    let h = Harness::default().await;
    let big = "x".repeat(5000);
    let answer = exchange(h.gateway.public_addr, console_request("", &big).as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert_eq!(json_body(&answer)["error_code"], "BMSGW.0105");

    let chunked = format!(
        "POST {} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        console_path(PROJECT, LINUX),
        big.len()
    );
    let answer = exchange(h.gateway.public_addr, chunked.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_on_accept() {
    let h = Harness::start(TestConfig {
        extra_server: "max_connections = 2".into(),
        ..TestConfig::default()
    })
    .await;
    let addr = h.gateway.public_addr;
    let admin = h.gateway.admin_url();
    let first = TcpStream::connect(addr).await.unwrap();
    let second = TcpStream::connect(addr).await.unwrap();
    wait_for_metric(&admin, "bmsgw_connections_open", 2.0).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut third).await;
    assert_eq!(
        answer, "",
        "the third connection is closed without an answer"
    );
    assert_eq!(
        metric(&h.metrics().await, "bmsgw_connections_rejected_total"),
        1.0
    );

    // A slot frees up when a connection closes.
    drop(first);
    drop(second);
    for _ in 0..200 {
        if metric(&h.metrics().await, "bmsgw_connections_open") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = exchange(addr, console_request("", BODY).as_bytes()).await;
    assert_eq!(status_of(&answer), 401, "{answer}");
}

#[tokio::test]
async fn http2_advertises_max_concurrent_streams() {
    let h = Harness::start(TestConfig {
        extra_server: "max_concurrent_streams = 7".into(),
        ..TestConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    // Client preface, then an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let (kind, _, _, payload) = read_frame(&mut stream).await;
    assert_eq!(kind, 4, "the server's first frame is SETTINGS");
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS is 0x3; SETTINGS_MAX_HEADER_LIST_SIZE is 0x6.
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    assert!(settings.contains(&(6, 16 * 1024)), "{settings:?}");
}

/// Reads one HTTP/2 frame: (type, flags, stream id, payload).
async fn read_frame(stream: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut header))
        .await
        .expect("a frame in time")
        .unwrap();
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    (header[3], header[4], id, payload)
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS block in HPACK "literal without indexing, new name" form (no tables, no Huffman).
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

#[tokio::test]
async fn http2_streams_beyond_max_concurrent_streams_are_refused() {
    let h = Harness::start(TestConfig {
        extra_server: "max_concurrent_streams = 2".into(),
        ..TestConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS apply once acknowledged.
    loop {
        let (kind, flags, _, _) = read_frame(&mut stream).await;
        if kind == 4 && flags & 1 == 0 {
            break;
        }
    }
    stream.write_all(&frame(4, 1, 0, &[])).await.unwrap();
    let path = console_path(PROJECT, LINUX);
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "gw"),
        (":path", &path),
        ("content-type", "application/json"),
    ]);
    // Three requests whose bodies never come (END_HEADERS, no END_STREAM): two fit.
    for id in [1u32, 3, 5] {
        stream.write_all(&frame(1, 0x4, id, &block)).await.unwrap();
    }
    let refused = loop {
        let (kind, _, id, payload) = read_frame(&mut stream).await;
        if kind == 3 {
            // RST_STREAM carries the error code.
            break (
                id,
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            );
        }
    };
    // REFUSED_STREAM (0x7) for the third stream.
    assert_eq!(refused, (5, 7));
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_by_the_header_read_timeout() {
    // server.header_read_timeout_ms is 2000 in the test config.
    let h = Harness::default().await;
    let mut stream = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    stream
        .write_all(b"POST /v1/x HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    // The attacker keeps dribbling header bytes, never finishing the head.
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        for i in 0..200 {
            if writer
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was held open");
    assert!(
        !String::from_utf8_lossy(&buf).contains(" 200 "),
        "no request was served"
    );
    dribble.abort();

    // A client that connects and says nothing at all is cut off too.
    let mut silent = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let h = Harness::start(TestConfig {
        extra_server: "idle_timeout_ms = 300".into(),
        ..TestConfig::default()
    })
    .await;
    // HTTP/1.1: one request on a keep-alive connection, then silence.
    let mut stream = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    let request = console_request("", BODY).replace("Connection: close\r\n", "");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(status_of(&answer), 401, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1);

    // HTTP/2 (prior knowledge): the server sends GOAWAY once the connection is idle, which
    // ends the client's connection future.
    let tcp = TcpStream::connect(h.gateway.public_addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::post(format!("http://gw{}", console_path(PROJECT, LINUX)))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(BODY)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_all_answered_in_order() {
    // Answers wait one scheduler turn before they are written (`write_batching`); requests that
    // arrive together in one read must still each get their answer, in order, on the one
    // connection.
    let h = Harness::default().await;
    let token = h.token("alice");
    let count = 30;
    let mut requests = String::new();
    for i in 0..count {
        let last = i == count - 1;
        let request = console_request(
            &format!("Authorization: Bearer {token}\r\nX-Request-Id: pipelined-{i:02}\r\n"),
            BODY,
        );
        requests.push_str(&if last {
            request
        } else {
            request.replace("Connection: close\r\n", "")
        });
    }
    let answers = exchange(h.gateway.public_addr, requests.as_bytes()).await;
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answers[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, vec!["200"; count], "{answers}");
    let ids: Vec<&str> = answers
        .split("x-request-id: ")
        .skip(1)
        .map(|rest| rest.split("\r\n").next().unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..count).map(|i| format!("pipelined-{i:02}")).collect();
    assert_eq!(ids, expected);
    // One upstream call; the other 29 were cache hits.
    assert_eq!(h.sim().stats().remote_console_ok, 1);
}
