//! Who is asking, and may they: token verification (`jwt`), the keys it trusts (`keys`), and
//! the authorization policy (`policy`).

pub mod jwt;
pub mod keys;
pub mod policy;

pub use jwt::{Caller, Verifier};
pub use policy::{Decision, Policy};
