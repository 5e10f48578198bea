//! Overselling under concurrent checkouts (Medusa #16502, #16569, #16825) cannot happen here.

use futures::future::join_all;
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, product, spawn_app};

async fn reserve(app: &TestApp, id: Uuid, items: serde_json::Value) -> StatusCode {
    app.http
        .post(app.url("/v1/inventory/reservations"))
        .bearer_auth(&app.admin)
        .json(&json!({"reservation_id": id, "items": items, "ttl_seconds": 600}))
        .send()
        .await
        .unwrap()
        .status()
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn two_hundred_buyers_for_fifty_units_fifty_succeed() {
    let app = spawn_app().await;
    app.create_product(product("Console", &[("CONSOLE", 49900)]))
        .await;
    app.stock("CONSOLE", 50).await;
    let statuses = join_all((0..200).map(|_| {
        reserve(
            &app,
            Uuid::now_v7(),
            json!([{"sku": "CONSOLE", "quantity": 1}]),
        )
    }))
    .await;
    assert_eq!(count(&statuses, StatusCode::CREATED), 50, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::CONFLICT), 150);
    assert_eq!(
        app.get_json("/v1/inventory/CONSOLE").await,
        json!({"sku": "CONSOLE", "on_hand": 50, "reserved": 50, "available": 0})
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum((item->>'quantity')::bigint), 0)::bigint FROM reservations, \
         jsonb_array_elements(items) AS item WHERE status = 'held'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(held, 50, "the reservations account for every reserved unit");
}

#[tokio::test]
async fn multi_item_reservations_hold_all_lines_or_none() {
    let app = spawn_app().await;
    app.create_product(product(
        "Set",
        &[("SET-A", 100), ("SET-B", 100), ("SET-C", 100)],
    ))
    .await;
    app.stock("SET-A", 30).await;
    app.stock("SET-B", 45).await;
    app.stock("SET-C", 1000).await;
    // Lines in different orders, so lock order differs between requests.
    let statuses = join_all((0..120).map(|i| {
        let items = if i % 2 == 0 {
            json!([{"sku": "SET-A", "quantity": 1}, {"sku": "SET-B", "quantity": 1},
                   {"sku": "SET-C", "quantity": 1}])
        } else {
            json!([{"sku": "SET-C", "quantity": 1}, {"sku": "SET-B", "quantity": 1},
                   {"sku": "SET-A", "quantity": 1}])
        };
        let app = &app;
        async move { reserve(app, Uuid::now_v7(), items).await }
    }))
    .await;
    assert_eq!(count(&statuses, StatusCode::CREATED), 30, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::CONFLICT), 90);
    for (sku, reserved) in [("SET-A", 30), ("SET-B", 30), ("SET-C", 30)] {
        assert_eq!(
            app.get_json(&format!("/v1/inventory/{sku}")).await["reserved"],
            reserved,
            "{sku}: exactly the successful reservations' units, no partial holds"
        );
    }
}

#[tokio::test]
async fn a_reservation_retried_at_once_is_made_once() {
    let app = spawn_app().await;
    app.create_product(product("Ticket", &[("TICKET", 5000)]))
        .await;
    app.stock("TICKET", 100).await;
    let id = Uuid::now_v7();
    let statuses =
        join_all((0..25).map(|_| reserve(&app, id, json!([{"sku": "TICKET", "quantity": 3}]))))
            .await;
    assert_eq!(count(&statuses, StatusCode::CREATED), 25, "{statuses:?}");
    assert_eq!(app.get_json("/v1/inventory/TICKET").await["reserved"], 3);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tienda_outbox WHERE subject = 'tienda.inventory.reserved'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(events, 1);
}
