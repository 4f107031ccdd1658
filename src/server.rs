//! Listeners and the gateway's life cycle: bind, serve, shut down.
//!
//! [`start`] builds the state from a validated config, starts the embedded simulator when the
//! config asks for one, binds the public and admin listeners and returns a [`RunningGateway`]
//! that tests and `serve` both drive. Each connection is served by hyper's auto builder
//! (HTTP/1.1 and HTTP/2) with a header-read timeout (which needs the timer installed to do
//! anything), caps on the request head size and header count, an idle timeout, and a drain on
//! shutdown. Requests take the current gateway from the [`Reloader`], so a reload swaps it
//! without touching connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::busy_poll::BusyPoll;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError, ServerConfig, EMBEDDED_ENDPOINT};
use crate::reload::{ReloadError, Reloader};
use crate::secret::SecretRef;
use crate::sim;
use crate::state::Gateway;
use crate::tls::TlsState;
use crate::write_batching::BatchedWrites;

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
    /// Owns the current [`Gateway`]; reloads go through it.
    pub reloader: Arc<Reloader>,
    /// The in-process simulator, when the config uses one.
    pub simulator: Option<sim::SimHandle>,
    public_stop: watch::Sender<Option<Duration>>,
    admin_stop: watch::Sender<Option<Duration>>,
    public_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    /// Stops the certificate watcher (and anything else that lives as long as the listeners).
    background_stop: watch::Sender<bool>,
    drain_timeout: Duration,
    shutdown_delay: Duration,
}

impl RunningGateway {
    /// The gateway serving new requests now.
    pub fn state(&self) -> Arc<Gateway> {
        self.reloader.current()
    }

