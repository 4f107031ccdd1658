//! The `bms-console-gateway` command: `serve`, `check-config`, `simulate`, `explain`, `probe`,
//! `mint-token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bms_console_gateway::clock::SystemClock;
use bms_console_gateway::config::{Config, LogFormat};
use bms_console_gateway::mint::{self, MintOptions};
use bms_console_gateway::secret::Secret;
use bms_console_gateway::{server, sim, state, telemetry};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: under load glibc's malloc and free were about a
/// fifth of the samples of a request that goes upstream (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "config/gateway.toml";

#[derive(Parser)]
#[command(
    name = "bms-console-gateway",
    version,
    about = "Gateway for the Huawei Cloud BMS remote_console API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Overrides `logging.format` from the config.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Validate a config (and every file and secret it references) without serving.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the BMS simulator on its own.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
        #[arg(long)]
        access_key: String,
        #[arg(long)]
        secret_key: String,
        /// Project ids the credentials own (default: every project in the catalog).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Servers per project as JSON (default: the built-in demo catalog).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// An IAM user for `POST /v3/auth/tokens`, as ACCOUNT/USER:PASSWORD (repeatable);
        /// its tokens may be scoped to the same projects as the access key.
        #[arg(long = "iam-user", value_parser = parse_iam_user)]
        iam_users: Vec<(String, String, String)>,
        #[arg(long, value_enum, default_value = "json")]
        log_format: LogFormatArg,
    },
    /// Print what the policy decides for these claims and this server, and the rule that decides.
    /// Exits 0 on allow, 3 on deny.
    Explain {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A JSON file with the token's claims (`iss`, the subject claim, groups, ...).
        #[arg(long)]
        claims: PathBuf,
        #[arg(long)]
        project: String,
        #[arg(long)]
        server: String,
    },
    /// Exit 0 when the URL answers 2xx within 2 s (a container HEALTHCHECK needs no curl).
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Print a JWT signed with the dev key (or --key) that the config accepts.
    MintToken {
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Issuer name from the config (default: the first).
        #[arg(long)]
        issuer: Option<String>,
        /// Private key PEM (default: the dev key next to the config).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        kid: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Extra claim NAME=VALUE; repeat a name to make an array (e.g. --claim groups=ops).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
    },
}

fn parse_iam_user(text: &str) -> Result<(String, String, String), String> {
    let (who, password) = text
        .split_once(':')
        .ok_or("expected ACCOUNT/USER:PASSWORD")?;
    let (domain, user) = who
        .split_once('/')
        .ok_or("expected ACCOUNT/USER:PASSWORD")?;
    if domain.is_empty() || user.is_empty() || password.is_empty() {
        return Err("expected ACCOUNT/USER:PASSWORD".into());
    }
    Ok((domain.into(), user.into(), password.into()))
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".to_string())
}

fn log_format(arg: Option<LogFormatArg>, config: LogFormat) -> LogFormat {
    match arg {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Pretty) => LogFormat::Pretty,
        None => config,
    }
}

/// The async runtime: one worker thread per core the process may run on. With a single core
/// (a one-CPU container, or pinned with `taskset`), the current-thread scheduler: one worker
/// gains nothing from work stealing and pays for its atomics and queues on every wake-up.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

/// Transparent huge pages off for this process. The allocator asks for them on its arena, and
/// the kernel's khugepaged then fills whole 2 MiB regions around what the caches touched: in the
/// benchmark's memory run, RSS crept up by 10 MiB over ten minutes with no more data held.
/// Memory-bound caches want RSS to follow what they hold (Redis advises the same).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            config,
            log_format: fmt,
        } => runtime.block_on(serve(config, fmt)),
        Command::Explain {
            config,
            claims,
            project,
            server,
        } => explain(config, claims, &project, &server),
        Command::CheckConfig { config } => runtime.block_on(check_config(config)),
        Command::Simulate {
            listen,
            access_key,
            secret_key,
            projects,
            catalog,
            iam_users,
            log_format: fmt,
        } => runtime.block_on(simulate(
            listen, access_key, secret_key, projects, catalog, iam_users, fmt,
        )),
        Command::Probe { url } => runtime.block_on(probe(url)),
        Command::MintToken {
            sub,
            config,
            issuer,
            key,
            kid,
            ttl,
            claims,
        } => {
            let options = MintOptions {
                subject: sub,
                issuer_name: issuer,
                key_file: key,
                kid,
                lifetime_seconds: ttl,
                claims,
            };
            mint_token(config, options)
        }
    }
}

