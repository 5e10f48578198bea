//! The payments service over real HTTP and JetStream, against a fresh database and a private
//! nats-server (provisioned the way the operator does it) per test. Commands are published
//! onto the PAYMENT stream as orders publishes them; replies are read back from the stream.

mod analytics;
mod commands;
mod fraud;
mod helpers;
mod invoices;
mod lost_commits;
mod payments_api;
mod paypal;
mod stripe;
