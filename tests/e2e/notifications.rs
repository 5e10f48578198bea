//! Messages people get, end to end through the gateway and a real SMTP server (aiosmtpd):
//! the welcome on registering, a password reset whose link works, the order's confirmation,
//! and quiet hours that hold a shipping notice and a marketing campaign but never a security
//! one; and SIGKILLs of notifications while events and a campaign are in flight, with every
//! event delivered again, sending nobody anything twice.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_crds::Component::{Auth, Notifications, Orders, Products};
use tienda_e2e::Shop;
use tienda_kit::testing::{MailServer, mail_header, mail_part};
use uuid::Uuid;

/// The Shop file with the notifications component's mail going to `smtp`.
fn with_smtp(dir: &std::path::Path, smtp: &str) {
    with_smtp_and(dir, smtp, "");
}

/// The same with more of notifications' environment (`- {name: X, value: "y"}` lines).
fn with_smtp_and(dir: &std::path::Path, smtp: &str, more_env: &str) {
    let shop = std::fs::read_to_string(dir.join("shop.yaml")).unwrap();
    let shop = format!(
        "{shop}  components:
    - name: gateway
    - name: auth
    - name: products
    - name: orders
    - name: payments
    - name: notifications
      env:
        - {{name: TIENDA_SMTP_URL, value: \"{smtp}\"}}
{more_env}"
    );
    std::fs::write(dir.join("shop.yaml"), shop).unwrap();
}

/// Waits for a message to `to` whose subject contains `subject`; the raw message.
fn mail_to(server: &MailServer, to: &str, subject: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = server.messages().into_iter().find(|m| {
            mail_header(m, "To").is_some_and(|t| t.contains(to))
                && mail_header(m, "Subject").is_some_and(|s| s.contains(subject))
        }) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {to} about {subject:?}; got {:?}\n{}",
            server
                .messages()
                .iter()
                .map(|m| mail_header(m, "Subject"))
                .collect::<Vec<_>>(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The reset token in a password reset message's text.
fn reset_token(raw: &str) -> String {
    let text = mail_part(raw, "text/plain");
    let at = text.find("token=").expect("a reset link") + "token=".len();
    text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

#[tokio::test]
async fn people_get_their_welcome_reset_and_order_mail_and_quiet_hours_hold_only_the_optional() {
    let smtp = MailServer::start();
    let url = smtp.url();
    let shop = Shop::start_prepared(|dir| with_smtp(dir, &url), |_| {}).await;
    let email = format!("nia-{}@e2e.test", Uuid::now_v7().simple());

    // Register: the welcome arrives.
    let token = shop.customer(&email).await;
    let welcome = mail_to(&smtp, &email, "Welcome to");
    assert!(
        mail_header(&welcome, "List-Unsubscribe").is_some(),
        "optional mail"
    );

    // The address is verified by the link mailed to it (sealed on the bus by auth, opened by
    // notifications with the keys `tienda up` gave both).
    let confirm = mail_to(&smtp, &email, "Confirm your address");
    let (status, body) = shop
        .post(
            shop.url(Auth, "/v1/auth/email/verify"),
            None,
            json!({"token": reset_token(&confirm)}),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    // Forgot the password: the link in the mail sets a new one.
    let (status, _) = shop
        .post(
            shop.url(Auth, "/v1/auth/password/reset"),
            None,
            json!({"email": email}),
        )
        .await;
    assert_eq!(status, 202);
    let reset = mail_to(&smtp, &email, "Reset your");
    assert!(
        mail_header(&reset, "List-Unsubscribe").is_none(),
        "critical mail"
    );
    let (status, body) = shop
        .post(
            shop.url(Auth, "/v1/auth/password/reset/confirm"),
            None,
            json!({"token": reset_token(&reset), "password": "a brand new passphrase 43"}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = shop
        .post(
            shop.url(Auth, "/v1/auth/login"),
            None,
            json!({"email": email, "password": "a brand new passphrase 43"}),
        )
        .await;
    assert_eq!(status, 200, "the new password signs in");
    let token = {
        let (_, pair) = shop
            .post(
                shop.url(Auth, "/v1/auth/login"),
                None,
                json!({"email": email, "password": "a brand new passphrase 43"}),
            )
            .await;
        let _ = token;
        pair["access_token"].as_str().unwrap().to_owned()
    };

    // Check out: the confirmation arrives.
    let admin = shop.admin_token().await;
    let sku = format!("MAIL-{}", Uuid::now_v7().simple());
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Jarra", "description": "Jug.", "status": "active",
                   "variants": [{"sku": sku, "price": {"amount": 1500, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let stocked = shop
        .http
        .put(shop.url(Products, &format!("/v1/inventory/{sku}")))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 5, "reason": "delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 200);
    let placed: Value = shop
        .http
        .post(shop.url(Orders, "/v1/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "email": email,
            "shipping_address": {"name": "Nia", "line1": "Calle Mayor 1", "city": "Madrid",
                                 "postal_code": "28013", "country": "ES"},
            "payment_method": "pm_card_visa",
            "items": [{"product_id": product["id"], "sku": sku, "quantity": 1}],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = placed["id"].as_str().expect("an order").to_owned();
    mail_to(&smtp, &email, &format!("Order {order_id} confirmed"));

    // Quiet hours now: the shipping notice waits, a security message does not.
    let now = chrono::Utc::now();
    let window = json!({
        "timezone": "UTC",
        "quiet_hours": {
            "start": (now - chrono::Duration::hours(1)).format("%H:%M").to_string(),
            "end": (now + chrono::Duration::hours(1)).format("%H:%M").to_string(),
        }
    });
    let saved = shop
        .http
        .put(shop.url(Notifications, "/v1/notifications/preferences"))
        .bearer_auth(&token)
        .json(&window)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let (status, shipped) = shop
        .post(
            shop.url(Orders, &format!("/v1/orders/{order_id}/ship")),
            Some(&admin),
            json!({"carrier": "Correos", "tracking_number": "PK-E2E"}),
        )
        .await;
    assert_eq!(status, 200, "{shipped}");
    let (status, _) = shop
        .post(
            shop.url(Auth, "/v1/auth/password/reset"),
            None,
            json!({"email": email}),
        )
        .await;
    assert_eq!(status, 202);
    let resets = |server: &MailServer| {
        server
            .messages()
            .iter()
            .filter(|m| mail_header(m, "Subject").is_some_and(|s| s.contains("Reset your")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while resets(&smtp) < 2 {
        assert!(Instant::now() < deadline, "the second reset never came");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The shipping notice is in the customer's history, held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, history) = shop
            .get(shop.url(Notifications, "/v1/notifications"), Some(&token))
            .await;
        assert_eq!(status, 200, "{history}");
        let shipping = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "order_shipped")
            .cloned();
        if let Some(shipping) = shipping {
            assert_eq!(
                shipping["status"], "queued",
                "held for quiet hours: {shipping}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shipping notice recorded: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| mail_header(m, "Subject").is_some_and(|s| s.contains("on its way"))),
        "not sent during quiet hours"
    );

    // A marketing campaign now: another customer (no quiet hours) gets it, this one's waits.
    let other = format!("ona-{}@e2e.test", Uuid::now_v7().simple());
    shop.customer(&other).await;
    mail_to(&smtp, &other, "Welcome to");
    let (status, campaign) = shop
        .post(
            shop.url(Notifications, "/v1/notifications/campaigns"),
            Some(&admin),
            json!({"name": "Quiet sale", "channel": "email", "rate_per_second": 100,
                   "content": {"en": {"subject": "Quiet sale", "body_text": "20% off.\n",
                                      "body_html": "<p>20% off.</p>\n"}}}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    mail_to(&smtp, &other, "Quiet sale");
    let (_, history) = shop
        .get(shop.url(Notifications, "/v1/notifications"), Some(&token))
        .await;
    let offer = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "campaign")
        .cloned()
        .unwrap_or_else(|| panic!("the campaign reached the customer's history: {history}"));
    assert_eq!(
        offer["status"], "queued",
        "marketing waits for quiet hours: {offer}"
    );
    assert!(
        !smtp.messages().iter().any(|m| {
            mail_header(m, "To").is_some_and(|t| t.contains(&email))
                && mail_header(m, "Subject").is_some_and(|s| s.contains("Quiet sale"))
        }),
        "not sent to the customer during quiet hours"
    );
    shop.stop().await;
}

/// The distinct messages (by `Message-ID`) and the transmissions of those to `to` whose
/// subject contains `subject`.
fn sent_to(server: &MailServer, to: &str, subject: &str) -> (usize, usize) {
    let matching: Vec<String> = server
        .messages()
        .into_iter()
        .filter(|m| {
            mail_header(m, "To").is_some_and(|t| t.contains(to))
                && mail_header(m, "Subject").is_some_and(|s| s.contains(subject))
        })
        .filter_map(|m| mail_header(&m, "Message-ID"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = matching.iter().collect();
    (distinct.len(), matching.len())
}

/// SIGKILLs `victim` once it runs (the supervisor may still be bringing it back from the
/// last crash).
async fn crash(victim: &tienda_local::supervisor::Supervised) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while victim.pid() == 0 {
        assert!(
            Instant::now() < deadline,
            "the supervisor did not restart it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.kill();
}

/// Waits until notifications' consumer of `stream` has answered everything.
async fn drained(js: &async_nats::jetstream::Context, stream: &str, durable: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream(durable, stream).await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{durable} did not drain: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn killing_notifications_mid_batch_and_redelivering_every_event_sends_no_duplicate() {
    const PEOPLE: usize = 24;
    let smtp = MailServer::start();
    let url = smtp.url();
    // A message a crashed process was sending is taken over after the claim's lease: short
    // here, so the test does not wait out the default minute.
    let shop = Shop::start_prepared(
        |dir| {
            with_smtp_and(
                dir,
                &url,
                "        - {name: NOTIFICATIONS_CLAIM_LEASE_SECONDS, value: \"5\"}\n",
            )
        },
        |_| {},
    )
    .await;
    let notifications = shop.system.process(Notifications).expect("running").clone();
    let run = Uuid::now_v7().simple().to_string();
    let email = |i: usize| format!("crash-{i}-{run}@e2e.test");

    // People register while notifications is SIGKILLed now and then.
    let chaos = {
        let victim = notifications.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                crash(&victim).await;
            }
        })
    };
    for i in 0..PEOPLE {
        shop.customer(&email(i)).await;
    }
    chaos.await.unwrap();
    // A campaign goes to the people notifications knows when it sends: wait until it has
    // handled every registration (after the crashes it may still be catching up), or one
    // registered just before the campaign is rightly not in it and the count below is off.
    let js = async_nats::jetstream::new(shop.system.nats_client().await.unwrap());
    drained(&js, "USER", "notifications-user-events").await;

    // A campaign to everyone, in batches of four a second, killed mid-batch twice (once the
    // supervisor has notifications back from the last crash).
    let admin = shop.admin_token().await;
    let up = Instant::now() + Duration::from_secs(30);
    while shop
        .get(
            shop.url(Notifications, "/v1/notifications/campaigns"),
            Some(&admin),
        )
        .await
        .0
        != 200
    {
        assert!(Instant::now() < up, "notifications did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, campaign) = shop
        .post(
            shop.url(Notifications, "/v1/notifications/campaigns"),
            Some(&admin),
            json!({"name": "Crash sale", "channel": "email", "rate_per_second": 4,
                   "content": {"en": {"subject": "Crash sale for {{ name }}",
                                      "body_text": "20% off.\n", "body_html": "<p>20% off.</p>\n"}}}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let campaign_url = shop.url(
        Notifications,
        &format!(
            "/v1/notifications/campaigns/{}",
            campaign["id"].as_str().unwrap()
        ),
    );
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        crash(&notifications).await;
    }

    // Every user event published again (as a producer republishing after its own crash
    // would, under new message ids): the same events, again.
    let mut stream = js.get_stream("USER").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("republished-{seq}-{run}").as_str());
        js.publish_with_headers(message.subject, headers, message.payload)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    drained(&js, "USER", "notifications-user-events").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, progress) = shop.get(campaign_url.clone(), Some(&admin)).await;
        if progress["status"] == "completed" && progress["deliveries"].get("queued").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not finish: {progress}\n{}",
            shop.log(Notifications)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing left to send: what a crash left claimed has been taken over.
    let queued_url = shop.url(Notifications, "/v1/notifications/deliveries?status=queued");
    loop {
        let (_, queued) = shop.get(queued_url.clone(), Some(&admin)).await;
        if queued["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still queued: {queued}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert!(notifications.restarts() >= 5, "five crashes, five restarts");
    let mut resent = 0;
    for i in 0..PEOPLE {
        let (welcomes, welcome_sends) = sent_to(&smtp, &email(i), "Welcome to");
        let (offers, offer_sends) = sent_to(&smtp, &email(i), "Crash sale");
        assert_eq!(
            (welcomes, offers),
            (1, 1),
            "{} got {welcomes} welcome and {offers} campaign messages",
            email(i)
        );
        resent += welcome_sends - welcomes + offer_sends - offers;
    }
    // A crash between the server's acceptance and the worker's record sends that message
    // again under the same Message-ID (mail clients show it once); at most the messages in
    // flight at each crash.
    assert!(resent <= 5 * 8, "{resent} transmissions again");
    eprintln!(
        "{PEOPLE} people, 5 crashes, every user event delivered twice: {resent} re-sent transmissions of the same message"
    );
}
