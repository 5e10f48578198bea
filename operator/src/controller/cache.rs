//! The operator's view of the cluster: reflector caches of Shops, Services, policies, the
//! credentials Secrets and every kind of child, fed by the controllers' own watches with
//! `managedFields` and kubectl's last-applied annotation stripped (they are most of an
//! object's size and no reconcile reads them).
//!
//! Reconciles read here, never from the API server: a resync of a converged Shop compares
//! the cached children with what it wants and sends nothing, and a hand edit comes back as a
//! watch event that triggers the owner's reconcile. What is written is still written by
//! server-side apply; the cache only decides whether to write. A cache trails the API server
//! by a watch event: a child just applied may be missing or old here, which costs at most
//! one apply that changes nothing (or, for the credentials Secret, a create answered 409 and
//! one read).
//!
//! Children are cached [`Slim`]: what reconciles read of them (name, owner, generation, the
//! status) and a hash of the rest. A Deployment is about 3 KB of
//! JSON and 24 KB as a k8s-openapi struct; slim, about 1 KB. Drift is then a changed content
//! hash: see [`super::apply_child`].

use std::{marker::PhantomData, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, de::DeserializeOwned};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service as KubeService, ServiceAccount},
    networking::v1::{Ingress, NetworkPolicy},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Resource,
    runtime::{
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use tienda_crds::{CircuitPolicy, RateLimitPolicy, Service, Shop};

use super::error::{Error, Result};

macro_rules! caches {
    ($($field:ident: $kind:ty),* $(,)?) => {
        /// The read side: one store per kind.
        #[derive(Clone)]
        pub struct Caches {
            $(#[doc = concat!("`", stringify!($kind), "` objects.")] pub $field: Store<$kind>,)*
        }

        /// The write side, handed to the watches that fill the stores (or, in tests, filled
        /// by hand).
        pub struct Writers {
            $(#[doc = concat!("Fills `Caches::", stringify!($field), "`.")] pub $field: Writer<$kind>,)*
        }

        impl Caches {
            /// Empty stores, not yet synced, and their writers.
            pub fn new() -> (Caches, Writers) {
                $(let $field = reflector::store::<$kind>();)*
                (
                    Caches { $($field: $field.0,)* },
                    Writers { $($field: $field.1,)* },
                )
            }

            /// Whether every store has received its first full list.
            pub fn synced(&self) -> bool {
                use futures::FutureExt;
                true $(&& self.$field.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok()))*
            }

            /// How many objects the stores hold.
            pub fn len(&self) -> usize {
                0 $(+ self.$field.len())*
            }

            /// Whether the stores are empty.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl Writers {
            /// Marks every store synced with what it holds (a test's cluster, filled with
            /// [`Writers::put`] before or after).
            pub fn synced(&mut self) {
                $(
                    let held: Vec<$kind> =
                        self.$field.as_reader().state().iter().map(|o| (**o).clone()).collect();
                    self.$field.apply_watcher_event(&watcher::Event::Init);
                    for object in held {
                        self.$field.apply_watcher_event(&watcher::Event::InitApply(object));
                    }
                    self.$field.apply_watcher_event(&watcher::Event::InitDone);
                )*
            }
        }

        $(
            impl Cached for $kind {
                fn store(caches: &Caches) -> &Store<Self> {
                    &caches.$field
                }
                fn writer(writers: &mut Writers) -> &mut Writer<Self> {
                    &mut writers.$field
                }
            }
        )*
    };
}

caches! {
    shops: Shop,
    services: Service,
    rate_limits: RateLimitPolicy,
    circuits: CircuitPolicy,
    secrets: Secret,
    deployments: Slim<Deployment>,
    kube_services: Slim<KubeService>,
    service_accounts: Slim<ServiceAccount>,
    pdbs: Slim<PodDisruptionBudget>,
    roles: Slim<Role>,
    role_bindings: Slim<RoleBinding>,
    network_policies: Slim<NetworkPolicy>,
    ingresses: Slim<Ingress>,
}

/// A child of kind `K` as the caches hold it.
#[derive(Clone, Debug)]
pub struct Slim<K> {
    /// Name, namespace, uid, resource version, generation, owners and deletion time; nothing
    /// else (no labels or annotations: a map costs a 0.5 KiB node even with one entry).
    pub metadata: ObjectMeta,
    /// A hash of everything but the metadata the server keeps (resource version, uid,
    /// generation, times, managed fields) and the status: what drift changes.
    pub content: u64,
    /// The status as compact JSON.
    status: Option<Box<str>>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()>> Resource for Slim<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The content hash of a stored object: see [`Slim::content`].
pub fn content_hash<K: Serialize>(object: &K) -> u64 {
    let mut value = serde_json::to_value(object).expect("objects serialize");
    content_of(&mut value)
}

/// Trims `value` to its content (removing the status and the server's metadata) and hashes it.
fn content_of(value: &mut serde_json::Value) -> u64 {
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "name"
                        | "namespace"
                        | "labels"
                        | "annotations"
                        | "ownerReferences"
                        | "finalizers"
                )
            });
            if let Some(annotations) = meta
                .get_mut("annotations")
                .and_then(serde_json::Value::as_object_mut)
            {
                annotations.remove(LAST_APPLIED);
                annotations.remove(super::APPLIED_HASH);
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    // serde_json's maps are ordered: the bytes, and so the hash, are stable.
    tienda_provision::stable_hash::fnv1a(serde_json::to_vec(value).expect("json"))
}

impl<K: Resource<DynamicType = ()> + Serialize> Slim<K> {
    /// The slim form of a stored object.
    pub fn of(object: &K) -> Self {
        let meta = object.meta();
        let metadata = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
            owner_references: meta.owner_references.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            ..ObjectMeta::default()
        };
        let mut value = serde_json::to_value(object).expect("objects serialize");
        let status = value
            .get("status")
            .filter(|s| !s.is_null())
            .map(|s| s.to_string().into_boxed_str());
        Self {
            metadata,
            content: content_of(&mut value),
            status,
            kind: PhantomData,
        }
    }
}

