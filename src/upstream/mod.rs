//! Everything that talks to the cloud.
//!
//! - `accounts`: which account serves a project, its credentials and per-account state;
//! - `secrets`: `file:` secrets re-read when they change;
//! - `iam`: IAM token credentials, refreshed ahead of expiry, single-flight;
//! - `signer`: how a request is signed (SDK-HMAC-SHA256);
//! - `client`: one HTTP attempt;
//! - the resilience layers, one concern each: `throttle` (back off a throttled account),
//!   `lockout` (never lock out a credential), `breaker` (circuit breaker), `quota` (the
//!   gateway's own upstream rate cap), `retry` (what to retry and how long to wait);
//! - `stack`: the one place where those layers are composed, in order.
pub mod accounts;
pub mod breaker;
pub mod client;
pub mod iam;
pub mod lockout;
pub mod quota;
pub mod retry;
pub mod secrets;
pub mod signer;
pub mod stack;
pub mod throttle;

pub use accounts::{Account, Accounts};
pub use client::UpstreamClient;
