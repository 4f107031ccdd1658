//! The wire side of the contract tests: requests written as raw HTTP/1.1 over TCP (so what is
//! checked is exactly what a client receives), their answers parsed, and a stub cloud for
//! answers the simulator never gives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{console_path, Harness, BODY};
use crate::spec::Answer;

/// One request, written as raw HTTP/1.1.
pub struct Request {
    pub method: &'static str,
    pub target: String,
    headers: Vec<(String, String)>,
    pub body: String,
    /// Send the head and only this many body bytes, then wait for the answer.
    pub body_sent: Option<usize>,
}

impl Request {
    pub fn new(method: &'static str, target: impl Into<String>) -> Request {
        Request {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: String::new(),
            body_sent: None,
        }
    }

    /// The standard console request for `server` of `project`, with a token for `subject`.
    pub fn console(h: &Harness, subject: &str, project: &str, server: &str) -> Request {
        Request::new("POST", console_path(project, server))
            .bearer(&h.token(subject))
            .json(BODY)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn json(self, body: &str) -> Request {
        let mut request = self.header("Content-Type", "application/json");
        request.body = body.into();
        request
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n",
            self.method, self.target
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let sent = self.body_sent.unwrap_or(self.body.len());
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body.as_bytes()[..sent]);
        bytes
    }
}

/// Writes the request and reads the answer until the server closes the connection.
pub async fn exchange(addr: SocketAddr, request: &Request) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request.bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no complete answer to {} {}",
        request.method,
        request.target
    );
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// An upstream that answers every call with `answer` (raw HTTP), for answers the simulator
/// never gives.
pub struct StubCloud {
    pub addr: SocketAddr,
    answer: Arc<Mutex<String>>,
}

impl StubCloud {
    pub async fn start() -> StubCloud {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(String::new()));
        let canned = answer.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let canned = canned.clone();
                tokio::spawn(async move {
                    read_request(&mut stream).await;
                    let answer = canned.lock().unwrap().clone();
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        StubCloud { addr, answer }
    }

    pub fn answer(&self, status: &str, content_type: &str, body: &str) {
        *self.answer.lock().unwrap() = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nX-Request-Id: stub-0001\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Reads one request (head and `Content-Length` body) so the answer follows a whole request.
async fn read_request(stream: &mut TcpStream) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}
