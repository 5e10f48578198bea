//! The Tienda operator as a library: desired state computed by pure functions, and (with the
//! operator issue) the controllers that apply it. `tienda up` reuses the same functions to run
//! a shop without a cluster.
//!
//! # Layout
//! - [`controller`]: the Shop and Service controllers, their context and errors
//! - [`leader`]: leader election on a coordination.k8s.io Lease
//! - [`local`]: `tienda up`: the shop as local processes, no cluster
//! - [`run`]: `tienda run`: controllers, probes, metrics
//! - [`conditions`]: standard conditions with honest transition times
//! - [`shop`]: a Shop's desired Service resources, names, labels, database names
//! - [`stable_hash`]: FNV-1a for names and annotations that must stay stable
//! - [`workload`]: a Service's Deployment, Kubernetes Service, ServiceAccount, PDB, Secret

pub mod conditions;
pub mod controller;
pub mod leader;
pub mod local;
pub mod run;
pub mod shop;
pub mod stable_hash;
pub mod workload;
