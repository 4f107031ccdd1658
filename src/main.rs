//! The `bms-console-gateway` command: `serve`, `check-config`, `simulate`, `mint-token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bms_console_gateway::clock::SystemClock;
use bms_console_gateway::config::{Config, LogFormat};
use bms_console_gateway::mint::{self, MintOptions};
use bms_console_gateway::secret::Secret;
use bms_console_gateway::{server, sim, state, telemetry};
use clap::{Parser, Subcommand, ValueEnum};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
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
        Command::CheckConfig { config } => check_config(config),
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
    telemetry::logging::init(
        log_format(fmt, config.logging.format),
        &config.logging.level,
    );
    let signal = shutdown_signal();
    let running = match server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(error = %e, "start-up failed");
            return ExitCode::FAILURE;
        }
    };
    signal.await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown_gracefully().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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

fn check_config(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match state::Gateway::build(&config, SystemClock::shared(), None) {
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
