use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Component::{Auth, Products};
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
    assert_eq!(status, 201, "{me}");
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
    shop.stop().await;
}

#[tokio::test]
async fn a_service_killed_mid_journey_loses_nothing_it_acknowledged_and_a_second_up_keeps_the_data()
{
    let mut shop = Shop::start().await;
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Enamel Mug", "status": "active",
                   "variants": [{"sku": "MUG-E", "price": {"amount": 1500, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());

    // SIGKILL right after the acknowledgement; the supervisor brings it back.
    let products = shop.system.process(Products).unwrap().clone();
    let before = products.pid();
    products.kill();
    let mut back = false;
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if products.pid() != 0 && products.pid() != before {
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
    let (_, read) = shop.get(shop.url(Products, &path), None).await;
    assert_eq!(
        read["name"], "Enamel Mug",
        "the acknowledged product survived the crash"
    );

    // The event it owed went out too (the outbox survived the crash).
    let client = async_nats::connect(&shop.system.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("PRODUCT").await.unwrap();
    let mut published = 0;
    for _ in 0..100 {
        published = stream.info().await.unwrap().state.messages;
        if published >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(published, 1, "product.created was published once");

    // A second `tienda up` on the same data directory.
    shop.restart().await;
    let (status, read) = shop.get(shop.url(Products, &path), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["name"], "Enamel Mug");
    let admin_again = shop.admin_token().await;
    assert!(
        !admin_again.is_empty(),
        "the admin and the signing keys are kept"
    );
    shop.stop().await;
}
