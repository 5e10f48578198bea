//! The kit against the real PostgreSQL and nats-server, through a small example service.

mod backbone;
mod example;
mod http;
mod idempotency;
mod jwt;
mod outbound;
mod platform;
mod shutdown;
