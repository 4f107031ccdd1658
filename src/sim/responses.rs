//! The simulator's answers, in the two shapes the real cloud uses.
//!
//! - **Flat** (API gateway layer: auth, throttling, unknown routes):
//!   `{"error_code": "...", "error_msg": "...", "request_id": "..."}`.
//! - **Nested** (the BMS service itself): `{"error": {"code": "...", "message": "..."}}`.
//!
//! Every answer, success or error, carries a fresh `X-Request-Id` (32 lower-case hex, like
//! APIGW's); flat errors repeat it in the body as APIGW does. The official SDKs read the id
//! only from the header, which is why it is on every answer.
//!
//! The body type is boxed so that the broken answers of `broken.rs` can stream (and fail
//! mid-way) through the same service as the whole ones built here.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::json;

/// Why a streamed body stopped: hyper then drops the connection (HTTP/1) or resets the stream.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A body that is all there at once.
pub(crate) fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A fresh request id: 32 lower-case hex characters.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A JSON answer with `Content-Type: application/json` and `X-Request-Id`.
pub(crate) fn json<T: Serialize>(status: StatusCode, request_id: &str, body: &T) -> Response<Body> {
    // Serialising our own plain structs cannot fail; an empty object is a safe fallback.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(whole(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    resp
}

/// An API-gateway style error.
pub(crate) fn flat(status: StatusCode, request_id: &str, code: &str, msg: &str) -> Response<Body> {
    json(
        status,
        request_id,
        &json!({"error_code": code, "error_msg": msg, "request_id": request_id}),
    )
}

/// A BMS service style error.
pub(crate) fn nested(
    status: StatusCode,
    request_id: &str,
    code: &str,
    message: &str,
) -> Response<Body> {
    json(
        status,
        request_id,
        &json!({"error": {"code": code, "message": message}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn shapes_and_request_ids() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        let resp = flat(StatusCode::NOT_FOUND, &id, "APIGW.0101", "gone");
        assert_eq!(resp.headers()["x-request-id"], id.as_str());
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(
            body_json(resp).await,
            json!({"error_code": "APIGW.0101", "error_msg": "gone", "request_id": id})
        );

        let resp = nested(StatusCode::BAD_REQUEST, &id, "BMS.0040", "nope");
        assert_eq!(resp.headers()["x-request-id"], id.as_str());
        assert_eq!(
            body_json(resp).await,
            json!({"error": {"code": "BMS.0040", "message": "nope"}})
        );
    }
}
