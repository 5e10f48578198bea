//! `tienda`: the operator and the command line.
//!
//! - `tienda crds [--out-dir DIR]` prints the four CRDs as one YAML stream, or writes one file
//!   per CRD into DIR (how `crds/yaml/` is regenerated).
//!
//! - `tienda run` runs the controllers (see the crate's `run` module).
//!
//! - `tienda up [PATH]` runs the shop on this machine (see the crate's `local` module);
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
        /// The gateway's port; the other components take the next five.
        #[arg(long, env = "TIENDA_BASE_PORT", default_value_t = 3000)]
        base_port: u16,
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

async fn up(path: PathBuf, data_dir: PathBuf, base_port: u16) -> anyhow::Result<()> {
    use tienda_operator::local::{Options, System};
    let mut options = Options::new(path);
    options.data_dir = data_dir;
    options.base_port = base_port;
    eprintln!("tienda: starting the shop from {}", options.path.display());
    let mut system = System::start(options.clone()).await?;
    for component in &system.missing {
        eprintln!(
            "tienda: {component} is listed, but there is no tienda-{component} in {} (not built \
             — run `cargo build --workspace --bins` — or not part of this version yet); skipped",
            options.bin_dir.display()
        );
    }
    eprintln!();
    for (component, url) in &system.urls {
        eprintln!("  {:<14} {url}", component.as_str());
    }
    let entry = system
        .urls
        .get(&tienda_crds::Component::Gateway)
        .or_else(|| system.urls.get(&tienda_crds::Component::Products))
        .cloned()
        .unwrap_or_default();
    eprintln!();
    eprintln!("  admin          {} / {}", system.admin.0, system.admin.1);
    eprintln!("  data           {}", options.data_dir.display());
    eprintln!("  PostgreSQL     {}", redact(&system.database_url));
    eprintln!("  NATS           {}", system.nats_url);
    eprintln!();
    eprintln!("  try:  curl {entry}/v1/products");
    eprintln!("  stop: Ctrl-C");
    eprintln!();
    eprintln!(
        "tienda: watching {}: policy edits apply at once, Shop edits restart the components",
        options.path.display()
    );
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            result = &mut stop => {
                result?;
                break;
            }
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                match system.reload(&options).await {
                    Ok(true) => {
                        last_error.clear();
                        eprintln!(
                            "tienda: the Shop changed; components restarted: {}",
                            system.urls.keys().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                        );
                    }
                    Ok(false) => last_error.clear(),
                    // Said once, not every second while the file stays broken.
                    Err(e) if format!("{e:#}") != last_error => {
                        last_error = format!("{e:#}");
                        eprintln!("tienda: {last_error}\ntienda: keeping what runs; fix the file and save again");
                    }
                    Err(_) => {}
                }
            }
        }
    }
    eprintln!("tienda: stopping");
    system.stop().await;
    eprintln!(
        "tienda: stopped; data kept in {}",
        options.data_dir.display()
    );
    Ok(())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
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
        Command::Up {
            path,
            data_dir,
            base_port,
        } => {
            tokio::runtime::Runtime::new()?.block_on(up(path, data_dir, base_port))?;
        }
        Command::Down { purge, data_dir } => {
            if !purge {
                anyhow::bail!(
                    "tienda down only removes data: run `tienda down --purge` to delete {} \
                     (stop a running `tienda up` with Ctrl-C first)",
                    data_dir.display()
                );
            }
            if data_dir.join("pg/postmaster.pid").exists() {
                anyhow::bail!(
                    "{} is in use by a running `tienda up` (PostgreSQL is up); stop it first",
                    data_dir.display()
                );
            }
            match std::fs::remove_dir_all(&data_dir) {
                Ok(()) => eprintln!("removed {}", data_dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("nothing to remove: {} does not exist", data_dir.display())
                }
                Err(e) => return Err(e).context(format!("removing {}", data_dir.display())),
            }
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
