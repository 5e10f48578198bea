//! Traces exported over OTLP, received by an OTLP receiver inside the test: one request is one
//! trace, from the HTTP server span through the outbox, the relay's publish, JetStream and the
//! consumer, to the outbound call the consumer makes and the server span that answers it.
//!
//! Its own test binary: the exporter is process-wide, installed once.

#[path = "api/example.rs"]
#[allow(dead_code)]
mod example;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use async_nats::jetstream;
use pretty_assertions::assert_eq;
use serde_json::json;
use sqlx::PgConnection;
use tienda_events::inventory::InventoryAdjusted;
use tienda_kit::{
    Needs, Platform,
    config::LogFormat,
    consumer::{ConsumerConfig, Delivery, Handler, HandlerError},
    outbound::{Outbound, Target},
    outbox::RelayConfig,
    policy::{Policies, Scope},
    telemetry::{self, TraceExport},
    testing::{
        self, NatsServer, TestDatabase,
        otlp::{ReceivedSpan, Receiver, parent_of, tree},
    },
};

/// Applies `inventory.adjusted` by calling the example service back (a provider call, as
/// payments' handler calls Stripe).
#[derive(Clone)]
struct CallsBack {
    outbound: Arc<Outbound>,
    base: Arc<OnceLock<String>>,
}

impl Handler for CallsBack {
    async fn handle(&self, _: &mut PgConnection, delivery: &Delivery) -> Result<(), HandlerError> {
        delivery.envelope::<InventoryAdjusted>()?;
        let base = self.base.get().expect("the app is running");
        let request = self
            .outbound
            .client()
            .get(format!("{base}/v1/typed/{}", uuid::Uuid::now_v7()))
            .build()
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let answer = self
            .outbound
            .call(Target::Service("example"), request)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        assert_eq!(answer.status(), 200);
        Ok(())
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.kind == kind && s.name == name)
}

