//! An order's timeline, as JSON and as server-sent events.

use std::time::Duration;

use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{Money, inventory::InventoryCommitted, payment::PaymentAuthorized};
use uuid::Uuid;

use crate::{
    fulfilment::{confirmed_order, mug, reserved_order, uuid},
    helpers::{TestApp, spawn_app},
};

/// A server-sent event: `(id, event, data)`.
type Sse = (String, String, Value);

/// An open event stream and what has arrived of it.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, id: Uuid, token: &str, last: Option<&str>) -> Self {
        let mut request = app
            .http
            .get(format!("{}/v1/orders/{id}/timeline", app.base))
            .bearer_auth(token)
            .header("Accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` when the server ended the
    /// stream. Waits at most 20 s.
    async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (String::new(), String::new(), None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = Some(serde_json::from_str(v.trim()).unwrap());
                        }
                    }
                    if let Some(data) = data {
                        return Some((id, event, data));
                    }
                    continue;
                }
                match self.response.chunk().await.unwrap() {
                    Some(chunk) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                    None => return None,
                }
            }
        })
        .await
        .expect("an event within 20 s")
    }
}

async fn timeline(app: &TestApp, id: Uuid, token: &str) -> (StatusCode, Value) {
    let response = app
        .send(
            Method::GET,
            &format!("/v1/orders/{id}/timeline"),
            Some(token),
            None,
            None,
        )
        .await;
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_timeline_streams_each_entry_as_it_happens_and_resumes_from_last_event_id() {
    let app = spawn_app().await;
    let id = reserved_order(&app).await;
    let mut stream = Stream::open(&app, id, &app.customer, None).await;
    let (seq, event, placed) = stream.next().await.unwrap();
    assert_eq!((seq.as_str(), event.as_str()), ("1", "placed"));
    assert_eq!(placed["status"], "pending");
    assert_eq!(
        placed["data"]["total"],
        json!({"amount": 1250, "currency": "EUR"})
    );
    assert!(placed["data"].get("payment_method").is_none(), "{placed}");
    let (seq, event, reserved) = stream.next().await.unwrap();
    assert_eq!((seq.as_str(), event.as_str()), ("2", "stock_reserved"));
    assert_eq!(reserved["status"], "reserved");
    assert!(reserved["data"].get("reservation_id").is_none());

    // The payment is authorized and the stock committed while the customer watches.
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    let authorized = PaymentAuthorized {
        payment_id: uuid(&authorize.data["payment_id"]),
        order_id: id,
        amount: Money {
            amount: 1250,
            currency: "EUR".parse().unwrap(),
        },
        provider: "sandbox".into(),
    };
    app.reply("payments", authorized, &authorize).await;
    let (seq, event, entry) = stream.next().await.unwrap();
    assert_eq!((seq.as_str(), event.as_str()), ("3", "payment_authorized"));
    assert_eq!(entry["status"], "authorized");
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    let committed = InventoryCommitted {
        reservation_id: uuid(&commit.data["reservation_id"]),
        items: mug(),
    };
    app.reply("products", committed, &commit).await;
    let (seq, event, _) = stream.next().await.unwrap();
    assert_eq!((seq.as_str(), event.as_str()), ("4", "confirmed"));
    drop(stream);

    // Reconnecting after entry 2 gets 3 and 4 again, nothing before.
    let mut resumed = Stream::open(&app, id, &app.customer, Some("2")).await;
    let (seq, _, _) = resumed.next().await.unwrap();
    assert_eq!(seq, "3");
    let (seq, event, confirmed) = resumed.next().await.unwrap();
    assert_eq!((seq.as_str(), event.as_str()), ("4", "confirmed"));
    assert_eq!(confirmed["title"], "Order confirmed");
    assert_eq!(confirmed["status"], "confirmed");
}

#[tokio::test]
async fn the_timeline_as_json_is_the_owners_or_an_admins_and_shows_the_shipment() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    let shipped = app
        .send(
            Method::POST,
            &format!("/v1/orders/{id}/ship"),
            Some(&app.admin),
            None,
            Some(&json!({"carrier": "SEUR", "tracking_number": "ES-123456789"})),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK);

    let (status, mine) = timeline(&app, id, &app.customer).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed",
            "shipped"
        ]
    );
    let last = &mine["items"][4];
    assert_eq!(last["status"], "shipped");
    assert_eq!(
        last["data"],
        json!({"carrier": "SEUR", "tracking_number": "ES-123456789"})
    );
    let (status, theirs) = timeline(&app, id, &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["items"], mine["items"]);

    // Another customer's order does not exist for them; neither does a malformed id.
    let (status, _) = timeline(&app, id, &app.other_customer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = timeline(&app, Uuid::now_v7(), &app.customer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .send(
            Method::GET,
            "/v1/orders/%00/timeline",
            Some(&app.customer),
            None,
            None,
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "a NUL in the URL is refused before any handler"
    );
    let response = app
        .http
        .get(format!("{}/v1/orders/{id}/timeline", app.base))
        .bearer_auth(&app.customer)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app
        .send(
            Method::GET,
            &format!("/v1/orders/{id}/timeline"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stopping_orders_ends_open_streams_instead_of_hanging_the_drain() {
    let mut app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let mut stream = Stream::open(&app, id, &app.customer, None).await;
    assert_eq!(stream.next().await.unwrap().1, "placed");
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("orders stops while a timeline is open");
    assert!(stream.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn one_customer_cannot_hold_more_than_a_few_streams() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let mut open = Vec::new();
    for _ in 0..tienda_orders::timeline::MAX_STREAMS_PER_CALLER {
        open.push(Stream::open(&app, id, &app.customer, None).await);
    }
    let refused = app
        .http
        .get(format!("{}/v1/orders/{id}/timeline", app.base))
        .bearer_auth(&app.customer)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // An admin still follows it; once a stream closes, the customer may open another.
    Stream::open(&app, id, &app.admin, None).await;
    drop(open.pop());
    let mut again = None;
    for _ in 0..100 {
        let response = app
            .http
            .get(format!("{}/v1/orders/{id}/timeline", app.base))
            .bearer_auth(&app.customer)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            again = Some(response);
            break;
        }
        // The server notices the closed connection on its next write or wake-up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the closed stream's slot came back");
}
