//! What the gateway tells its operators: Prometheus metrics (`metrics`), structured logs
//! (`logging`) and the audit trail of console URLs issued and refused (`audit`).

pub mod audit;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
