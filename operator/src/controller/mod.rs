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

/// How a kind is cached: [`cache::Slim`] for children, in full for the Service resources the
/// Shop controller reads back.
pub trait Form<K>: cache::Cached {
    /// The cached form of a stored object (an apply's answer).
    fn of(stored: K) -> Self;
    /// Its content hash ([`cache::Slim::content`]).
    fn content(&self) -> u64;
}

impl<K> Form<K> for cache::Slim<K>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
    cache::Slim<K>: cache::Cached,
{
    fn of(stored: K) -> Self {
        cache::Slim::of(&stored)
    }
    fn content(&self) -> u64 {
        self.content
    }
}

impl Form<tienda_crds::Service> for tienda_crds::Service {
    fn of(mut stored: Self) -> Self {
        cache::strip(&mut stored);
        stored
    }
    fn content(&self) -> u64 {
        cache::content_hash(self)
    }
}

/// Applies `desired` by server-side apply (one field manager, forced) unless the cached
/// object carries the same applied hash (so `desired` did not change) *and* its content is
/// what this operator's last apply of it left (so nobody changed it since). The hash alone
/// would miss drift: `kubectl edit` of the image or the replicas keeps our annotation; the
/// content hash sees it, and the edit's watch event has already brought the owner here. What
/// the API server adds (defaults, status) is in what the apply answers, so it is no drift;
/// a field another manager adds costs one apply that changes nothing. After a restart the
/// operator has applied nothing yet, so each child is applied once: an unchanged apply writes
/// nothing. Reads nothing from the API server. Returns the child as cached.
pub async fn apply_child<K>(
    ctx: &context::Context,
    api: &kube::Api<K>,
    desired: K,
) -> Result<cache::Slim<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    cache::Slim<K>: cache::Cached,
{
    apply_form(ctx, api, desired).await
}

/// [`apply_child`] for a kind cached in full; returns the stored object.
pub async fn apply_full<K>(ctx: &context::Context, api: &kube::Api<K>, desired: K) -> Result<K>
where
    K: Form<K> + serde::Serialize + serde::de::DeserializeOwned,
{
    apply_form(ctx, api, desired).await
}

async fn apply_form<K, C>(ctx: &context::Context, api: &kube::Api<K>, desired: K) -> Result<C>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    C: Form<K>,
{
    let namespace = desired.meta().namespace.clone().unwrap_or_default();
    let name = desired.meta().name.clone().expect("children are named");
    let hash =
        crate::workload::config_hash(&[&serde_json::to_vec(&desired).expect("objects serialize")]);
    let key = child_key::<K>(&namespace, &name);
    let sent = tienda_provision::stable_hash::fnv1a(hash.bytes());
    if let Some(cached) = ctx.caches.get::<C>(&namespace, &name)
        && ctx.applied(&key) == Some((sent, cached.content()))
    {
        return Ok((*cached).clone());
    }
    let form = C::of(apply_now(api, desired, hash).await?);
    ctx.remember_applied(&key, sent, form.content());
    Ok(form)
}

/// How the operator's record of what it applied names a child: `apiVersion/Kind/ns/name` —
/// the API version too, as a Kubernetes Service and a Tienda Service share kind and name.
pub fn child_key<K: kube::Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!(
        "{}/{}/{namespace}/{name}",
        K::api_version(&()),
        K::kind(&())
    )
}

/// Applies `desired`, marked with its applied `hash`; returns what the server stored.
async fn apply_now<K>(api: &kube::Api<K>, mut desired: K, hash: String) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    let name = desired.meta().name.clone().expect("children are named");
    desired.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&name, &params, &kube::api::Patch::Apply(&desired))
        .await?)
}

/// [`apply_child`] for a kind the operator does not watch (a Gateway API HTTPRoute, whose CRD
/// a cluster may lack): the stored object is read first.
pub async fn apply_uncached<K>(ctx: &context::Context, api: &kube::Api<K>, desired: K) -> Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().expect("children are named");
    let key = format!(
        "{}/{}/{name}",
        std::any::type_name::<K>(),
        desired.meta().namespace.clone().unwrap_or_default()
    );
    let hash =
        crate::workload::config_hash(&[&serde_json::to_vec(&desired).expect("objects serialize")]);
    let sent = tienda_provision::stable_hash::fnv1a(hash.bytes());
    if let Some(existing) = api.get_opt(&name).await?
        && ctx.applied(&key) == Some((sent, cache::content_hash(&existing)))
    {
        return Ok(existing);
    }
    let stored = apply_now(api, desired, hash).await?;
    ctx.remember_applied(&key, sent, cache::content_hash(&stored));
    Ok(stored)
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

/// The key per-object backoff is tracked under: `Kind/namespace/name`.
fn object_key<K: kube::Resource>(kind: &str, object: &K) -> String {
    use kube::ResourceExt;
    format!(
        "{kind}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Runs `reconcile` for `object` in a span of its own (a trace per reconcile, exported when
/// OpenTelemetry's variables ask for it): the object, its generation and the outcome.
pub async fn traced<K, F>(
    kind: &'static str,
    object: std::sync::Arc<K>,
    ctx: std::sync::Arc<context::Context>,
    reconcile: impl FnOnce(std::sync::Arc<K>, std::sync::Arc<context::Context>) -> F,
) -> Result<kube::runtime::controller::Action>
where
    K: kube::Resource<DynamicType = ()>,
    F: Future<Output = Result<kube::runtime::controller::Action>>,
{
    use tienda_kit::trace_context::{Kind, Span};
    let mut span = Span::start(format!("reconcile {kind}"), Kind::Internal, None);
    if span.is_recording() {
        let meta = object.meta();
        span.set(
            "k8s.namespace.name",
            meta.namespace.clone().unwrap_or_default(),
        );
        span.set("tienda.object.kind", kind);
        span.set("tienda.object.name", meta.name.clone().unwrap_or_default());
        span.set(
            "tienda.object.generation",
            meta.generation.unwrap_or_default(),
        );
    }
    let context = span.context();
    let result = context.scope(reconcile(object, ctx)).await;
    match &result {
        Ok(action) => span.set("tienda.reconcile.next", format!("{action:?}")),
        Err(error) => {
            span.set("tienda.reconcile.error", error.reason());
            span.fail(error.to_string());
        }
    }
    result
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
