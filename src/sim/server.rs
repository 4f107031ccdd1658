//! The simulator's HTTP side: the accept loop, routing, the `remote_console` handler and
//! the `/sim/` control endpoints.
//!
//! One task accepts connections; each connection is served in its own task by hyper-util's
//! auto builder (HTTP/1.1, or HTTP/2 with prior knowledge) and watched by a
//! `GracefulShutdown`, so [`super::SimHandle::shutdown`] stops accepting, lets in-flight
//! requests finish (up to [`DRAIN_TIMEOUT`]) and then ends the task.
//!
//! The `remote_console` route walks these steps, each able to end the request:
//! 1. count the request and record its header names;
//! 2. fault knobs: the next scripted fault (an error answer, a dropped connection, or one of
//!    the broken `200`s of `broken.rs`), latency, dropped connection, `429 APIGW.0308`, `503`;
//!    every injected answer is counted as an error, even a `200`;
//! 3. read the body (size cap, time limit);
//! 4. authentication (`401 APIGW.0301`): an `X-Auth-Token` from `iam.rs`, or AK/SK (see
//!    `auth.rs`), where a locked AK is refused before its signature is looked at and every
//!    bad signature counts towards the lockout (`guard.rs`); then the per-account limit
//!    (`429 APIGW.0308`, `guard.rs`);
//! 5. project ownership and `X-Project-Id` (`400 Common.0018`);
//! 6. body validation (`400 BMS.0001` / `BMS.0018`);
//! 7. server lookup (`400 BMS.0040`), Windows (`400 BMS.0395`);
//! 8. `200` with a console URL holding a fresh token (`console_urls.rs`).
//!
//! The accept loop counts connections (`connections_accepted`), so a test can tell whether a
//! client reused a connection or opened a new one.
//!
//! Nothing here logs a secret key, a signature or a console URL (its token is a credential).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::auth::{authenticate, AuthFailure};
use super::broken;
use super::catalog::ServerOs;
use super::faults::{fires, FaultSettings, Scripted};
use super::responses::{flat, json, nested, new_request_id, Body};
use super::Shared;
use crate::upstream::signer;

/// Largest request body read; far above the 60-byte `remote_console` body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send its body (hyper has no body-read timeout of its own).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its HTTP/1 request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections before ending the task anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Returned by the service to make hyper drop the request without an answer: on HTTP/1.1
/// the connection is closed; on HTTP/2 the stream is reset (the nearest equivalent, since
/// the other streams on the connection are not ours to kill).
#[derive(Debug)]
pub(crate) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fault injected: connection dropped without an answer")
    }
}

impl std::error::Error for DropConnection {}

/// Marks an answer that a fault knob produced, so that a `200` among them (the broken answers)
/// is not counted as a console URL served. Response extensions never go on the wire.
#[derive(Clone, Copy, Debug)]
struct InjectedFault;

/// Accepts connections until `shutdown` turns true, then drains and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            () = stop_requested(&mut shutdown) => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "simulator accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                shared.counters.connection();
                let shared = shared.clone();
                let service = service_fn(move |req| handle(shared.clone(), req));
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%peer, error = %e, "simulator connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("simulator shutdown: connections still open after the drain timeout");
    }
    done.send_replace(true);
}

/// Resolves once a stop is requested. If every handle is dropped without a `shutdown()`
/// call it never resolves: the simulator keeps serving until the runtime ends, as documented
/// on `SimHandle`.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    RemoteConsole {
        project: String,
        server: String,
    },
    SimStats,
    SimFaultsGet,
    SimFaultsSet,
    SimReset,
    SimIamRevoke,
    /// `POST /v3/auth/tokens` (any query, e.g. `?nocatalog=true`).
    IamTokens,
    /// A known API path with another method (APIGW words this case differently).
    WrongMethod,
    NotFound,
}

