use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, product, spawn_app};

async fn import(app: &TestApp, content_type: &str, body: String) -> reqwest::Response {
    app.http
        .post(app.url("/v1/products/import"))
        .bearer_auth(&app.admin)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn outcomes(report: &Value) -> Vec<(u64, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_ndjson_import_upserts_by_sku_row_by_row_and_twice_changes_nothing() {
    let app = spawn_app().await;
    let rows = [
        product("Kettle", &[("KTL-1", 3900)]).to_string(),
        String::new(),
        product("Toaster", &[("TST-1", 2900), ("TST-2", 3400)]).to_string(),
        r#"{"name": "Broken", "variants": [{"sku": "BRK", "price": {"amount": -5, "currency": "EUR"}}]}"#.into(),
        "not json".into(),
        // Valid row after bad ones, and one whose second SKU belongs to another product: it
        // fails whole, so its first (new) SKU is not created either.
        product("Blender", &[("BLD-1", 5900)]).to_string(),
        product("Thief", &[("THF-1", 100), ("KTL-1", 100)]).to_string(),
    ]
    .join("\n");
    let response = import(&app, "application/x-ndjson", rows.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        outcomes(&report),
        [
            (1, "created"),
            (3, "created"),
            (4, "error"),
            (5, "error"),
            (6, "created"),
            (7, "error")
        ]
        .map(|(l, o)| (l, o.to_owned()))
    );
    assert_eq!(
        report["results"][2]["errors"][0]["field"],
        "variants[0].price.amount"
    );
    assert_eq!(
        (report["created"].as_u64(), report["failed"].as_u64()),
        (Some(3), Some(3))
    );
    let thief: i64 = sqlx::query_scalar("SELECT count(*) FROM variants WHERE sku = 'THF-1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(thief, 0, "no partial row");

    let again: Value = import(&app, "application/x-ndjson", rows)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["unchanged"], 3);
    assert_eq!(again["created"], 0);

    let renamed = product("Electric Kettle", &[("KTL-1", 4100)]).to_string();
    let update: Value = import(&app, "application/jsonl", renamed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outcomes(&update), [(1, "updated".to_owned())]);
    let id = update["results"][0]["id"].as_str().unwrap();
    let kettle = app.get_json(&format!("/v1/products/{id}")).await;
    assert_eq!(
        (kettle["name"].as_str(), kettle["version"].as_i64()),
        (Some("Electric Kettle"), Some(2))
    );
}

#[tokio::test]
async fn a_csv_import_sets_stock_and_reports_bad_rows_by_line() {
    let app = spawn_app().await;
    let csv = "sku,name,price_amount,currency,status,attributes,on_hand,description\n\
               MUG-RED,Red Mug,1200,EUR,active,color=red;size=M,25,\"A mug,\nwith a comma and a newline\"\n\
               MUG-BLU,Blue Mug,twelve,EUR,active,,5,\n\
               MUG-GRN,Green Mug,1250,EUR,active,color=green,,\n";
    let report: Value = import(&app, "text/csv", csv.into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        [(2, "created"), (4, "error"), (5, "created")].map(|(l, o)| (l, o.to_owned()))
    );
    assert_eq!(report["results"][1]["errors"][0]["field"], "price_amount");
    assert_eq!(app.get_json("/v1/inventory/MUG-RED").await["on_hand"], 25);
    let red = app.get_json("/v1/products?q=red%20mug").await;
    assert_eq!(
        red["items"][0]["description"],
        "A mug,\nwith a comma and a newline"
    );
    assert_eq!(
        red["items"][0]["variants"][0]["attributes"],
        json!({"color": "red", "size": "M"})
    );

    let bad_header = import(&app, "text/csv", "sku,title\nX,Y\n".into()).await;
    assert_eq!(bad_header.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unsupported = import(&app, "application/xml", "<p/>".into()).await;
    assert_eq!(unsupported.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let customer = app
        .http
        .post(app.url("/v1/products/import"))
        .bearer_auth(&app.customer)
        .header(header::CONTENT_TYPE, "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bulk_prices_and_counts_apply_item_by_item() {
    let app = spawn_app().await;
    let created = app
        .create_product(product("Plate", &[("PLT-S", 800), ("PLT-L", 1400)]))
        .await;
    let prices: Value = app
        .send(
            Method::POST,
            "/v1/products/prices",
            Some(&app.admin),
            Some(json!({"items": [
                {"sku": "PLT-S", "price": {"amount": 700, "currency": "EUR"}},
                {"sku": "PLT-L", "price": {"amount": 1400, "currency": "EUR"}},
                {"sku": "PLT-X", "price": {"amount": 1, "currency": "EUR"}},
                {"sku": "PLT-L", "price": {"amount": 1, "currency": "USD"}},
            ]})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        outcomes(&prices),
        [(1, "updated"), (2, "unchanged"), (3, "error"), (4, "error")]
            .map(|(l, o)| (l, o.to_owned()))
    );
    let plate = app
        .get_json(&format!("/v1/products/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(plate["variants"][0]["price"]["amount"], 700);
    assert_eq!(plate["version"], 2);
    let cheapest = app.get_json("/v1/products?max_price=750").await;
    assert_eq!(
        cheapest["items"][0]["id"], created["id"],
        "the price filter sees the new price"
    );

    let counts: Value = app
        .send(
            Method::POST,
            "/v1/inventory/adjustments",
            Some(&app.admin),
            Some(json!({"items": [
                {"sku": "PLT-S", "on_hand": 40, "reason": "stocktake"},
                {"sku": "PLT-L", "on_hand": -1, "reason": "stocktake"},
            ]})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        outcomes(&counts),
        [(1, "updated"), (2, "error")].map(|(l, o)| (l, o.to_owned()))
    );
    assert_eq!(app.get_json("/v1/inventory/PLT-S").await["on_hand"], 40);
}

#[tokio::test]
async fn analytics_count_views_and_sales() {
    let app = spawn_app().await;
    let popular = app
        .create_product(product("Popular", &[("POP-1", 1000)]))
        .await;
    let other = app
        .create_product(product("Other", &[("OTH-1", 1000)]))
        .await;
    for _ in 0..3 {
        app.get_json(&format!("/v1/products/{}", popular["id"].as_str().unwrap()))
            .await;
    }
    app.get_json(&format!("/v1/products/{}", other["id"].as_str().unwrap()))
        .await;
    app.stock("POP-1", 10).await;
    let id = Uuid::now_v7();
    app.send(
        Method::POST,
        "/v1/inventory/reservations",
        Some(&app.admin),
        Some(json!({"reservation_id": id, "items": [{"sku": "POP-1", "quantity": 4}], "ttl_seconds": 60})),
    )
    .await;
    app.send(
        Method::POST,
        &format!("/v1/inventory/reservations/{id}/commit"),
        Some(&app.admin),
        None,
    )
    .await;
    let report: Value = app
        .send(
            Method::GET,
            "/v1/products/analytics?days=7",
            Some(&app.admin),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["most_viewed"][0]["product_id"], popular["id"]);
    assert_eq!(report["most_viewed"][0]["views"], 3);
    assert_eq!(report["most_viewed"][1]["views"], 1);
    assert_eq!(
        report["top_sellers"],
        json!([{
            "product_id": popular["id"], "name": "Popular", "sku": "POP-1", "quantity": 4
        }])
    );
    let bad = app
        .send(
            Method::GET,
            "/v1/products/analytics?days=0",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
