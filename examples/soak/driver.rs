//! Sends the schedule: `rate` requests per second for `duration`, request `k` due at
//! `start + k / rate`, through `connections` keep-alive connections that carry one request at
//! a time each. Latency counts from the due time, so a gateway (or a machine) that falls
//! behind shows up as latency rather than as a quietly lower rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::Full;
use serde_json::Value;

use crate::client::Connection;
use crate::mix::{CacheHeader, Mix, Outcome, Planned, OK};
use crate::tally::Tally;

const BODY: &str = r#"{"remote_console":{"protocol":"serial","type":"serial"}}"#;
/// Longer than the gateway's own upstream timeout (10 s): a request still unanswered by then
/// is stuck, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The fixed-rate schedule shared by the workers.
pub struct Schedule {
    pub start: Instant,
    pub rate: u32,
    pub total: u64,
    next: AtomicU64,
}

impl Schedule {
    pub fn new(start: Instant, rate: u32, total: u64) -> Schedule {
        Schedule {
            start,
            rate,
            total,
            next: AtomicU64::new(0),
        }
    }

    /// The next request number and when it is due, until the schedule is used up.
    fn take(&self) -> Option<(u64, Instant)> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        (k < self.total).then(|| (k, self.due(k)))
    }

    pub fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / f64::from(self.rate))
    }
}

/// Runs the whole schedule and returns what came back.
pub async fn run(
    mix: Arc<Mix>,
    schedule: Arc<Schedule>,
    gateway: SocketAddr,
    connections: usize,
) -> Tally {
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(mix.clone(), schedule.clone(), gateway)))
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.expect("worker task"));
    }
    tally
}

async fn worker(mix: Arc<Mix>, schedule: Arc<Schedule>, gateway: SocketAddr) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<Connection> = None;
    while let Some((k, due)) = schedule.take() {
        tokio::time::sleep_until(due.into()).await;
        let lag = due.elapsed();
        let planned = mix.request(k);
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            exchange(&mut connection, gateway, &planned),
        )
        .await
        .unwrap_or(Outcome::Timeout);
        if !matches!(outcome, Outcome::Answer { .. }) {
            // Whatever state it was left in, the next request gets a fresh connection.
            connection = None;
        }
        tally.record(planned.intent, outcome, due.elapsed(), lag);
    }
    tally
}

/// One request on the worker's connection, opened first when there is none.
async fn exchange(
    connection: &mut Option<Connection>,
    gateway: SocketAddr,
    planned: &Planned<'_>,
) -> Outcome {
    if connection.is_none() {
        match Connection::open(gateway).await {
            Ok(c) => *connection = Some(c),
            Err(e) => return Outcome::ConnectionError(e),
        }
    }
    let open = connection.as_mut().expect("opened above");
    match open.send(request(planned, gateway)).await {
        Ok((parts, body)) => {
            if closes(&parts.headers) {
                *connection = None;
            }
            classify(parts.status.as_u16(), &parts.headers, &body)
        }
        Err(e) => Outcome::ConnectionError(e),
    }
}

fn request(planned: &Planned<'_>, gateway: SocketAddr) -> Request<Full<Bytes>> {
    let mut builder = Request::post(&planned.path)
        .header(header::HOST, gateway.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", planned.token))
        .header(header::CONTENT_TYPE, "application/json");
    if planned.no_cache {
        builder = builder.header(header::CACHE_CONTROL, "no-cache");
    }
    builder
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("valid request")
}

/// The server announced it closes the connection after this answer.
fn closes(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// An answer as the mix judges it: status, `error_code` (or [`OK`] for a 200 that carries an
/// `https://` console URL and `Cache-Control: no-store`), and `X-Cache`. A documented header
/// that is missing (`Retry-After` on a 429, `WWW-Authenticate` on a 401) is named in the
/// code, which makes the answer unexpected.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let cache = headers.get("x-cache").map(|v| match v.as_bytes() {
        b"hit" => CacheHeader::Hit,
        b"miss" => CacheHeader::Miss,
        _ => CacheHeader::Other,
    });
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let has = |name: header::HeaderName| headers.contains_key(name);
    let code = if status == 200 {
        let url = json
            .as_ref()
            .and_then(|j| j["remote_console"]["url"].as_str());
        let no_store = headers
            .get(header::CACHE_CONTROL)
            .is_some_and(|v| v == "no-store");
        match (url, no_store) {
            (Some(url), true) if url.starts_with("https://") => OK.to_string(),
            (Some(_), true) => "200 without an https:// URL".to_string(),
            (Some(_), false) => "200 without Cache-Control: no-store".to_string(),
            (None, _) => "200 without a console URL".to_string(),
        }
    } else {
        let code = json
            .as_ref()
            .and_then(|j| j["error_code"].as_str())
            .unwrap_or("no error_code")
            .to_string();
        match status {
            429 if !has(header::RETRY_AFTER) => format!("{code} without Retry-After"),
            401 if !has(header::WWW_AUTHENTICATE) => format!("{code} without WWW-Authenticate"),
            _ => code,
        }
    };
    Outcome::Answer {
        status,
        code,
        cache,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn answers_are_classified_by_status_code_headers_and_body() {
        let url = br#"{"remote_console":{"type":"serial","protocol":"serial","url":"https://c.invalid/?token=x"}}"#;
        let ok = headers(&[("x-cache", "hit"), ("cache-control", "no-store")]);
        assert_eq!(classify(200, &ok, url).to_string(), "200 hit");
        assert_eq!(
            classify(200, &headers(&[("x-cache", "miss")]), url).to_string(),
            "200 200 without Cache-Control: no-store miss"
        );
        assert_eq!(
            classify(200, &ok, b"{}").to_string(),
            "200 200 without a console URL hit"
        );
        let limited = br#"{"error_code":"APIGW.0308","error_msg":"x","request_id":"r"}"#;
        assert_eq!(
            classify(429, &headers(&[("retry-after", "1")]), limited).to_string(),
            "429 APIGW.0308"
        );
        assert_eq!(
            classify(429, &HeaderMap::new(), limited).to_string(),
            "429 APIGW.0308 without Retry-After"
        );
        assert_eq!(
            classify(502, &HeaderMap::new(), b"oops").to_string(),
            "502 no error_code"
        );
    }

    #[test]
    fn the_schedule_spaces_requests_evenly_and_ends() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 4, 3);
        assert_eq!(schedule.take(), Some((0, start)));
        assert_eq!(
            schedule.take(),
            Some((1, start + Duration::from_millis(250)))
        );
        assert_eq!(
            schedule.take(),
            Some((2, start + Duration::from_millis(500)))
        );
        assert_eq!(schedule.take(), None);
        assert!(closes(&headers(&[("connection", "Close")])));
        assert!(!closes(&HeaderMap::new()));
    }
}
