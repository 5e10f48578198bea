use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_crds::Component::{Auth, Orders, Products};
use tienda_e2e::Shop;
use uuid::Uuid;

fn totp(secret: &str) -> String {
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
        .generate_current()
        .to_string()
}

#[tokio::test]
async fn a_customer_signs_up_secures_the_account_and_shops_while_an_admin_stocks_the_catalog() {
    let shop = Shop::start().await;
    assert!(
        shop.system
            .urls
            .contains_key(&tienda_crds::Component::Gateway),
        "the journey goes through the gateway"
    );

    // The customer: register, log in, turn on TOTP, log in with it, refresh.
    let email = "ada@e2e.test";
    let password = "correct horse battery staple 42";
    let (status, me) = shop
        .post(
            shop.url(Auth, "/v1/auth/register"),
            None,
            json!({"email": email, "password": password, "name": "Ada"}),
        )
        .await;
    assert_eq!(status, 202, "{me}");
    let (_, pair) = shop
        .post(
            shop.url(Auth, "/v1/auth/login"),
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let (status, enrolment) = shop
        .post(
            shop.url(Auth, "/v1/auth/mfa/totp"),
            Some(&token),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let (status, codes) = shop
        .post(
            shop.url(Auth, "/v1/auth/mfa/totp/verify"),
            Some(&token),
            json!({"code": totp(&secret)}),
        )
        .await;
    assert_eq!(status, 200, "{codes}");
    let (_, challenge) = shop
        .post(
            shop.url(Auth, "/v1/auth/login"),
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(challenge["mfa_required"], true);
    let recovery = codes["recovery_codes"][0].as_str().unwrap();
    let (status, pair) = shop
        .post(
            shop.url(Auth, "/v1/auth/login/mfa"),
            None,
            json!({"mfa_token": challenge["mfa_token"], "code": recovery}),
        )
        .await;
    assert_eq!(status, 200, "{pair}");
    let (status, refreshed) = shop
        .post(
            shop.url(Auth, "/v1/auth/refresh"),
            None,
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let customer = refreshed["access_token"].as_str().unwrap().to_owned();

    // The admin (from configuration) creates a product and stocks it; products checks the
    // admin's token against auth's JWKS over HTTP.
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Trail Running Shoe", "description": "Light, grippy, waterproof.",
                   "status": "active", "variants": [
                       {"sku": "TRAIL-42", "attributes": {"size": "42"}, "price": {"amount": 11900, "currency": "EUR"}},
                       {"sku": "TRAIL-43", "attributes": {"size": "43"}, "price": {"amount": 11900, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let refused = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&customer),
            json!({"name": "x", "variants": []}),
        )
        .await;
    assert_eq!(refused.0, 403, "a customer is not an admin");
    let put = shop
        .http
        .put(shop.url(Products, "/v1/inventory/TRAIL-42"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 5, "reason": "delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Browsing and searching, with a typo.
    let (status, page) = shop
        .get(
            shop.url(Products, "/v1/products?q=runing%20shoe"),
            Some(&customer),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["id"], product["id"], "{page}");
    let (_, one) = shop
        .get(
            shop.url(
                Products,
                &format!("/v1/products/{}", product["id"].as_str().unwrap()),
            ),
            None,
        )
        .await;
    assert_eq!(one["name"], "Trail Running Shoe");

    // A reservation, held then sold.
    let reservation = Uuid::now_v7();
    let (status, held) = shop
        .post(
            shop.url(Products, "/v1/inventory/reservations"),
            Some(&admin),
            json!({"reservation_id": reservation, "items": [{"sku": "TRAIL-42", "quantity": 2}], "ttl_seconds": 300}),
        )
        .await;
    assert_eq!(status, 201, "{held}");
    let (status, _) = shop
        .post(
            shop.url(
                Products,
                &format!("/v1/inventory/reservations/{reservation}/commit"),
            ),
            Some(&admin),
            json!(null),
        )
        .await;
    assert_eq!(status, 200);
    let (_, stock) = shop
        .get(shop.url(Products, "/v1/inventory/TRAIL-42"), None)
        .await;
    assert_eq!(
        stock,
        json!({"sku": "TRAIL-42", "on_hand": 3, "reserved": 0, "available": 3})
    );

    // Signing out ends the access token everywhere, not only at auth: orders hears of it
    // (`user.sessions_revoked`) and refuses the token within moments, not minutes later.
    let (status, _) = shop
        .get(shop.url(Orders, "/v1/orders"), Some(&customer))
        .await;
    assert_eq!(status, 200);
    let (status, body) = shop
        .post(
            shop.url(Auth, "/v1/auth/logout"),
            Some(&customer),
            json!(null),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = shop
            .get(shop.url(Orders, "/v1/orders"), Some(&customer))
            .await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "orders still takes a signed-out token; its log:\n{}",
            shop.log(Orders)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_service_killed_mid_journey_loses_nothing_it_acknowledged_and_a_second_up_keeps_the_data()
{
    use std::{collections::BTreeSet, time::Duration};

    let mut shop = Shop::start().await;
    let admin = shop.admin_token().await;

    // Products are created one after another, 15 ms apart. Once three are acknowledged,
    // products is SIGKILLed with the rest in flight, and ten more are sent while it is down
    // (the supervisor waits 0.9 s before a restart): some creations are acknowledged before
    // the kill, some are cut off, however slow the machine is.
    let products = shop.system.process(Products).unwrap().clone();
    let before = products.pid();
    let create = |i: usize| {
        let (http, url, token) = (
            shop.http.clone(),
            shop.url(Products, "/v1/products"),
            admin.clone(),
        );
        async move {
            let body = json!({"name": format!("Enamel Mug {i}"), "status": "active",
                "variants": [{"sku": format!("MUG-E{i}"), "price": {"amount": 1500, "currency": "EUR"}}]});
            let answer = http.post(url).bearer_auth(token).json(&body).send().await;
            match answer {
                Ok(r) if r.status() == 201 => {
                    let product: Value = r.json().await.ok()?;
                    Some(product["id"].as_str()?.to_owned())
                }
                _ => None,
            }
        }
    };
    let mut creations = tokio::task::JoinSet::new();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut spawned = 0;
    let mut killed_after: Option<usize> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(15));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three creations were acknowledged within 60 s ({} of {spawned}):\n{}",
            acknowledged.len(),
            shop.log(Products)
        );
        tokio::select! {
            _ = tick.tick() => {
                let more = match killed_after {
                    None => spawned < 30,
                    Some(at) => spawned < at + 10,
                };
                if more {
                    creations.spawn(create(spawned));
                    spawned += 1;
                } else if killed_after.is_some() {
                    break;
                }
            }
            Some(created) = creations.join_next(), if !creations.is_empty() => {
                match created.unwrap() {
                    Some(id) => acknowledged.push(id),
                    None => refused += 1,
                }
                if killed_after.is_none() && acknowledged.len() >= 3 {
                    products.kill();
                    killed_after = Some(spawned);
                }
            }
        }
    }
    while let Some(created) = creations.join_next().await {
        match created.unwrap() {
            Some(id) => acknowledged.push(id),
            None => refused += 1,
        }
    }
    assert!(
        !acknowledged.is_empty() && refused > 0,
        "the kill landed in the middle of the creations ({} acknowledged, {refused} cut off)",
        acknowledged.len()
    );

    // The supervisor brings it back.
    let mut back = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if products.pid() != 0 && products.pid() != before {
            let path = format!("/v1/products/{}", acknowledged[0]);
            let answer = shop.http.get(shop.url(Products, &path)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                back = true;
                break;
            }
        }
    }
    assert!(
        back,
        "products came back after SIGKILL:\n{}",
        shop.log(Products)
    );
    assert_eq!(products.restarts(), 1);
    // One list read (the shipped browse limit allows a burst of 20 GETs per client).
    let (status, page) = shop
        .get(shop.url(Products, "/v1/products?limit=100"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    let stored: BTreeSet<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged product {id} survived the crash"
        );
    }

    // The events it owed went out too (the outbox survived the crash): every acknowledged
    // product's `product.created` arrives, each product's once, and every event names a
    // product that exists (a creation cut off after its commit is there, with its event).
    let client = shop.system.nats_client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let created_events = || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("PRODUCT").await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let mut ids = Vec::new();
            for seq in 1..=last {
                if let Ok(message) = stream.get_raw_message(seq).await {
                    let event: Value = serde_json::from_slice(&message.payload).unwrap();
                    if event["type"] == "product.created" {
                        ids.push(event["data"]["product_id"].as_str().unwrap().to_owned());
                    }
                }
            }
            ids
        }
    };
    let wanted: BTreeSet<String> = acknowledged.iter().cloned().collect();
    let mut events = Vec::new();
    for _ in 0..200 {
        events = created_events().await;
        if wanted.is_subset(&events.iter().cloned().collect()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wanted.is_subset(&events.iter().cloned().collect()),
        "every acknowledged product was announced: {} of {} events",
        events.len(),
        wanted.len()
    );
    // Duplicates would come later than the first arrival (a relay republishing what it had
    // published before the kill): look again after the restarted relay has had its rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = created_events().await;
    let distinct: BTreeSet<&String> = events.iter().collect();
    assert_eq!(distinct.len(), events.len(), "no product announced twice");
    for id in &distinct {
        assert!(stored.contains(*id), "announced product {id} exists");
    }

    // A second `tienda up` on the same data directory.
    shop.restart().await;
    let path = format!("/v1/products/{}", acknowledged[0]);
    let (status, read) = shop.get(shop.url(Products, &path), None).await;
    assert_eq!(status, 200);
    assert!(read["name"].as_str().unwrap().starts_with("Enamel Mug"));
    // The signing keys are kept: the token issued before the restart still works for an admin
    // write (a fresh login would pass with new keys too, so it proves nothing).
    let (status, body) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "After Restart", "status": "active",
                   "variants": [{"sku": "MUG-AFTER", "price": {"amount": 900, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(
        status, 201,
        "a token issued before the restart is still accepted: {body}"
    );
    shop.stop().await;
}
