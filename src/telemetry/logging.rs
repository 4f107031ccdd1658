//! Log output: JSON lines by default, human-readable with `--log-format pretty`.
//!
//! Each request produces one access-log event (target `access`), written by the pipeline's
//! record phase. Nothing here ever receives a token, a key or a console URL: the types that
//! hold them (`Secret`, `ConsoleUrl`) print `[redacted]`, and the access log takes only ids.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber with request spans exported through `tracer` (OTLP).
/// `RUST_LOG`, when set, overrides `level`.
pub fn init_with_tracer(format: LogFormat, level: &str, tracer: opentelemetry_sdk::trace::Tracer) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer));
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stdout)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .pretty()
                    .with_writer(std::io::stdout)
                    .with_ansi(ansi),
            )
            .try_init(),
    };
    let _ = result;
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a terminal; escape codes in a log file or pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    // Already installed (tests start several gateways in one process): keep the first.
    let _ = result;
}
