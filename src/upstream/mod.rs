//! Everything that talks to the cloud: request signing, accounts and the HTTP client.

pub mod signer;
