//! State shared by every replica through Redis: the connection and its fault handling
//! (`store`), encryption of what is kept there (`seal`), and the shared console-URL tier
//! (`cache_tier`). The shared rate limiter is `crate::ratelimit::distributed`.
//!
//! Every key is built here, from the configured prefix, so one Redis can serve several
//! gateways, and every key an operation touches shares one Redis Cluster hash slot.

pub mod cache_tier;
pub mod seal;
pub mod store;

pub use cache_tier::SharedCacheTier;
pub use store::{RedisStore, StoreError};
