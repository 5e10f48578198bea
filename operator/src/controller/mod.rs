//! The controllers: Shop → Service resources; Service → workload, database, streams.
//!
//! Shaped like kube-rs/controller-rs: `reconcile` records metrics and hands off to kube's
//! `finalizer()` helper (deletion is checked first, always); the work lives in per-kind
//! modules; desired objects come from the pure functions in [`crate::shop`] and
//! [`crate::workload`].

pub mod cache;
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

/// Applies `desired` by server-side apply (one field manager, forced) unless the cached
/// object carries the same applied hash *and* still holds every field `desired` sets. The hash
/// alone would miss drift: `kubectl edit` of the image or the replicas keeps our annotation.
/// Fields the API server adds (defaults, status, other managers' fields) do not count as
/// drift; a server that normalises a value we set (`0.5` CPU to `500m`) only costs a no-op
/// apply. Returns the object as stored. Reads nothing from the API server: a converged child
/// costs no request.
pub async fn apply_child<K>(ctx: &context::Context, api: &kube::Api<K>, desired: K) -> Result<K>
where
    K: cache::Cached + serde::Serialize + serde::de::DeserializeOwned,
{
    let cached = ctx.caches.get::<K>(
        desired.meta().namespace.as_deref().unwrap_or_default(),
        desired.meta().name.as_deref().expect("children are named"),
    );
    apply_unless_held(api, cached.as_deref().cloned(), desired).await
}

/// [`apply_child`] for a kind the operator does not watch (a Gateway API HTTPRoute, whose CRD
/// a cluster may lack): the stored object is read first.
pub async fn apply_uncached<K>(api: &kube::Api<K>, desired: K) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().expect("children are named");
    let existing = api.get_opt(&name).await?;
    apply_unless_held(api, existing, desired).await
}

async fn apply_unless_held<K>(api: &kube::Api<K>, existing: Option<K>, mut desired: K) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    let name = desired.meta().name.clone().expect("children are named");
    let hash =
        crate::workload::config_hash(&[&serde_json::to_vec(&desired).expect("objects serialize")]);
    if let Some(existing) = existing
        && existing.annotations().get(APPLIED_HASH) == Some(&hash)
        && holds(
            &serde_json::to_value(&existing).expect("objects serialize"),
            &serde_json::to_value(&desired).expect("objects serialize"),
        )
    {
        return Ok(existing);
    }
    desired.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&name, &params, &kube::api::Patch::Apply(&desired))
        .await?)
}

/// Writes `status` into the status subresource by server-side apply under the operator's
/// field manager: only the fields in `status` are the operator's, so a field it set before and
/// leaves out now is removed, and fields other managers own (each gateway replica's entry of a
/// policy's `status.applied`) are neither overwritten nor brought back from a stale copy, as a
/// merge patch of the whole status would.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: serde_json::Value,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Whether `stored` holds every field `wanted` sets, with the same value: objects key by key
/// (extra keys in `stored` allowed), lists element by element (same length: an element added
/// or removed by hand is drift), scalars equal. A `null` in `wanted` is an unset field.
fn holds(stored: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (stored, wanted) {
        (_, Value::Null) => true,
        (Value::Object(stored), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, want)| holds(stored.get(key).unwrap_or(&Value::Null), want)),
        (Value::Array(stored), Value::Array(wanted)) => {
            stored.len() == wanted.len() && stored.iter().zip(wanted).all(|(s, w)| holds(s, w))
        }
        (stored, wanted) => stored == wanted,
    }
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
    let _timer = ctx.metrics.start(kind);
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

/// Runs a reconcile for an object that has nothing outside the cluster to clean up, so needs
/// no finalizer: a finalizer of ours left from before (the reclaim policy changed to `Retain`,
/// or an older operator) is removed first, guarded by the object's `resourceVersion`, after
/// `on_release` (an event saying what is kept) when the object is being deleted. A finalizer
/// nobody needs would hold the object, and its namespace, until a cleanup that has nothing
/// to do could reach PostgreSQL.
pub async fn without_finalizer<K, Apply, Release, ApplyFut, ReleaseFut>(
    kind: &'static str,
    finalizer_name: &str,
    object: std::sync::Arc<K>,
    ctx: &context::Ctx,
    apply: Apply,
    on_release: Release,
) -> Result<kube::runtime::controller::Action>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    Apply: FnOnce(std::sync::Arc<K>) -> ApplyFut,
    Release: FnOnce(std::sync::Arc<K>) -> ReleaseFut,
    ApplyFut: Future<Output = Result<kube::runtime::controller::Action>>,
    ReleaseFut: Future<Output = ()>,
{
    use kube::ResourceExt;
    let _timer = ctx.metrics.start(kind);
    let key = object_key(kind, &*object);
    let deleting = object.meta().deletion_timestamp.is_some();
    if object.finalizers().iter().any(|f| f == finalizer_name) {
        if deleting {
            on_release(object.clone()).await;
        }
        let kept: Vec<&String> = object
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer_name)
            .collect();
        let api: kube::Api<K> =
            kube::Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        let patch = serde_json::json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": object.resource_version(),
        }});
        api.patch(
            &object.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    }
    if deleting {
        ctx.succeeded(&key);
        return Ok(kube::runtime::controller::Action::await_change());
    }
    let result = apply(object).await;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::holds;

    #[test]
    fn what_the_server_adds_is_not_drift_and_what_a_hand_changes_is() {
        let wanted = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "auth", "image": "tienda-auth:0.1.0", "ports": [{"containerPort": 8080}]}]}}}});
        let defaulted = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [{"name": "auth", "image": "tienda-auth:0.1.0",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}},
            "status": {"readyReplicas": 1}});
        assert!(holds(&defaulted, &wanted));

        let mut edited = defaulted.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
        assert!(!holds(&edited, &wanted), "a changed image");
        let mut scaled = defaulted.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert!(!holds(&scaled, &wanted), "a changed replica count");
        let mut sidecar = defaulted.clone();
        sidecar["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "miner", "image": "x"}));
        assert!(!holds(&sidecar, &wanted), "a container added by hand");
        let mut removed = defaulted;
        removed["spec"].as_object_mut().unwrap().remove("template");
        assert!(!holds(&removed, &wanted), "a field removed");
    }
}
