//! In a cluster: the shop's RateLimitPolicy and CircuitPolicy resources, through the kit's
//! cluster source ([`tienda_kit::policy::cluster`]: applied live, each generation reported in
//! `status.applied` under field manager `tienda-gateway-<pod>`), and the EndpointSlices of the
//! shop's Services, which feed the upstream table — the gateway's own slice gives the replica
//! count that rate limits are divided by.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    runtime::{reflector, watcher},
};
use tienda_kit::policy::{
    Policies, SERVICES,
    cluster::{self as policy_source, cached, notify_on_change},
};
use tokio::sync::Notify;

use crate::{config::Config, upstream::Upstreams};

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
    let source =
        policy_source::Source::connect(&config.policy.namespace, &config.policy.replica).await?;
    let sources = Sources {
        client: source.client,
        namespace: config.policy.namespace.clone(),
        shop: config.policy.shop.clone(),
        replica: config.policy.replica.clone(),
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
        namespace,
        shop,
        replica,
    } = sources;
    let changed = Arc::new(Notify::new());
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
    let watch = notify_on_change(
        vec![cached(
            slices_writer,
            Api::namespaced(client.clone(), &namespace),
            watcher::Config::default().labels(&selector),
        )],
        changed.clone(),
        shutdown.clone(),
    );
    let apply = async {
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
        }
    };
    let source = policy_source::Source {
        client: client.clone(),
        namespace: namespace.clone(),
        replica,
    };
    tokio::join!(
        watch,
        apply,
        policy_source::run(source, policies.clone(), shutdown.clone())
    );
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
