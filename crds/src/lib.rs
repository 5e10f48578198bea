//! The Tienda API: group `tienda.dev`, version `v1alpha1`.
//!
//! Four namespaced kinds, each with a status subresource (`observedGeneration`, standard
//! `conditions`), printer columns and short names:
//!
//! | Kind | Plural / short | What it is |
//! |---|---|---|
//! | [`Shop`] | `shops` / `shp` | the whole shop: components, PostgreSQL, NATS, exposure |
//! | [`Service`] | `tiendaservices` / `tsvc` | one component: workload, database, streams, consumers |
//! | [`RateLimitPolicy`] | `ratelimitpolicies` / `rlp` | limits the gateway enforces |
//! | [`CircuitPolicy`] | `circuitpolicies` / `cp` | timeouts, retries, breaker, bulkhead, ejection |
//!
//! Validation lives in the CRD schema so the API server enforces it: OpenAPI keywords (enums,
//! ranges, patterns, lengths) for single values, CEL rules (`x-kubernetes-validations`) for
//! everything that spans fields, compares durations or forbids changes (`oldSelf`). Every list
//! and string a rule reads is bounded, so the API server can price the rules.
//!
//! # Layout
//! - [`shop`], [`service`], [`rate_limit_policy`], [`circuit_policy`]: the kinds
//! - [`component`]: the six components
//! - [`pull_policy`], [`reclaim_policy`]: image pulls and deletion, named by both Shop and Service
//! - [`duration`]: Gateway API duration strings
//! - [`status`]: condition types and the policy status
//! - [`crd_yaml`]: the CRDs as the YAML committed under `crds/yaml/`
//! - [`validation`]: schema + CEL validation of a resource without an API server

// kube-derive's repeated `printcolumn(type_ = ..)` reads to clippy as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod circuit_policy;
pub mod component;
pub mod crd_yaml;
pub mod duration;
pub mod precedence;
pub mod pull_policy;
pub mod rate_limit_policy;
pub mod reclaim_policy;
pub mod service;
pub mod shop;
pub mod status;
pub mod validation;

pub use circuit_policy::{CircuitPolicy, CircuitPolicySpec};
pub use component::Component;
pub use duration::Duration;
pub use precedence::precedence;
pub use rate_limit_policy::{RateLimitPolicy, RateLimitPolicySpec};
pub use service::{Service, ServiceSpec, ServiceStatus};
pub use shop::{Shop, ShopSpec, ShopStatus};
pub use status::PolicyStatus;

/// The API group of every Tienda kind.
pub const GROUP: &str = "tienda.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
