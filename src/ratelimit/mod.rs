//! Per-user rate limiting: the GCRA decision (`gcra`) and where its state lives (`local`).
//!
//! A user is limited per tier: the tier a policy rule assigns, or the default. Every
//! authenticated request counts, cache hits included, because a URL is a credential whether it
//! came from memory or from the cloud.

pub mod gcra;
pub mod local;

pub use gcra::{Outcome, Quota};
pub use local::LocalLimiter;
