use std::collections::BTreeMap;

use pretty_assertions::assert_eq;
use tienda_crds::crd_yaml;

use crate::support::repo_root;

#[test]
fn committed_crd_yaml_matches_the_generator() {
    let dir = repo_root().join("crds/yaml");
    let committed: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    let generated: BTreeMap<String, String> = crd_yaml::files().into_iter().collect();
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "crds/yaml holds other files than the generator writes; \
         regenerate with `cargo run -p tienda-operator -- crds --out-dir crds/yaml`"
    );
    for (name, text) in &generated {
        assert_eq!(
            &committed[name], text,
            "crds/yaml/{name} is stale; regenerate with \
             `cargo run -p tienda-operator -- crds --out-dir crds/yaml`"
        );
    }
}

#[test]
fn the_stream_is_the_files_concatenated_in_name_order() {
    let files = crd_yaml::files();
    assert_eq!(files.len(), 4);
    let names: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let joined: String = files.into_iter().map(|(_, t)| t).collect();
    assert_eq!(crd_yaml::stream(), joined);
}

#[test]
fn every_kind_is_namespaced_with_status_printer_columns_and_short_names() {
    for crd in crd_yaml::crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        assert_eq!(crd.spec.group, "tienda.dev", "{name}");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage, "{name}");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name} has no status subresource"
        );
        let columns = version.additional_printer_columns.as_ref().unwrap();
        assert!(columns.iter().any(|c| c.name == "Age"), "{name}");
        assert!(
            !crd.spec
                .names
                .short_names
                .clone()
                .unwrap_or_default()
                .is_empty(),
            "{name}"
        );
        let status = serde_json::to_value(&version.schema).unwrap()["openAPIV3Schema"]
            ["properties"]["status"]["properties"]
            .clone();
        assert!(
            status.get("observedGeneration").is_some(),
            "{name}: observedGeneration"
        );
        assert_eq!(
            status["conditions"]["x-kubernetes-list-type"], "map",
            "{name}: conditions must be a list-map keyed by type"
        );
    }
}

#[test]
fn the_service_kind_does_not_collide_with_core_services_in_kubectl() {
    let crd = crd_yaml::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "Service")
        .unwrap();
    let names = &crd.spec.names;
    let mut taken = vec![names.plural.clone()];
    taken.extend(names.singular.clone());
    taken.extend(names.short_names.clone().unwrap_or_default());
    for core in ["services", "service", "svc"] {
        assert!(
            !taken.iter().any(|n| n == core),
            "{core} is taken by core Service"
        );
    }
    assert_eq!(names.plural, "tiendaservices");
}

#[test]
fn every_field_of_every_kind_is_documented() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                // apiVersion/kind/metadata are Kubernetes' own.
                if !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                    && prop.get("description").is_none()
                {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for crd in crd_yaml::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut missing = Vec::new();
        walk(
            &crd.spec.names.kind,
            &schema["openAPIV3Schema"],
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }
}
