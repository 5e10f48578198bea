//! The notifications service against real PostgreSQL and a private nats-server with the
//! topology provisioned: events published as auth, orders and payments publish them, and what
//! reached the mail outbox read back.

mod campaigns;
mod delivery;
mod digests;
mod helpers;
mod preferences;
mod push;
mod sms;
mod smtp;
mod templates;
mod tracking;
mod webhooks;
