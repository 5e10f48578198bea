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

#[tokio::test]
async fn a_second_shop_on_the_ports_of_a_running_one_is_refused_at_once_naming_the_port() {
    let shop = Shop::start().await;
    let dir = std::env::temp_dir().join(format!("tienda-e2e-{}", uuid::Uuid::now_v7().simple()));
    let mut second = shop.options.clone();
    second.data_dir = dir.join("data");
    second.logs = tienda_local::supervisor::Logs::Files(dir.join("logs"));
    std::fs::create_dir_all(dir.join("logs")).unwrap();

    // Without the check, the second shop's components could not bind, and it took the first
    // shop's answers for its own readiness: its users' traffic went to the other shop.
    let refused = match tienda_local::System::start(second).await {
        Ok(_) => panic!("a second shop started on ports the first one holds"),
        Err(e) => format!("{e:#}"),
    };
    // At once: not "did not become ready within 90 s".
    assert!(refused.contains("Address already in use"), "{refused}");
    assert!(refused.contains("--base-port"), "{refused}");
    assert!(
        shop.options
            .ports()
            .iter()
            .any(|port| refused.contains(&format!("port {port}"))),
        "names the port: {refused}"
    );

    // The first shop is untouched.
    let (status, _) = shop.get(shop.url(Gateway, "/v1/products"), None).await;
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
    shop.stop().await;
}
