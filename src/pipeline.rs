//! The request lifecycle of the `remote_console` route, as named phases.
//!
//! Each phase is one function with one job, and each may end the request with a
//! [`GatewayError`]. They run in this order:
//!
//! 1. [`parse`]: route, path parameters, content type, body size and JSON body;
//! 2. [`authenticate`]: bearer JWT → [`Caller`]; nothing later sees the token;
//! 3. [`authorize`]: the policy decides (default deny);
//! 4. [`admit`]: the caller's rate limit (denied callers count against the default tier);
//! 5. [`lookup`]: cached URL, a remembered `BMS.0395`/`BMS.0040` answer (the negative cache),
//!    or one coalesced [`call_upstream`] per server (through the upstream stack, `upstream::stack`);
//! 6. [`respond`]: BMS-shaped success, or the one error shape;
//! 7. [`record`]: metrics and the access-log line, for every request, and ([`audit`]) the audit
//!    record of every console URL issued or refused once the caller is known.
//!
//! Phases write what they learn into the request's [`RequestContext`], which `respond` and
//! `record` read; no phase reaches into another's state.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::{Caller, Decision};
use crate::bms::{self, ConsoleKind, ConsoleTarget, RouteMatch};
use crate::cache::{CacheKey, CacheOutcome, Fetched};
use crate::config::CacheScope;
use crate::error::{AuthFailure, GatewayError};
use crate::ratelimit::Outcome;
use crate::server::ConnectionInfo;
use crate::state::Gateway;
use crate::telemetry::trace_context::TraceContext;

/// Largest request body accepted; the real body is 60 bytes.
pub const MAX_BODY_BYTES: usize = 4096;
const ROUTE: &str = "remote_console";

// Header names made once (a `&str` name is parsed and checked again on every insert).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What the phases learned about one request.
pub struct RequestContext {
    pub request_id: RequestId,
    pub started: Instant,
    pub route: &'static str,
    pub target: Option<ConsoleTarget>,
    pub subject: Option<Arc<str>>,
    pub issuer: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub rate: Option<Outcome>,
    pub cache: Option<CacheOutcome>,
    pub upstream_request_id: Option<Arc<str>>,
    /// The TCP peer and, with mutual TLS, the client certificate's subject.
    pub connection: Option<ConnectionInfo>,
    /// The caller's W3C trace context (`traceparent`), when it sent a valid one.
    pub trace: Option<TraceContext>,
    /// `X-Forwarded-For`, kept only when the peer is a trusted proxy (for the audit log).
    pub forwarded_for: Option<String>,
}

impl RequestContext {
    pub(crate) fn new(request_id: RequestId) -> RequestContext {
        RequestContext {
            request_id,
            started: Instant::now(),
            route: "other",
            target: None,
            subject: None,
            issuer: None,
            rule: None,
            rate: None,
            cache: None,
            upstream_request_id: None,
            connection: None,
            trace: None,
            forwarded_for: None,
        }
    }
}

/// A parsed, validated request.
struct Parsed {
    target: ConsoleTarget,
    kind: ConsoleKind,
    force_refresh: bool,
}

/// Handles one request on the public listener. Never fails: every error becomes an answer.
pub async fn handle(state: &Arc<Gateway>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let _in_flight = InFlight::enter(state);
    let mut ctx = RequestContext::new(request_id(request.headers()));
    ctx.connection = request.extensions().get::<ConnectionInfo>().cloned();
    ctx.trace = TraceContext::from_headers(request.headers());
    ctx.forwarded_for = trusted_forwarded_for(state, &ctx, request.headers());
    let span = crate::telemetry::otlp::request_span(&ctx.request_id, ctx.trace.as_ref());
    let result = run(state, request, &mut ctx).instrument(span).await;
    let error_code = result.as_ref().err().map(|e| e.code().to_string());
    audit(state, &ctx, &result, error_code.as_deref());
    let response = respond(&ctx, result);
    record(state, &ctx, &response, error_code.as_deref());
    response
}

async fn run(
    state: &Arc<Gateway>,
    request: Request<Incoming>,
    ctx: &mut RequestContext,
) -> Result<(ConsoleKind, Arc<Fetched>), GatewayError> {
    let (head, body) = request.into_parts();
    let parsed = parse(state, &head, body, ctx).await?;
    let caller = authenticate(state, &head.headers, ctx).await?;
    let tier = authorize(state, &caller, &parsed.target, ctx);
    admit(
        state,
        &caller,
        tier.as_ref().ok().and_then(|t| t.as_deref()),
        ctx,
    )
    .await?;
    tier?;
    let fetched = lookup(state, &caller, &parsed, ctx).await?;
    state.metrics.console_urls_issued.inc();
    Ok((parsed.kind, fetched))
}

