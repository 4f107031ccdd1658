//! Listeners and the gateway's life cycle: bind, serve, shut down.
//!
//! [`start`] builds the state from a validated config, starts the embedded simulator when the
//! config asks for one, binds the public and admin listeners and returns a [`RunningGateway`]
//! that tests and `serve` both drive. Each connection is served by hyper's auto builder
//! (HTTP/1.1 and HTTP/2) with a header-read timeout (which needs the timer installed to do
//! anything) and a cap on the request head size.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError, ServerConfig, EMBEDDED_ENDPOINT};
use crate::secret::SecretRef;
use crate::sim;
use crate::state::Gateway;
use crate::tls::TlsState;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded simulator: {0}")]
    Simulator(String),
}

/// A gateway that is serving.
pub struct RunningGateway {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<Gateway>,
    /// The in-process simulator, when the config uses one.
    pub simulator: Option<sim::SimHandle>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl RunningGateway {
    /// The graceful stop: readiness turns false (so `/readyz` sends load balancers elsewhere),
    /// the listeners stop accepting, requests in flight finish (up to
    /// `server.drain_timeout_seconds`), then this returns.
    pub async fn shutdown_gracefully(self) {
        let drain = self.drain_timeout;
        self.shutdown(drain).await
    }

    /// Like [`RunningGateway::shutdown_gracefully`] with an explicit drain deadline.
    pub async fn shutdown(self, drain: Duration) {
        self.state.ready.store(false, Ordering::Release);
        self.state.metrics.ready.set(0);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(drain, task).await;
        }
        if let Some(sim) = &self.simulator {
            sim.shutdown();
        }
    }

    /// Base URL of the public listener, e.g. `http://127.0.0.1:8080`.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.public_addr)
    }

    /// Base URL of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
}

/// Starts the gateway with the system clock.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with_clock(config, SystemClock::shared()).await
}

/// Starts the gateway with the given clock (tests move time with a `ManualClock`).
pub async fn start_with_clock(
    config: Config,
    clock: SharedClock,
) -> Result<RunningGateway, StartError> {
    let simulator = if config.uses_embedded_simulator() {
        Some(start_embedded_simulator(&config).await?)
    } else {
        None
    };
    let endpoint = simulator.as_ref().map(|s| s.endpoint());
    let state = Arc::new(Gateway::build(&config, clock, endpoint.as_deref())?);
    state.start_background().await;

    let (stop, stopped) = watch::channel(false);
    let public = bind(config.server.listen).await?;
    let admin = bind(config.server.admin_listen).await?;
    let public_addr = local_addr(&public, config.server.listen)?;
    let admin_addr = local_addr(&admin, config.server.admin_listen)?;

    let tls = match &config.server.tls {
        None => None,
        Some(tls_config) => {
            let tls = Arc::new(
                TlsState::load(tls_config, &config.base_dir, &state.metrics)
                    .map_err(|issues| config.error(issues))?,
            );
            tokio::spawn(tls.clone().watch(
                Duration::from_secs(tls_config.reload_interval_seconds),
                state.metrics.clone(),
                stopped.clone(),
            ));
            Some(tls)
        }
    };
    let public_state = state.clone();
    let public_listener = Listener {
        socket: public,
        settings: config.server.clone(),
        tls,
        metrics: state.metrics.clone(),
    };
    let public_task = tokio::spawn(serve(public_listener, stopped.clone(), move |request| {
        let state = public_state.clone();
        async move { Ok::<_, Infallible>(crate::pipeline::handle(&state, request).await) }
    }));
    let admin_state = state.clone();
    let admin_listener = Listener {
        socket: admin,
        settings: config.server.clone(),
        tls: None,
        // Admin connections are not the public listener's: count them apart.
        metrics: Arc::new(crate::telemetry::Metrics::new(&[])),
    };
    let admin_task = tokio::spawn(serve(admin_listener, stopped, move |request| {
        let state = admin_state.clone();
        async move { Ok::<_, Infallible>(crate::admin::handle(&state, &request)) }
    }));

    state.ready.store(true, Ordering::Release);
    state.metrics.ready.set(1);
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        simulator = endpoint.as_deref().unwrap_or("-"),
        "bms-console-gateway listening"
    );
    Ok(RunningGateway {
        public_addr,
        admin_addr,
        state,
        simulator,
        stop,
        tasks: vec![public_task, admin_task],
        drain_timeout: Duration::from_secs(config.server.drain_timeout_seconds),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Facts about the connection a request arrived on, attached to every request.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The verified client certificate's identity (mutual TLS only).
    pub client: Option<crate::tls::ClientIdentity>,
}

/// How one listener serves its connections.
struct Listener {
    socket: TcpListener,
    settings: ServerConfig,
    tls: Option<Arc<TlsState>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// Accepts connections until told to stop, then waits for open connections to finish.
///
/// Per connection: the TLS handshake and the first request's head must arrive within the
/// header-read timeout (hyper applies it to later requests itself, which also closes idle
/// keep-alive connections); beyond `max_connections` open connections new ones are closed at
/// once instead of queueing.
async fn serve<F, Fut>(listener: Listener, mut stopped: watch::Receiver<bool>, handler: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
        > + Send
        + 'static,
{
    let settings = &listener.settings;
    let header_timeout = Duration::from_millis(settings.header_read_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            listener.metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = listener.tls.clone();
        let metrics = listener.metrics.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            metrics.connections_open.inc();
            let first_request = Arc::new(tokio::sync::Notify::new());
            let served = async {
                match tls {
                    None => {
                        let info = ConnectionInfo { peer, client: None };
                        serve_connection(
                            &builder,
                            TokioIo::new(stream),
                            info,
                            handler,
                            first_request.clone(),
                            watcher,
                        )
                        .await
                    }
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                        let Ok(Ok(tls_stream)) =
                            tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let client =
                            crate::tls::client_identity(tls_stream.get_ref().1.peer_certificates());
                        let info = ConnectionInfo { peer, client };
                        serve_connection(
                            &builder,
                            TokioIo::new(tls_stream),
                            info,
                            handler,
                            first_request.clone(),
                            watcher,
                        )
                        .await
                    }
                }
            };
            tokio::pin!(served);
            // The handshake and the first request must start within twice the header-read
            // timeout; hyper's detection of HTTP/1 versus HTTP/2 has no deadline of its own.
            tokio::select! {
                _ = &mut served => {}
                _ = first_request.notified() => served.await,
                _ = tokio::time::sleep(header_timeout * 2) => {}
            }
            metrics.connections_open.dec();
        });
    }
    drop(listener.socket);
    graceful.shutdown().await;
}