/// Matches `/v1/{project}/baremetalservers/{server}/remote_console[/]`. Segments are split
/// on the raw path and then percent-decoded, so a server id the SDK escaped (`%2F`) is found.
fn route(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::GET, "/sim/stats") => return Route::SimStats,
        (&Method::GET, "/sim/faults") => return Route::SimFaultsGet,
        (&Method::POST, "/sim/faults") => return Route::SimFaultsSet,
        (&Method::POST, "/sim/reset") => return Route::SimReset,
        (&Method::POST, "/sim/iam/revoke") => return Route::SimIamRevoke,
        (&Method::POST, "/v3/auth/tokens") => return Route::IamTokens,
        (_, "/v3/auth/tokens") => return Route::WrongMethod,
        _ => {}
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    let ["", "v1", project, "baremetalservers", server, "remote_console"] = segments[..] else {
        return Route::NotFound;
    };
    let project = percent_decode_str(project).decode_utf8_lossy().into_owned();
    let server = percent_decode_str(server).decode_utf8_lossy().into_owned();
    if project.is_empty() || server.is_empty() {
        return Route::NotFound;
    }
    if method != Method::POST {
        return Route::WrongMethod;
    }
    Route::RemoteConsole { project, server }
}

/// The service: one request in, one answer (or a dropped connection) out.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let request_id = new_request_id();
    let (parts, body) = req.into_parts();
    let resp = match route(&parts.method, parts.uri.path()) {
        Route::RemoteConsole { project, server } => {
            return remote_console(&shared, &request_id, parts, body, &project, &server).await;
        }
        Route::SimStats => json(StatusCode::OK, &request_id, &shared.stats()),
        Route::SimFaultsGet => json(StatusCode::OK, &request_id, &shared.fault_settings()),
        Route::SimFaultsSet => set_faults(&shared, &request_id, body).await,
        Route::SimReset => {
            shared.reset();
            json(StatusCode::OK, &request_id, &shared.stats())
        }
        Route::SimIamRevoke => {
            shared.iam.revoke_all();
            json(StatusCode::OK, &request_id, &json!({"revoked": true}))
        }
        Route::IamTokens => match read_body(body).await {
            Ok(bytes) => shared.iam.create_token(&request_id, &bytes),
            Err(e) => body_error(&request_id, e),
        },
        Route::WrongMethod => flat(
            StatusCode::NOT_FOUND,
            &request_id,
            "APIGW.0101",
            "The API does not exist.",
        ),
        Route::NotFound => flat(
            StatusCode::NOT_FOUND,
            &request_id,
            "APIGW.0101",
            "The API does not exist or has not been published in the environment.",
        ),
    };
    Ok(resp)
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Unreadable,
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    let collected =
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
            .await
            .map_err(|_| BodyError::Unreadable)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

fn body_error(request_id: &str, e: BodyError) -> Response<Body> {
    match e {
        BodyError::TooLarge => flat(
            StatusCode::PAYLOAD_TOO_LARGE,
            request_id,
            "APIGW.0201",
            "Request entity too large.",
        ),
        BodyError::Unreadable => flat(
            StatusCode::BAD_REQUEST,
            request_id,
            "APIGW.0201",
            "API request error.",
        ),
    }
}

/// `POST /sim/faults`: applies a JSON [`FaultSettings`]; answers the resulting knobs.
/// Invalid input is `400` with the simulator-only code `SIM.0001` and changes nothing.
async fn set_faults(shared: &Shared, request_id: &str, body: Incoming) -> Response<Body> {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return body_error(request_id, e),
    };
    let invalid = |msg: String| flat(StatusCode::BAD_REQUEST, request_id, "SIM.0001", &msg);
    let settings: FaultSettings = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => return invalid(format!("invalid fault settings: {e}")),
    };
    if settings.iam_token_lifetime_seconds == Some(0) {
        return invalid("iam_token_lifetime_seconds must be at least 1".into());
    }
    if let Err(msg) = shared.faults.apply(&settings) {
        return invalid(msg);
    }
    if let Some(seconds) = settings.iam_token_lifetime_seconds {
        shared.iam.set_lifetime(Duration::from_secs(seconds));
    }
    if let Some(down) = settings.iam_down {
        shared.iam.set_down(down);
    }
    if let Some(limit) = settings.account_limit_per_minute {
        shared.guards.set_limit_per_minute(limit);
    }
    info!(?settings, "simulator faults changed");
    json(StatusCode::OK, request_id, &shared.fault_settings())
}

