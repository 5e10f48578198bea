//! The Tienda operator as a library: desired state computed by pure functions and the
//! controllers that apply it. A component's environment and database name come from
//! `tienda-provision`, which `tienda up` (crate `tienda-local`) uses too.
//!
//! # Layout
//! - [`controller`]: the Shop and Service controllers, their context and errors
//! - [`leader`]: leader election on a coordination.k8s.io Lease
//! - [`run`]: `tienda run`: controllers, probes, metrics
//! - [`conditions`]: standard conditions with honest transition times
//! - [`console`]: each Shop's operations console, on the metrics listener
//! - [`shop`]: a Shop's desired Service resources, names, labels, database names
//! - [`workload`]: a Service's Deployment, Kubernetes Service, ServiceAccount, PDB, Secret

pub mod conditions;
pub mod console;
pub mod controller;
pub mod exposure;
pub mod leader;
pub mod run;
pub mod shop;
pub mod workload;
