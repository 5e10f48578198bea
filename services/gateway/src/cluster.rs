//! In a cluster: RateLimitPolicy and CircuitPolicy resources of the gateway's namespace
//! (kube reflectors) feed [`Policies`]; each applied generation is written back into the
//! policy's `status.applied` under this replica's name (server-side apply, one field manager
//! per replica, so replicas never overwrite each other's entry); the EndpointSlices of the
//! shop's Services feed the upstream table, and the gateway's own slice gives the replica
//! count that rate limits are divided by.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::{Value, json};
use tienda_crds::{CircuitPolicy, RateLimitPolicy};
use tokio::sync::Notify;

use crate::{
    config::Config,
    policy::{Applied, Policies},
    upstream::{SERVICES, Upstreams},
};

/// The label EndpointSlices carry with their Service's name.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Where the cluster sources look.
#[derive(Clone)]
pub struct Sources {
    /// The API client.
    pub client: Client,
    /// The namespace of the shop (policies, EndpointSlices).
    pub namespace: String,
    /// The shop's name (`<shop>-<component>` Services).
    pub shop: String,
    /// This replica's name in `status.applied`.
    pub replica: String,
}

/// Starts the cluster sources as a background task of `platform`.
pub async fn start(
    config: &Config,
    platform: &tienda_kit::Platform,
    policies: Arc<Policies>,
    upstreams: Arc<Upstreams>,
) -> anyhow::Result<()> {
    let client = Client::try_default().await.context(
        "TIENDA_POLICY_SOURCE=kubernetes needs the Kubernetes API (in-cluster service account or \
         KUBECONFIG); outside a cluster use TIENDA_POLICY_SOURCE=file",
    )?;
    let sources = Sources {
        client,
        namespace: config.namespace.clone(),
        shop: config.shop.clone(),
        replica: config.replica.clone(),
    };
    platform.spawn(run(sources, policies, upstreams, platform.shutdown.clone()));
    Ok(())
}

/// Watches policies and EndpointSlices and applies them until `shutdown`.
pub async fn run(
    sources: Sources,
    policies: Arc<Policies>,
    upstreams: Arc<Upstreams>,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    let Sources {
        client,
        namespace: ns,
        shop,
        replica,
    } = sources;
    let changed = Arc::new(Notify::new());
    let (limits, limits_writer) = reflector::store::<RateLimitPolicy>();
    let (circuits, circuits_writer) = reflector::store::<CircuitPolicy>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let selector = format!(
        "{SERVICE_NAME} in ({})",
        SERVICES
            .iter()
            .chain(std::iter::once(&"gateway"))
            .map(|c| format!("{shop}-{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let streams = [
        cached(
            limits_writer,
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ),
        cached(
            circuits_writer,
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ),
        cached(
            slices_writer,
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default().labels(&selector),
        ),
    ];
    let watches = futures::future::join_all(streams.into_iter().map(|mut stream| {
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
    }));
    let apply = async {
        let mut reported: BTreeMap<(String, String), i64> = BTreeMap::new();
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = shutdown.wait() => return,
            }
            // Let a burst of events settle into one reload.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
            let (table, gateways) = endpoint_table(&shop, &slices);
            upstreams.replace(table);
            // No ready gateway listed yet (this one is starting): keep the configured count.
            if gateways > 0 {
                policies.set_replicas(gateways);
            }
            let mut docs: Vec<Value> = Vec::new();
            docs.extend(limits.state().iter().filter_map(|p| document(&**p)));
            docs.extend(circuits.state().iter().filter_map(|p| document(&**p)));
            policies.apply(&docs);
            report(
                &client,
                &ns,
                &replica,
                &policies.current().applied,
                &mut reported,
            )
            .await;
        }
    };
    tokio::join!(watches, apply);
}

/// A watch of `api` kept in `writer`'s store: one `()` per change, errors as text (the
/// watcher backs off and goes on by itself).
fn cached<K>(
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

/// The upstream table from EndpointSlices: for each component, `http://<address>:<port>` of
/// every ready endpoint (port named `http`, else the first); and the gateway's ready replicas.
pub fn endpoint_table(
    shop: &str,
    slices: &[EndpointSlice],
) -> (BTreeMap<String, Vec<String>>, u32) {
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut gateways = BTreeSet::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME))
        else {
            continue;
        };
        let Some(component) = service.strip_prefix(shop).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let port = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some("http"))
                .or_else(|| ports.first())
                .and_then(|p| p.port)
        });
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if component == "gateway" {
                    gateways.insert(address.clone());
                } else if let Some(port) = port
                    && SERVICES.contains(&component)
                {
                    let host = if address.contains(':') {
                        format!("[{address}]")
                    } else {
                        address.clone()
                    };
                    table
                        .entry(component.to_owned())
                        .or_default()
                        .insert(format!("http://{host}:{port}"));
                }
            }
        }
    }
    (
        table
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect(),
        u32::try_from(gateways.len()).unwrap_or(u32::MAX),
    )
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
    replica: &str,
    applied: &[Applied],
    reported: &mut BTreeMap<(String, String), i64>,
) {
    let params = PatchParams::apply(&format!("tienda-gateway-{replica}")).force();
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

    fn slice(service: &str, port: i32, endpoints: &[(&str, bool)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abc"), "labels": {SERVICE_NAME: service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port}],
            "endpoints": endpoints.iter().map(|(ip, ready)| json!({
                "addresses": [ip], "conditions": {"ready": ready}
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_of_the_shops_services_make_the_table_and_gateways_the_replica_count() {
        let slices = [
            slice(
                "acme-products",
                8080,
                &[("10.0.0.1", true), ("10.0.0.2", false)],
            ),
            slice("acme-auth", 8080, &[("10.0.0.3", true)]),
            slice(
                "acme-gateway",
                8080,
                &[("10.0.1.1", true), ("10.0.1.2", true)],
            ),
            slice("other-products", 8080, &[("10.9.9.9", true)]),
        ];
        let (table, gateways) = endpoint_table("acme", &slices);
        assert_eq!(table["products"], ["http://10.0.0.1:8080"]);
        assert_eq!(table["auth"], ["http://10.0.0.3:8080"]);
        assert_eq!(table.len(), 2);
        assert_eq!(gateways, 2);
    }

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
