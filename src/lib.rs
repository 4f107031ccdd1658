//! bms-console-gateway: a gateway in front of the Huawei Cloud BMS `remote_console` API.
//!
//! Callers present an internal JWT; the gateway authenticates it, authorizes the caller for
//! the project and server, applies a per-user rate limit, serves a cached console URL or asks
//! the cloud for a new one with centrally held service credentials, and records metrics, an
//! access log and an audit trail. See `pipeline` for the request lifecycle.

pub mod secret;
pub mod sim;
pub mod upstream;
