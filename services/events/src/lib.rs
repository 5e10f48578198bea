//! Tienda's event and command contracts.
//!
//! Services talk over NATS JetStream with JSON messages wrapped in an [`Envelope`]. Subjects
//! are `tienda.<domain>.<event>` for events and `tienda.<domain>.cmd.<command>` for the saga's
//! commands; the one stream per domain is created by provisioning, never by services.
//!
//! # Evolving a contract
//! A contract is a promise to every consumer, including ones deployed before the change.
//! - **Additive changes keep the version**: a new field must be optional (`Option`, or
//!   `#[serde(default)]`) so old messages still decode, and consumers ignore fields they do not
//!   know (no `deny_unknown_fields` on contracts), so new messages still decode in old consumers.
//! - **Anything else is a new version**: removing or renaming a field, changing its type, unit
//!   or meaning. Add a new type (`UserRegisteredV2`, `VERSION = 2`, same subject), publish both
//!   versions until every consumer reads the new one, then stop publishing the old one.
//!   Consumers dispatch on the envelope's `type` and `version`.
//! - The JSON fixtures under `tests/contracts/` are the published form: a test decodes and
//!   re-encodes each one, so an accidental rename fails the build instead of a consumer.
//!
//! # Layout
//! - [`envelope`]: the envelope, the [`Message`] trait, NATS header names
//! - [`dead_letter`]: names of a component's dead-letter stream and subjects
//! - [`money`]: integer minor units with a currency
//! - [`user`]: account events (auth)
//! - [`catalog`]: product events (products)
//! - [`inventory`]: inventory events and the saga's inventory commands (products)
//! - [`order`]: order events (orders), for notifications and analytics
//! - [`payment`]: the saga's payment commands and payments' replies and events

pub mod catalog;
pub mod dead_letter;
pub mod envelope;
pub mod inventory;
pub mod money;
pub mod order;
pub mod payment;
pub mod user;

pub use envelope::{Envelope, Kind, Message, header};
pub use money::Money;
