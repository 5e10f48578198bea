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

/// The key per-object backoff is tracked under: `Kind/namespace/name`.
fn object_key<K: kube::Resource>(kind: &str, object: &K) -> String {
    use kube::ResourceExt;
    format!(
        "{kind}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Runs a reconcile through kube's finalizer helper (deletion first) with metrics, and forgets
/// the object's past failures when it succeeds.
pub async fn with_finalizer<K, Apply, Cleanup, ApplyFut, CleanupFut>(
    kind: &'static str,
    finalizer_name: &str,
    object: std::sync::Arc<K>,
    ctx: &context::Ctx,
    apply: Apply,
    cleanup: Cleanup,
) -> Result<kube::runtime::controller::Action>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    Apply: FnOnce(std::sync::Arc<K>) -> ApplyFut,
    Cleanup: FnOnce(std::sync::Arc<K>) -> CleanupFut,
    ApplyFut: Future<Output = Result<kube::runtime::controller::Action>>,
    CleanupFut: Future<Output = Result<kube::runtime::controller::Action>>,
{
    use kube::runtime::finalizer::{Event, finalizer};
    let _timer = ctx
        .metrics
        .duration
        .with_label_values(&[kind])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&[kind]).inc();
    let key = object_key(kind, &*object);
    let api: kube::Api<K> = kube::Api::namespaced(
        ctx.client.clone(),
        &object.meta().namespace.clone().unwrap_or_default(),
    );
    let result = finalizer(&api, finalizer_name, object, |event| async {
        match event {
            Event::Apply(object) => apply(object).await,
            Event::Cleanup(object) => cleanup(object).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// The error policy of every controller: a wait retries in 2 s; a failure is counted by
/// reason and retried with per-object exponential backoff and jitter.
pub fn backoff_on_error<K: kube::Resource>(
    kind: &'static str,
    object: &K,
    error: &Error,
    ctx: &context::Ctx,
) -> kube::runtime::controller::Action {
    let key = object_key(kind, object);
    if error.is_waiting() {
        tracing::info!(object = %key, %error, "waiting");
        return kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2));
    }
    ctx.metrics
        .failures
        .with_label_values(&[kind, error.reason()])
        .inc();
    let delay = ctx.failed(&key);
    tracing::warn!(object = %key, reason = error.reason(), %error, retry_in_s = delay.as_secs(), "reconcile failed");
    kube::runtime::controller::Action::requeue(delay)
}
