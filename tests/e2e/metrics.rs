//! The dashboards and alerts read what the shop really exports: a shop runs a checkout that
//! is confirmed and one that is declined, then every metric name in every dashboard
//! expression and every alert rule must appear in some component's `/metrics`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tienda_crds::Component::{self, Orders};
use tienda_e2e::{Shop, dashboards};
use uuid::Uuid;

/// The metric names a `/metrics` text exports.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

async fn checkout(shop: &Shop, token: &str, product: &str, card: &str) -> String {
    let response = shop
        .http
        .post(shop.url(Orders, "/v1/checkout"))
        .bearer_auth(token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "email": "kpi@e2e.test",
            "shipping_address": {"name": "Kay", "line1": "Calle Mayor 3", "city": "Madrid",
                                 "postal_code": "28013", "country": "ES"},
            "payment_method": card,
            "items": [{"product_id": product, "sku": "MUG-KPI", "quantity": 1}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_read_is_exported_by_a_running_shop() {
    let shop = Shop::start().await;
    let product = shop.stocked_product("Taza KPI", "MUG-KPI", 700, 5).await;
    let token = shop.customer("kpi@e2e.test").await;
    let orders = [
        checkout(&shop, &token, &product, "pm_card_visa").await,
        checkout(&shop, &token, &product, "pm_card_chargeDeclined").await,
    ];
    for (id, status) in orders.iter().zip(["confirmed", "cancelled"]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, order) = shop
                .get(shop.url(Orders, &format!("/v1/orders/{id}")), Some(&token))
                .await;
            if order["status"] == status {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{order}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // The gauges read from the databases (payments' and notifications' every 15 s) show the
    // payment and the mails after their next refresh: scraped until everything is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (missing, exported_by) = check(&shop).await;
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named but not exported by any component:\n{}\nexported: {:?}",
            missing.join("\n"),
            exported_by.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    shop.stop().await;
}

/// What the dashboards and alerts name that no component exports, and what each exports.
async fn check(shop: &Shop) -> (Vec<String>, BTreeMap<String, Vec<Component>>) {
    let mut exported_by: BTreeMap<String, Vec<Component>> = BTreeMap::new();
    for component in Component::ALL {
        let text = shop
            .http
            .get(shop.admin(component, "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in exported(&text) {
            exported_by.entry(name).or_default().push(component);
        }
    }
    let mut missing = Vec::new();
    for (file, board) in dashboards::all() {
        for (panel, expr) in dashboards::expressions(&board) {
            for name in dashboards::metric_names(&expr) {
                if !exported_by.contains_key(&name) {
                    missing.push(format!("{file} / {panel}: {name}"));
                }
            }
        }
    }
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            tienda_e2e::repo_root().join("charts/tienda/rules/tienda.rules.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            for name in dashboards::metric_names(rule["expr"].as_str().unwrap()) {
                // The operator's own metrics: no operator runs under `tienda up` (its
                // registry is checked by the operator's tests).
                if !name.starts_with("tienda_operator_") && !exported_by.contains_key(&name) {
                    missing.push(format!("alert {}: {name}", rule["alert"]));
                }
            }
        }
    }
    (missing, exported_by)
}
