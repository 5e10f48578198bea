//! Every resource under `examples/`: ours against the CRD schemas and CEL rules, Kubernetes'
//! through kubernetes-validate, Argo CD's structurally (and what they point at exists).

use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::tools::{documents, kubernetes_validate, root, yaml_files};

#[test]
fn every_example_resource_validates() {
    let mut ours = 0;
    let mut argo = Vec::new();
    let mut kubernetes = Vec::new();
    for file in yaml_files(&root().join("examples")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in documents(&text) {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            let what = format!(
                "{} {} in {}",
                doc["kind"].as_str().unwrap_or("?"),
                doc["metadata"]["name"].as_str().unwrap_or("?"),
                file.display()
            );
            if api.starts_with("tienda.dev/") {
                if let Err(violations) = tienda_crds::validation::validate(&doc, None) {
                    panic!("{what} is invalid: {violations:?}");
                }
                ours += 1;
            } else if api.starts_with("argoproj.io/") {
                argo.push((what, doc));
            } else {
                kubernetes.push(serde_json::to_string(&doc).unwrap());
            }
        }
    }
    assert!(ours >= 10, "the examples hold our resources: {ours}");
    if !kubernetes.is_empty() {
        assert_eq!(
            kubernetes_validate(&kubernetes.join("\n---\n")),
            Vec::<String>::new()
        );
    }
    check_argo(&argo);
}

fn check_argo(docs: &[(String, Value)]) {
    let project = docs
        .iter()
        .find(|(_, d)| d["kind"] == "AppProject")
        .map(|(_, d)| d)
        .expect("an AppProject");
    let apps: Vec<&(String, Value)> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Application")
        .collect();
    assert_eq!(apps.len(), 2, "the chart and a Shop");
    let mut waves = Vec::new();
    for (what, app) in apps {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1", "{what}");
        let spec = &app["spec"];
        assert_eq!(
            spec["project"], project["metadata"]["name"],
            "{what}: in the project"
        );
        let repo = spec["source"]["repoURL"].as_str().expect("repoURL");
        assert!(
            project["spec"]["sourceRepos"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == repo),
            "{what}: the project allows its repository"
        );
        let path = root().join(spec["source"]["path"].as_str().expect("source.path"));
        assert!(path.is_dir(), "{what}: {} exists", path.display());
        let namespace = &spec["destination"]["namespace"];
        assert!(
            project["spec"]["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| &d["namespace"] == namespace),
            "{what}: the project allows its destination"
        );
        let options: Vec<&str> = spec["syncPolicy"]["syncOptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            options.contains(&"ServerSideApply=true"),
            "{what}: server-side apply (argo-cd #11074)"
        );
        assert!(
            spec["ignoreDifferences"]
                .as_array()
                .is_some_and(|d| !d.is_empty()),
            "{what}: ignores fields others own"
        );
        let wave: i64 = app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .and_then(|w| w.parse().ok())
            .expect("a sync wave");
        waves.push((wave, path.ends_with("charts/tienda")));
        if path.ends_with("examples") {
            let include = spec["source"]["directory"]["include"].as_str().unwrap();
            for name in include.trim_matches(['{', '}']).split(',') {
                assert!(
                    path.join(name).is_file(),
                    "{what}: includes {name}, which exists"
                );
            }
        } else {
            assert!(path.join("Chart.yaml").is_file(), "{what}: a chart");
        }
    }
    waves.sort();
    assert_eq!(
        waves.iter().map(|w| w.1).collect::<Vec<_>>(),
        [true, false],
        "the chart syncs before the Shop"
    );
}
