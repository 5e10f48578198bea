use std::sync::Arc;

use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::{CircuitPolicy, RateLimitPolicy};
use tienda_operator::controller::policy::reconcile;

use crate::verifier::{Answer, apply_status, cached_context, event, serve};

fn from<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> T {
    serde_json::from_value(value.clone()).unwrap()
}

fn rate_limit() -> serde_json::Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "browse", "namespace": "shops", "generation": 2, "uid": "p-uid",
                     "creationTimestamp": "2026-11-29T10:00:00Z"},
        "spec": {"targetRef": {"kind": "Service", "name": "demo-products"},
                 "rules": [{"name": "browse", "clientKey": {"type": "ClientIP"}, "requests": 100, "period": "1m"}]}
    })
}

#[tokio::test]
async fn a_policy_targeting_a_missing_service_gets_target_not_found() {
    let policy: RateLimitPolicy = serde_json::from_value(rate_limit()).unwrap();
    let (ctx, handle, mut cluster) = cached_context();
    cluster.put::<RateLimitPolicy>(from(&rate_limit()));
    let server = serve(
        handle,
        vec![
            event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/ratelimitpolicies/browse/status",
                Answer::MergeInto(rate_limit()),
            ),
        ],
    );
    reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen[0].body["reason"], "TargetNotFound");
    assert_eq!(seen[0].body["type"], "Warning");
    let status = &seen[1].body["status"];
    assert_eq!(status["observedGeneration"], 2);
    let accepted = &status["conditions"][0];
    assert_eq!(
        (
            accepted["type"].as_str(),
            accepted["status"].as_str(),
            accepted["reason"].as_str()
        ),
        (Some("Accepted"), Some("False"), Some("TargetNotFound"))
    );
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("Service demo-products does not exist")
    );
}

#[tokio::test]
async fn a_policy_on_an_existing_service_is_accepted_with_its_resolved_target() {
    let policy: RateLimitPolicy = serde_json::from_value(rate_limit()).unwrap();
    let service = json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "demo-products", "namespace": "shops"},
        "spec": {"shop": "demo", "component": "products", "image": "x"}});
    let (ctx, handle, mut cluster) = cached_context();
    cluster.put::<tienda_crds::Service>(from(&service));
    cluster.put::<RateLimitPolicy>(from(&rate_limit()));
    let server = serve(
        handle,
        vec![
            event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/ratelimitpolicies/browse/status",
                Answer::MergeInto(rate_limit()),
            ),
        ],
    );
    reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let status = &seen[1].body["status"];
    assert_eq!(status["targets"], json!(["demo-products"]));
    assert_eq!(status["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn a_component_name_resolves_to_that_component_of_every_shop_in_the_namespace() {
    let mut doc = rate_limit();
    doc["spec"]["targetRef"]["name"] = json!("products");
    let policy: RateLimitPolicy = serde_json::from_value(doc.clone()).unwrap();
    let service = |shop: &str| {
        json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": format!("{shop}-products"), "namespace": "shops",
                         "labels": {"app.kubernetes.io/component": "products"}},
            "spec": {"shop": shop, "component": "products", "image": "x"}})
    };
    let (ctx, handle, mut cluster) = cached_context();
    for shop in ["outlet", "demo"] {
        cluster.put::<tienda_crds::Service>(from(&service(shop)));
    }
    // The same component in another namespace is not a target.
    let mut elsewhere = service("other");
    elsewhere["metadata"]["namespace"] = json!("elsewhere");
    cluster.put::<tienda_crds::Service>(from(&elsewhere));
    cluster.put::<RateLimitPolicy>(from(&doc));
    let server = serve(
        handle,
        vec![
            event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/ratelimitpolicies/browse/status",
                Answer::MergeInto(doc.clone()),
            ),
        ],
    );
    reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        seen[1].body["status"]["targets"],
        json!(["demo-products", "outlet-products"])
    );
}

#[tokio::test]
async fn the_newer_of_two_circuit_policies_for_one_destination_is_conflicted() {
    let make = |name: &str, created: &str| {
        json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "CircuitPolicy",
            "metadata": {"name": name, "namespace": "shops", "generation": 1, "uid": name, "creationTimestamp": created},
            "spec": {"targetRef": {"kind": "External", "name": "stripe"}, "timeout": "2s"}})
    };
    let (older, newer) = (
        make("stripe-a", "2026-11-01T00:00:00Z"),
        make("stripe-b", "2026-11-02T00:00:00Z"),
    );
    let policy: CircuitPolicy = serde_json::from_value(newer.clone()).unwrap();
    let (ctx, handle, mut cluster) = cached_context();
    cluster.put::<CircuitPolicy>(from(&older));
    cluster.put::<CircuitPolicy>(from(&newer));
    let server = serve(
        handle,
        vec![
            event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/circuitpolicies/stripe-b/status",
                Answer::MergeInto(newer),
            ),
        ],
    );
    reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let condition = &seen[1].body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "Conflicted");
    assert!(
        condition["message"].as_str().unwrap().contains("stripe-a"),
        "{condition}"
    );
}

#[tokio::test]
async fn the_status_is_applied_with_only_the_operators_fields_so_cleared_ones_go_and_replicas_keep_theirs()
 {
    // Accepted before, with a target and two gateway replicas' reports; now the target is gone.
    let mut stored = rate_limit();
    stored["status"] = json!({
        "observedGeneration": 1,
        "targets": ["demo-products"],
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
                        "observedGeneration": 1, "lastTransitionTime": "2026-11-29T10:00:00Z"}],
        "applied": [{"replica": "gw-0", "generation": 1}, {"replica": "gw-1", "generation": 2}]
    });
    let policy: RateLimitPolicy = serde_json::from_value(stored.clone()).unwrap();
    let (ctx, handle, mut cluster) = cached_context();
    cluster.put::<RateLimitPolicy>(from(&stored));
    let server = serve(
        handle,
        vec![
            event("shops"),
            apply_status(
                "/apis/tienda.dev/v1alpha1/namespaces/shops/ratelimitpolicies/browse/status",
                Answer::MergeInto(stored),
            ),
        ],
    );
    reconcile(Arc::new(policy), ctx.clone()).await.unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let write = &seen[1];
    assert_eq!(
        write.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "server-side apply, under the operator's field manager (checked by the script's query)"
    );
    assert_eq!(
        (
            write.body["apiVersion"].as_str(),
            write.body["kind"].as_str()
        ),
        (Some("tienda.dev/v1alpha1"), Some("RateLimitPolicy"))
    );
    let status = write.body["status"].as_object().unwrap();
    assert!(
        !status.contains_key("applied"),
        "the replicas' entries are theirs: a copy read before a replica's newer report would \
         overwrite it ({status:?})"
    );
    assert!(
        !status.contains_key("targets"),
        "a field the operator cleared is left out of its apply, so the API server removes it \
         ({status:?})"
    );
    assert_eq!(status["observedGeneration"], 2);
}
