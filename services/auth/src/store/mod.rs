//! SQL, one module per aggregate. Every function takes the connection (or transaction) it
//! runs on, so the caller decides what commits together.

pub mod accounts;
pub mod email_verifications;
pub mod mfa;
pub mod oidc;
pub mod password_resets;
pub mod sessions;
pub mod sign_in_failures;
