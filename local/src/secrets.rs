//! Secrets `tienda up` makes on the first run and keeps for the next
//! (`<data>/secrets.json`, mode 0600): what the operator keeps in Secrets in a cluster.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tienda_provision::database;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "secrets.json";

/// The kept secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Secrets {
    /// The private PostgreSQL's superuser password.
    pub postgres_password: String,
    /// auth's `AUTH_KEY_ENCRYPTION_KEY`.
    pub auth_key_encryption_key: String,
    /// The first admin's password, unless given.
    pub admin_password: String,
    /// Each component's database role password, by component name.
    pub database_passwords: BTreeMap<String, String>,
    /// The Shop's `EVENT_SEALING_KEYS` (auth and notifications). Made on the first run that
    /// needs it: older files lack it.
    #[serde(default)]
    pub event_sealing_keys: Option<String>,
    /// The keys of the private nats-server's account (operator, account, signing key), which
    /// mint each component's NATS identity. Made on the first run that starts nats-server.
    #[serde(default)]
    pub nats_account: Option<tienda_provision::nats_auth::AccountKeys>,
}

impl Secrets {
    /// Reads `dir/secrets.json`, or makes and writes new secrets.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).with_context(|| {
                format!("{} is damaged; remove it to start over", path.display())
            });
        }
        let secrets = Self {
            postgres_password: database::generate_password(),
            auth_key_encryption_key: database::generate_key(),
            admin_password: database::generate_password(),
            database_passwords: BTreeMap::new(),
            event_sealing_keys: Some(tienda_kit::seal::Sealer::generate_key()),
            nats_account: None,
        };
        secrets.save(dir)?;
        Ok(secrets)
    }

    /// Writes them to `dir/secrets.json`, readable by the owner only.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        write_private(&dir.join(FILE), &serde_json::to_string_pretty(self)?)
    }
}

/// Writes `text` to `path`, readable by the owner only (mode 0600 from the start, never
/// readable by others even for a moment).
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
