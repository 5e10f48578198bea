//! How a Shop's gateway is reached from outside the cluster (`spec.gateway`), as objects owned
//! by the Shop (pure): an Ingress, or a Gateway API HTTPRoute, in front of the gateway's
//! Kubernetes Service (`<shop>-gateway`, port `http`). The Service's own type
//! (`spec.gateway.serviceType`) is set by [`crate::workload::kube_service`].

use k8s_openapi::{
    api::networking::v1::{
        HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
        IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::json;
use tienda_crds::{Component, Shop};

use crate::shop::{component_labels, service_name};

/// `Ingress`, as listed in `status.exposedBy`.
pub const INGRESS: &str = "Ingress";
/// `HTTPRoute`, as listed in `status.exposedBy`.
pub const HTTP_ROUTE: &str = "HTTPRoute";

/// The Gateway API's HTTPRoute (not in k8s-openapi: a CRD a cluster may lack).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", HTTP_ROUTE),
        "httproutes",
    )
}

/// The name of both objects: the gateway's Service name.
pub fn name(shop: &Shop) -> String {
    service_name(&shop.name_any(), Component::Gateway)
}

fn meta(shop: &Shop) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(shop)),
        namespace: shop.namespace(),
        labels: Some(component_labels(&shop.name_any(), Component::Gateway)),
        owner_references: Some(vec![
            shop.controller_owner_ref(&())
                .expect("a stored Shop has a name and uid"),
        ]),
        ..ObjectMeta::default()
    }
}

/// The Ingress the Shop asks for, if any: every path of `host` to the gateway.
pub fn ingress(shop: &Shop) -> Option<Ingress> {
    let wanted = shop.spec.gateway.as_ref()?.ingress.as_ref()?;
    let mut metadata = meta(shop);
    if !wanted.annotations.is_empty() {
        metadata.annotations = Some(wanted.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: wanted.class_name.clone(),
            tls: wanted.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![wanted.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(wanted.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name(shop),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    })
}

/// The HTTPRoute the Shop asks for, if any: every request to the gateway's Service, port 80.
pub fn http_route(shop: &Shop) -> Option<DynamicObject> {
    let wanted = shop.spec.gateway.as_ref()?.http_route.as_ref()?;
    let parents: Vec<_> = wanted
        .parent_refs
        .iter()
        .map(|p| {
            let mut parent = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                    "name": p.name});
            if let Some(ns) = &p.namespace {
                parent["namespace"] = json!(ns);
            }
            if let Some(section) = &p.section_name {
                parent["sectionName"] = json!(section);
            }
            parent
        })
        .collect();
    let mut spec = json!({
        "parentRefs": parents,
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": name(shop), "port": 80}]
        }]
    });
    if !wanted.hostnames.is_empty() {
        spec["hostnames"] = json!(wanted.hostnames);
    }
    let mut route = DynamicObject::new(&name(shop), &http_route_resource());
    route.metadata = meta(shop);
    route.data = json!({ "spec": spec });
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(gateway: serde_json::Value) -> Shop {
        let mut shop: Shop = serde_json::from_value(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "acme", "namespace": "prod"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://nats:4222"}, "gateway": gateway}
        }))
        .unwrap();
        shop.metadata.uid = Some("acme-uid".into());
        shop
    }

    #[test]
    fn an_ingress_sends_every_path_of_its_host_to_the_gateway_with_tls_and_annotations() {
        let shop = shop(
            json!({"ingress": {"className": "nginx", "host": "shop.acme.example",
            "tlsSecretName": "acme-tls", "annotations": {"cert-manager.io/cluster-issuer": "le"}}}),
        );
        let ingress = serde_json::to_value(ingress(&shop).unwrap()).unwrap();
        assert_eq!(ingress["metadata"]["name"], "acme-gateway");
        assert_eq!(ingress["metadata"]["ownerReferences"][0]["kind"], "Shop");
        assert_eq!(
            ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
            "le"
        );
        assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
        assert_eq!(
            ingress["spec"]["tls"],
            json!([{"hosts": ["shop.acme.example"], "secretName": "acme-tls"}])
        );
        let rule = &ingress["spec"]["rules"][0];
        assert_eq!(rule["host"], "shop.acme.example");
        assert_eq!(
            rule["http"]["paths"][0],
            json!({"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "acme-gateway", "port": {"name": "http"}}}})
        );
        assert!(http_route(&shop).is_none());
    }

    #[test]
    fn an_http_route_attaches_to_its_gateways_and_sends_everything_to_the_gateway() {
        let shop = shop(json!({"httpRoute": {"parentRefs": [
            {"name": "public", "namespace": "infra", "sectionName": "https"}],
            "hostnames": ["shop.acme.example"]}}));
        let route = serde_json::to_value(http_route(&shop).unwrap()).unwrap();
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(route["kind"], "HTTPRoute");
        assert_eq!(route["metadata"]["name"], "acme-gateway");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                    "namespace": "infra", "sectionName": "https"}])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["shop.acme.example"]));
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"][0],
            json!({"group": "", "kind": "Service", "name": "acme-gateway", "port": 80})
        );
        assert!(ingress(&shop).is_none());
    }
}
