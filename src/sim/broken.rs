//! Broken answers: the scripted faults (`faults.rs`) where the cloud's answer itself is wrong,
//! not just an error status. Each starts as a `200` whose head looks right:
//!
//! - `reset_after_headers`: the head goes out, then the connection is dropped before any body
//!   byte (no `Content-Length`, so the client waits for a chunked body that never comes);
//! - `truncated`: `Content-Length` announces a whole console answer, the first half is sent,
//!   then the connection is dropped;
//! - `huge_body`: a well-formed console answer padded with a `padding` member to
//!   [`HUGE_BODY_BYTES`], streamed in chunks so the simulator never holds it whole. A client
//!   without a response-size cap would read and accept it;
//! - `trickle`: a well-formed console answer with its `Content-Length`, one byte per
//!   `trickle_interval_ms` after the head, so only a deadline that covers the body stops it;
//! - `not_json`: an HTML maintenance page with `Content-Type: text/html`;
//! - `no_url`: `{"remote_console":{"type":"serial","protocol":"serial"}}`;
//! - `http_url`: a console answer whose URL is `http://` (a downgrade a gateway must refuse).
//!
//! A body that must kill its connection ends in an error after [`FLUSH_PAUSE`]: hyper has
//! flushed what went before by then, and on the error it closes the connection (HTTP/1) or
//! resets the stream (HTTP/2), which is what the client of a real dying connection sees.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;

use super::console_urls::ConsoleUrls;
use super::faults::Scripted;
use super::responses::{flat, json, whole, Body, BodyError};

/// Size of a `huge_body` answer: far above any console answer (a few hundred bytes) and above
/// the caps a client should have, small enough to stream in a blink on loopback.
pub const HUGE_BODY_BYTES: usize = 1024 * 1024;
/// The pieces a huge body is sent in.
const HUGE_CHUNK_BYTES: usize = 16 * 1024;
/// How long a dying body waits before its error, so that hyper flushes what went before.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// The answer for one of the broken-answer faults. The server asks only for those; any other
/// fault gets a plain `500` rather than a panic.
pub(crate) fn answer(
    scripted: Scripted,
    request_id: &str,
    urls: &ConsoleUrls,
    trickle_interval: Duration,
) -> Response<Body> {
    match scripted {
        Scripted::ResetAfterHeaders => streamed(request_id, None, dying(Vec::new())),
        Scripted::Truncated => {
            let whole_answer = console_answer(&urls.mint());
            let half = whole_answer.slice(..whole_answer.len() / 2);
            streamed(request_id, Some(whole_answer.len()), dying(vec![half]))
        }
        Scripted::HugeBody => {
            let chunks = huge_chunks(&urls.mint());
            let length = chunks.iter().map(Bytes::len).sum();
            let frames = stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))));
            streamed(request_id, Some(length), frames)
        }
        Scripted::Trickle => {
            let whole_answer = console_answer(&urls.mint());
            let length = whole_answer.len();
            let bytes = (0..length).map(move |i| whole_answer.slice(i..=i));
            let frames = stream::iter(bytes).then(move |byte| async move {
                tokio::time::sleep(trickle_interval).await;
                Ok(Frame::data(byte))
            });
            streamed(request_id, Some(length), frames)
        }
        Scripted::NotJson => {
            let mut resp = json(StatusCode::OK, request_id, &json!({}));
            *resp.body_mut() =
                whole("<html><body><h1>Service maintenance</h1></body></html>".as_bytes());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        }
        Scripted::NoUrl => json(
            StatusCode::OK,
            request_id,
            &json!({"remote_console": {"type": "serial", "protocol": "serial"}}),
        ),
        Scripted::HttpUrl => {
            let downgraded = urls.base().replacen("https://", "http://", 1);
            let url = urls.mint_under(&downgraded);
            json(
                StatusCode::OK,
                request_id,
                &json!({"remote_console": {"type": "serial", "protocol": "serial", "url": url}}),
            )
        }
        Scripted::Ok
        | Scripted::BadGateway
        | Scripted::Unavailable
        | Scripted::GatewayTimeout
        | Scripted::Reset
        | Scripted::Overload
        | Scripted::Throttle => flat(
            StatusCode::INTERNAL_SERVER_ERROR,
            request_id,
            "SIM.0002",
            "not a broken-answer fault",
        ),
    }
}

/// The bytes of a well-formed console answer.
fn console_answer(url: &str) -> Bytes {
    let value = json!({"remote_console": {"type": "serial", "protocol": "serial", "url": url}});
    Bytes::from(value.to_string())
}

/// A console answer padded to exactly [`HUGE_BODY_BYTES`], in chunks that share one buffer.
fn huge_chunks(url: &str) -> Vec<Bytes> {
    let head = Bytes::from(format!(
        r#"{{"remote_console":{{"type":"serial","protocol":"serial","url":{},"padding":""#,
        json!(url)
    ));
    let tail = Bytes::from_static(br#""}}"#);
    let mut padding = HUGE_BODY_BYTES.saturating_sub(head.len() + tail.len());
    let filler = Bytes::from(vec![b'x'; HUGE_CHUNK_BYTES]);
    let mut chunks = vec![head];
    while padding > 0 {
        let n = padding.min(HUGE_CHUNK_BYTES);
        chunks.push(filler.slice(..n));
        padding -= n;
    }
    chunks.push(tail);
    chunks
}

/// `chunks`, then (after [`FLUSH_PAUSE`]) the error that kills the connection.
fn dying(chunks: Vec<Bytes>) -> impl Stream<Item = Result<Frame<Bytes>, BodyError>> + Send {
    let death = stream::once(async {
        tokio::time::sleep(FLUSH_PAUSE).await;
        Err::<Frame<Bytes>, BodyError>("fault injected: connection dropped mid-answer".into())
    });
    stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c)))).chain(death)
}

/// A `200` JSON head with `Content-Length` when given (else chunked) and a streamed body.
fn streamed(
    request_id: &str,
    content_length: Option<usize>,
    frames: impl Stream<Item = Result<Frame<Bytes>, BodyError>> + Send + 'static,
) -> Response<Body> {
    let mut resp = json(StatusCode::OK, request_id, &json!({}));
    *resp.body_mut() = StreamBody::new(frames).boxed_unsync();
    if let Some(length) = content_length {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_body_is_a_valid_console_answer_of_exactly_the_announced_size() {
        let chunks = huge_chunks("https://c.invalid/?token=t");
        let bytes: Vec<u8> = chunks.concat();
        assert_eq!(bytes.len(), HUGE_BODY_BYTES);
        assert!(chunks.iter().all(|c| c.len() <= HUGE_CHUNK_BYTES + 128));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["remote_console"]["url"], "https://c.invalid/?token=t");
        assert_eq!(value["remote_console"]["type"], "serial");
    }

    #[test]
    fn broken_answers_are_200s_and_other_faults_are_not_answered_here() {
        let urls = ConsoleUrls::new("https://c.invalid/");
        for plain in [Scripted::Ok, Scripted::Reset, Scripted::Throttle] {
            let resp = answer(plain, "r", &urls, Duration::ZERO);
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        let http = answer(Scripted::HttpUrl, "r", &urls, Duration::ZERO);
        assert_eq!(http.status(), StatusCode::OK);
        assert_eq!(
            urls.recent_tokens().len(),
            1,
            "the downgraded URL's token is remembered"
        );
    }
}