/// Phase 1: route match, path parameters, content type, size-capped body read, JSON decode.
async fn parse(
    state: &Gateway,
    head: &http::request::Parts,
    body: Incoming,
    ctx: &mut RequestContext,
) -> Result<Parsed, GatewayError> {
    let target = check_head(head, state.max_request_line_bytes, ctx)?;
    let bytes = read_body(body, state.body_read_timeout).await?;
    let kind = bms::parse_request_body(&bytes)?;
    Ok(Parsed {
        target,
        kind,
        force_refresh: wants_no_cache(&head.headers),
    })
}

/// The part of phase 1 that needs only the request head, in the documented order: request
/// line length, route, method, path parameters, content type, declared body size. Records
/// the route and target in `ctx` as soon as they are known.
pub(crate) fn check_head(
    head: &http::request::Parts,
    max_request_line_bytes: usize,
    ctx: &mut RequestContext,
) -> Result<ConsoleTarget, GatewayError> {
    // HTTP/1's request line, or HTTP/2's method and :path: `METHOD SP target SP HTTP/1.1`.
    let request_line = head.method.as_str().len() + 1 + request_target_len(&head.uri) + 9;
    if request_line > max_request_line_bytes {
        return Err(GatewayError::RequestLineTooLong);
    }
    let target = match bms::match_route(head.uri.path()) {
        RouteMatch::NoRoute => return Err(GatewayError::NotFound),
        RouteMatch::RemoteConsole(target) => {
            ctx.route = ROUTE;
            if head.method != Method::POST {
                return Err(GatewayError::MethodNotAllowed);
            }
            target?
        }
    };
    ctx.target = Some(target.clone());

    if !is_json_content_type(head.headers.get(header::CONTENT_TYPE)) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let declared_length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        // Refused from the header alone: the rest of the body is never read.
        return Err(GatewayError::BodyTooLarge);
    }
    Ok(target)
}

/// The length of the request target as sent (origin or absolute form), without formatting it.
fn request_target_len(uri: &http::Uri) -> usize {
    let mut len = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if let Some(authority) = uri.authority() {
        len += authority.as_str().len() + uri.scheme_str().map_or(0, |s| s.len() + 3);
    }
    len
}

/// The body, size-capped, within `timeout` of the first look at it.
///
/// A body sent with its head (the usual 60 bytes) is in hyper's buffer by the handler's first
/// look or one turn of the connection's task later, so the timer (whose arming and disarming
/// showed in profiles) is armed only when the body is not there by then.
async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, GatewayError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut collect = std::pin::pin!(Limited::new(body, MAX_BODY_BYTES).collect());
    let mut looked_once = false;
    let early = std::future::poll_fn(|cx| match collect.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending if !looked_once => {
            // Back at once: hyper hands over what it has read while this task is away.
            looked_once = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    let collected = match early {
        Some(result) => result,
        None => tokio::time::timeout_at(deadline, collect)
            .await
            .map_err(|_| GatewayError::BodyTimeout)?,
    };
    match collected {
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge),
        Err(_) => Err(GatewayError::MalformedBody),
        Ok(collected) => Ok(collected.to_bytes()),
    }
}

fn is_json_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

pub(crate) fn wants_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

