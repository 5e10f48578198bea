//! The mail transport when no SMTP server is configured: each message becomes an RFC 5322
//! `.eml` file (open it with any mail client) named after its delivery, written whole or not
//! at all (a temporary file renamed into place), and its path logged.

use std::path::PathBuf;

use lettre::Message;

use super::{SendError, Transport};

/// A directory of `.eml` files.
#[derive(Debug, Clone)]
pub struct EmlOutbox {
    dir: PathBuf,
}

impl EmlOutbox {
    /// Writes into `dir` (created when missing).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Transport for EmlOutbox {
    async fn send(&self, message: &Message) -> Result<String, SendError> {
        let id = message
            .headers()
            .get_raw("Message-ID")
            .map(|v| {
                v.trim_matches(['<', '>'])
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        write_file(&self.dir, &format!("{id}.eml"), &message.formatted()).await
    }
}

/// Writes `bytes` as `name` in `dir` (created when missing), whole or not at all (a
/// temporary file renamed into place), and logs the path; answers it.
pub async fn write_file(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> Result<String, SendError> {
    let transient = |what: &str, e: std::io::Error| {
        SendError::Transient(format!("{what} in {}: {e}", dir.display()))
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| transient("creating the outbox", e))?;
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    tokio::fs::write(&partial, bytes)
        .await
        .map_err(|e| transient("writing", e))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| transient("renaming", e))?;
    let path = path.display().to_string();
    tracing::info!(path = %path, "message written to the outbox (no provider configured)");
    Ok(path)
}
