//! Crashes during checkouts: orders, products and payments are SIGKILLed at random points
//! while 100 checkouts go through the gateway, and the supervisor brings each back. Nothing
//! accepted may be lost or done twice: every accepted order ends `confirmed` or `cancelled`,
//! the stock adds up, and money is held only for confirmed orders, once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_crds::Component::{self, Orders, Payments, Products};
use tienda_e2e::Shop;
use uuid::Uuid;

const CHECKOUTS: usize = 100;
const SKUS: [&str; 3] = ["FAULT-A", "FAULT-B", "FAULT-C"];
const STOCK: i64 = 40;
const MOST_KILLS: u32 = 12;

/// A random number below `n`.
fn below(n: u128) -> u128 {
    Uuid::new_v4().as_u128() % n
}

/// Checks out as a client does through crashes: the same `Idempotency-Key` again after a
/// refused connection, a 5xx, a 409 (the key's first request still running) or a 429, until
/// the shop answers 202. Returns the order.
async fn checkout_until_accepted(shop: &Shop, token: &str, body: &Value) -> Value {
    let key = Uuid::now_v7().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let sent = shop
            .http
            .post(shop.url(Orders, "/v1/checkout"))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_secs(20))
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status == 202 {
                return answer;
            }
            assert!(
                status >= 500 || status == 409 || status == 429,
                "checkout refused ({status}): {answer}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "checkout {key} never accepted:\n{}",
            shop.log(Orders)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `url` until it answers 200 (a component may be restarting).
async fn read(shop: &Shop, url: String, token: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut request = shop.http.get(&url).timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await
            && response.status() == 200
        {
            return response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` holds, reading again every 250 ms, at most `within`.
async fn settle<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test]
async fn checkouts_survive_sigkill_of_orders_products_and_payments_nothing_lost_or_doubled() {
    let shop = Shop::start().await;
    let admin = shop.admin_token().await;
    for sku in SKUS {
        let (status, product) = shop
            .post(
                shop.url(Products, "/v1/products"),
                Some(&admin),
                json!({"name": format!("Crash-tested {sku}"), "description": "Sturdy.",
                       "status": "active", "variants": [
                           {"sku": sku, "price": {"amount": 1000, "currency": "EUR"}}]}),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        let stocked = shop
            .http
            .put(shop.url(Products, &format!("/v1/inventory/{sku}")))
            .bearer_auth(&admin)
            .json(&json!({"on_hand": STOCK, "reason": "delivery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stocked.status(), 200);
    }
    // Five checkouts each: payments' fraud rules block a sixth within ten minutes.
    let mut tokens = Vec::new();
    for n in 0..CHECKOUTS / 5 {
        tokens.push(shop.customer(&format!("fault-{n}@e2e.test")).await);
    }

    // Crashes at random points while the checkouts run.
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU32::new(0));
    let victims: Vec<(Component, tienda_local::supervisor::Supervised)> =
        [Orders, Products, Payments]
            .into_iter()
            .map(|c| (c, shop.system.process(c).expect("running").clone()))
            .collect();
    let chaos = {
        let (done, kills) = (done.clone(), kills.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < MOST_KILLS {
                tokio::time::sleep(Duration::from_millis(400 + below(1200) as u64)).await;
                let (_, victim) = &victims[below(3) as usize];
                if victim.pid() != 0 {
                    victim.kill();
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    // 100 checkouts, one started every 100 ms whatever the others do (so the crashes fall among
    // them); one in ten with a card that is declined; more units asked than there are, so some
    // are cancelled for stock.
    let started = tokio::time::Instant::now();
    let orders: Vec<(Value, Value)> = futures::stream::iter(0..CHECKOUTS)
        .map(|i| {
            let shop = &shop;
            let token = tokens[i % tokens.len()].clone();
            async move {
                tokio::time::sleep_until(started + Duration::from_millis(100 * i as u64)).await;
                let card = if i % 10 == 3 {
                    "pm_card_chargeDeclined"
                } else {
                    "pm_card_visa"
                };
                let body = json!({
                    "email": "ada@e2e.test",
                    "shipping_address": {"name": "Ada Lovelace", "line1": "Calle Mayor 1",
                                         "city": "Madrid", "postal_code": "28013",
                                         "country": "ES"},
                    "payment_method": card,
                    "items": [{"sku": SKUS[i % SKUS.len()], "quantity": 1 + i % 2}],
                });
                let order = checkout_until_accepted(shop, &token, &body).await;
                (order, body)
            }
        })
        .buffer_unordered(CHECKOUTS)
        .collect()
        .await;
    done.store(true, Ordering::SeqCst);
    chaos.await.unwrap();
    let kills = kills.load(Ordering::SeqCst);
    assert!(
        kills >= 3,
        "only {kills} crashes happened during the checkouts"
    );
    let accepted: BTreeSet<String> = orders
        .iter()
        .map(|(o, _)| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accepted.len(), CHECKOUTS, "one order per checkout key");

    // Every accepted order ends confirmed or cancelled; the shop holds exactly these orders.
    let last_read: std::cell::RefCell<BTreeMap<String, Value>> = Default::default();
    settle("every order settles", Duration::from_secs(180), || {
        let (shop, admin, accepted, last_read) = (&shop, &admin, &accepted, &last_read);
        async move {
            let mut all = BTreeMap::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/orders?limit=100&cursor={c}"),
                    None => "/v1/orders?limit=100".into(),
                };
                let page = read(shop, shop.url(Orders, &path), Some(admin)).await;
                for order in page["items"].as_array().unwrap() {
                    all.insert(order["id"].as_str().unwrap().to_owned(), order.clone());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            let ids: BTreeSet<String> = all.keys().cloned().collect();
            assert_eq!(&ids, accepted, "orders lost or placed twice");
            let unsettled: Vec<String> = all
                .values()
                .filter(|o| !matches!(o["status"].as_str(), Some("confirmed" | "cancelled")))
                .map(|o| format!("{} {}", o["id"], o["status"]))
                .collect();
            *last_read.borrow_mut() = all;
            if unsettled.is_empty() {
                Ok(())
            } else {
                Err(format!("{} unsettled: {unsettled:?}", unsettled.len()))
            }
        }
    })
    .await;

    let final_orders = last_read.into_inner();

    // Stock conserved: what left the shelf is what confirmed orders bought; nothing is still
    // held once every compensation has landed.
    let mut sold: BTreeMap<&str, i64> = SKUS.iter().map(|s| (*s, 0)).collect();
    for order in final_orders.values().filter(|o| o["status"] == "confirmed") {
        for item in order["items"].as_array().unwrap() {
            *sold.get_mut(item["sku"].as_str().unwrap()).unwrap() +=
                item["quantity"].as_i64().unwrap();
        }
    }
    let confirmed = final_orders
        .values()
        .filter(|o| o["status"] == "confirmed")
        .count();
    assert!(confirmed > 0, "some orders are confirmed");
    assert!(
        confirmed < CHECKOUTS,
        "declined cards and the shortage cancel some"
    );
    for sku in SKUS {
        let expected = json!({"sku": sku, "on_hand": STOCK - sold[sku], "reserved": 0,
                              "available": STOCK - sold[sku]});
        settle(
            &format!("{sku}'s stock adds up"),
            Duration::from_secs(120),
            || {
                let (shop, expected) = (&shop, &expected);
                async move {
                    let stock = read(
                        shop,
                        shop.url(Products, &format!("/v1/inventory/{sku}")),
                        None,
                    )
                    .await;
                    if &stock == expected {
                        Ok(())
                    } else {
                        Err(format!("{stock} is not {expected}"))
                    }
                }
            },
        )
        .await;
    }

    // Money is held only for confirmed orders, once each, for their total.
    settle(
        "payments match the orders",
        Duration::from_secs(120),
        || {
            let (shop, admin, final_orders) = (&shop, &admin, &final_orders);
            async move {
                for (id, order) in final_orders {
                    let page = read(
                        shop,
                        shop.url(Payments, &format!("/v1/payments?order_id={id}")),
                        Some(admin),
                    )
                    .await;
                    let payments = page["items"].as_array().unwrap();
                    let holding: Vec<&Value> = payments
                        .iter()
                        .filter(|p| matches!(p["status"].as_str(), Some("authorized" | "captured")))
                        .collect();
                    let open = payments.iter().any(|p| {
                        matches!(p["status"].as_str(), Some("pending" | "requires_action"))
                    });
                    match order["status"].as_str() {
                        Some("confirmed") => {
                            if holding.len() != 1 || open {
                                return Err(format!("confirmed {id} has payments {payments:?}"));
                            }
                            assert_eq!(holding[0]["amount"], order["totals"]["total"]);
                        }
                        _ => {
                            if !holding.is_empty() || open {
                                return Err(format!("cancelled {id} has payments {payments:?}"));
                            }
                        }
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!(
        "{CHECKOUTS} checkouts through {kills} crashes: {confirmed} confirmed, {} cancelled",
        CHECKOUTS - confirmed
    );
    shop.stop().await;
}
