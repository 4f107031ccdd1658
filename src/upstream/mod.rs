//! Everything that talks to the cloud: which account serves a project (`accounts`), how a
//! request is signed (`signer`), and the HTTP client that sends it (`client`).

pub mod accounts;
pub mod client;
pub mod signer;

pub use accounts::{Account, Accounts};
pub use client::UpstreamClient;
