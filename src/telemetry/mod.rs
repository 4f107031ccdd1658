//! What the gateway tells its operators: Prometheus metrics (`metrics`) and structured logs
//! (`logging`).

pub mod logging;
pub mod metrics;
pub mod resilience;

pub use metrics::Metrics;
