//! One checkout is one trace: the shop started with OpenTelemetry's variables pointing at an
//! OTLP receiver inside the test (over gRPC here; the kit's own test covers OTLP/HTTP), a
//! checkout sent through the gateway with the caller's `traceparent`, and the spans every
//! process exported checked as one tree — gateway → orders → JetStream → products and
//! payments → orders' saga → notifications' mail.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Component::{Gateway, Notifications, Orders, Products};
use tienda_e2e::Shop;
use tienda_kit::testing::otlp::{ReceivedSpan, Receiver, parent_of, tree};
use uuid::Uuid;

fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: &str,
    name: &str,
) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind && s.name == name)
}

#[tokio::test]
async fn a_checkout_is_one_trace_from_the_gateway_through_jetstream_to_payments_and_the_mail() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.grpc_endpoint();
    let shop = Shop::start_with(|options| {
        options.telemetry = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            // Spans leave each process within 100 ms rather than the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    })
    .await;
    let product = shop
        .stocked_product("Taza trazada", "MUG-TRACE", 900, 5)
        .await;
    let token = shop.customer("grace@e2e.test").await;

    let trace_id = Uuid::new_v4().simple().to_string();
    let caller = "00f067aa0ba902b7";
    let response = shop
        .http
        .post(shop.url(Orders, "/v1/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .header("traceparent", format!("00-{trace_id}-{caller}-01"))
        .json(&json!({
            "email": "grace@e2e.test",
            "shipping_address": {"name": "Grace Hopper", "line1": "Calle Mayor 2",
                                 "city": "Madrid", "postal_code": "28013", "country": "ES"},
            "payment_method": "pm_card_visa",
            "items": [{"product_id": product, "sku": "MUG-TRACE", "quantity": 1}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let order: serde_json::Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, now) = shop
            .get(shop.url(Orders, &format!("/v1/orders/{id}")), Some(&token))
            .await;
        if now["status"] == "confirmed" {
            break;
        }
        assert!(Instant::now() < deadline, "not confirmed: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(30), |spans| {
            find(spans, "tienda-orders", "internal", "saga Committed").is_some()
                && spans
                    .iter()
                    .any(|s| s.service == "tienda-notifications" && s.name == "deliver email")
                && spans.iter().any(|s| {
                    s.service == "tienda-products"
                        && s.name == "process tienda.inventory.cmd.commit"
                })
        })
        .await;
    let shown = tree(&spans);
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        [
            "tienda-gateway",
            "tienda-notifications",
            "tienda-orders",
            "tienda-payments",
            "tienda-products"
        ]
        .into(),
        "{shown}"
    );

    // gateway → orders over HTTP.
    let entry = spans
        .iter()
        .find(|s| s.service == "tienda-gateway" && s.kind == "server")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(entry.parent_span_id.as_deref(), Some(caller), "{shown}");
    let hop = find(&spans, "tienda-gateway", "client", "POST orders")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        parent_of(&spans, hop).map(|p| &p.span_id),
        Some(&entry.span_id)
    );
    let checkout = find(&spans, "tienda-orders", "server", "POST /v1/checkout")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        parent_of(&spans, checkout).map(|p| &p.span_id),
        Some(&hop.span_id),
        "{shown}"
    );
    assert_eq!(checkout.attr("http.response.status_code"), Some("202"));
    assert!(
        find(&spans, "tienda-orders", "internal", "place order")
            .is_some_and(|s| s.parent_span_id.as_deref() == Some(&checkout.span_id)),
        "the transaction placing the order is a child of the request\n{shown}"
    );

    // orders → JetStream → payments: the command's consumer span is the child of the publish
    // span that orders' saga step caused.
    let authorize = spans
        .iter()
        .find(|s| {
            s.service == "tienda-payments"
                && s.kind == "consumer"
                && s.name.starts_with("process tienda.payment.cmd.authorize")
        })
        .unwrap_or_else(|| panic!("{shown}"));
    let sent = parent_of(&spans, authorize).unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        (sent.service.as_str(), sent.kind),
        ("tienda-orders", "producer"),
        "{shown}"
    );
    let step = parent_of(&spans, sent).unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        (step.service.as_str(), step.name.as_str()),
        ("tienda-orders", "saga Reserved"),
        "{shown}"
    );
    assert_eq!(step.attr("tienda.saga.decision"), Some("Authorize"));
    // ... whose reply came from products' reservation, caused by the checkout itself.
    let reserved = parent_of(&spans, step).unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        (reserved.service.as_str(), reserved.kind),
        ("tienda-orders", "consumer"),
        "{shown}"
    );
    let mut up = reserved;
    let mut path = Vec::new();
    while let Some(parent) = parent_of(&spans, up) {
        path.push(format!("{} {}", parent.service, parent.name));
        up = parent;
    }
    assert_eq!(
        up.span_id, entry.span_id,
        "the chain reaches the gateway: {path:?}\n{shown}"
    );
    assert!(
        path.iter()
            .any(|p| p == "tienda-products process tienda.inventory.cmd.reserve"),
        "{path:?}\n{shown}"
    );
    // The replies: payments authorized (the saga commits the stock), inventory committed
    // (the saga confirms the order).
    let authorized = find(&spans, "tienda-orders", "internal", "saga Authorized").unwrap();
    assert_eq!(
        authorized.attr("tienda.saga.decision"),
        Some("Commit"),
        "{shown}"
    );
    let committed = find(&spans, "tienda-orders", "internal", "saga Committed")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(
        committed.attr("tienda.saga.decision"),
        Some("Confirm"),
        "{shown}"
    );
    // The mail is a span of the same trace.
    let mail = spans
        .iter()
        .find(|s| s.service == "tienda-notifications" && s.name == "deliver email")
        .unwrap();
    assert!(!mail.failed, "{shown}");
    assert!(spans.iter().all(|s| !s.failed), "no span failed\n{shown}");

    // Log lines of the checkout carry its trace id: the gateway's access line, notifications'
    // "sent".
    for component in [Gateway, Notifications] {
        assert!(
            shop.log(component)
                .lines()
                .any(|l| l.contains(&format!("trace_id={trace_id}"))),
            "{component}'s log names the trace"
        );
    }
    shop.stop().await;
}

