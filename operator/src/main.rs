//! `tienda`: the operator and the command line.
//!
//! - `tienda crds [--out-dir DIR]` prints the four CRDs as one YAML stream, or writes one file
//!   per CRD into DIR (how `crds/yaml/` is regenerated).
//!
//! - `tienda run` runs the controllers (see the crate's `run` module).
//!
//! `tienda up` (the shop on one machine) comes with the local-run issue.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Tienda: a Kubernetes-native e-commerce backend.
#[derive(Debug, Parser)]
#[command(name = "tienda", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (in a cluster, or against the current kubeconfig).
    Run {
        /// Address of `/livez`, `/readyz` and `/metrics`.
        #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Log filter (tracing env-filter syntax).
        #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
        log_filter: String,
    },
    /// Print the CustomResourceDefinitions (Shop, Service, RateLimitPolicy, CircuitPolicy).
    Crds {
        /// Write one `<plural>.tienda.dev.yaml` file per CRD into this directory instead of
        /// printing them.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Run {
            metrics_addr,
            log_filter,
        } => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter))
                .init();
            tokio::runtime::Runtime::new()?.block_on(tienda_operator::run::run(metrics_addr))?;
        }
        Command::Crds { out_dir: None } => {
            print!("{}", tienda_crds::crd_yaml::stream());
        }
        Command::Crds { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in tienda_crds::crd_yaml::files() {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
