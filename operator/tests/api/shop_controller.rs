use std::sync::Arc;

use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Shop;
use tienda_operator::controller::shop::{FINALIZER, reconcile};

use crate::verifier::{Answer, apply, apply_status, cached_context, context, patch, serve};

/// A Service resource of Shop `demo`, as the caches hold it.
fn cached_service(value: serde_json::Value) -> tienda_crds::Service {
    serde_json::from_value(value).unwrap()
}

fn shop() -> Shop {
    let mut shop: Shop = serde_json::from_value(json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "demo", "namespace": "shops", "uid": "shop-uid", "generation": 3,
                     "finalizers": [FINALIZER]},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg-admin"}},
                 "nats": {"url": "nats://nats:4222"}, "reclaimPolicy": "Delete"}
    }))
    .unwrap();
    shop.metadata.uid = Some("shop-uid".into());
    shop
}

#[tokio::test]
async fn a_new_shop_creates_one_service_per_component_and_reports_progress() {
    let shop = shop();
    let base = "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices";
    let mut script = Vec::new();
    for component in [
        "auth",
        "products",
        "orders",
        "payments",
        "notifications",
        "gateway",
    ] {
        script.push(apply(&format!("{base}/demo-{component}")));
    }
    script.push(apply_status(
        "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo/status",
        Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
    ));
    let (ctx, handle) = context();
    let server = serve(handle, script);
    reconcile(Arc::new(shop), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();

    let applied = &seen[0].body;
    assert_eq!(applied["kind"], "Service");
    assert_eq!(applied["apiVersion"], "tienda.dev/v1alpha1");
    assert_eq!(applied["metadata"]["ownerReferences"][0]["kind"], "Shop");
    assert_eq!(
        applied["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert_eq!(applied["spec"]["component"], "auth");
    assert_eq!(applied["spec"]["database"]["name"], "shops_demo_auth");

    let status = &seen[6].body["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["servicesReady"], "0/6");
    assert_eq!(status["gatewayAddress"], "http://demo-gateway.shops.svc");
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
}

#[tokio::test]
async fn a_component_no_longer_listed_is_deleted() {
    let mut shop = shop();
    shop.spec
        .components
        .retain(|c| c.name == tienda_crds::Component::Auth);
    let base = "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices";
    let stale = json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "demo-orders", "namespace": "shops", "labels": {"tienda.dev/shop": "demo"}},
        "spec": {"shop": "demo", "component": "orders", "image": "x",
                 "database": {"name": "shops_demo_orders", "reclaimPolicy": "Delete"}}});
    let (ctx, handle, mut writers) = cached_context();
    writers.put(cached_service(stale.clone()));
    let server = serve(
        handle,
        vec![
            apply(&format!("{base}/demo-auth")),
            patch(&format!("{base}/demo-orders?"), Answer::Json(stale.clone())),
            crate::verifier::Exchange {
                method: http::Method::DELETE,
                uri: format!("{base}/demo-orders?"),
                status: http::StatusCode::OK,
                answer: Answer::Json(stale),
            },
            crate::verifier::event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo/status",
                Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
            ),
        ],
    );
    reconcile(Arc::new(shop.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    // Taking a component out of the list is not a request to drop its data: the Service is
    // switched to Retain before it is deleted, and the event says what is kept.
    assert_eq!(
        seen[1].body,
        json!({"spec": {"database": {"reclaimPolicy": "Retain"}}})
    );
    assert_eq!(seen[2].method, http::Method::DELETE);
    assert!(
        seen[2].uri.contains("/tiendaservices/demo-orders"),
        "{}",
        seen[2].uri
    );
    assert_eq!(seen[3].body["reason"], "ServiceRemoved");
    let note = seen[3].body["note"].as_str().unwrap();
    assert!(
        note.contains("database shops_demo_orders and streams are kept"),
        "{note}"
    );
    assert_eq!(seen[4].body["status"]["servicesReady"], "0/1");
}

#[tokio::test]
async fn a_deleted_shop_deletes_its_services_and_waits_for_them_before_letting_go() {
    let mut shop = shop();
    shop.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let base = "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices";
    let child = json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "demo-auth", "namespace": "shops", "labels": {"tienda.dev/shop": "demo"}},
        "spec": {"shop": "demo", "component": "auth", "image": "x"}});

    // Services remain: delete them and come back.
    let (ctx, handle, mut writers) = cached_context();
    writers.put(cached_service(child.clone()));
    let server = serve(
        handle,
        vec![crate::verifier::Exchange {
            method: http::Method::DELETE,
            uri: format!("{base}/demo-auth?"),
            status: http::StatusCode::OK,
            answer: Answer::Json(child),
        }],
    );
    let err = reconcile(Arc::new(shop.clone()), ctx.clone())
        .await
        .unwrap_err();
    assert!(
        err.is_waiting(),
        "the finalizer stays while Services clean up: {err}"
    );
    let action =
        tienda_operator::controller::shop::error_policy(Arc::new(shop.clone()), &err, ctx.clone());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2))
    );
    drop(ctx);
    server.await.unwrap();

    // They are gone: the finalizer goes.
    let mut released = serde_json::to_value(&shop).unwrap();
    released["metadata"]["finalizers"] = json!([]);
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![patch(
            "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo?",
            Answer::Json(released),
        )],
    );
    reconcile(Arc::new(shop), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen[0].body[1]["op"], "remove", "the finalizer is removed");
}

