//! The Dockerfile, checked statically (no Docker engine here): base images pinned, every
//! runtime image non-root with an entrypoint and labels, no secrets baked in, one target per
//! binary the operator and the Shops name.

use std::collections::BTreeMap;

use crate::tools::root;

/// A stage: its base and its instructions.
#[derive(Debug, Default)]
struct Stage {
    base: String,
    instructions: Vec<(String, String)>,
}

fn stages(text: &str) -> (BTreeMap<String, String>, Vec<(String, Stage)>) {
    let mut args = BTreeMap::new();
    let mut stages: Vec<(String, Stage)> = Vec::new();
    // Continuation lines joined, comments dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (op, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let op = op.to_uppercase();
        let rest = rest.trim().to_owned();
        match op.as_str() {
            "FROM" => {
                let mut words = rest.split_whitespace();
                let base = words.next().unwrap_or_default().to_owned();
                let name = match (words.next(), words.next()) {
                    (Some(a), Some(n)) if a.eq_ignore_ascii_case("as") => n.to_owned(),
                    _ => format!("stage{}", stages.len()),
                };
                stages.push((
                    name,
                    Stage {
                        base,
                        ..Stage::default()
                    },
                ));
            }
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = rest.split_once('=') {
                    args.insert(k.to_owned(), v.to_owned());
                }
            }
            _ => {
                if let Some((_, stage)) = stages.last_mut() {
                    stage.instructions.push((op, rest));
                }
            }
        }
    }
    (args, stages)
}

fn expand(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in args {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

#[test]
fn images_are_pinned_non_root_labelled_and_free_of_secrets() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let (args, stages) = stages(&text);
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    let lookup = |name: &str| stages.iter().find(|(n, _)| n == name).map(|(_, s)| s);

    for (name, stage) in &stages {
        if names.contains(&stage.base.as_str()) {
            continue;
        }
        let base = expand(&stage.base, &args);
        let tag = base.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        let pinned = base.contains("@sha256:")
            || (tag.chars().any(|c| c.is_ascii_digit()) && tag != "latest");
        assert!(
            pinned,
            "stage {name}: base image {base} is not pinned by version or digest"
        );
    }

    // Every binary the operator's Deployments and the chart name has an image: the operator
    // and every component a Shop can run (a component added to `Component::ALL` without an
    // image fails here, and the cluster test's "every component ready" stays true).
    let targets =
        std::iter::once("operator").chain(tienda_crds::Component::ALL.iter().map(|c| c.as_str()));
    for target in targets {
        let stage = lookup(target).unwrap_or_else(|| panic!("no `{target}` target"));
        // Its chain of bases: USER, LABEL and ENTRYPOINT may come from the runtime stage.
        let mut chain = vec![stage];
        let mut base = stage.base.as_str();
        while let Some(parent) = lookup(base) {
            chain.push(parent);
            base = parent.base.as_str();
        }
        let last = |op: &str| {
            chain
                .iter()
                .flat_map(|s| s.instructions.iter().rev())
                .find(|(o, _)| o == op)
                .map(|(_, v)| v.clone())
        };
        let user =
            last("USER").unwrap_or_else(|| panic!("{target}: no USER (it would run as root)"));
        let uid = user.split(':').next().unwrap();
        assert!(uid != "0" && uid != "root", "{target}: runs as {user}");
        assert!(
            last("ENTRYPOINT").is_some_and(|e| e.starts_with('[')),
            "{target}: exec-form ENTRYPOINT, no shell needed"
        );
        let labels: String = chain
            .iter()
            .flat_map(|s| s.instructions.iter())
            .filter(|(o, _)| o == "LABEL")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for label in [
            "org.opencontainers.image.version",
            "org.opencontainers.image.source",
        ] {
            assert!(labels.contains(label), "{target}: label {label}");
        }
    }

    for (name, stage) in &stages {
        for (op, value) in &stage.instructions {
            if op == "ENV" || op == "ARG" {
                let upper = value.to_uppercase();
                for word in ["PASSWORD", "SECRET", "TOKEN", "API_KEY", "PRIVATE"] {
                    assert!(
                        !upper.contains(word),
                        "stage {name}: {op} {value} looks like a secret"
                    );
                }
            }
            if op == "COPY" || op == "ADD" {
                assert!(
                    !value.contains(".env") && !value.contains(".tienda"),
                    "stage {name}: {op} {value}"
                );
            }
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect("a .dockerignore");
    for path in ["target/", ".tienda/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == path),
            ".dockerignore leaves out {path}"
        );
    }
}
