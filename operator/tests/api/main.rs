//! The controllers against a mocked Kubernetes API server (the controller-rs
//! `ApiServerVerifier` pattern: every request's method, path, query and body is checked) and
//! the real PostgreSQL and nats-server for the external state.

mod cluster;
mod events;
mod leader_election;
mod nats_accounts;
mod nats_identities;
mod policy_controller;
mod rbac;
mod service_controller;
mod shop_controller;
mod verifier;
mod whole_operator;
