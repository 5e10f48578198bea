//! Provisioning against the real PostgreSQL (`DATABASE_URL`) and nats-server (`NATS_URL`),
//! started by `tests/run`.

mod database;
mod streams;
