//! Provisioning against the real nats-server (`NATS_URL`, started by `tests/run`).

mod streams;
