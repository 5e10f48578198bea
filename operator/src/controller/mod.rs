//! The controllers: Shop → Service resources; Service → workload, database, streams.
//!
//! Shaped like kube-rs/controller-rs: `reconcile` records metrics and hands off to kube's
//! `finalizer()` helper (deletion is checked first, always); the work lives in per-kind
//! modules; desired objects come from the pure functions in [`crate::shop`] and
//! [`crate::workload`].

pub mod context;
pub mod error;
pub mod policy;
pub mod service;
pub mod shop;

pub use context::Context;
pub use error::{Error, Result};

/// The one field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "tienda-operator";

/// Annotation on each child: hash of what was last applied, so unchanged children are skipped
/// instead of re-applied on every reconcile.
pub const APPLIED_HASH: &str = "tienda.dev/applied-hash";

/// Applies `desired` by server-side apply (one field manager, forced) unless the stored
/// object carries the same applied hash. Returns the stored object.
pub async fn apply_child<K>(api: &kube::Api<K>, mut desired: K) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    let name = desired.meta().name.clone().expect("children are named");
    let hash =
        crate::workload::config_hash(&[&serde_json::to_vec(&desired).expect("objects serialize")]);
    if let Some(existing) = api.get_opt(&name).await?
        && existing.annotations().get(APPLIED_HASH) == Some(&hash)
    {
        return Ok(existing);
    }
    desired.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&name, &params, &kube::api::Patch::Apply(&desired))
        .await?)
}