/// The `remote_console` route (steps in the module docs).
async fn remote_console(
    shared: &Shared,
    request_id: &str,
    parts: Parts,
    body: Incoming,
    project: &str,
    server: &str,
) -> Result<Response<Body>, DropConnection> {
    let counters = &shared.counters;
    counters.request(parts.headers.keys().map(|n| n.as_str()));

    let outcome = remote_console_steps(shared, request_id, &parts, body, project, server).await;
    match &outcome {
        Ok(resp)
            if resp.status() == StatusCode::OK
                && resp.extensions().get::<InjectedFault>().is_none() =>
        {
            counters.ok()
        }
        Ok(resp) => {
            counters.error();
            if resp.status() == StatusCode::UNAUTHORIZED {
                counters.auth_failure();
            }
        }
        Err(DropConnection) => counters.error(),
    }
    match &outcome {
        Ok(resp) => info!(
            request_id,
            status = resp.status().as_u16(),
            "remote_console answered"
        ),
        Err(e) => info!(request_id, "remote_console: {e}"),
    }
    outcome
}

async fn remote_console_steps(
    shared: &Shared,
    request_id: &str,
    parts: &Parts,
    body: Incoming,
    project: &str,
    server: &str,
) -> Result<Response<Body>, DropConnection> {
    if let Some(resp) = inject_faults(shared, request_id).await? {
        return Ok(resp);
    }

    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return Ok(body_error(request_id, e)),
    };

    let account = match authenticate_any(shared, request_id, parts, &body) {
        Ok(account) => account,
        Err(resp) => return Ok(*resp),
    };
    if let Err(limit) = shared.guards.admit(&account.key) {
        shared.counters.throttled();
        return Ok(flat(
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            "APIGW.0308",
            &format!("The throttling threshold has been reached: policy user over ratelimit,limit:{limit},time:1 minute"),
        ));
    }

    let header_projects_match = parts
        .headers
        .get_all("x-project-id")
        .iter()
        .all(|v| v.as_bytes() == project.as_bytes());
    if !account.projects.iter().any(|p| p == project) || !header_projects_match {
        return Ok(nested(
            StatusCode::BAD_REQUEST,
            request_id,
            "Common.0018",
            "tenantId in token is not the same with in URL.",
        ));
    }

    if let Err((code, message)) = check_body(&body) {
        return Ok(nested(StatusCode::BAD_REQUEST, request_id, code, &message));
    }

    let Some(found) = shared.config.catalog.server(project, server) else {
        // The BMS error table lists BMS.0040 with 400; the real cloud may answer 404 (the
        // reference notes the table's statuses "may not be accurate"). We follow the table.
        return Ok(nested(
            StatusCode::BAD_REQUEST,
            request_id,
            "BMS.0040",
            "The server does not exist.",
        ));
    };
    if found.os == ServerOs::Windows {
        return Ok(nested(
            StatusCode::BAD_REQUEST,
            request_id,
            "BMS.0395",
            &format!(
                "The server[{}] is windows system and cannot support remote login.",
                found.id
            ),
        ));
    }

    let url = shared.console_urls.mint();
    Ok(json(
        StatusCode::OK,
        request_id,
        &json!({"remote_console": {"type": "serial", "protocol": "serial", "url": url}}),
    ))
}

/// Who a request authenticated as: the throttling key and the projects it may touch.
struct Authenticated {
    key: String,
    projects: Vec<String>,
}

