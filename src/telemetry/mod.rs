//! What the gateway tells its operators: Prometheus metrics (`metrics`) and structured logs
//! (`logging`).

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
