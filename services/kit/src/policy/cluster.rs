//! In a cluster: the RateLimitPolicy and CircuitPolicy resources of the process's namespace
//! (kube reflectors) feed [`Policies`]; each applied generation is written back into the
//! policy's `status.applied` under this replica's name (server-side apply, one field manager
//! per replica — `tienda-<component>-<replica>` — so replicas never overwrite each other's
//! entry), which is how a user sees a policy take effect.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::{Value, json};
use tienda_crds::{CircuitPolicy, RateLimitPolicy};
use tokio::sync::Notify;

use super::{Applied, Policies};
use crate::shutdown::Shutdown;

/// Where the cluster source looks.
#[derive(Clone)]
pub struct Source {
    /// The API client.
    pub client: Client,
    /// The namespace of the shop's policies.
    pub namespace: String,
    /// This replica's name in `status.applied` (the pod's name).
    pub replica: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("namespace", &self.namespace)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// The in-cluster (or KUBECONFIG) client for `namespace`.
    pub async fn connect(namespace: &str, replica: &str) -> anyhow::Result<Self> {
        let client = Client::try_default().await.context(
            "TIENDA_POLICY_SOURCE=kubernetes needs the Kubernetes API (in-cluster service \
             account or KUBECONFIG); outside a cluster use TIENDA_POLICY_SOURCE=file",
        )?;
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
            replica: replica.to_owned(),
        })
    }
}

/// Watches the policies and applies them until `shutdown`, reporting each applied generation.
pub async fn run(source: Source, policies: Arc<Policies>, shutdown: Shutdown) {
    let Source {
        client,
        namespace: ns,
        replica,
    } = source;
    let changed = Arc::new(Notify::new());
    let (limits, limits_writer) = reflector::store::<RateLimitPolicy>();
    let (circuits, circuits_writer) = reflector::store::<CircuitPolicy>();
    let mut streams = vec![cached(
        circuits_writer,
        Api::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )];
    if policies.scope().rate_limits {
        streams.push(cached(
            limits_writer,
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ));
    }
    let watches = notify_on_change(streams, changed.clone(), shutdown.clone());
    let manager = format!("tienda-{}-{replica}", policies.scope().component);
    let apply = async {
        let mut reported: BTreeMap<(String, String), i64> = BTreeMap::new();
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = shutdown.wait() => return,
            }
            // Let a burst of events settle into one reload.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut docs: Vec<Value> = Vec::new();
            docs.extend(limits.state().iter().filter_map(|p| document(&**p)));
            docs.extend(circuits.state().iter().filter_map(|p| document(&**p)));
            policies.apply(&docs);
            report(
                &client,
                &ns,
                &manager,
                &replica,
                &policies.current().applied,
                &mut reported,
            )
            .await;
        }
    };
    tokio::join!(watches, apply);
}

/// Drives `streams` until `shutdown`, waking `changed` on every change.
pub async fn notify_on_change(
    streams: Vec<futures::stream::BoxStream<'static, Result<(), String>>>,
    changed: Arc<Notify>,
    shutdown: Shutdown,
) {
    futures::future::join_all(streams.into_iter().map(|mut stream| {
        let changed = changed.clone();
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    next = stream.next() => match next {
                        Some(Ok(())) => changed.notify_one(),
                        Some(Err(error)) => tracing::warn!(%error, "watch failed; retrying with backoff"),
                        None => return,
                    },
                    () = shutdown.wait() => return,
                }
            }
        }
    }))
    .await;
}

/// A watch of `api` kept in `writer`'s store: one `()` per change, errors as text (the
/// watcher backs off and goes on by itself).
pub fn cached<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
) -> futures::stream::BoxStream<'static, Result<(), String>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector(writer, watcher(api, config))
        .default_backoff()
        .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
        .boxed()
}

/// A resource as the policy loader reads it (`kind` and `apiVersion` set).
fn document<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    // Status is the operator's; the schema check reads the spec.
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    Some(value)
}

/// The status patch saying `replica` enforces `generation`.
pub fn applied_patch(kind: &str, name: &str, replica: &str, generation: i64) -> Value {
    json!({
        "apiVersion": format!("{}/{}", tienda_crds::GROUP, tienda_crds::VERSION),
        "kind": kind,
        "metadata": {"name": name},
        "status": {"applied": [{"replica": replica, "generation": generation}]},
    })
}

/// Writes each newly applied generation into its policy's status.
async fn report(
    client: &Client,
    ns: &str,
    manager: &str,
    replica: &str,
    applied: &[Applied],
    reported: &mut BTreeMap<(String, String), i64>,
) {
    // A policy deleted and created again starts over at generation 1: forget what was
    // reported for policies no longer applied, or its first generation would never be.
    reported.retain(|(kind, name), _| applied.iter().any(|a| a.kind == kind && a.name == *name));
    let params = PatchParams::apply(manager).force();
    for a in applied {
        let key = (a.kind.to_owned(), a.name.clone());
        if reported.get(&key) == Some(&a.generation) {
            continue;
        }
        let patch = Patch::Apply(applied_patch(a.kind, &a.name, replica, a.generation));
        let result = match a.kind {
            "RateLimitPolicy" => Api::<RateLimitPolicy>::namespaced(client.clone(), ns)
                .patch_status(&a.name, &params, &patch)
                .await
                .map(|_| ()),
            _ => Api::<CircuitPolicy>::namespaced(client.clone(), ns)
                .patch_status(&a.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                reported.insert(key, a.generation);
            }
            Err(error) => {
                tracing::warn!(kind = a.kind, name = %a.name, %error, "could not report the applied generation; will retry on the next change");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_patch_names_only_this_replicas_entry() {
        let patch = applied_patch("RateLimitPolicy", "browse", "gw-0", 3);
        assert_eq!(
            patch["status"],
            json!({"applied": [{"replica": "gw-0", "generation": 3}]})
        );
        assert_eq!(patch["apiVersion"], "tienda.dev/v1alpha1");
    }
}
