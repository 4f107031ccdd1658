//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (keys and credentials are loaded and requests are being served), and, when
//! `server.admin_reload` is on, `POST /-/reload` (re-read the config file, like `SIGHUP`).
//!
//! It runs on its own address so it can stay inside the cluster while the public listener
//! faces callers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::reload::{ReloadError, Reloader};
use crate::state::Gateway;

/// Serves one admin request against the current gateway; `/-/reload` only when enabled.
pub async fn handle_with_reload<B>(
    reloader: &Reloader,
    reload_enabled: bool,
    request: Request<B>,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/-/reload" {
        if !reload_enabled {
            return text(
                StatusCode::NOT_FOUND,
                "not found (reload over HTTP is off: server.admin_reload)\n",
            );
        }
        if request.method() != Method::POST {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return response;
        }
        return reload(reloader).await;
    }
    handle(&reloader.current(), &request)
}

/// `POST /-/reload`: 200 when the new config serves, else the flat error shape with the
/// problems (the old config keeps serving).
async fn reload(reloader: &Reloader) -> Response<Full<Bytes>> {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let (status, body) = match reloader.reload().await {
        Ok(()) => (StatusCode::OK, serde_json::json!({"status": "reloaded"})),
        Err(e) => {
            let (status, code) = match &e {
                ReloadError::Invalid(_) => (StatusCode::BAD_REQUEST, "BMSGW.0702"),
                ReloadError::NoConfigFile => (StatusCode::CONFLICT, "BMSGW.0703"),
                ReloadError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "BMSGW.0704"),
            };
            let body = serde_json::json!({
                "error_code": code,
                "error_msg": format!("config not reloaded: {e}"),
                "request_id": request_id,
            });
            (status, body)
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The read-only paths. An unknown path is a 404 whatever the method; a known one answers
/// GET and HEAD only (405 with `Allow` otherwise, as RFC 9110 asks).
pub fn handle<B>(state: &Arc<Gateway>, request: &Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if known && request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            state.verifier.update_gauges();
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let ready = state.ready.load(Ordering::Acquire)
                && state.verifier.key_count() > 0
                && state.upstream_ready();
            if ready {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
