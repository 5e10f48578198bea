//! `tienda down --purge`: removes what `tienda up` keeps.

use std::path::Path;

use anyhow::{Context, bail};

/// Deletes `data_dir` (databases, streams, secrets, logs) when `purge` is given and no
/// `tienda up` uses it.
pub fn down(data_dir: &Path, purge: bool) -> anyhow::Result<()> {
    if !purge {
        bail!(
            "tienda down only removes data: run `tienda down --purge` to delete {} \
             (stop a running `tienda up` with Ctrl-C first)",
            data_dir.display()
        );
    }
    if data_dir.join("pg/postmaster.pid").exists() {
        bail!(
            "{} is in use by a running `tienda up` (PostgreSQL is up); stop it first",
            data_dir.display()
        );
    }
    match std::fs::remove_dir_all(data_dir) {
        Ok(()) => eprintln!("removed {}", data_dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("nothing to remove: {} does not exist", data_dir.display())
        }
        Err(e) => return Err(e).context(format!("removing {}", data_dir.display())),
    }
    Ok(())
}
