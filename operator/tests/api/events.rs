//! Events as the operator publishes them, against the in-memory API server with the chart's
//! RBAC: a repeat of the same event about the same object within the series window is the
//! first Event's series count, not another Event.

use kube::runtime::events::EventType;
use prometheus::Registry;
use serde_json::json;
use tienda_kit::testing::apiserver::ApiServer;
use tienda_operator::controller::Context;

use crate::verifier::{OPERATOR_USER, operator_rules};

#[tokio::test]
async fn a_repeated_event_is_a_series_and_another_reason_another_event() {
    tienda_kit::install_crypto_provider();
    let server = ApiServer::with_rules(operator_rules().clone(), OPERATOR_USER).await;
    let ctx = Context::new(server.client("shops"), &Registry::new());
    let shop: tienda_crds::Shop = serde_json::from_value(server.create(json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "demo", "namespace": "shops"},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                 "nats": {"url": "nats://nats:4222"}}
    })))
    .unwrap();
    for note in [
        "cannot reach PostgreSQL",
        "cannot reach PostgreSQL again",
        "and again",
    ] {
        ctx.event(&shop, EventType::Warning, "CleanupFailed", note.into())
            .await;
    }
    ctx.event(&shop, EventType::Normal, "Ready", "ready".into())
        .await;

    let events = server.list("events.k8s.io/v1", "Event");
    assert_eq!(events.len(), 2, "{events:#?}");
    let failed = events
        .iter()
        .find(|e| e["reason"] == "CleanupFailed")
        .unwrap();
    assert_eq!(failed["series"]["count"], 3);
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["regarding"]["name"], "demo");
    assert_eq!(failed["reportingController"], "tienda-operator");
    let requests = server.requests();
    assert_eq!(requests.get("create events"), Some(&2), "{requests:?}");
    assert_eq!(requests.get("patch events"), Some(&2), "{requests:?}");
}
