//! The Shop's desired children: one `Service` resource per listed component (pure).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use tienda_crds::{
    Component, Service, ServiceSpec, Shop, service::DatabaseSpec, shop::ShopComponent,
};

use tienda_provision::{database::database_name, topology};

/// Label keys every child carries.
pub mod labels {
    /// `tienda-<component>`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The Shop's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The component.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `tienda`.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// `tienda-operator`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The Shop's name, for selecting a shop's Services.
    pub const SHOP: &str = "tienda.dev/shop";
}

/// The labels of a component's objects.
pub fn component_labels(shop: &str, component: Component) -> BTreeMap<String, String> {
    [
        (labels::NAME, format!("tienda-{component}")),
        (labels::INSTANCE, shop.to_owned()),
        (labels::COMPONENT, component.to_string()),
        (labels::PART_OF, "tienda".to_owned()),
        (labels::MANAGED_BY, "tienda-operator".to_owned()),
        (labels::SHOP, shop.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The name of a component's Service resource: `<shop>-<component>`.
pub fn service_name(shop: &str, component: Component) -> String {
    format!("{shop}-{component}")
}

/// The image of a component: its override, or `<registry>/tienda-<component>:<version>`.
pub fn image(shop: &Shop, component: &ShopComponent) -> String {
    component.image.clone().unwrap_or_else(|| {
        format!(
            "{}/tienda-{}:{}",
            shop.spec.registry.trim_end_matches('/'),
            component.name,
            shop.spec.version
        )
    })
}

/// The Service resources a Shop wants, owned by the Shop (so they go when it goes).
pub fn desired_services(shop: &Shop) -> Vec<Service> {
    let shop_name = shop.name_any();
    let namespace = shop.namespace().unwrap_or_else(|| "default".into());
    let owner = shop
        .controller_owner_ref(&())
        .expect("a stored Shop has a name and uid");
    shop.spec
        .components
        .iter()
        .map(|c| {
            let database = c.name.has_database().then(|| DatabaseSpec {
                name: database_name(&namespace, &shop_name, c.name),
                reclaim_policy: shop.spec.reclaim_policy,
                extensions: topology::extensions(c.name),
                connection_limit: None,
            });
            Service {
                metadata: ObjectMeta {
                    name: Some(service_name(&shop_name, c.name)),
                    namespace: Some(namespace.clone()),
                    labels: Some(component_labels(&shop_name, c.name)),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                spec: ServiceSpec {
                    shop: shop_name.clone(),
                    component: c.name,
                    image: image(shop, c),
                    image_pull_policy: shop.spec.image_pull_policy,
                    replicas: c.replicas,
                    resources: c.resources.clone(),
                    env: c.env.clone(),
                    port: 8080,
                    database,
                    streams: topology::streams(c.name),
                    consumers: topology::consumers(c.name),
                },
                status: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(yaml: serde_json::Value) -> Shop {
        let mut shop: Shop = serde_json::from_value(yaml).unwrap();
        shop.metadata.uid = Some("5f0c-uid".into());
        shop
    }

    fn minimal() -> Shop {
        shop(serde_json::json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "demo", "namespace": "shops"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://nats:4222"}}
        }))
    }

    #[test]
    fn a_minimal_shop_wants_all_six_services_owned_by_it() {
        let services = desired_services(&minimal());
        let names: Vec<_> = services.iter().map(|s| s.name_any()).collect();
        assert_eq!(
            names,
            [
                "demo-auth",
                "demo-products",
                "demo-orders",
                "demo-payments",
                "demo-notifications",
                "demo-gateway"
            ]
        );
        for service in &services {
            let owner = &service.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("Shop", "demo", Some(true))
            );
            assert_eq!(service.namespace().as_deref(), Some("shops"));
            assert_eq!(service.labels()[labels::SHOP], "demo");
        }
    }

    #[test]
    fn components_get_their_image_database_and_topology() {
        let services = desired_services(&minimal());
        let products = services
            .iter()
            .find(|s| s.spec.component == Component::Products)
            .unwrap();
        assert_eq!(
            products.spec.image,
            "ghcr.io/tienda-dev/tienda-products:0.1.0"
        );
        let db = products.spec.database.as_ref().unwrap();
        assert_eq!(db.name, "shops_demo_products");
        assert_eq!(db.extensions, ["pg_trgm"]);
        assert_eq!(products.spec.streams.len(), 2);
        let gateway = services
            .iter()
            .find(|s| s.spec.component == Component::Gateway)
            .unwrap();
        assert!(gateway.spec.database.is_none() && gateway.spec.streams.is_empty());
    }

    #[test]
    fn overrides_and_replicas_are_carried_over() {
        let shop = shop(serde_json::json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "acme", "namespace": "prod"},
            "spec": {"version": "1.2.0", "registry": "registry.example/tienda/",
                     "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://nats:4222"}, "reclaimPolicy": "Delete",
                     "components": [{"name": "orders", "replicas": 3},
                                    {"name": "payments", "image": "mirror.example/payments@sha256:abc"}]}
        }));
        let services = desired_services(&shop);
        assert_eq!(services.len(), 2);
        assert_eq!(
            services[0].spec.image,
            "registry.example/tienda/tienda-orders:1.2.0"
        );
        assert_eq!(services[0].spec.replicas, 3);
        assert_eq!(services[1].spec.image, "mirror.example/payments@sha256:abc");
        assert_eq!(
            services[0].spec.database.as_ref().unwrap().reclaim_policy,
            tienda_crds::service::ReclaimPolicy::Delete
        );
    }
}
