//! SQL, one module per table; every function takes the caller's connection or transaction.

pub mod attempts;
pub mod fraud;
pub mod payments;
pub mod refunds;
