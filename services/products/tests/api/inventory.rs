use std::time::Duration;

use futures::StreamExt;
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{
    Envelope,
    inventory::{CommitReservation, Line, ReleaseReservation, ReserveInventory, RestockInventory},
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, product, spawn_app};

async fn reserve(app: &TestApp, id: Uuid, items: Value, ttl: i64) -> reqwest::Response {
    app.send(
        Method::POST,
        "/v1/inventory/reservations",
        Some(&app.admin),
        Some(json!({"reservation_id": id, "items": items, "ttl_seconds": ttl})),
    )
    .await
}

async fn post(app: &TestApp, path: &str) -> reqwest::Response {
    app.send(Method::POST, path, Some(&app.admin), None).await
}

async fn next_answer(answers: &mut async_nats::Subscriber) -> (String, Envelope<Value>) {
    let message = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let m = answers.next().await.unwrap();
            if m.subject.as_str() != "tienda.inventory.adjusted" {
                return m;
            }
        }
    })
    .await
    .expect("an answer within 15 s");
    let envelope: Envelope<Value> = serde_json::from_slice(&message.payload).unwrap();
    (message.subject.to_string(), envelope)
}

async fn subjects(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT subject FROM tienda_outbox ORDER BY seq")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn adjustments_are_ledgered_and_cannot_undercut_reservations() {
    let app = spawn_app().await;
    app.create_product(product("Pen", &[("PEN-1", 150)])).await;
    app.stock("PEN-1", 12).await;
    let reserved = reserve(
        &app,
        Uuid::now_v7(),
        json!([{"sku": "PEN-1", "quantity": 10}]),
        60,
    )
    .await;
    assert_eq!(reserved.status(), StatusCode::CREATED);
    assert_eq!(
        app.get_json("/v1/inventory/PEN-1").await,
        json!({"sku": "PEN-1", "on_hand": 12, "reserved": 10, "available": 2})
    );
    let too_low = app
        .send(
            Method::PUT,
            "/v1/inventory/PEN-1",
            Some(&app.admin),
            Some(json!({"on_hand": 9, "reason": "recount"})),
        )
        .await;
    assert_eq!(too_low.status(), StatusCode::CONFLICT);
    let no_reason = app
        .send(
            Method::PUT,
            "/v1/inventory/PEN-1",
            Some(&app.admin),
            Some(json!({"on_hand": 20, "reason": " "})),
        )
        .await;
    assert_eq!(no_reason.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = app
        .send(
            Method::PUT,
            "/v1/inventory/NOPE",
            Some(&app.admin),
            Some(json!({"on_hand": 1, "reason": "x"})),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let by_customer = app
        .send(
            Method::PUT,
            "/v1/inventory/PEN-1",
            Some(&app.customer),
            Some(json!({"on_hand": 100, "reason": "x"})),
        )
        .await;
    assert_eq!(by_customer.status(), StatusCode::FORBIDDEN);

    let ledger: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT delta, on_hand_after, reason FROM stock_ledger ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(ledger, [(12, 12, "initial count".to_owned())]);
    // The low-stock event is written in the reservation's transaction, before its own.
    assert_eq!(
        subjects(&app).await,
        [
            "tienda.product.created",
            "tienda.inventory.adjusted",
            "tienda.inventory.low_stock",
            "tienda.inventory.reserved",
        ]
    );
}

#[tokio::test]
async fn a_reservation_is_held_then_sold_and_both_steps_are_idempotent() {
    let app = spawn_app().await;
    app.create_product(product("Lamp", &[("LAMP-A", 3000), ("LAMP-B", 3500)]))
        .await;
    app.stock("LAMP-A", 10).await;
    app.stock("LAMP-B", 10).await;
    let id = Uuid::now_v7();
    let items = json!([{"sku": "LAMP-B", "quantity": 2}, {"sku": "LAMP-A", "quantity": 3}]);
    let held: Value = reserve(&app, id, items.clone(), 300)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(held["status"], "held");
    assert_eq!(
        held["items"][0],
        json!({"sku": "LAMP-A", "quantity": 3}),
        "sorted by SKU"
    );

    let again = reserve(&app, id, items, 300).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again["expires_at"], held["expires_at"],
        "the same reservation"
    );
    assert_eq!(
        app.get_json("/v1/inventory/LAMP-A").await["reserved"],
        3,
        "not twice"
    );

    let other_items = reserve(&app, id, json!([{"sku": "LAMP-A", "quantity": 1}]), 300).await;
    assert_eq!(other_items.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let path = format!("/v1/inventory/reservations/{id}");
    let sold: Value = post(&app, &format!("{path}/commit"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sold["status"], "committed");
    assert_eq!(
        app.get_json("/v1/inventory/LAMP-A").await,
        json!({"sku": "LAMP-A", "on_hand": 7, "reserved": 0, "available": 7})
    );
    let twice = post(&app, &format!("{path}/commit")).await;
    assert_eq!(twice.status(), StatusCode::OK);
    assert_eq!(
        app.get_json("/v1/inventory/LAMP-B").await["on_hand"],
        8,
        "sold once"
    );
    let release_sold = post(&app, &format!("{path}/release")).await;
    assert_eq!(release_sold.status(), StatusCode::CONFLICT);
    let sales: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stock_ledger WHERE reason = 'sale' AND reservation_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(sales, 2, "one ledger line per SKU sold");
}

#[tokio::test]
async fn released_and_expired_reservations_give_stock_back() {
    let app = spawn_app().await;
    app.create_product(product("Candle", &[("CNDL", 800)]))
        .await;
    app.stock("CNDL", 5).await;

    let released = Uuid::now_v7();
    reserve(&app, released, json!([{"sku": "CNDL", "quantity": 2}]), 300).await;
    let path = format!("/v1/inventory/reservations/{released}/release");
    let r: Value = post(&app, &path).await.json().await.unwrap();
    assert_eq!(r["status"], "released");
    assert_eq!(
        post(&app, &path).await.status(),
        StatusCode::OK,
        "idempotent"
    );
    assert_eq!(app.get_json("/v1/inventory/CNDL").await["available"], 5);

    let expiring = Uuid::now_v7();
    reserve(&app, expiring, json!([{"sku": "CNDL", "quantity": 4}]), 300).await;
    assert_eq!(app.get_json("/v1/inventory/CNDL").await["available"], 1);
    // The TTL passes (set in the past, not slept for: a 1 s TTL could lapse before the check
    // above on a busy machine).
    sqlx::query("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(expiring)
        .execute(&app.db)
        .await
        .unwrap();
    eventually("the sweeper releases the expired reservation", || async {
        app.get_json("/v1/inventory/CNDL").await["available"] == 5
    })
    .await;
    let status = app
        .send(
            Method::GET,
            &format!("/v1/inventory/reservations/{expiring}"),
            Some(&app.admin),
            None,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(status["status"], "expired");
    let late = post(
        &app,
        &format!("/v1/inventory/reservations/{expiring}/commit"),
    )
    .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_short_line_fails_the_whole_reservation() {
    let app = spawn_app().await;
    app.create_product(product("Desk", &[("DESK", 20000), ("CHAIR", 9000)]))
        .await;
    let mut draft = product("Hidden", &[("HIDDEN", 100)]);
    draft["status"] = json!("draft");
    app.create_product(draft).await;
    app.stock("DESK", 5).await;
    app.stock("CHAIR", 1).await;
    app.stock("HIDDEN", 10).await;
    let short = reserve(
        &app,
        Uuid::now_v7(),
        json!([{"sku": "DESK", "quantity": 2}, {"sku": "CHAIR", "quantity": 4},
               {"sku": "HIDDEN", "quantity": 1}, {"sku": "GHOST", "quantity": 1}]),
        60,
    )
    .await;
    assert_eq!(short.status(), StatusCode::CONFLICT);
    let problem: Value = short.json().await.unwrap();
    assert_eq!(
        problem["shortages"],
        json!([
            {"sku": "CHAIR", "requested": 4, "available": 1},
            {"sku": "GHOST", "requested": 1, "available": 0},
            {"sku": "HIDDEN", "requested": 1, "available": 0},
        ])
    );
    assert_eq!(
        app.get_json("/v1/inventory/DESK").await["reserved"],
        0,
        "no partial hold"
    );
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(held, 0);
    let invalid = reserve(
        &app,
        Uuid::now_v7(),
        json!([{"sku": "DESK", "quantity": 0}]),
        0,
    )
    .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = invalid.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["ttl_seconds", "items[0].quantity"]);
}

#[tokio::test]
async fn saga_commands_over_jetstream_are_answered_with_events() {
    let app = spawn_app().await;
    app.create_product(product("Book", &[("BOOK-1", 2500)]))
        .await;
    app.stock("BOOK-1", 3).await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = client.subscribe("tienda.inventory.*").await.unwrap();
    let publish = |subject: &'static str, payload: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let id = Uuid::now_v7();
    let order = Uuid::now_v7();
    let command = Envelope::new(
        "orders",
        ReserveInventory {
            reservation_id: id,
            order_id: Some(order),
            items: vec![Line {
                sku: "BOOK-1".into(),
                quantity: 2,
            }],
            ttl_seconds: 600,
        },
    );
    publish(
        "tienda.inventory.cmd.reserve",
        serde_json::to_vec(&command).unwrap(),
    )
    .await;
    let (subject, event) = next_answer(&mut answers).await;
    assert_eq!(subject, "tienda.inventory.reserved");
    assert_eq!(event.data["reservation_id"], json!(id));
    assert_eq!(event.data["order_id"], json!(order));

    // The saga repeats itself (a new message, same reservation): answered again, held once.
    let repeat = Envelope::new(
        "orders",
        ReserveInventory {
            reservation_id: id,
            order_id: Some(order),
            items: vec![Line {
                sku: "BOOK-1".into(),
                quantity: 2,
            }],
            ttl_seconds: 600,
        },
    );
    publish(
        "tienda.inventory.cmd.reserve",
        serde_json::to_vec(&repeat).unwrap(),
    )
    .await;
    let (subject, event) = next_answer(&mut answers).await;
    assert_eq!(subject, "tienda.inventory.reserved");
    assert_eq!(
        event.causation_id,
        Some(repeat.id),
        "caused by the repeated command"
    );
    assert_eq!(app.get_json("/v1/inventory/BOOK-1").await["reserved"], 2);

    let greedy = Envelope::new(
        "orders",
        ReserveInventory {
            reservation_id: Uuid::now_v7(),
            order_id: None,
            items: vec![Line {
                sku: "BOOK-1".into(),
                quantity: 2,
            }],
            ttl_seconds: 600,
        },
    );
    publish(
        "tienda.inventory.cmd.reserve",
        serde_json::to_vec(&greedy).unwrap(),
    )
    .await;
    let (subject, event) = next_answer(&mut answers).await;
    assert_eq!(subject, "tienda.inventory.reservation_failed");
    assert_eq!(event.data["shortages"][0]["available"], 1);

    let commit = Envelope::new("orders", CommitReservation { reservation_id: id });
    publish(
        "tienda.inventory.cmd.commit",
        serde_json::to_vec(&commit).unwrap(),
    )
    .await;
    let (subject, _) = next_answer(&mut answers).await;
    assert_eq!(subject, "tienda.inventory.committed");
    assert_eq!(
        app.get_json("/v1/inventory/BOOK-1").await,
        json!({"sku": "BOOK-1", "on_hand": 1, "reserved": 0, "available": 1})
    );
}

/// The answer on `answers` caused by `command` (other events, such as the sweeper's, skipped).
async fn answer_to(
    answers: &mut async_nats::Subscriber,
    command: uuid::Uuid,
) -> (String, Envelope<Value>) {
    loop {
        let (subject, event) = next_answer(answers).await;
        if event.causation_id == Some(command) {
            return (subject, event);
        }
    }
}

#[tokio::test]
async fn a_commit_of_an_expired_or_released_reservation_is_answered_released_not_dead_lettered() {
    let app = spawn_app().await;
    app.create_product(product("Lamp", &[("LAMP-1", 4000)]))
        .await;
    app.stock("LAMP-1", 5).await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = client.subscribe("tienda.inventory.*").await.unwrap();
    client.flush().await.unwrap();
    let publish = |subject: &'static str, payload: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let reserve = |id: Uuid| {
        Envelope::new(
            "orders",
            ReserveInventory {
                reservation_id: id,
                order_id: Some(Uuid::now_v7()),
                items: vec![Line {
                    sku: "LAMP-1".into(),
                    quantity: 2,
                }],
                ttl_seconds: 600,
            },
        )
    };
    let expiring = Uuid::now_v7();
    let released = Uuid::now_v7();
    for id in [expiring, released] {
        let command = reserve(id);
        publish(
            "tienda.inventory.cmd.reserve",
            serde_json::to_vec(&command).unwrap(),
        )
        .await;
        loop {
            let (subject, event) = next_answer(&mut answers).await;
            if event.data["reservation_id"] == json!(id) {
                assert_eq!(subject, "tienda.inventory.reserved");
                break;
            }
        }
    }
    // The TTL passes while the order waits for its payment (set in the past, not slept for).
    sqlx::query("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(expiring)
        .execute(&app.db)
        .await
        .unwrap();
    let release = Envelope::new(
        "orders",
        ReleaseReservation {
            reservation_id: released,
        },
    );
    publish(
        "tienda.inventory.cmd.release",
        serde_json::to_vec(&release).unwrap(),
    )
    .await;
    while next_answer(&mut answers).await.1.data["reservation_id"] != json!(released) {}

    for (id, reason) in [(expiring, "expired"), (released, "requested")] {
        let commit = Envelope::new("orders", CommitReservation { reservation_id: id });
        publish(
            "tienda.inventory.cmd.commit",
            serde_json::to_vec(&commit).unwrap(),
        )
        .await;
        let (subject, event) = answer_to(&mut answers, commit.id).await;
        assert_eq!(subject, "tienda.inventory.released", "{id}");
        assert_eq!(event.data["reservation_id"], json!(id));
        assert_eq!(event.data["reason"], reason);
        assert_eq!(event.correlation_id, commit.correlation_id);
    }
    assert_eq!(
        app.get_json("/v1/inventory/LAMP-1").await,
        json!({"sku": "LAMP-1", "on_hand": 5, "reserved": 0, "available": 5}),
        "nothing sold, nothing held"
    );
    let letters: Value = app
        .http
        .get(format!("{}/admin/dead-letters", app.admin_base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(letters["items"], json!([]), "{letters}");
}

#[tokio::test]
async fn a_reservation_posted_twice_with_one_idempotency_key_reserves_once_and_replays() {
    let app = spawn_app().await;
    app.create_product(product("Cup", &[("CUP-1", 300)])).await;
    app.stock("CUP-1", 10).await;
    let body = json!({
        "reservation_id": Uuid::now_v7(),
        "items": [{"sku": "CUP-1", "quantity": 3}],
        "ttl_seconds": 60
    });
    let send = |body: Value| {
        app.http
            .post(app.url("/v1/inventory/reservations"))
            .bearer_auth(&app.admin)
            .header("Idempotency-Key", "reserve-cup-1")
            .json(&body)
            .send()
    };

    let first = send(body.clone()).await.unwrap();
    let retry = send(body.clone()).await.unwrap();
    let other = send(json!({
        "reservation_id": Uuid::now_v7(),
        "items": [{"sku": "CUP-1", "quantity": 3}],
        "ttl_seconds": 60
    }))
    .await
    .unwrap();

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        retry.json::<Value>().await.unwrap()
    );
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = other.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://tienda.dev/problems/idempotency-key-reused"
    );
    assert_eq!(
        app.get_json("/v1/inventory/CUP-1").await,
        json!({"sku": "CUP-1", "on_hand": 10, "reserved": 3, "available": 7})
    );
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reservations, 1);
}

#[tokio::test]
async fn the_openapi_document_describes_the_idempotency_key_on_reservations() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let operation = &doc["paths"]["/v1/inventory/reservations"]["post"];
    let key = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap_or_else(|| panic!("no Idempotency-Key parameter: {operation}"));
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    for status in ["201", "400", "409", "422"] {
        assert!(
            operation["responses"][status].is_object(),
            "{status} missing: {operation}"
        );
    }
    assert!(
        operation["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object(),
        "{operation}"
    );
}

#[tokio::test]
async fn variants_by_sku_answer_only_what_is_for_sale_in_the_order_asked() {
    let app = spawn_app().await;
    app.create_product(product("Cup", &[("CUP-S", 900), ("CUP-L", 1200)]))
        .await;
    app.stock("CUP-L", 7).await;
    let mut draft = product("Secret", &[("SECRET-1", 100)]);
    draft["status"] = json!("draft");
    app.create_product(draft).await;

    let found = app
        .get_json("/v1/products/variants?skus=CUP-L,NOPE-1,SECRET-1,CUP-S,CUP-L")
        .await;
    let items = found["items"].as_array().unwrap();
    let skus: Vec<&str> = items.iter().map(|i| i["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["CUP-L", "CUP-S"], "{found}");
    assert_eq!(items[0]["name"], "Cup");
    assert_eq!(
        items[0]["price"],
        json!({"amount": 1200, "currency": "EUR"})
    );
    assert_eq!(items[0]["available"], 7);
    assert_eq!(items[1]["available"], 0);

    // Held units are not available.
    let held = reserve(
        &app,
        Uuid::now_v7(),
        json!([{"sku": "CUP-L", "quantity": 5}]),
        60,
    )
    .await;
    assert_eq!(held.status(), StatusCode::CREATED);
    let found = app.get_json("/v1/products/variants?skus=CUP-L").await;
    assert_eq!(found["items"][0]["available"], 2);

    for bad in [
        "/v1/products/variants",
        "/v1/products/variants?skus=",
        "/v1/products/variants?skus=A,,B",
        "/v1/products/variants?skus=A&extra=1",
    ] {
        let response = app.send(Method::GET, bad, None, None).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    let response = app
        .send(Method::GET, "/v1/products/variants?skus=A%00B", None, None)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "a NUL in the URL"
    );
    let many: Vec<String> = (0..101).map(|i| format!("S-{i}")).collect();
    let response = app
        .send(
            Method::GET,
            &format!("/v1/products/variants?skus={}", many.join(",")),
            None,
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_restock_puts_units_back_once_however_often_it_is_sent() {
    let app = spawn_app().await;
    app.create_product(product("Lamp", &[("LAMP-1", 4000), ("LAMP-2", 4200)]))
        .await;
    app.stock("LAMP-1", 2).await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = client.subscribe("tienda.inventory.*").await.unwrap();
    let restock_id = Uuid::now_v7();
    let order = Uuid::now_v7();
    let command = || {
        Envelope::new(
            "orders",
            RestockInventory {
                restock_id,
                order_id: Some(order),
                items: vec![
                    Line {
                        sku: "LAMP-1".into(),
                        quantity: 3,
                    },
                    Line {
                        sku: "GONE-9".into(),
                        quantity: 1,
                    },
                ],
                reason: "order cancelled before shipping".into(),
            },
        )
    };
    for attempt in 0..2 {
        let sent = command();
        js.publish(
            "tienda.inventory.cmd.restock",
            serde_json::to_vec(&sent).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let (subject, event) = answer_to(&mut answers, sent.id).await;
        assert_eq!(subject, "tienda.inventory.restocked", "attempt {attempt}");
        assert_eq!(event.data["restock_id"], json!(restock_id));
        assert_eq!(event.data["order_id"], json!(order));
        assert_eq!(
            event.data["items"],
            json!([{"sku": "LAMP-1", "quantity": 3}]),
            "the unknown SKU is left out"
        );
        assert_eq!(
            app.get_json("/v1/inventory/LAMP-1").await["on_hand"],
            5,
            "attempt {attempt}: restocked once"
        );
    }
    let reasons: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, delta FROM stock_ledger WHERE sku = 'LAMP-1' ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        reasons.last().unwrap(),
        &("restock: order cancelled before shipping".to_owned(), 3)
    );
}