/// Step 4: an IAM token (`X-Auth-Token`, when no `Authorization` is sent) or AK/SK.
fn authenticate_any(
    shared: &Shared,
    request_id: &str,
    parts: &Parts,
    body: &[u8],
) -> Result<Authenticated, Box<Response<Body>>> {
    let token = parts.headers.get("x-auth-token");
    if let (Some(token), false) = (
        token,
        parts.headers.contains_key(http::header::AUTHORIZATION),
    ) {
        let token = token.to_str().unwrap_or("");
        return match shared.iam.check(token, SystemTime::now()) {
            Ok(project) => Ok(Authenticated {
                key: format!("token:{project}"),
                projects: vec![project],
            }),
            Err(failure) => Err(Box::new(flat(
                StatusCode::UNAUTHORIZED,
                request_id,
                "APIGW.0301",
                &failure.message(),
            ))),
        };
    }
    // The AK named in the header, for the lockout (a malformed header names none).
    let claimed_ak = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(signer::parse_authorization)
        .map(|a| a.access_key);
    if let Some(ak) = &claimed_ak {
        if shared.guards.is_locked(ak) {
            return Err(Box::new(flat(
                StatusCode::UNAUTHORIZED,
                request_id,
                "APIGW.0301",
                "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden",
            )));
        }
    }
    let credentials = shared.credentials.read().unwrap_or_else(|e| e.into_inner());
    match authenticate(&credentials, parts, body, SystemTime::now()) {
        Ok(credential) => {
            shared.guards.signature(&credential.access_key, true);
            Ok(Authenticated {
                key: credential.access_key.clone(),
                projects: credential.projects.clone(),
            })
        }
        Err(failure) => {
            if let (Some(ak), AuthFailure::BadSignature | AuthFailure::SecurityToken) =
                (&claimed_ak, &failure)
            {
                shared.counters.bad_signature();
                shared.guards.signature(ak, false);
            }
            // The failure's Debug holds no secret or signature, only the public date.
            debug!(request_id, ?failure, "remote_console authentication failed");
            Err(Box::new(unauthorized(request_id, &failure)))
        }
    }
}

fn unauthorized(request_id: &str, failure: &AuthFailure) -> Response<Body> {
    flat(
        StatusCode::UNAUTHORIZED,
        request_id,
        "APIGW.0301",
        &failure.message(),
    )
}

/// Step 2: the fault knobs, in their documented order. `Ok(Some(_))` is an injected answer.
///
/// The 5xx answer is `503` with the API gateway's flat shape, code `APIGW.0202` "Backend
/// unavailable." (APIG documents that code for an unreachable backend, with status 502; we
/// answer 503 so that callers see the conventional "try again later" status). The official
/// SDKs turn any status >= 500 into a `ServerResponseException` whatever the body.
async fn inject_faults(
    shared: &Shared,
    request_id: &str,
) -> Result<Option<Response<Body>>, DropConnection> {
    let mut answer = knob_answer(shared, request_id).await?;
    if let Some(resp) = &mut answer {
        resp.extensions_mut().insert(InjectedFault);
    }
    Ok(answer)
}

/// The knobs of [`inject_faults`], in order; the first that fires answers.
async fn knob_answer(
    shared: &Shared,
    request_id: &str,
) -> Result<Option<Response<Body>>, DropConnection> {
    let faults = &shared.faults;
    if let Some(scripted) = faults.next_scripted() {
        if let Some(answer) = scripted_answer(shared, request_id, scripted)? {
            return Ok(Some(answer));
        }
    }
    let latency = faults.latency();
    if !latency.is_zero() {
        shared.counters.fault();
        tokio::time::sleep(latency).await;
    }
    if fires(faults.close_connection_rate()) {
        shared.counters.fault();
        return Err(DropConnection);
    }
    if fires(faults.throttle_rate()) {
        shared.counters.fault();
        return Ok(Some(flat(
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,limit:100,time:1 minute",
        )));
    }
    if fires(faults.error_5xx_rate()) {
        shared.counters.fault();
        return Ok(Some(flat(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            "APIGW.0202",
            "Backend unavailable.",
        )));
    }
    Ok(None)
}

/// One scripted fault's answer (`Ok(None)` for `ok`).
fn scripted_answer(
    shared: &Shared,
    request_id: &str,
    scripted: Scripted,
) -> Result<Option<Response<Body>>, DropConnection> {
    let answer = match scripted {
        Scripted::Ok => return Ok(None),
        Scripted::Reset => {
            shared.counters.fault();
            return Err(DropConnection);
        }
        Scripted::BadGateway => flat(
            StatusCode::BAD_GATEWAY,
            request_id,
            "APIGW.0202",
            "Backend unavailable.",
        ),
        Scripted::Unavailable => flat(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            "APIGW.0202",
            "Backend unavailable.",
        ),
        Scripted::GatewayTimeout => flat(
            StatusCode::GATEWAY_TIMEOUT,
            request_id,
            "APIGW.0203",
            "Backend timeout.",
        ),
        Scripted::Overload => nested(
            StatusCode::BAD_REQUEST,
            request_id,
            "BMS.0212",
            "System is overloaded, please try again later.",
        ),
        Scripted::Throttle => flat(
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,limit:100,time:1 minute",
        ),
        Scripted::ResetAfterHeaders
        | Scripted::Truncated
        | Scripted::HugeBody
        | Scripted::Trickle
        | Scripted::NotJson
        | Scripted::NoUrl
        | Scripted::HttpUrl => broken::answer(
            scripted,
            request_id,
            &shared.console_urls,
            shared.faults.trickle_interval(),
        ),
    };
    shared.counters.fault();
    Ok(Some(answer))
}

