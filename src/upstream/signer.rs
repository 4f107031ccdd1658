//! SDK-HMAC-SHA256 request signing (placeholder; filled in by the signer work).
