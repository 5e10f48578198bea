//! The file source: policy YAML under a path (`tienda up`'s directory, or a mounted
//! ConfigMap), polled for changes — the contents rather than inotify, because editors replace
//! files by rename and Kubernetes swaps ConfigMap volumes through symlinks, both of which
//! inotify watchers miss.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;

use super::Policies;

/// The YAML files of a policy path: the file itself, or the `.yaml`/`.yml` files of a
/// directory, sorted. `None` while the path is missing or unreadable (an editor saving by
/// rename-away-then-write): that is no reason to drop every policy.
fn yaml_files(path: &Path) -> Option<Vec<PathBuf>> {
    if path.is_file() {
        return Some(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Some(files)
}

/// Reads policy files, keeping the last good documents of a file that stops parsing.
#[derive(Debug, Default)]
pub struct FileSource {
    path: PathBuf,
    texts: BTreeMap<PathBuf, String>,
    docs: BTreeMap<PathBuf, Vec<Value>>,
}

impl FileSource {
    /// Files under `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ..Self::default()
        }
    }

    /// Reads the files; `Some(documents)` when anything changed since the last call.
    pub fn poll(&mut self) -> Option<Vec<Value>> {
        let files = yaml_files(&self.path)?;
        let mut texts = BTreeMap::new();
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    texts.insert(file.clone(), text);
                }
                // Mid-rename or unreadable: try again at the next poll.
                Err(_) => return None,
            }
        }
        if texts == self.texts {
            return None;
        }
        let mut docs = BTreeMap::new();
        for (file, text) in &texts {
            if self.texts.get(file) == Some(text)
                && let Some(old) = self.docs.get(file)
            {
                docs.insert(file.clone(), old.clone());
                continue;
            }
            match serde_saphyr::from_multiple::<Value>(text) {
                Ok(parsed) => {
                    docs.insert(
                        file.clone(),
                        parsed.into_iter().filter(|d| !d.is_null()).collect(),
                    );
                }
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "policy file is not YAML; its previous contents stay in force");
                    if let Some(old) = self.docs.get(file) {
                        docs.insert(file.clone(), old.clone());
                    }
                }
            }
        }
        self.texts = texts;
        self.docs = docs;
        Some(self.docs.values().flatten().cloned().collect())
    }
}

/// Applies the files under `path` now and whenever they change (checked every `interval`).
pub async fn watch_files(
    mut source: FileSource,
    policies: Arc<Policies>,
    interval: Duration,
    shutdown: crate::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        if let Some(docs) = source.poll() {
            policies.apply(&docs);
        }
    }
}
