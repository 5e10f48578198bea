//! The operator traces its reconciles: each is a span exported over OTLP (to a receiver inside
//! the test) with the object, its generation and the outcome, a failure marked with its
//! reason. Its own test binary: the exporter is process-wide.

use std::sync::Arc;

use kube::runtime::controller::Action;
use tienda_crds::Shop;
use tienda_kit::{
    config::LogFormat,
    telemetry::{self, TraceExport},
    testing::{apiserver::ApiServer, otlp::Receiver},
};
use tienda_operator::controller::{Error, context::Context, traced};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reconcile_is_a_span_with_its_object_and_outcome() {
    tienda_kit::install_crypto_provider();
    let receiver = Receiver::start().await;
    telemetry::init_with_traces(
        "operator",
        LogFormat::Json,
        "warn",
        Ok(Some(TraceExport {
            endpoint: format!("{}/v1/traces", receiver.http_endpoint()),
            protocol: "http/protobuf".into(),
            sample_ratio: None,
        })),
    );
    let api = ApiServer::start().await;
    let ctx = Arc::new(Context::new(
        api.client("shops"),
        &prometheus::Registry::new(),
    ));
    let shop: Shop = serde_json::from_value(serde_json::json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "traced", "namespace": "shops", "generation": 3},
        "spec": {"version": "0.1.0",
                 "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                 "nats": {"url": "nats://nats:4222"}},
    }))
    .unwrap();
    let shop = Arc::new(shop);
    let done = traced("Shop", shop.clone(), ctx.clone(), |_, _| async {
        Ok(Action::await_change())
    })
    .await;
    assert!(done.is_ok());
    let failed = traced("Shop", shop, ctx, |_, _| async {
        Err(Error::Waiting("the database is not ready".into()))
    })
    .await;
    assert!(failed.is_err());

    let mut spans = Vec::new();
    for _ in 0..50 {
        tokio::task::spawn_blocking(telemetry::flush).await.unwrap();
        spans = receiver.spans();
        if spans.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(spans.len(), 2, "{spans:?}");
    for span in &spans {
        assert_eq!(span.name, "reconcile Shop");
        assert_eq!(span.service, "operator");
        assert_eq!(
            span.parent_span_id, None,
            "a reconcile starts its own trace"
        );
        assert_eq!(span.attr("tienda.object.name"), Some("traced"));
        assert_eq!(span.attr("k8s.namespace.name"), Some("shops"));
        assert_eq!(span.attr("tienda.object.generation"), Some("3"));
    }
    let ok = spans
        .iter()
        .find(|s| !s.failed)
        .expect("the successful one");
    assert!(ok.attr("tienda.reconcile.next").is_some());
    let bad = spans.iter().find(|s| s.failed).expect("the failed one");
    assert_eq!(bad.attr("tienda.reconcile.error"), Some("Waiting"));
    assert!(
        bad.status_message.contains("the database is not ready"),
        "{bad:?}"
    );
}