/// Phase 2: the bearer token → a [`Caller`]. The token is dropped when this returns.
async fn authenticate(
    state: &Gateway,
    headers: &HeaderMap,
    ctx: &mut RequestContext,
) -> Result<Caller, GatewayError> {
    let result = match bearer_token(headers) {
        Ok(token) => state.verifier.verify(token).await,
        Err(reason) => Err(reason),
    };
    match result {
        Ok(caller) => {
            ctx.subject = Some(caller.subject.clone());
            ctx.issuer = Some(caller.issuer_name.clone());
            Ok(caller)
        }
        Err(reason) => {
            state
                .metrics
                .auth_failures
                .with_label_values(&[reason.label()])
                .inc();
            Err(GatewayError::Unauthenticated(reason))
        }
    }
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// Phase 3: the policy's decision. On allow, returns the rule's rate-limit tier.
fn authorize(
    state: &Gateway,
    caller: &Caller,
    target: &ConsoleTarget,
    ctx: &mut RequestContext,
) -> Result<Option<Arc<str>>, GatewayError> {
    let client_cert = ctx
        .connection
        .as_ref()
        .and_then(|c| c.client.as_ref())
        .map(|c| c.subject.as_str());
    match state
        .policy
        .decide_with_client_cert(caller, client_cert, target)
    {
        Decision::Allow { rule, tier } => {
            ctx.rule = Some(rule);
            Ok(tier)
        }
        Decision::Deny { rule } => {
            ctx.rule = rule;
            state.metrics.authz_denied.inc();
            Err(GatewayError::Forbidden)
        }
    }
}

/// Phase 4: the caller's rate limit, in the tier the policy chose (the default tier for
/// requests the policy refused, so probing for allowed servers is limited too). With the
/// Redis backend one bucket serves every replica.
async fn admit(
    state: &Gateway,
    caller: &Caller,
    tier: Option<&str>,
    ctx: &mut RequestContext,
) -> Result<(), GatewayError> {
    let quota = state.quota_for(tier);
    let key = caller.limiter_key(tier.unwrap_or(""));
    let outcome = state.limiter.check(&key, quota).await?;
    ctx.rate = Some(outcome);
    if outcome.allowed {
        Ok(())
    } else {
        state.metrics.rate_limited.inc();
        Err(GatewayError::RateLimited {
            retry_after_secs: outcome.retry_after_seconds(),
        })
    }
}

/// Phase 5: a fresh cached URL, or the (coalesced) upstream call.
async fn lookup(
    state: &Arc<Gateway>,
    caller: &Caller,
    parsed: &Parsed,
    ctx: &mut RequestContext,
) -> Result<Arc<Fetched>, GatewayError> {
    let account = state
        .accounts
        .for_project(parsed.target.project.as_str())
        .ok_or(GatewayError::ProjectNotServed)?
        .clone();
    let target_key = parsed.target.key();
    let key = CacheKey {
        target: target_key,
        protocol: parsed.kind.protocol,
        kind: parsed.kind.kind,
        user: (state.cache_scope == CacheScope::PerUser).then(|| caller.user_key().into()),
    };
    // Answers that will not change soon (Windows, no such server) come from memory.
    if !parsed.force_refresh {
        if let Some(remembered) = state.negative_cache.get(target_key) {
            ctx.cache = Some(CacheOutcome::Hit);
            state
                .metrics
                .resilience
                .negative_cache_hits
                .with_label_values(&[&remembered.code])
                .inc();
            return Err(GatewayError::Upstream(remembered));
        }
    }
    let upstream_state = state.clone();
    let target = parsed.target.clone();
    let (result, outcome) = state
        .cache
        .get_or_fetch(key, parsed.force_refresh, move || async move {
            call_upstream(&upstream_state, &account, &target).await
        })
        .await;
    ctx.cache = Some(outcome);
    state.metrics.count_cache_request(outcome.label());
    match &result {
        Ok(fetched) => ctx.upstream_request_id = fetched.upstream_request_id.clone(),
        Err(GatewayError::Upstream(e)) => {
            ctx.upstream_request_id = e.request_id.as_deref().map(Arc::from);
            state.negative_cache.remember(target_key, e);
        }
        Err(_) => {}
    }
    result
}

/// Phase 6 (inside the cache's single flight): ask the cloud.
async fn call_upstream(
    state: &Gateway,
    account: &crate::upstream::Account,
    target: &ConsoleTarget,
) -> Result<Fetched, GatewayError> {
    state.upstream.remote_console(account, target).await
}

/// Phase 7: the answer.
fn respond(
    ctx: &RequestContext,
    result: Result<(ConsoleKind, Arc<Fetched>), GatewayError>,
) -> Response<Full<Bytes>> {
    let (status, body) = match &result {
        Ok((kind, fetched)) => (StatusCode::OK, bms::render_console(kind, &fetched.url)),
        Err(e) => (e.status(), e.body(&ctx.request_id)),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    // Room for every header below at once: growing the map as they arrive cost more than
    // building the body.
    *response.headers_mut() = HeaderMap::with_capacity(10);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A console URL is a bearer credential: no shared cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_REQUEST_ID, ctx.request_id.0.clone());
    if let Some(outcome) = ctx.cache {
        headers.insert(X_CACHE, HeaderValue::from_static(outcome.header_value()));
    }
    if let Some(rate) = ctx.rate {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(rate.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(rate.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(rate.reset_seconds()));
    }
    if let Some(secs) = result
        .as_ref()
        .err()
        .and_then(GatewayError::retry_after_secs)
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    match &result {
        Err(GatewayError::MethodNotAllowed) => {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Err(GatewayError::Unauthenticated(reason)) => {
            // RFC 6750: no error code when the request carried no credentials at all.
            let value = if *reason == AuthFailure::Missing {
                r#"Bearer realm="bms-console-gateway""#
            } else {
                r#"Bearer realm="bms-console-gateway", error="invalid_token""#
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        _ => {}
    }
    response
}

/// `X-Forwarded-For` from a configured trusted proxy (visible ASCII, at most 512 bytes), so
/// the audit record names the real client; from anyone else it is ignored.
fn trusted_forwarded_for(
    state: &Gateway,
    ctx: &RequestContext,
    headers: &HeaderMap,
) -> Option<String> {
    let peer = ctx.connection.as_ref()?.peer.ip();
    if !state.audit.trusts_proxy(peer) {
        return None;
    }
    let joined = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let clean: String = joined
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(512)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The audit record of a console URL issued or refused after authentication (policy denial,
/// rate limit, or refused upstream). Requests that never named a caller are not audited: the
/// access log and `bmsgw_auth_failures_total` cover them.
fn audit(
    state: &Gateway,
    ctx: &RequestContext,
    result: &Result<(ConsoleKind, Arc<Fetched>), GatewayError>,
    error_code: Option<&str>,
) {
    if !state.audit.enabled() {
        return;
    }
    let (Some(subject), Some(issuer), Some(target)) = (&ctx.subject, &ctx.issuer, &ctx.target)
    else {
        return;
    };
    let decision = match result {
        Ok(_) => "issued",
        Err(GatewayError::Forbidden) => "denied",
        Err(GatewayError::RateLimited { .. }) => "rate_limited",
        Err(e) if e.upstream_kind().is_some() || matches!(e, GatewayError::Upstream(_)) => {
            "upstream_refused"
        }
        Err(_) => "refused",
    };
    let status = match result {
        Ok(_) => 200,
        Err(e) => e.status().as_u16(),
    };
    let url_token_hash = result
        .as_ref()
        .ok()
        .map(|(_, fetched)| state.audit.fetched_url_token_hash(fetched));
    let time = crate::telemetry::audit_line::now_rfc3339();
    state.audit.record(&crate::telemetry::audit::AuditRecord {
        log: "audit",
        time,
        request_id: &ctx.request_id,
        subject,
        issuer,
        client_addr: ctx.connection.as_ref().map(|c| &*c.peer_text),
        forwarded_for: ctx.forwarded_for.as_deref(),
        project: target.project.as_str(),
        server: target.server.as_str(),
        decision,
        rule: ctx.rule.as_deref(),
        reason: error_code,
        cache: ctx.cache.map(CacheOutcome::label),
        upstream_request_id: ctx.upstream_request_id.as_deref(),
        status,
        url_token_hmac: url_token_hash.as_ref().map(crate::hex::digits_str),
    });
}

/// Phase 8: metrics and the access-log line. Runs for every request.
fn record(
    state: &Gateway,
    ctx: &RequestContext,
    response: &Response<Full<Bytes>>,
    error_code: Option<&str>,
) {
    let status = response.status().as_u16();
    let elapsed = ctx.started.elapsed();
    state
        .metrics
        .count_http_request(ctx.route, status, elapsed.as_secs_f64());
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        client_addr = ctx.connection.as_ref().map_or("-", |c| &*c.peer_text),
        tls_client = ctx
            .connection
            .as_ref()
            .and_then(|c| c.client.as_ref())
            .map_or("-", |c| c.subject.as_str()),
        trace_id = ctx.trace.as_ref().map_or("-", |t| t.trace_id.as_str()),
        route = ctx.route,
        subject = ctx.subject.as_deref().unwrap_or("-"),
        issuer = ctx.issuer.as_deref().unwrap_or("-"),
        project = ctx.target.as_ref().map_or("-", |t| t.project.as_str()),
        server = ctx.target.as_ref().map_or("-", |t| t.server.as_str()),
        rule = ctx.rule.as_deref().unwrap_or("-"),
        status,
        error_code = error_code.unwrap_or("-"),
        cache = ctx.cache.map_or("-", CacheOutcome::label),
        upstream_request_id = ctx.upstream_request_id.as_deref().unwrap_or("-"),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
}

/// A request's id, held as the `X-Request-Id` value it is answered with: the caller's own
/// (a reference into the request head, no copy) or a new UUID made once.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever held (see `request_id`), so this never falls back.
        self.0.to_str().unwrap_or_default()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keeps the caller's `X-Request-Id` when it is a sane token (1–128 visible ASCII characters),
/// else makes a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> RequestId {
    let sane = headers.get(X_REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    });
    if let Some(value) = sane {
        return RequestId(value.clone());
    }
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().simple().encode_lower(&mut text);
    // 32 hex digits are always a valid header value.
    RequestId(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")))
}

/// Counts a request in the in-flight gauge for as long as it lives, even if the client goes
/// away and the handler is dropped mid-way.
struct InFlight<'a>(&'a Gateway);

impl<'a> InFlight<'a> {
    fn enter(state: &'a Gateway) -> InFlight<'a> {
        state.metrics.in_flight.inc();
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}