#[tokio::test]
async fn a_retained_shop_carries_no_finalizer_and_one_left_over_is_removed() {
    let mut shop = shop();
    shop.spec.reclaim_policy = tienda_crds::service::ReclaimPolicy::Retain;
    shop.metadata.resource_version = Some("7".into());
    shop.spec
        .components
        .retain(|c| c.name == tienda_crds::Component::Auth);
    let base = "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices";
    let mut released = serde_json::to_value(&shop).unwrap();
    released["metadata"]["finalizers"] = json!([]);
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![
            patch(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo?",
                Answer::Json(released),
            ),
            apply(&format!("{base}/demo-auth")),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo/status",
                Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
            ),
        ],
    );
    reconcile(Arc::new(shop), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        seen[0].body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "7"}})
    );
}

#[tokio::test]
async fn the_gateway_is_exposed_as_the_spec_asks_and_what_it_no_longer_asks_for_is_deleted() {
    let mut shop = shop();
    shop.spec.components.retain(|c| {
        c.name == tienda_crds::Component::Auth || c.name == tienda_crds::Component::Gateway
    });
    shop.spec.gateway = Some(
        serde_json::from_value(json!({"ingress": {"host": "shop.demo.example",
                                                  "tlsSecretName": "demo-tls"}}))
        .unwrap(),
    );
    let base = "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices";
    let ingress = "/apis/networking.k8s.io/v1/namespaces/shops/ingresses/demo-gateway";
    let route = "/apis/gateway.networking.k8s.io/v1/namespaces/shops/httproutes/demo-gateway";
    let mut script = Vec::new();
    for component in ["auth", "gateway"] {
        script.push(apply(&format!("{base}/demo-{component}")));
    }
    script.push(apply(ingress));
    script.push(apply_status(
        "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo/status",
        Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
    ));
    let (ctx, handle) = context();
    let server = serve(handle, script);
    reconcile(Arc::new(shop.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let made = &seen[2].body;
    assert_eq!(made["kind"], "Ingress");
    assert_eq!(made["spec"]["rules"][0]["host"], "shop.demo.example");
    assert_eq!(made["metadata"]["ownerReferences"][0]["kind"], "Shop");
    let status = &seen[3].body["status"];
    assert_eq!(status["exposedBy"], json!(["Ingress"]));
    assert_eq!(status["gatewayAddress"], "https://shop.demo.example");

    // The exposure is removed from the spec: what was made goes; a route never made (404)
    // is no error.
    shop.spec.gateway = None;
    shop.status = Some(serde_json::from_value(status.clone()).unwrap());
    shop.status.as_mut().unwrap().exposed_by = vec!["Ingress".into(), "HTTPRoute".into()];
    let mut script = Vec::new();
    for component in ["auth", "gateway"] {
        script.push(apply(&format!("{base}/demo-{component}")));
    }
    script.push(crate::verifier::Exchange {
        method: http::Method::DELETE,
        uri: format!("{ingress}?"),
        status: http::StatusCode::OK,
        answer: Answer::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "code": 200})),
    });
    script.push(crate::verifier::Exchange {
        method: http::Method::DELETE,
        uri: format!("{route}?"),
        status: http::StatusCode::NOT_FOUND,
        answer: Answer::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "reason": "NotFound", "code": 404})),
    });
    script.push(apply_status(
        "/apis/tienda.dev/v1alpha1/namespaces/shops/shops/demo/status",
        Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
    ));
    let (ctx, handle) = context();
    let server = serve(handle, script);
    reconcile(Arc::new(shop), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let status = seen[4].body["status"].as_object().unwrap();
    assert!(!status.contains_key("exposedBy"), "{status:?}");
    assert_eq!(status["gatewayAddress"], "http://demo-gateway.shops.svc");
}

