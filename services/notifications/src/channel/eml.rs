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
        let transient = |what: &str, e: std::io::Error| {
            SendError::Transient(format!("{what} in {}: {e}", self.dir.display()))
        };
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
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| transient("creating the outbox", e))?;
        let path = self.dir.join(format!("{id}.eml"));
        let partial = self.dir.join(format!(".{id}.eml.partial"));
        tokio::fs::write(&partial, message.formatted())
            .await
            .map_err(|e| transient("writing", e))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| transient("renaming", e))?;
        let path = path.display().to_string();
        tracing::info!(path = %path, "message written to the outbox (no SMTP server configured)");
        Ok(path)
    }
}
