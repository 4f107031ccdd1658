//! What the gateway tells its operators: Prometheus metrics (`metrics`) and structured logs
//! (`logging`), joined to callers' traces through `trace_context`, and optionally spans over
//! OTLP (`otlp`).

pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod trace_context;

pub use metrics::Metrics;
