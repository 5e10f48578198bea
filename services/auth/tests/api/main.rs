//! The auth service over real HTTP against a fresh database per test.

mod accounts;
mod helpers;
mod mfa;
mod oidc;
mod security;
