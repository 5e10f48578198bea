//! The operations console in a real headless browser (Chromium through chromedriver): an
//! admin signs in, sees a dead letter with its reason, replays it — the poison message comes
//! back as a new dead letter, as it must — discards that one and sees it gone; the sagas,
//! streams, circuits and policies are on the same page. The test leaves a screenshot for the
//! README (`$TIENDA_CONSOLE_SCREENSHOT`, default target/console.png).

use std::time::Duration;

use async_nats::HeaderMap;
use tienda_e2e::{Shop, webdriver::Browser};

#[tokio::test]
async fn an_admin_sees_a_dead_letter_in_the_console_replays_and_discards_it() {
    let shop = Shop::start().await;
    let console = shop
        .system
        .console_url
        .clone()
        .expect("tienda up serves the console");
    // Not the public entry: the gateway does not route it.
    let through_gateway = shop
        .http
        .get(shop.url(tienda_crds::Component::Gateway, "/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(through_gateway.status(), 404);
    // Its data needs an admin's token.
    let anonymous = shop
        .http
        .get(console.replace("/console", "/console/api/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let customer = shop.customer("nosy@e2e.test").await;
    let not_admin = shop
        .http
        .get(console.replace("/console", "/console/api/state"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(not_admin.status(), 403);

    // A poison message: a reserve command products cannot read. It is dead-lettered at once.
    let nats = shop.system.nats_client().await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    js.publish_with_headers(
        "tienda.inventory.cmd.reserve",
        headers,
        "{\"not\": \"an envelope\"}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser.go(&console).await;
    let email = browser.wait_for("#email", Duration::from_secs(10)).await;
    browser.type_into(&email, &shop.system.admin.0).await;
    let password = browser.wait_for("#password", Duration::from_secs(1)).await;
    browser.type_into(&password, &shop.system.admin.1).await;
    let submit = browser
        .wait_for("#sign-in button[type=submit]", Duration::from_secs(1))
        .await;
    browser.click(&submit).await;

    let letter = browser
        .wait_for(
            "#dead-letters tr[data-component=products]",
            Duration::from_secs(30),
        )
        .await;
    let text = browser.text(&letter).await;
    assert!(text.contains("products-inventory-commands"), "{text}");
    assert!(text.contains("tienda.inventory.cmd.reserve"), "{text}");
    assert!(
        text.contains("not a Tienda envelope"),
        "the reason is shown: {text}"
    );
    let first = browser.attribute(&letter, "data-sequence").await.unwrap();
    // The rest of the page is live too.
    browser
        .wait_for(
            "#streams tr[data-consumer=products-inventory-commands]",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_for("#components td.ok", Duration::from_secs(10))
        .await;
    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");
    let path = std::env::var("TIENDA_CONSOLE_SCREENSHOT").unwrap_or_else(|_| {
        format!(
            "{}/console.png",
            std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
        )
    });
    std::fs::write(&path, &screenshot).unwrap();

    // Replay: it leaves the dead letters, goes back to products — and, still unreadable,
    // is dead-lettered again under a new sequence.
    let replay = browser
        .wait_for(
            &format!("#dead-letters tr[data-sequence=\"{first}\"] button.replay"),
            Duration::from_secs(1),
        )
        .await;
    browser.click(&replay).await;
    browser
        .wait_gone(
            &format!("#dead-letters tr[data-sequence=\"{first}\"]"),
            Duration::from_secs(15),
        )
        .await;
    let again = browser
        .wait_for(
            "#dead-letters tr[data-component=products]",
            Duration::from_secs(30),
        )
        .await;
    let second = browser.attribute(&again, "data-sequence").await.unwrap();
    assert_ne!(second, first, "a new dead letter");

    // Discard: gone for good.
    let discard = browser
        .wait_for(
            &format!("#dead-letters tr[data-sequence=\"{second}\"] button.discard"),
            Duration::from_secs(1),
        )
        .await;
    browser.click(&discard).await;
    browser
        .wait_gone("#dead-letters tr[data-component]", Duration::from_secs(15))
        .await;
    let count = browser
        .wait_for("#dead-letters .count", Duration::from_secs(1))
        .await;
    assert_eq!(browser.text(&count).await, "(0)");
    browser.close().await;
    shop.stop().await;
}
