//! The external tools and files the delivery tests read.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    tienda_e2e::repo_root()
}

/// A tool from `tests/tools/install`: `$var`, else its place in the tools cache.
pub fn tool(var: &str, fallback: &str) -> PathBuf {
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    let cached = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/tienda/tools").join(fallback))
        .unwrap_or_default();
    assert!(
        cached.exists(),
        "{var} is not set and {} does not exist: run tests/run (its tests/tools/install installs it)",
        cached.display()
    );
    cached
}

/// Runs `helm` with `args` in the repository; `(success, stdout, stderr)`.
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool("HELM", "helm/helm"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template tienda charts/tienda --namespace tienda-system` with `extra` arguments.
pub fn render(extra: &[&str]) -> String {
    let mut args = vec![
        "template",
        "tienda",
        "charts/tienda",
        "--namespace",
        "tienda-system",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm {args:?} failed:\n{err}");
    out
}

/// Runs `kubernetes-validate --strict` on `yaml`; panics with its report unless it passes.
/// Returns the kinds it had no schema for (custom resources of other projects).
pub fn kubernetes_validate(yaml: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("tienda-delivery-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(tool("KUBERNETES_VALIDATE", "venv/bin/kubernetes-validate"))
        .arg("--strict")
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs");
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict refused:\n{report}"
    );
    assert!(
        !report.contains("ERROR"),
        "kubernetes-validate reported:\n{report}"
    );
    report
        .lines()
        .filter(|l| l.contains("Couldn't find schema for kind"))
        .filter_map(|l| {
            l.split("kind ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The YAML documents of a stream, nulls (empty documents) dropped.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every `.yaml` file under `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}
