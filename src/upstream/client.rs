//! The HTTP client that asks the cloud for a console URL: one attempt at a time.
//!
//! One pooled hyper client over rustls (public web PKI roots plus an optional CA file, and an
//! optional client certificate for endpoints that demand mutual TLS) serves every account (and
//! IAM). Each attempt builds the exact request the official SDKs send, signs exactly the
//! headers it sends (`content-type;host;x-project-id;x-sdk-date`, plus `x-security-token` for
//! temporary keys) over exactly the body bytes it sends, or carries an IAM token as
//! `X-Auth-Token`. Nothing from the caller's request is forwarded: the request is built from
//! the validated path parameters alone. Retries, the breaker, quotas and the other resilience
//! layers wrap [`UpstreamClient::attempt`] in `stack.rs`; the request's overall deadline is
//! `upstream.timeout_ms`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::bms::{self, ConsoleTarget};
use crate::cache::Fetched;
use crate::config::UpstreamConfig;
use crate::error::{GatewayError, UpstreamError};
use crate::secret::Secret;
use crate::telemetry::metrics::{status_class, Metrics};
use crate::upstream::accounts::Endpoint;
use crate::upstream::iam::Token;
use crate::upstream::retry::RetryPolicy;
use crate::upstream::signer::{self, SigningRequest};
use crate::upstream::Account;

/// The content type the gateway signs and sends (any JSON type avoids UNSIGNED-PAYLOAD).
const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
/// Largest answer read from the cloud; a console answer is a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const USER_AGENT: &str = concat!("bms-console-gateway/", env!("CARGO_PKG_VERSION"));

/// The pooled HTTP client, shared with the IAM token sources.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The credential material for one attempt.
pub enum AuthMaterial {
    /// AK/SK (with the STS security token for temporary keys).
    Signing {
        access_key: Secret,
        secret_key: Secret,
        security_token: Option<Secret>,
    },
    /// An IAM token.
    Token(Token),
}

/// Calls the BMS API.
pub struct UpstreamClient {
    http: HttpClient,
    /// The request's overall deadline, all attempts included.
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl UpstreamClient {
    pub fn new(
        config: &UpstreamConfig,
        base_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<UpstreamClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca_file) = &config.ca_file {
            add_ca_file(&mut roots, &base_dir.join(ca_file))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots);
        // Host-name verification is rustls's default and has no switch here: the only way to
        // reach a server is through a certificate that names it.
        let tls = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = crate::tls::read_cert_chain(&base_dir.join(cert))
                    .map_err(|e| format!("client_cert_file: {e}"))?;
                let key = crate::tls::read_private_key(&base_dir.join(key))
                    .map_err(|e| format!("client_key_file: {e}"))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("client_cert_file and client_key_file do not form a usable pair: {e}")
                })?
            }
            _ => builder.with_no_client_auth(),
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(config.pool_idle_timeout_seconds))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        Ok(UpstreamClient {
            http: client,
            timeout: Duration::from_millis(config.timeout_ms),
            metrics,
            retry: RetryPolicy::new(&config.retry),
        })
    }

    /// A handle on the pooled HTTP client.
    pub fn http(&self) -> HttpClient {
        self.http.clone()
    }

    /// Asks `account` for a serial console URL of `target` through every resilience layer
    /// (see `stack.rs`), within the overall deadline.
    pub async fn remote_console(
        &self,
        account: &Account,
        target: &ConsoleTarget,
    ) -> Result<Fetched, GatewayError> {
        crate::upstream::stack::remote_console(self, account, target).await
    }

    /// One call to the cloud, within `timeout`, counted in the upstream metrics.
    pub async fn attempt(
        &self,
        account: &Account,
        endpoint: &Endpoint,
        target: &ConsoleTarget,
        auth: &AuthMaterial,
        timeout: Duration,
    ) -> Result<Fetched, GatewayError> {
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(timeout, self.call(account, endpoint, target, auth)).await;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.upstream_timer(&account.name).observe(elapsed);
        let result = outcome.unwrap_or(Err(GatewayError::UpstreamTimeout));
        if let Err(e) = &result {
            if let Some(kind) = e.upstream_kind() {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&account.name, kind])
                    .inc();
            }
        }
        result
    }

    async fn call(
        &self,
        account: &Account,
        endpoint: &Endpoint,
        target: &ConsoleTarget,
        auth: &AuthMaterial,
    ) -> Result<Fetched, GatewayError> {
        let request = build_request(endpoint, target, SystemTime::now(), auth)?;
        let response = self.http.request(request).await.map_err(|e| {
            tracing::warn!(account = %account.name, error = %e, "BMS call failed before an answer");
            GatewayError::UpstreamUnreachable
        })?;
        let status = response.status();
        self.metrics
            .upstream_requests
            .with_label_values(&[&account.name, status_class(status.as_u16())])
            .inc();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_string);
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_capped_body(account, status, response.into_body()).await?;

        if status == StatusCode::OK {
            let url = bms::parse_upstream_success(&body).inspect_err(|_| {
                // The body itself is not logged: it may hold a console URL (a credential).
                tracing::warn!(
                    account = %account.name,
                    upstream_request_id = request_id.as_deref().unwrap_or("-"),
                    "the BMS API answered 200 without a console URL (not JSON, no url, or not https); refused"
                );
            })?;
            return Ok(Fetched::new(url, request_id));
        }
        if !status.is_client_error() && !status.is_server_error() {
            // A redirect or another 2xx is neither a console nor an error the caller could act
            // on; passing its status on would answer the caller with it.
            tracing::warn!(
                account = %account.name,
                upstream_request_id = request_id.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                "the BMS API answered with a status that is neither success nor error"
            );
            return Err(GatewayError::UpstreamBadResponse);
        }
        let error = bms::parse_upstream_error(status, &body);
        Err(classify_upstream_error(
            account,
            error,
            request_id,
            retry_after,
        ))
    }
}

