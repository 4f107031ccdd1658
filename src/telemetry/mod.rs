//! What the gateway tells its operators: Prometheus metrics (`metrics`), structured logs
//! (`logging`) joined to callers' traces through `trace_context`, optionally spans over OTLP
//! (`otlp`), and the audit trail of console URLs issued and refused (`audit`, its lines written by
//! `audit_line`).

pub mod audit;
pub mod audit_line;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod resilience;
pub mod trace_context;

pub use metrics::Metrics;
