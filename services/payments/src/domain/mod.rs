//! Payments' rules, with no I/O: money in minor units with each currency's exponent, the
//! payment state machine, and the bounds on captures and refunds.

pub mod fraud;
pub mod money;
pub mod payment;
pub mod refund;