/// Flushes the exporter and reads the trace until `done` holds; panics with what arrived.
async fn collect(
    receiver: &Receiver,
    trace_id: &str,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    for _ in 0..100 {
        tokio::task::spawn_blocking(telemetry::flush).await.unwrap();
        let spans = receiver.trace(trace_id);
        if done(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the trace did not arrive whole; received:\n{}",
        tree(&receiver.trace(trace_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_from_http_through_the_outbox_and_jetstream_to_the_consumers_call()
{
    tienda_kit::install_crypto_provider();
    let receiver = Receiver::start().await;
    telemetry::init_with_traces(
        "example",
        LogFormat::Json,
        "info",
        Ok(Some(TraceExport {
            endpoint: format!("{}/v1/traces", receiver.http_endpoint()),
            protocol: "http/protobuf".into(),
            sample_ratio: None,
        })),
    );
    assert!(telemetry::tracing_enabled());

    let nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let spec: tienda_crds::ServiceSpec = serde_json::from_value(json!({
        "shop": "demo", "component": "products", "image": "x",
        "streams": [{"name": "INVENTORY", "subjects": ["tienda.inventory.>"]}],
        "consumers": [{"name": "products-inventory", "stream": "INVENTORY"}],
    }))
    .unwrap();
    for item in tienda_provision::streams::provision_service(&js, &spec, 1, None).await {
        item.result.unwrap();
    }

    let db = TestDatabase::create().await;
    let mut config = testing::config(Some(&db.url));
    config.nats_url = nats.url();
    let platform = Platform::start(
        "products",
        config,
        Needs {
            database: Some(&example::MIGRATOR),
            nats: true,
        },
    )
    .await
    .unwrap();
    platform
        .start_relay(RelayConfig {
            poll_interval: Duration::from_millis(50),
            ..RelayConfig::default()
        })
        .unwrap();
    let registry = prometheus::Registry::new();
    let policies = Policies::new(Scope::component("demo", "products"), &registry);
    let handler = CallsBack {
        outbound: Arc::new(Outbound::new(
            Arc::new(policies),
            Duration::from_secs(5),
            &registry,
        )),
        base: Arc::default(),
    };
    platform
        .start_consumer(
            ConsumerConfig::new("products", "INVENTORY", "products-inventory"),
            handler.clone(),
        )
        .unwrap();
    let app = example::spawn_app(example::build_with(platform).await.unwrap(), db);
    handler.base.set(app.base.clone()).unwrap();

    // The caller's trace, sampled: everything below joins it.
    let trace_id = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let caller_span = "00f067aa0ba902b7";
    let created = app
        .http
        .post(app.url("/v1/items"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let spans = collect(&receiver, &trace_id, |spans| {
        one(spans, "server", "GET /v1/typed/{id}").is_some()
    })
    .await;
    let shown = tree(&spans);
    let server = one(&spans, "server", "POST /v1/items").unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        server.parent_span_id.as_deref(),
        Some(caller_span),
        "{shown}"
    );
    assert_eq!(server.service, "example");
    assert_eq!(server.attr("http.route"), Some("/v1/items"));
    assert_eq!(server.attr("http.response.status_code"), Some("201"));
    let send = one(&spans, "producer", "send tienda.inventory.adjusted")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        parent_of(&spans, send).map(|p| &p.span_id),
        Some(&server.span_id),
        "{shown}"
    );
    let process = one(&spans, "consumer", "process tienda.inventory.adjusted")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        parent_of(&spans, process).map(|p| &p.span_id),
        Some(&send.span_id),
        "{shown}"
    );
    assert_eq!(process.attr("messaging.system"), Some("nats"));
    assert_eq!(
        process.attr("messaging.consumer.group.name"),
        Some("products-inventory")
    );
    assert_eq!(process.attr("tienda.outcome"), Some("processed"));
    let call = one(&spans, "client", "GET example").unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        parent_of(&spans, call).map(|p| &p.span_id),
        Some(&process.span_id),
        "{shown}"
    );
    assert_eq!(call.attr("http.response.status_code"), Some("200"));
    let answered = one(&spans, "server", "GET /v1/typed/{id}").unwrap();
    assert_eq!(
        parent_of(&spans, answered).map(|p| &p.span_id),
        Some(&call.span_id),
        "{shown}"
    );
    assert!(spans.iter().all(|s| !s.failed), "{shown}");
    assert!(
        spans.iter().all(|s| s.start <= s.end && s.start > 0),
        "every span has a start and an end"
    );

    // Prometheus asking for OpenMetrics gets the request durations with exemplars: the
    // bucket the request landed in names its trace.
    let scraped = app
        .http
        .get(app.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scraped.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE http_requests counter\n"), "{text}");
    let exemplar = format!("# {{trace_id=\"{trace_id}\"}}");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_request_duration_seconds_bucket{")
                && l.contains("route=\"/v1/items\"")
                && l.contains(&exemplar)
        })
        .unwrap_or_else(|| panic!("no exemplar for the request's bucket:\n{text}"));
    let value: f64 = line
        .split(&exemplar)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(value > 0.0 && value < 10.0, "{line}");
    // The plain text format, as before, for scrapers that do not ask.
    let plain = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!plain.contains("# EOF") && !plain.contains("trace_id"));

    // A caller that did not sample its trace is followed: nothing of it is recorded (though
    // its ids still travel).
    let unsampled = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let created = app
        .http
        .post(app.url("/v1/items"))
        .header("traceparent", format!("00-{unsampled}-{caller_span}-00"))
        .json(&json!({"name": "not traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The sampled request's whole trace arrived in about this time.
    let marker = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let probe = app
        .http
        .get(app.url(&format!("/v1/typed/{}", uuid::Uuid::now_v7())))
        .header("traceparent", format!("00-{marker}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    collect(&receiver, &marker, |spans| !spans.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(telemetry::flush).await.unwrap();
    assert_eq!(
        tree(&receiver.trace(&unsampled)),
        "",
        "an unsampled trace is not exported"
    );

    app.platform.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), app.server)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