/// Databases in a namespace with `-` get collision-free names; those made under the earlier
/// readable names keep them, whether the Service or (under `Retain`, the Shop re-created) only
/// the credentials Secret records it; a recorded name that scheme never gave is applied over.
#[tokio::test]
async fn databases_keep_the_names_they_were_made_with_and_new_ones_cannot_collide() {
    let mut shop = shop();
    shop.metadata.namespace = Some("team-a".into());
    shop.spec
        .components
        .retain(|c| c.name.has_database() && c.name != tienda_crds::Component::Notifications);
    let base = "/apis/tienda.dev/v1alpha1/namespaces/team-a/tiendaservices";
    let (ctx, handle, mut writers) = cached_context();
    let service = |component: &str, database: &str| {
        cached_service(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": format!("demo-{component}"), "namespace": "team-a",
                         "labels": {"tienda.dev/shop": "demo"}},
            "spec": {"shop": "demo", "component": component, "image": "x", "port": 8080,
                     "database": {"name": database}}
        }))
    };
    writers.put(service("auth", "team_a_demo_auth"));
    writers.put(service("payments", "somebody_elses"));
    use base64::Engine as _;
    let kept: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "demo-products-db", "namespace": "team-a"},
        "data": {"username": base64::engine::general_purpose::STANDARD.encode("team_a_demo_products")}
    }))
    .unwrap();
    writers.put(kept);
    let mut script: Vec<_> = ["auth", "products", "orders", "payments"]
        .iter()
        .map(|c| apply(&format!("{base}/demo-{c}")))
        .collect();
    script.push(apply_status(
        "/apis/tienda.dev/v1alpha1/namespaces/team-a/shops/demo/status",
        Answer::MergeInto(serde_json::to_value(&shop).unwrap()),
    ));
    let server = serve(handle, script);
    reconcile(Arc::new(shop), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let names: Vec<String> = seen[..4]
        .iter()
        .map(|s| {
            s.body["spec"]["database"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names[0], "team_a_demo_auth", "kept: the Service records it");
    assert_eq!(
        names[1], "team_a_demo_products",
        "kept: the Secret that outlived the Shop records it"
    );
    for (name, component) in [(&names[2], "orders"), (&names[3], "payments")] {
        assert_eq!(
            name,
            &tienda_provision::database::database_name(
                "team-a",
                "demo",
                serde_json::from_value(json!(component)).unwrap()
            )
        );
        assert!(
            name.starts_with(&format!("team_a_demo_{component}_")),
            "{name}"
        );
    }
}
