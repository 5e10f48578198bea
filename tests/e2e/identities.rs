//! Each component talks to NATS as itself, allowed only its own subjects: the shop `tienda up`
//! runs (its own nats-server) refuses a component a subject it must not use, and the gateway,
//! which never uses NATS, cannot connect at all. Every other whole-system test runs with these
//! identities too, so they also show that each component has what it needs.

use std::time::Duration;

use async_nats::jetstream;
use tienda_crds::Component;
use tienda_e2e::Shop;

/// Connects as `creds` and reports the server's errors (permission violations arrive as
/// asynchronous errors, not as the publish's result).
async fn connect_as(
    shop: &Shop,
    creds: &std::path::Path,
    inbox: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .unwrap()
        .custom_inbox_prefix(inbox)
        .name("probe")
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        })
        .connect(&shop.system.nats_url)
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn a_component_is_refused_the_subjects_of_others_and_the_gateway_gets_no_nats() {
    let shop = Shop::start().await;
    let creds = shop
        .system
        .nats_creds
        .clone()
        .expect("tienda up runs its own nats-server with identities");
    assert_eq!(creds.component(Component::Gateway), None);

    let (products, mut errors) = connect_as(
        &shop,
        &creds.component(Component::Products).unwrap(),
        "_INBOX_products",
    )
    .await;
    let js = jetstream::new(products.clone());
    // Its own events: stored.
    let ack = js
        .publish("tienda.product.probe", "{}".into())
        .await
        .unwrap()
        .await;
    assert!(ack.is_ok(), "products may publish its own events: {ack:?}");
    // Someone else's: auth's accounts, orders' saga commands.
    for subject in ["tienda.user.registered", "tienda.payment.cmd.capture"] {
        products.publish(subject, "{}".into()).await.unwrap();
        products.flush().await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
            .await
            .unwrap_or_else(|_| panic!("publishing {subject} as products was not refused"))
            .unwrap();
        assert!(
            error.to_lowercase().contains("permissions violation") && error.contains(subject),
            "{error}"
        );
    }
    // Reading another component's replies.
    let _ = products.subscribe("_INBOX_auth.>").await.unwrap();
    products.flush().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("subscribing to auth's inbox as products was not refused")
        .unwrap();
    assert!(error.contains("_INBOX_auth"), "{error}");

    // Anonymous (the gateway has no identity): not let in.
    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(1))
        .connect(&shop.system.nats_url)
        .await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    // The shop still works end to end with these identities (see the other tests); here the
    // stream shows products' probe and nothing of the refused ones.
    let admin = jetstream::new(shop.system.nats_client().await.unwrap());
    let mut user = admin.get_stream("USER").await.unwrap();
    let info = user.info().await.unwrap();
    let refused = admin
        .get_stream("USER")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("tienda.user.registered")
        .await;
    assert!(refused.is_err(), "{info:?}");
    // The server logged the refusals, all of them the probe's.
    let violations = shop.nats_violations();
    assert_eq!(violations.len(), 3, "{violations:#?}");
    shop.stop().await;
}
