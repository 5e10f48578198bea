//! The CRDs as YAML: one file per kind under `crds/yaml/`, and `tienda crds` prints them
//! concatenated in file-name order, so `cat crds/yaml/*.yaml` equals its output.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{CircuitPolicy, RateLimitPolicy, Service, Shop};

/// Every CRD, sorted by the name of its file.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        CircuitPolicy::crd(),
        RateLimitPolicy::crd(),
        Service::crd(),
        Shop::crd(),
    ];
    crds.sort_by_key(file_name);
    crds
}

/// The file a CRD is committed as: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// One CRD as a YAML document, starting with `---`.
pub fn render(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).expect("a CRD serializes to YAML");
    format!("---\n{body}")
}

/// `(file name, contents)` of every CRD.
pub fn files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| (file_name(crd), render(crd)))
        .collect()
}

/// Every CRD as one YAML stream (what `tienda crds` prints).
pub fn stream() -> String {
    files().into_iter().map(|(_, text)| text).collect()
}
