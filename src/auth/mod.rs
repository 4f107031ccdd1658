//! Who is asking, and may they: token verification (`jwt`), the keys it trusts (`keys`, and
//! `jwks` for key sets fetched from identity providers), and the authorization policy
//! (`policy`); `token_cache` holds the tokens already verified.

pub mod explain;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod token_cache;

pub use jwt::{Caller, Verifier};
pub use policy::{Decision, Policy};
