//! `tienda up` and `tienda down`: a shop on one machine, no cluster. The same Shop file a
//! cluster takes, checked the same way; the same provisioning code as the operator (databases
//! and roles, streams and consumers); each service binary run as a process with the
//! environment its Deployment would get (the one
//! [`component_environment`](tienda_provision::environment::component_environment), placed on
//! loopback ports), supervised. The `tienda` binary dispatches here; `tienda-e2e` starts the
//! system through this crate too, so whole-system tests run the shop the way users do.
//!
//! The binary never runs scripts from the repository: missing server binaries are found or
//! installed by [`tools`] with the steps the README documents.
//!
//! # Layout
//! - [`up`]: the foreground command: start, summary, Shop file watch, Ctrl-C
//! - [`demo`]: `--demo`: the demo catalog and customer, loaded once through the public API
//! - [`down`]: `tienda down --purge`
//! - [`options`]: what runs where: paths, servers, ports (public and admin)
//! - [`system`]: a running shop: infrastructure, provisioning, components, reload, stop
//! - [`environment`]: a component's environment on this machine
//! - [`infra`]: the private PostgreSQL and nats-server (when none is configured)
//! - [`tools`]: finding (or installing) PostgreSQL and nats-server binaries
//! - [`supervisor`]: one process, restarted with backoff, logs prefixed
//! - [`shopfile`]: reading and checking the Shop and policy files
//! - `secrets`: what is generated once and kept in `secrets.json`

pub mod demo;
pub mod down;
pub mod environment;
pub mod infra;
pub mod options;
mod secrets;
pub mod shopfile;
pub mod supervisor;
pub mod system;
pub mod tools;
pub mod up;

pub use down::down;
pub use options::Options;
pub use system::System;
pub use up::up;
