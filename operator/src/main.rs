//! `tienda`: the operator and the command line.
//!
//! - `tienda crds [--out-dir DIR]` prints the four CRDs as one YAML stream, or writes one file
//!   per CRD into DIR (how `crds/yaml/` is regenerated).
//!
//! - `tienda run` runs the controllers (see the crate's `run` module).
//!
//! - `tienda up [PATH] [--demo]` runs the shop on this machine (crate `tienda-local`);
//!   `tienda down --purge` removes its data.

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
    /// Run the shop on this machine: PostgreSQL and NATS (private ones unless DATABASE_URL and
    /// NATS_URL answer), every built component as a supervised process. Ctrl-C stops it.
    Up {
        /// A Shop file, or a directory of YAML files with a Shop and its policies.
        #[arg(default_value = "examples/local")]
        path: PathBuf,
        /// Data, secrets and logs (kept between runs).
        #[arg(long, env = "TIENDA_DATA_DIR", default_value = ".tienda")]
        data_dir: PathBuf,
        /// The gateway's port; the other components take the next five, and each its admin
        /// listener 100 above its own (gateway 3100).
        #[arg(long, env = "TIENDA_BASE_PORT", default_value_t = 3000)]
        base_port: u16,
        /// Once the shop is ready, load a demo catalog (categories, products in Spanish and
        /// English with stock) and a demo customer through the API; only once per data
        /// directory. `TIENDA_DEMO` takes 1/0, true/false, yes/no, on/off.
        #[arg(long, env = "TIENDA_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
        demo: bool,
        /// Trace the whole shop into the operations console's own trace viewer (recent
        /// traces, in memory), unless OTEL_EXPORTER_OTLP_ENDPOINT names a trace store.
        /// `TIENDA_TRACES` takes 1/0, true/false, yes/no, on/off.
        #[arg(long, env = "TIENDA_TRACES", value_parser = clap::builder::BoolishValueParser::new())]
        traces: bool,
    },
    /// Remove what `tienda up` keeps (`--purge`: databases, streams, secrets, logs).
    Down {
        /// Really delete the data directory.
        #[arg(long)]
        purge: bool,
        /// The data directory.
        #[arg(long, env = "TIENDA_DATA_DIR", default_value = ".tienda")]
        data_dir: PathBuf,
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
            tokio::runtime::Runtime::new()?.block_on(async {
                // JSON logs with trace ids; reconciles traced over OTLP when
                // OTEL_EXPORTER_OTLP_ENDPOINT is set.
                tienda_kit::telemetry::init(
                    "operator",
                    tienda_kit::config::LogFormat::Json,
                    &log_filter,
                );
                tienda_operator::run::run(metrics_addr).await
            })?;
        }
        Command::Up {
            path,
            data_dir,
            base_port,
            demo,
            traces,
        } => {
            let mut options = tienda_local::Options::new(path);
            options.data_dir = data_dir;
            options.base_port = base_port;
            options.demo = demo;
            options.traces = traces;
            tokio::runtime::Runtime::new()?.block_on(tienda_local::up(options))?;
        }
        Command::Down { purge, data_dir } => tienda_local::down(&data_dir, purge)?,
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