/// `tienda up --traces`: with no trace store named, every component sends its spans to the
/// operations console's own viewer, which lists the trace and draws it in the browser.
#[tokio::test]
async fn tienda_up_traces_traces_the_shop_into_the_consoles_viewer() {
    use tienda_e2e::webdriver::Browser;

    let shop = Shop::start_with(|options| {
        options.traces = true;
        options.telemetry.clear();
    })
    .await;
    let console = shop.system.console_url.clone().expect("the console runs");
    let trace_id = Uuid::new_v4().simple().to_string();
    let listed = shop
        .http
        .get(shop.url(Products, "/v1/products"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let admin = shop.admin_token().await;
    let api = console.replace("/console", "/console/api/traces");
    let deadline = Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let traces: serde_json::Value = shop
            .http
            .get(&api)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = traces["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == trace_id.as_str())
            .cloned();
        if let Some(found) = found
            && found["services"].as_array().unwrap().len() == 2
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never reached the viewer: {traces}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        summary["services"],
        json!(["tienda-gateway", "tienda-products"])
    );
    let trace: serde_json::Value = shop
        .http
        .get(format!("{api}/{trace_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spans = trace["spans"].as_array().unwrap();
    let server = spans
        .iter()
        .find(|s| s["service"] == "tienda-products" && s["kind"] == "server")
        .unwrap_or_else(|| panic!("{trace}"));
    let client = spans
        .iter()
        .find(|s| s["span_id"] == server["parent_span_id"])
        .unwrap_or_else(|| panic!("{trace}"));
    assert_eq!(client["service"], "tienda-gateway");
    assert_eq!(client["kind"], "client");
    // Anyone else is refused.
    assert_eq!(shop.http.get(&api).send().await.unwrap().status(), 401);

    // In the browser: the trace is listed, and a click draws its spans.
    let browser = Browser::start().await;
    browser
        .sign_in_to_console(&console, &shop.system.admin.0, &shop.system.admin.1)
        .await;
    let row = browser
        .wait_for(
            &format!("#traces tr[data-trace=\"{trace_id}\"]"),
            Duration::from_secs(15),
        )
        .await;
    browser.click(&row).await;
    browser
        .wait_for("#trace-detail .span-row", Duration::from_secs(10))
        .await;
    assert!(browser.all("#trace-detail .span-row").await.len() >= 3);
    browser.close().await;
    shop.stop().await;
}