    /// Re-reads the config file and swaps in the new gateway (what `SIGHUP` does).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload().await
    }

    /// The graceful stop (what `SIGTERM` does): readiness turns false (so `/readyz` sends load
    /// balancers elsewhere) and the public listener keeps accepting for
    /// `server.shutdown_delay_ms`; then it stops accepting, open connections are asked to
    /// close after their current request, requests in flight finish (up to
    /// `server.drain_timeout_seconds`, after which the rest are cut), and last the admin
    /// listener closes.
    pub async fn shutdown_gracefully(self) {
        let drain = self.drain_timeout;
        self.shutdown(drain).await
    }

    /// Like [`RunningGateway::shutdown_gracefully`] with an explicit drain deadline.
    pub async fn shutdown(self, drain: Duration) {
        self.reloader.begin_shutdown().await;
        if !self.shutdown_delay.is_zero() {
            tokio::time::sleep(self.shutdown_delay).await;
        }
        let _ = self.public_stop.send(Some(drain));
        let _ = self.public_task.await;
        let _ = self.admin_stop.send(Some(Duration::from_secs(1)));
        let _ = self.admin_task.await;
        let _ = self.background_stop.send(true);
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
    let state = Arc::new(Gateway::build(&config, clock.clone(), endpoint.as_deref()).await?);
    let metrics = state.metrics.clone();
    metrics.config_last_reload_success.set(clock.unix_seconds());
    if let Some(redis) = &state.redis {
        redis.warm_up().await;
    }
    state.start_background().await;

    let (background_stop, background_stopped) = watch::channel(false);
    let public = bind(config.server.listen).await?;
    let admin = bind(config.server.admin_listen).await?;
    let public_addr = local_addr(&public, config.server.listen)?;
    let admin_addr = local_addr(&admin, config.server.admin_listen)?;

    let tls = match &config.server.tls {
        None => None,
        Some(tls_config) => {
            let tls = Arc::new(
                TlsState::load(tls_config, &config.base_dir, &metrics)
                    .map_err(|issues| config.error(issues))?,
            );
            tokio::spawn(tls.clone().watch(
                Duration::from_secs(tls_config.reload_interval_seconds),
                metrics.clone(),
                background_stopped.clone(),
            ));
            Some(tls)
        }
    };
    let reloader = Arc::new(Reloader::new(
        state.clone(),
        &config,
        clock,
        endpoint.clone(),
    ));

    let busy_poll = (config.server.busy_poll_us > 0).then(|| {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let busy_poll = BusyPoll::new(
            Duration::from_micros(config.server.busy_poll_us),
            workers,
            metrics.busy_poll_seconds.clone(),
        );
        busy_poll.spawn(background_stopped.clone());
        busy_poll
    });

    let (public_stop, public_stopped) = watch::channel(None);
    let public_reloader = reloader.clone();
    let public_listener = Listener {
        socket: public,
        settings: config.server.clone(),
        tls,
        metrics: metrics.clone(),
    };
    let public_task = tokio::spawn(serve(public_listener, public_stopped, move |request| {
        if let Some(busy_poll) = &busy_poll {
            busy_poll.note_request();
        }
        // The gateway current when the request arrived serves all of it, across reloads.
        let state = public_reloader.current();
        async move { Ok::<_, Infallible>(crate::pipeline::handle(&state, request).await) }
    }));

    let (admin_stop, admin_stopped) = watch::channel(None);
    let admin_reloader = reloader.clone();
    let reload_enabled = config.server.admin_reload;
    let admin_listener = Listener {
        socket: admin,
        settings: config.server.clone(),
        tls: None,
        // Admin connections are not the public listener's: count them apart.
        metrics: Arc::new(crate::telemetry::Metrics::new(&[])),
    };
    let admin_task = tokio::spawn(serve(admin_listener, admin_stopped, move |request| {
        let reloader = admin_reloader.clone();
        async move {
            Ok::<_, Infallible>(
                crate::admin::handle_with_reload(&reloader, reload_enabled, request).await,
            )
        }
    }));

    state.ready.store(true, Ordering::Release);
    metrics.ready.set(1);
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        simulator = endpoint.as_deref().unwrap_or("-"),
        tls = config.server.tls.is_some(),
        "bms-console-gateway listening"
    );
    Ok(RunningGateway {
        public_addr,
        admin_addr,
        reloader,
        simulator,
        public_stop,
        admin_stop,
        public_task,
        admin_task,
        background_stop,
        drain_timeout: Duration::from_secs(config.server.drain_timeout_seconds),
        shutdown_delay: Duration::from_millis(config.server.shutdown_delay_ms),
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
    /// `peer` as text, formatted once per connection rather than for each request's records.
    pub peer_text: Arc<str>,
    /// The verified client certificate's identity (mutual TLS only).
    pub client: Option<crate::tls::ClientIdentity>,
}

impl ConnectionInfo {
    fn new(peer: SocketAddr, client: Option<crate::tls::ClientIdentity>) -> ConnectionInfo {
        ConnectionInfo {
            peer,
            peer_text: Arc::from(peer.to_string()),
            client,
        }
    }
}

/// How one listener serves its connections.
struct Listener {
    socket: TcpListener,
    settings: ServerConfig,
    tls: Option<Arc<TlsState>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// The per-connection limits, read once when the listener starts.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    header_timeout: Duration,
    idle_timeout: Duration,
}

/// Accepts connections until told to stop, then drains them.
///
/// Per connection: the TLS handshake must finish, and then the first request's head arrive,
/// each within the header-read timeout (hyper applies that timeout to each later HTTP/1
/// request head too, which includes the wait between keep-alive requests); a connection with
/// no request in flight for `idle_timeout_ms` is closed (HTTP/2 gets a GOAWAY); beyond
/// `max_connections` open connections new ones are closed at once instead of queueing.
///
/// The stop signal carries the drain deadline: every connection is asked to close after its
/// current requests, and those still open when the deadline passes are cut.
async fn serve<F, Fut>(
    listener: Listener,
    mut stopped: watch::Receiver<Option<Duration>>,
    handler: F,
) where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
        > + Send
        + 'static,
{
    let settings = &listener.settings;
    let limits = ConnectionLimits {
        header_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let drain = loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            _ = stopped.changed() => break stopped.borrow().unwrap_or_default(),
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
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
        let stream = BatchedWrites::new(stream);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = listener.tls.clone();
        let metrics = listener.metrics.clone();
        let stop = stopped.clone();
        connections.spawn(async move {
            let _slot = slot;
            // A guard, so a connection cut at the drain deadline (its task aborted) still counts down.
            let _open = OpenConnection::count(metrics.clone());
            match tls {
                None => {
                    let info = ConnectionInfo::new(peer, None);
                    serve_connection(&builder, TokioIo::new(stream), info, handler, limits, stop)
                        .await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            let client = crate::tls::client_identity(
                                tls_stream.get_ref().1.peer_certificates(),
                            );
                            let info = ConnectionInfo::new(peer, client);
                            serve_connection(
                                &builder,
                                TokioIo::new(tls_stream),
                                info,
                                handler,
                                limits,
                                stop,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => metrics.tls_handshake_failures.inc(),
                    }
                }
            }
        });
    };
    drop(listener.socket);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed; closing the connections still open"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until it ends, the listener stops, or it goes idle.
async fn serve_connection<I, F, Fut>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    info: ConnectionInfo,
    handler: F,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<Option<Duration>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
        > + Send
        + 'static,
{
    let activity = Arc::new(Activity::new());
    let service_activity = activity.clone();
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let busy = service_activity.begin();
        request.extensions_mut().insert(info.clone());
        let answer = handler(request);
        async move {
            let response = answer.await;
            drop(busy);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = stop.borrow().is_some();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    // One timer and one stop-watch for the life of the connection, not one each per request:
    // the timer fires at the deadline it was set to and only then looks at what the
    // connection did meanwhile (moving itself on if a request came), so a busy connection
    // re-arms it about once an idle period.
    let check = tokio::time::sleep_until(activity.deadline(limits));
    tokio::pin!(check);
    let stop_changed = stop.changed();
    tokio::pin!(stop_changed);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = &mut stop_changed, if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = &mut check, if !closing => {
                let deadline = activity.deadline(limits);
                match activity.state() {
                    // The first request never came: hang up without ceremony.
                    (0, 0) => return,
                    (0, _) if deadline <= tokio::time::Instant::now() => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ => check.as_mut().reset(deadline),
                }
            }
        }
    }
}

/// Counts one connection in `bmsgw_connections_open` while it lives.
struct OpenConnection(Arc<crate::telemetry::Metrics>);

impl OpenConnection {
    fn count(metrics: Arc<crate::telemetry::Metrics>) -> OpenConnection {
        metrics.connections_open.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// What a connection is doing, for the first-request deadline and the idle timeout.
struct Activity {
    opened: tokio::time::Instant,
    /// (requests in flight, requests started, when the last one finished).
    inner: std::sync::Mutex<(usize, u64, tokio::time::Instant)>,
}

/// Marks one request in flight while it lives (also when the client goes away mid-request).
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        let now = tokio::time::Instant::now();
        Activity {
            opened: now,
            inner: std::sync::Mutex::new((0, 0, now)),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        inner.1 += 1;
        Busy(self.clone())
    }

    /// (in flight, started).
    fn state(&self) -> (usize, u64) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.0, inner.1)
    }

    /// When to look again: the first-request deadline, the idle deadline, or (while requests
    /// are in flight) one idle period from now.
    fn deadline(&self, limits: ConnectionLimits) -> tokio::time::Instant {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match *inner {
            (_, 0, _) => self.opened + limits.header_timeout,
            (0, _, last) => last + limits.idle_timeout,
            _ => tokio::time::Instant::now() + limits.idle_timeout,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 -= 1;
        inner.2 = tokio::time::Instant::now();
    }
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
