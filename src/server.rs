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
}

impl RunningGateway {
    /// Stops accepting, lets in-flight requests finish (up to `drain`), then returns.
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

    let public = bind(config.server.listen).await?;
    let admin = bind(config.server.admin_listen).await?;
    let public_addr = local_addr(&public, config.server.listen)?;
    let admin_addr = local_addr(&admin, config.server.admin_listen)?;
    let (stop, stopped) = watch::channel(false);

    let public_state = state.clone();
    let public_task = tokio::spawn(serve(
        public,
        config.server.clone(),
        stopped.clone(),
        move |request| {
            let state = public_state.clone();
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&state, request).await) }
        },
    ));
    let admin_state = state.clone();
    let admin_task = tokio::spawn(serve(
        admin,
        config.server.clone(),
        stopped,
        move |request| {
            let state = admin_state.clone();
            async move { Ok::<_, Infallible>(crate::admin::handle(&state, &request)) }
        },
    ));

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

/// Accepts connections until told to stop, then waits for open connections to finish.
async fn serve<F, Fut>(
    listener: TcpListener,
    settings: ServerConfig,
    mut stopped: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
        > + Send
        + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms))
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let connection = builder
            .serve_connection(TokioIo::new(stream), service_fn(handler))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Starts the simulator in this process with the credentials of every `embedded` account.
async fn start_embedded_simulator(config: &Config) -> Result<sim::SimHandle, StartError> {
    let mut issues = Vec::new();
    let mut credentials = Vec::new();
    for (i, acc) in config.accounts.iter().enumerate() {
        if acc.endpoint != EMBEDDED_ENDPOINT {
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
        let ak = resolve("access_key", &acc.access_key, &mut issues);
        let sk = resolve("secret_key", &acc.secret_key, &mut issues);
        if let (Some(ak), Some(sk)) = (ak, sk) {
            credentials.push(sim::SimCredential {
                access_key: ak.expose().to_string(),
                secret_key: sk,
                projects: acc
                    .projects
                    .iter()
                    .map(|p| p.to_ascii_lowercase())
                    .collect(),
                security_token: None,
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
        },
        listener,
    )
    .await
    .map_err(|e| StartError::Simulator(e.to_string()))
}
