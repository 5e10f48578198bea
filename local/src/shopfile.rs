//! The Shop file(s) `tienda up` runs: the same resources a cluster takes, checked the way the
//! API server would check them (schema and CEL rules) before anything starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use tienda_crds::{Component, Shop};

/// What `tienda up` needs from the files.
#[derive(Debug, Clone)]
pub struct ShopFile {
    /// The Shop's name.
    pub name: String,
    /// Its components.
    pub components: Vec<Component>,
    /// The file or directory (the gateway reads its policies from it).
    pub path: PathBuf,
    /// The Shop, typed (what its components' environment is computed from).
    pub shop: Shop,
    /// Every resource, as read.
    pub documents: Vec<Value>,
}

fn yaml_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| {
            format!(
                "reading {}: give a Shop file or a directory of them",
                path.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and checks every resource in `path` (a YAML file or a directory of them).
pub fn load(path: &Path) -> anyhow::Result<ShopFile> {
    let mut documents = Vec::new();
    for file in yaml_files(path)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is not YAML", file.display()))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            if let Err(violations) = tienda_crds::validation::validate(&doc, None) {
                let list: Vec<String> = violations.iter().map(|v| format!("  - {v}")).collect();
                bail!(
                    "{}: {} {:?} is invalid:\n{}",
                    file.display(),
                    doc["kind"].as_str().unwrap_or("object"),
                    doc["metadata"]["name"].as_str().unwrap_or(""),
                    list.join("\n")
                );
            }
            documents.push(doc);
        }
    }
    let shops: Vec<&Value> = documents.iter().filter(|d| d["kind"] == "Shop").collect();
    let shop = match shops.as_slice() {
        [shop] => *shop,
        [] => bail!("{} holds no Shop", path.display()),
        _ => bail!(
            "{} holds {} Shops; tienda up runs one",
            path.display(),
            shops.len()
        ),
    };
    let name = shop["metadata"]["name"]
        .as_str()
        .unwrap_or("shop")
        .to_owned();
    let components = match shop["spec"]["components"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|c| serde_json::from_value::<Component>(c["name"].clone()).ok())
            .collect(),
        None => Component::ALL.to_vec(),
    };
    let mut typed: Shop = serde_json::from_value(shop.clone())
        .with_context(|| format!("{}: the Shop {name:?} is not a Shop", path.display()))?;
    typed.metadata.name.get_or_insert_with(|| name.clone());
    Ok(ShopFile {
        name,
        components,
        path: path.to_path_buf(),
        shop: typed,
        documents,
    })
}
