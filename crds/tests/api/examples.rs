use std::collections::BTreeSet;

use tienda_crds::validation::validate;

use crate::support::{documents, repo_root, yaml_files};

#[test]
fn every_custom_resource_in_examples_validates_against_the_crds() {
    let mut kinds = BTreeSet::new();
    let mut checked = 0;
    for file in yaml_files(&repo_root().join("examples")) {
        for doc in documents(&file) {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            if !api_version.starts_with("tienda.dev/") {
                continue;
            }
            if let Err(violations) = validate(&doc, None) {
                panic!(
                    "{} ({} {}) is invalid:\n{}",
                    file.display(),
                    doc["kind"],
                    doc["metadata"]["name"],
                    violations
                        .iter()
                        .map(|v| format!("  - {v}\n"))
                        .collect::<String>()
                );
            }
            kinds.insert(doc["kind"].as_str().unwrap().to_owned());
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected at least four example resources, found {checked}"
    );
    for kind in ["Shop", "RateLimitPolicy", "CircuitPolicy"] {
        assert!(kinds.contains(kind), "no example {kind} in examples/");
    }
}

/// Each fixture under `tests/fixtures/invalid/` starts with `# expect: <text>` and must be
/// rejected with a violation containing that text.
#[test]
fn deliberately_wrong_resources_are_rejected_with_the_expected_reason() {
    let dir = repo_root().join("crds/tests/fixtures/invalid");
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 10,
        "expected the invalid fixtures, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()))
            .trim();
        for doc in documents(&file) {
            match validate(&doc, None) {
                Ok(()) => panic!("{} was accepted; expected {expect:?}", file.display()),
                Err(violations) => assert!(
                    violations.iter().any(|v| v.to_string().contains(expect)),
                    "{}: expected a violation containing {expect:?}, got {violations:#?}",
                    file.display()
                ),
            }
        }
    }
}

#[test]
fn a_resource_of_another_kind_is_refused_with_a_hint() {
    let doc = serde_json::json!({"apiVersion": "tienda.dev/v1", "kind": "Shop"});
    let err = validate(&doc, None).unwrap_err();
    assert!(err[0].message.contains("tienda.dev/v1alpha1"), "{err:?}");
}
