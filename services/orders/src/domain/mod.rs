//! Types and rules with no I/O.
//!
//! - [`status`]: the order state machine (a transition table)
//! - [`saga`]: the checkout saga's decisions
//! - [`checkout`]: the checkout request, its validation, priced lines and totals
//! - [`log`]: what the order event log records
//! - [`shipment`]: what an admin says when shipping an order

pub mod checkout;
pub mod log;
pub mod saga;
pub mod shipment;
pub mod status;
