//! `tienda`: the operator and the command line.
//!
//! - `tienda crds [--out-dir DIR]` prints the four CRDs as one YAML stream, or writes one file
//!   per CRD into DIR (how `crds/yaml/` is regenerated).
//!
//! `tienda run` (the controller) and `tienda up` (the shop on one machine) come with the
//! operator and local-run issues.

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
    /// Print the CustomResourceDefinitions (Shop, Service, RateLimitPolicy, CircuitPolicy).
    Crds {
        /// Write one `<plural>.tienda.dev.yaml` file per CRD into this directory instead of
        /// printing them.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