/// The answer's body, at most [`MAX_RESPONSE_BYTES`]. A larger declared `Content-Length` is
/// refused before a byte is read, a longer body once it passes the cap, and a body that ends
/// early (the connection reset or closed mid-answer) as soon as that shows: all are
/// `UpstreamBadResponse`. A body left unread is dropped, so hyper closes that connection
/// rather than returning it to the pool.
async fn read_capped_body(
    account: &Account,
    status: StatusCode,
    body: hyper::body::Incoming,
) -> Result<Bytes, GatewayError> {
    use hyper::body::Body as _;
    let refuse = |what: &str| {
        tracing::warn!(
            account = %account.name,
            status = status.as_u16(),
            max_bytes = MAX_RESPONSE_BYTES,
            "the BMS API's answer {what}; refused"
        );
        GatewayError::UpstreamBadResponse
    };
    if body.size_hint().lower() > MAX_RESPONSE_BYTES as u64 {
        return Err(refuse("announces more bytes than the response-size cap"));
    }
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(refuse("is larger than the response-size cap"))
        }
        Err(_) => Err(refuse("broke off before it was complete")),
    }
}

/// Turns a cloud error into what the caller sees. Authentication failures of the gateway's own
/// credentials are not the caller's fault (and their text can echo the canonical request), so
/// they become a 502 of ours; throttling keeps the cloud's `APIGW.0308` with a `Retry-After`.
fn classify_upstream_error(
    account: &Account,
    mut error: UpstreamError,
    upstream_request_id: Option<String>,
    retry_after: Option<u64>,
) -> GatewayError {
    let request_id = upstream_request_id.as_deref().unwrap_or("-");
    if error.status == StatusCode::UNAUTHORIZED || error.code == "APIGW.0301" {
        tracing::error!(
            account = %account.name,
            upstream_request_id = request_id,
            code = %error.code,
            "the BMS API rejected this account's credentials"
        );
        return GatewayError::UpstreamCredentialsRejected;
    }
    if error.status == StatusCode::TOO_MANY_REQUESTS || error.code == "APIGW.0308" {
        return GatewayError::UpstreamThrottled {
            retry_after_secs: retry_after.unwrap_or(1).clamp(1, 3600),
        };
    }
    if error.status.is_server_error() {
        tracing::warn!(
            account = %account.name,
            upstream_request_id = request_id,
            status = error.status.as_u16(),
            code = %error.code,
            "the BMS API answered with a server error"
        );
    }
    error.request_id = upstream_request_id;
    GatewayError::Upstream(error)
}

/// Builds the request exactly as it goes on the wire: signed (AK/SK) or with `X-Auth-Token`.
pub fn build_request(
    endpoint: &Endpoint,
    target: &ConsoleTarget,
    now: SystemTime,
    auth: &AuthMaterial,
) -> Result<Request<Full<Bytes>>, GatewayError> {
    let path = format!(
        "/v1/{}/baremetalservers/{}/remote_console",
        target.project.as_str(),
        target.server.as_str()
    );
    let sdk_date = signer::format_sdk_date(now);
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", CONTENT_TYPE),
        ("host", &endpoint.host),
        ("x-project-id", target.project.as_str()),
    ];
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{}", endpoint.url, path));
    match auth {
        AuthMaterial::Signing {
            access_key,
            secret_key,
            security_token,
        } => {
            headers.push(("x-sdk-date", &sdk_date));
            if let Some(token) = security_token {
                // Temporary (STS) keys: the token is sent and signed, as the SDK does.
                headers.push(("x-security-token", token.expose()));
            }
            let signing = SigningRequest {
                method: "POST",
                path: &path,
                query: &[],
                headers: &headers,
                body: bms::UPSTREAM_REQUEST_BODY,
            };
            let authorization = signer::sign(&signing, access_key.expose(), secret_key)
                .map_err(|_| GatewayError::Internal)?;
            builder = builder.header(header::AUTHORIZATION, authorization);
        }
        AuthMaterial::Token(token) => {
            builder = builder.header("x-auth-token", token.value.expose());
        }
    }
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .header(header::USER_AGENT, USER_AGENT)
        .body(Full::new(Bytes::from_static(bms::UPSTREAM_REQUEST_BODY)))
        .map_err(|_| GatewayError::Internal)
}

pub(crate) fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA file {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    Ok(())
}