async fn serve(path: PathBuf, fmt: Option<LogFormatArg>) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let format = log_format(fmt, config.logging.format);
    let otlp = match telemetry::otlp::OtlpExport::start(&config.tracing) {
        Ok(Some((export, tracer))) => {
            telemetry::logging::init_with_tracer(format, &config.logging.level, tracer);
            Some(export)
        }
        Ok(None) => {
            telemetry::logging::init(format, &config.logging.level);
            None
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let signals = Signals::install();
    let running = match server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(error = %e, "start-up failed");
            return ExitCode::FAILURE;
        }
    };
    serve_until_stopped(&running, signals).await;
    tracing::info!("shutting down: readiness off, draining in-flight requests");
    running.shutdown_gracefully().await;
    if let Some(otlp) = otlp {
        otlp.shutdown().await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The signals `serve` reacts to, installed before the listeners open: a signal that arrives
/// the moment the gateway logs "listening" must not meet the default action (terminate).
struct Signals {
    #[cfg(unix)]
    unix: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::hangup()),
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(hup), Ok(term), Ok(int)) => Some([hup, term, int]),
                _ => None,
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

/// Reloads on every SIGHUP until SIGTERM or SIGINT.
async fn serve_until_stopped(running: &server::RunningGateway, signals: Signals) {
    #[cfg(unix)]
    if let Some([mut hup, mut term, mut int]) = signals.unix {
        loop {
            tokio::select! {
                _ = int.recv() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // Failures are logged and counted by the reloader.
                    let _ = running.reload().await;
                }
            }
        }
    }
    let _ = signals;
    shutdown_signal().await;
}

/// Resolves on SIGTERM or SIGINT. Created before the listeners start, so a signal that
/// arrives right after the "listening" log line is not lost to the default action (which
/// would kill the process without the graceful drain).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    // ctrl_c() registers its handler on first poll: poll it once now.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let _ = futures_util::FutureExt::now_or_never(&mut ctrl_c);
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}

async fn probe(url: String) -> ExitCode {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    let Ok(uri) = url.parse::<http::Uri>() else {
        eprintln!("{url}: not a URL");
        return ExitCode::FAILURE;
    };
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.get(uri)).await {
        Ok(Ok(response)) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(Ok(response)) => {
            eprintln!("{url}: {}", response.status());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{url}: no answer within 2 s");
            ExitCode::FAILURE
        }
    }
}

async fn check_config(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let built = match state::Gateway::build(&config, SystemClock::shared(), None).await {
        // The certificate files, as `serve` loads them when it binds the public listener.
        Ok(gateway) => match &config.server.tls {
            None => Ok(gateway),
            Some(tls) => {
                bms_console_gateway::tls::TlsState::load(tls, &config.base_dir, &gateway.metrics)
                    .map(|_| gateway)
                    .map_err(|issues| config.error(issues))
            }
        },
        Err(e) => Err(e),
    };
    match built {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate(
    listen: SocketAddr,
    access_key: String,
    secret_key: String,
    projects: Vec<String>,
    catalog: Option<PathBuf>,
    iam_users: Vec<(String, String, String)>,
    fmt: LogFormatArg,
) -> ExitCode {
    telemetry::logging::init(log_format(Some(fmt), LogFormat::Json), "info");
    let catalog = match catalog {
        None => sim::Catalog::demo(),
        Some(path) => match sim::Catalog::from_json_file(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let projects = if projects.is_empty() {
        catalog.project_ids().map(str::to_string).collect()
    } else {
        projects
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let users = iam_users
        .into_iter()
        .map(|(domain, name, password)| sim::SimIamUser {
            domain,
            name,
            password: Secret::new(password),
            projects: projects.clone(),
        })
        .collect();
    let config = sim::SimConfig {
        credentials: vec![sim::SimCredential {
            access_key,
            secret_key: Secret::new(secret_key),
            projects,
            security_token: None,
        }],
        catalog,
        console_base_url: sim::DEFAULT_CONSOLE_BASE_URL.to_string(),
        users,
    };
    let signal = shutdown_signal();
    let handle = match sim::start(config, listener).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("simulator failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(endpoint = %handle.endpoint(), "BMS simulator listening");
    signal.await;
    handle.shutdown();
    ExitCode::SUCCESS
}

fn explain(path: PathBuf, claims: PathBuf, project: &str, server: &str) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let claims_text = match std::fs::read_to_string(&claims) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", claims.display());
            return ExitCode::FAILURE;
        }
    };
    match bms_console_gateway::auth::explain::explain(&config, &claims_text, project, server) {
        Ok(explanation) => {
            print!("{}", explanation.text);
            if explanation.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("{}: {e}", claims.display());
            ExitCode::FAILURE
        }
    }
}

fn mint_token(path: PathBuf, options: MintOptions) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match mint::mint(&config, &options, SystemClock::shared().unix_seconds()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
