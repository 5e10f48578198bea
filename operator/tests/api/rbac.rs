//! The chart's RBAC against what the operator does: every scripted request of these tests is
//! authorized by the verifier (a missing verb is a 403 and a failed test); here, that the
//! operator holds every permission it grants components (the API server refuses a Role that
//! escalates beyond its creator's own permissions), and that a forbidden request surfaces as
//! the API server's 403.

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Shop;
use tienda_kit::testing::rbac::{Rules, accesses};
use tienda_operator::{shop::desired_services, workload};

use crate::verifier::{Answer, Exchange, context, operator_rules, serve};

fn shop() -> Shop {
    let mut shop: Shop = serde_json::from_value(json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "demo", "namespace": "shops"},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg-admin"}},
                 "nats": {"url": "nats://nats:4222"}}
    }))
    .unwrap();
    shop.metadata.uid = Some("shop-uid".into());
    shop
}

#[test]
fn the_operator_holds_every_permission_it_grants_a_component() {
    for mut service in desired_services(&shop()) {
        service.metadata.uid = Some("svc-uid".into());
        let role = workload::component_role(&service);
        let missing = operator_rules().missing_to_grant("shops", role.rules.as_deref().unwrap());
        assert!(
            missing.is_empty(),
            "the operator cannot create {}'s Role: the API server refuses a grant of {missing:?}, \
             which the chart's ClusterRole does not give the operator",
            service.spec.component
        );
    }
}

#[test]
fn the_chart_lets_the_operator_create_what_it_applies() {
    // Server-side apply of an object that does not exist yet is authorized as `create`.
    let apply = Some("application/apply-patch+yaml");
    for uri in [
        "/apis/apps/v1/namespaces/shops/deployments/demo-auth",
        "/api/v1/namespaces/shops/services/demo-auth",
        "/api/v1/namespaces/shops/serviceaccounts/demo-auth",
        "/apis/policy/v1/namespaces/shops/poddisruptionbudgets/demo-auth",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shops/roles/demo-auth",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shops/rolebindings/demo-auth",
        "/apis/networking.k8s.io/v1/namespaces/shops/networkpolicies/demo-auth",
        "/apis/tienda.dev/v1alpha1/namespaces/shops/tiendaservices/demo-auth",
    ] {
        assert_eq!(
            operator_rules().denies(&Method::PATCH, uri, apply),
            None,
            "{uri}"
        );
    }
    // A rule set without `create` is caught by the same check.
    let without_create = Rules::cluster(vec![k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec!["apps".into()]),
        resources: Some(vec!["deployments".into()]),
        verbs: vec!["get".into(), "patch".into()],
        ..Default::default()
    }]);
    let denied = without_create
        .denies(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/shops/deployments/demo-auth",
            apply,
        )
        .unwrap();
    assert_eq!(
        denied,
        accesses(
            &Method::POST,
            "/apis/apps/v1/namespaces/shops/deployments/demo-auth",
            None
        )
        .unwrap()[0]
    );
}

#[tokio::test]
async fn a_request_the_chart_does_not_allow_is_answered_403_and_fails_the_test() {
    // The operator applies Deployments; it may not delete one (they go with their Service by
    // garbage collection).
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![Exchange {
            method: Method::DELETE,
            uri: "/apis/apps/v1/namespaces/shops/deployments/demo-auth?".into(),
            status: http::StatusCode::OK,
            answer: Answer::Json(json!({})),
        }],
    );
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), "shops");
    let err = api
        .delete("demo-auth", &Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert!(
                status
                    .message
                    .contains("cannot delete resource \"deployments\""),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403, got {other}"),
    }
    drop(api);
    drop(ctx);
    let verdict = server.await.unwrap_err();
    let message = verdict.into_panic();
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("needs `delete apps/deployments demo-auth in namespace shops`"),
        "{message}"
    );
}
