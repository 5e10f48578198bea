//! The products service over real HTTP, against a fresh database and a private nats-server
//! (provisioned the way the operator does it) per test.

mod bulk;
mod catalog;
mod concurrency;
mod helpers;
mod inventory;
mod operations;
mod search;