async fn serve_connection<I, F, Fut>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    info: ConnectionInfo,
    handler: F,
    first_request: Arc<tokio::sync::Notify>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
        > + Send
        + 'static,
{
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        first_request.notify_one();
        request.extensions_mut().insert(info.clone());
        handler(request)
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    let _ = watcher.watch(connection.into_owned()).await;
}

/// Starts the simulator in this process with the credentials of every `embedded` account.
async fn start_embedded_simulator(config: &Config) -> Result<sim::SimHandle, StartError> {
    let mut issues = Vec::new();
    let mut credentials = Vec::new();
    let mut users: Vec<sim::SimIamUser> = Vec::new();
    for (i, acc) in config.accounts.iter().enumerate() {
        let iam_embedded = acc
            .iam
            .as_ref()
            .is_some_and(|i| i.endpoint == EMBEDDED_ENDPOINT);
        if acc.endpoint != EMBEDDED_ENDPOINT && !iam_embedded {
            continue;
        }
        let resolve = |field: &str, text: &str, issues: &mut Vec<_>| {
            SecretRef::parse(text)
                .and_then(|r| r.resolve(&config.base_dir))
                .map_err(|e| {
                    issues.push(crate::config::ConfigIssue::new(
                        format!("accounts[{i}].{field}"),
                        e,
                    ))
                })
                .ok()
        };
        let projects: Vec<String> = acc
            .projects
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if let Some(iam) = &acc.iam {
            let user = resolve("iam.user", &iam.user, &mut issues);
            let domain = resolve("iam.domain", &iam.domain, &mut issues);
            let password = resolve("iam.password", &iam.password, &mut issues);
            if let (Some(user), Some(domain), Some(password)) = (user, domain, password) {
                users.push(sim::SimIamUser {
                    domain: domain.expose().to_string(),
                    name: user.expose().to_string(),
                    password,
                    projects,
                });
            }
            continue;
        }
        let (Some(ak_ref), Some(sk_ref)) = (&acc.access_key, &acc.secret_key) else {
            continue;
        };
        let ak = resolve("access_key", ak_ref, &mut issues);
        let sk = resolve("secret_key", sk_ref, &mut issues);
        let token = acc
            .security_token
            .as_ref()
            .and_then(|t| resolve("security_token", t, &mut issues));
        if let (Some(ak), Some(sk)) = (ak, sk) {
            credentials.push(sim::SimCredential {
                access_key: ak.expose().to_string(),
                secret_key: sk,
                projects,
                security_token: token,
            });
        }
    }
    let catalog = match &config.simulator.catalog_file {
        None => sim::Catalog::demo(),
        Some(file) => match sim::Catalog::from_json_file(&config.resolve_path(file)) {
            Ok(c) => c,
            Err(e) => {
                issues.push(crate::config::ConfigIssue::new("simulator.catalog_file", e));
                sim::Catalog::demo()
            }
        },
    };
    if !issues.is_empty() {
        return Err(config.error(issues).into());
    }
    tracing::warn!(
        "UPSTREAM IS THE EMBEDDED BMS SIMULATOR, NOT HUAWEI CLOUD: console URLs are fake; for development and demos only"
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError::Simulator(e.to_string()))?;
    sim::start(
        sim::SimConfig {
            credentials,
            catalog,
            console_base_url: sim::DEFAULT_CONSOLE_BASE_URL.to_string(),
            users,
        },
        listener,
    )
    .await
    .map_err(|e| StartError::Simulator(e.to_string()))
}