impl<K> Slim<K> {
    /// The status, read as `S`.
    pub fn status<S: DeserializeOwned>(&self) -> Option<S> {
        self.status
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }
}

/// A watch event of `K` as an event of its slim form.
pub fn slim_event<K: Resource<DynamicType = ()> + Serialize>(
    event: watcher::Event<K>,
) -> watcher::Event<Slim<K>> {
    use watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(Slim::of(&o)),
        Event::Delete(o) => Event::Delete(Slim::of(&o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(Slim::of(&o)),
        Event::InitDone => Event::InitDone,
    }
}

/// A kind the operator caches.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Its store.
    fn store(caches: &Caches) -> &Store<Self>;
    /// Its writer.
    fn writer(writers: &mut Writers) -> &mut Writer<Self>;
}

impl Caches {
    /// The cached `namespace/name` of kind `K`.
    pub fn get<K: Cached>(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        K::store(self).get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached objects of kind `K` in `namespace` carrying `label=value`.
    pub fn labelled<K: Cached>(&self, namespace: &str, label: &str, value: &str) -> Vec<Arc<K>> {
        K::store(self).state_filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && o.meta()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label))
                    .map(String::as_str)
                    == Some(value)
        })
    }

    /// The cached objects of kind `K` in `namespace`.
    pub fn in_namespace<K: Cached>(&self, namespace: &str) -> Vec<Arc<K>> {
        K::store(self).state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    /// Fails with a short wait until every store has its first full list: a reconcile that
    /// read an unsynced cache would take a missing Shop for a deleted one.
    pub fn ensure_synced(&self) -> Result<()> {
        if self.synced() {
            Ok(())
        } else {
            Err(Error::Waiting("the watch caches are not synced yet".into()))
        }
    }
}

impl Writers {
    /// Puts `object` into its store, as a watch event would.
    pub fn put<K: Cached>(&mut self, object: K) {
        let mut object = object;
        strip(&mut object);
        K::writer(self).apply_watcher_event(&watcher::Event::Apply(object));
    }
}

/// kubectl's client-side apply keeps the whole object again in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// [`strip`] for the credentials Secrets, which are read by name for their data: their labels
/// and annotations go too.
pub fn strip_secret(secret: &mut Secret) {
    strip(secret);
    secret.metadata.labels = None;
    secret.metadata.annotations = None;
}

/// Drops what no reconcile reads and most of an object's size: `managedFields`, kubectl's
/// last-applied annotation and the operator's applied hash (an empty map goes too).
pub fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        // What an apply sent is remembered apart (`Context::applied`).
        annotations.remove(super::APPLIED_HASH);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    use super::*;

    #[test]
    fn a_slim_child_keeps_what_reconciles_read_and_its_content_hash_sees_drift_only() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "generation": 2, "resourceVersion": "7",
                         "annotations": {"tienda.dev/applied-hash": "h", "other": "x"},
                         "labels": {"app": "d"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": "v1"}]}}},
            "status": {"observedGeneration": 2, "availableReplicas": 1}
        }))
        .unwrap();
        let slim = Slim::of(&deployment);
        assert_eq!(slim.metadata.generation, Some(2));
        assert!(slim.metadata.annotations.is_none() && slim.metadata.labels.is_none());
        let status: k8s_openapi::api::apps::v1::DeploymentStatus = slim.status().unwrap();
        assert_eq!(status.available_replicas, Some(1));

        // The server's bookkeeping and the status are not content.
        deployment.metadata.resource_version = Some("8".into());
        deployment.metadata.generation = Some(3);
        deployment.status.as_mut().unwrap().ready_replicas = Some(1);
        assert_eq!(Slim::of(&deployment).content, slim.content);
        // A hand edit is.
        deployment.spec.template.spec.as_mut().unwrap().containers[0].image = Some("evil".into());
        assert_ne!(Slim::of(&deployment).content, slim.content);
    }

    #[test]
    fn cached_objects_lose_managed_fields_and_the_last_applied_copy() {
        let (caches, mut writers) = Caches::new();
        assert!(!caches.synced());
        writers.put(Secret {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..ManagedFieldsEntry::default()
                }]),
                annotations: Some(
                    [
                        (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                        ("kept".to_owned(), "yes".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        });
        writers.synced();
        assert!(caches.synced());
        let cached = caches.get::<Secret>("ns", "a").unwrap();
        assert_eq!(cached.metadata.managed_fields, None);
        assert_eq!(
            cached
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["kept"]
        );
        assert!(caches.get::<Secret>("other", "a").is_none());
    }
}
