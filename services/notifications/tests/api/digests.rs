//! Digests: a category taken as a digest becomes one message per window, listing each event
//! once however often it is delivered; a late event goes to the next window.

use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use tienda_events::{Envelope, order::OrderShipped};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app};

fn shipped(customer: Uuid, tracking: &str) -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: Some(customer),
        email: "dora@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: tracking.into(),
    }
}

/// Ends every open digest's window now, as the clock would.
async fn end_windows(app: &TestApp) {
    sqlx::query("UPDATE digests SET window_end = now() WHERE status = 'open'")
        .execute(&app.db)
        .await
        .unwrap();
}

fn digest_mails(app: &TestApp) -> Vec<crate::helpers::Mail> {
    app.mails()
        .into_iter()
        .filter(|m| m.header("Subject").is_some_and(|s| s.contains("update")))
        .collect()
}

#[tokio::test]
async fn shipping_updates_become_one_digest_per_window_listing_each_event_once() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    let saved = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"categories": [{"category": "shipping", "subscribed": true, "digest": "hourly"}]})),
        )
        .await;
    assert_eq!(saved.status(), 200);
    let read: Value = saved.json().await.unwrap();
    assert_eq!(read["categories"][2]["digest"], "hourly");

    let mut orders = Vec::new();
    for tracking in ["PK1", "PK2", "PK3"] {
        let event = shipped(user, tracking);
        orders.push(event.order_id);
        let envelope = Envelope::new("orders", event);
        app.publish_as(&envelope, &envelope.id.to_string()).await;
        if tracking == "PK2" {
            // The same event again under another message id (a producer's republish).
            app.publish_as(&envelope, &format!("again-{}", envelope.id))
                .await;
        }
    }
    app.drained("ORDER", "notifications-order-events").await;
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM deliveries WHERE user_id = $1 AND channel = 'email' ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(statuses, ["digested", "digested", "digested"]);
    assert!(app.mails().is_empty(), "nothing mailed one by one");

    end_windows(&app).await;
    eventually("the digest is sent", || async {
        digest_mails(&app).len() == 1
    })
    .await;
    let digest = &digest_mails(&app)[0];
    assert_eq!(
        digest.header("Subject").as_deref(),
        Some("Tienda Test: 3 updates")
    );
    assert!(digest.header("List-Unsubscribe").is_some());
    let text = digest.part("text/plain");
    for order in &orders {
        assert_eq!(
            text.matches(&format!("http://shop.test/orders/{order}"))
                .count(),
            1,
            "each order listed once: {text}"
        );
    }
    assert!(digest.part("text/html").contains("<li><a href="));

    // A late event for the hour just closed goes to the next window.
    let late = app.publish("orders", shipped(user, "PK4")).await;
    app.drained("ORDER", "notifications-order-events").await;
    let windows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.status, count(i.event_id) FROM digests d JOIN digest_items i ON i.digest_id = d.id
         WHERE d.user_id = $1 GROUP BY d.id, d.status, d.window_start ORDER BY d.window_start",
    )
    .bind(user)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        windows,
        [("enqueued".to_owned(), 3), ("open".to_owned(), 1)]
    );
    end_windows(&app).await;
    eventually("the second digest", || async {
        digest_mails(&app).len() == 2
    })
    .await;
    assert!(
        digest_mails(&app)
            .iter()
            .any(|m| m.header("Subject").as_deref() == Some("Tienda Test: 1 update"))
    );
    // Each event is listed once, and no third digest comes.
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM digest_items WHERE event_id = $1")
        .bind(late)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(again, 1);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(digest_mails(&app).len(), 2, "exactly one digest per window");
}

#[tokio::test]
async fn critical_categories_cannot_be_digested() {
    let app = spawn_app().await;
    let token = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let refused = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"categories": [{"category": "orders", "subscribed": true, "digest": "daily"}]})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "categories[0].digest");
}
