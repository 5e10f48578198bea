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

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service as KubeService, ServiceAccount},
    networking::v1::Ingress,
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
    deployments: Deployment,
    kube_services: KubeService,
    service_accounts: ServiceAccount,
    pdbs: PodDisruptionBudget,
    roles: Role,
    role_bindings: RoleBinding,
    ingresses: Ingress,
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

/// Drops what no reconcile reads and most of an object's size: `managedFields` and kubectl's
/// last-applied annotation.
pub fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    use super::*;

    #[test]
    fn cached_objects_lose_managed_fields_and_the_last_applied_copy() {
        let (caches, mut writers) = Caches::new();
        assert!(!caches.synced());
        writers.put(ServiceAccount {
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
            ..ServiceAccount::default()
        });
        writers.synced();
        assert!(caches.synced());
        let cached = caches.get::<ServiceAccount>("ns", "a").unwrap();
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
        assert!(caches.get::<ServiceAccount>("other", "a").is_none());
    }
}