/// Step 6: the body must be `{"remote_console": {"protocol": "serial", "type": "serial"}}`
/// (other members are ignored, as the SDK's models do). `Err` holds (code, message).
///
/// Missing or non-string fields, or a body that is not JSON, are `BMS.0001` "Fail to parse
/// request". A value other than `"serial"` gets `BMS.0018` "Request parameter is invalid.":
/// the real code for that case is undocumented (BMS.0001/0018/0022 are all plausible).
fn check_body(body: &[u8]) -> Result<(), (&'static str, String)> {
    let parse_error = |reason: &str| {
        (
            "BMS.0001",
            format!("Fail to parse request, reason: {reason}."),
        )
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|_| parse_error("the body is not valid JSON"))?;
    let Some(console) = value.get("remote_console").filter(|v| v.is_object()) else {
        return Err(parse_error("remote_console is missing or not an object"));
    };
    let field = |name: &str| console.get(name).and_then(Value::as_str);
    let (Some(protocol), Some(kind)) = (field("protocol"), field("type")) else {
        return Err(parse_error(
            "remote_console.protocol and remote_console.type must be strings",
        ));
    };
    if protocol != "serial" || kind != "serial" {
        return Err(("BMS.0018", "Request parameter is invalid.".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = "/v1/p1/baremetalservers/s1/remote_console";
        let rc = Route::RemoteConsole {
            project: "p1".into(),
            server: "s1".into(),
        };
        assert_eq!(route(&Method::POST, p), rc);
        assert_eq!(route(&Method::POST, &format!("{p}/")), rc);
        assert_eq!(route(&Method::GET, p), Route::WrongMethod);
        assert_eq!(
            route(
                &Method::POST,
                "/v1/p1/baremetalservers/a%2Fb/remote_console"
            ),
            Route::RemoteConsole {
                project: "p1".into(),
                server: "a/b".into()
            }
        );
        for bad in [
            "/",
            "/v1//baremetalservers/s1/remote_console",
            "/v1/p1/baremetalservers//remote_console",
            "/v2/p1/baremetalservers/s1/remote_console",
            "/v1/p1/baremetalservers/s1/remote_console//",
            "/v1/p1/baremetalservers/s1/remote_console/x",
            "/sim/stats/",
        ] {
            assert_eq!(route(&Method::POST, bad), Route::NotFound, "{bad}");
        }
        assert_eq!(route(&Method::GET, "/sim/stats"), Route::SimStats);
        assert_eq!(route(&Method::POST, "/sim/stats"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/sim/faults"), Route::SimFaultsSet);
        assert_eq!(route(&Method::GET, "/sim/faults"), Route::SimFaultsGet);
        assert_eq!(route(&Method::POST, "/sim/reset"), Route::SimReset);
    }

    #[test]
    fn body_rules() {
        let ok = br#"{"remote_console": {"protocol": "serial", "type": "serial", "x": 1}}"#;
        assert!(check_body(ok).is_ok());
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"remote_console": "serial"}"#,
            br#"{"remote_console": {"protocol": "serial"}}"#,
            br#"{"remote_console": {"protocol": 1, "type": "serial"}}"#,
        ] {
            let (code, message) = check_body(bad).unwrap_err();
            assert_eq!(code, "BMS.0001");
            assert!(message.starts_with("Fail to parse request, reason: "));
        }
        let invalid = br#"{"remote_console": {"protocol": "vnc", "type": "novnc"}}"#;
        assert_eq!(check_body(invalid).unwrap_err().0, "BMS.0018");
    }
}
