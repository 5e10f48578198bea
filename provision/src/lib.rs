//! Provisioning of a `Service`'s external state, in one place for both callers: the operator
//! (`tienda run`) and `tienda up`. Services never create streams or consumers themselves.
//! What both give a component — its environment and its database name — is decided here too.
//!
//! Everything here is idempotent: a second run against an unchanged spec changes nothing and
//! says so ([`Outcome::Unchanged`]). A change NATS cannot apply in place (a stream's storage or
//! retention, a consumer's deliver policy) is an error naming the field, never silently
//! ignored: the caller reports it in a condition.
//!
//! # Layout
//! - [`database`]: the component's database name, database and login role, grants,
//!   extensions; drop
//! - [`environment`]: a component's environment variables, placement left open
//! - [`streams`]: streams and durable pull consumers from the spec, the dead-letter stream
//! - [`topology`]: which streams, consumers and extensions each component has
//! - [`stable_hash`]: FNV-1a for names and annotations that must stay stable

pub mod database;
pub mod environment;
pub mod nats_auth;
pub mod stable_hash;
pub mod streams;
pub mod topology;

pub use streams::{Outcome, ProvisionError};
