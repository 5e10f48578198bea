//! The running shop keeps operator-only endpoints off the public entry: the gateway answers
//! 404 for them, and each component's admin listener serves them.

use pretty_assertions::assert_eq;
use tienda_crds::Component::{Auth, Gateway, Products};
use tienda_e2e::Shop;

#[tokio::test]
async fn metrics_and_policies_answer_on_the_admin_ports_and_never_through_the_gateway() {
    let shop = Shop::start().await;
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };

    // Through the public entry (what the internet reaches).
    for path in ["/metrics", "/policies", "/admin/dead-letters"] {
        assert_eq!(
            status(shop.url(Gateway, path)).await,
            404,
            "{path} through the gateway"
        );
    }
    for component in [Auth, Products] {
        assert_eq!(
            status(shop.direct(component, "/metrics")).await,
            404,
            "{component:?}'s public listener"
        );
    }

    // On the admin listeners.
    let metrics = http
        .get(shop.admin(Gateway, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_policy_applied_generation"),
        "{metrics}"
    );
    let policies = shop.gateway_policies().await;
    assert!(
        policies["applied"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{policies}"
    );
    for component in [Auth, Products] {
        assert_eq!(
            status(shop.admin(component, "/metrics")).await,
            200,
            "{component:?}'s admin listener"
        );
    }
    shop.stop().await;
}
