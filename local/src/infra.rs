//! The embedded default of `tienda up`: a private PostgreSQL and nats-server (JetStream, fsync
//! always) on loopback, with their data under the data directory so a second run keeps it.
//! Used only when `DATABASE_URL` / `NATS_URL` do not point at reachable servers; the server
//! binaries come from [`crate::tools`].

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::tools::{self, running_as_root};

/// A loopback port nobody listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether something accepts TCP connections at `host:port`.
pub fn reachable(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

/// `host` and `port` of a `scheme://user:pass@host:port/...` URL.
pub fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    match host_port.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((host_port.to_owned(), default_port)),
    }
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (PostgreSQL refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    let path = bin.join(tool);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(path);
        c
    } else {
        Command::new(path)
    }
}

async fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A private PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    stopped: bool,
    /// The admin connection URL.
    pub url: String,
}

impl Postgres {
    /// Starts the server in `dir/pg` (initializing it on first use) on `port`, with `password`
    /// for the `postgres` superuser over TCP (SCRAM).
    pub async fn start(dir: &Path, port: u16, password: &str) -> anyhow::Result<Self> {
        let bin = tools::pg_bin().await?;
        let data = dir.join("pg");
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&data)?;
            let pwfile = dir.join("pg.pw");
            std::fs::write(&pwfile, format!("{password}\n"))?;
            if running_as_root() {
                chown_postgres(&data).await?;
                chown_postgres(&pwfile).await?;
                // The postgres user must be able to reach the data directory.
                allow_traversal(dir)?;
            }
            let mut initdb = pg_command(&bin, "initdb");
            initdb
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--auth-local=trust"])
                .arg("--auth-host=scram-sha-256")
                .arg(format!("--pwfile={}", pwfile.display()));
            run(initdb, "initdb").await?;
            let _ = std::fs::remove_file(&pwfile);
        }
        let mut start = pg_command(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300",
                data.display()
            ))
            .arg("start");
        run(start, "starting PostgreSQL (see .tienda/pg/server.log)").await?;
        Ok(Self {
            bin,
            data,
            stopped: false,
            url: format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres"),
        })
    }

    /// Stops the server (fast shutdown: clients are disconnected, data is safe).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stopped = true;
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "stopping PostgreSQL").await
    }
}

impl Drop for Postgres {
    /// PostgreSQL runs detached (pg_ctl): if we are going away without `stop` (a panic, an
    /// error on the way up), stop it anyway rather than leave a server behind.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    let mut c = Command::new("chown");
    c.arg("-R").arg("postgres:postgres").arg(path);
    run(c, "chown postgres").await
}

fn allow_traversal(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut path = Some(dir);
    while let Some(p) = path {
        if let Ok(meta) = std::fs::metadata(p) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011))?;
                eprintln!(
                    "tienda: made {} traversable (o+x) so the postgres user reaches its data",
                    p.display()
                );
            }
        }
        path = p.parent();
    }
    Ok(())
}

/// A private nats-server with JetStream, syncing every write to disk.
#[derive(Debug)]
pub struct Nats {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl Nats {
    /// Starts nats-server with its store in `dir/nats` on `port`, trusting only the users of
    /// `account` (each component's own identity; see `tienda_provision::nats_auth`).
    pub async fn start(
        dir: &Path,
        port: u16,
        account: &tienda_provision::nats_auth::AccountKeys,
    ) -> anyhow::Result<Self> {
        let binary = tools::nats_server().await?;
        let store = dir.join("nats");
        std::fs::create_dir_all(&store)?;
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n{}",
                store,
                tienda_provision::nats_auth::server_config(account)?,
            ),
        )?;
        let log = std::fs::File::create(dir.join("nats.log"))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        for _ in 0..200 {
            if reachable("127.0.0.1", port) {
                return Ok(Self {
                    child,
                    url: format!("nats://127.0.0.1:{port}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not start on port {port} (see .tienda/nats.log)")
    }

    /// Stops the server.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_host_and_port() {
        assert_eq!(
            host_port("postgres://u:p@db.local:5433/x?sslmode=disable", 5432),
            Some(("db.local".into(), 5433))
        );
        assert_eq!(
            host_port("nats://127.0.0.1", 4222),
            Some(("127.0.0.1".into(), 4222))
        );
    }
}
