//! bms-console-gateway: a gateway in front of the Huawei Cloud BMS `remote_console` API.
//!
//! Callers present an internal JWT; the gateway authenticates it, authorizes the caller for
//! the project and server, applies a per-user rate limit, serves a cached console URL or asks
//! the cloud for a new one with centrally held service credentials, and records metrics and an
//! access log. `pipeline` holds the request lifecycle; `server` starts everything.

pub mod admin;
pub mod auth;
pub mod bms;
pub mod busy_poll;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
pub mod expiring_map;
#[doc(hidden)]
pub mod fuzzing;
pub mod hex;
pub mod json_text;
pub mod mint;
pub mod pipeline;
pub mod ratelimit;
pub mod reload;
pub mod secret;
pub mod server;
pub mod shared;
pub mod sim;
pub mod state;
pub mod strict_json;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod write_batching;
