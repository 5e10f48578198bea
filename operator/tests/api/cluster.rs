//! Against a real cluster (`cargo test -p tienda-operator -- --ignored` with a kubeconfig, the
//! CRDs applied, `tienda run` running, and PostgreSQL/NATS reachable from the cluster as the
//! Shop below names them). No cluster can be had on the development machines, so these are
//! ignored by default.

use std::time::Duration;

use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use tienda_crds::{Service, Shop};

#[tokio::test]
#[ignore = "needs cluster"]
async fn a_shop_applied_to_a_cluster_becomes_ready_and_goes_away_cleanly() {
    tienda_kit::install_crypto_provider();
    let client = Client::try_default().await.expect("a kubeconfig");
    let namespace = std::env::var("TIENDA_TEST_NAMESPACE").unwrap_or_else(|_| "tienda-e2e".into());
    let shops: Api<Shop> = Api::namespaced(client.clone(), &namespace);
    let shop: Shop = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/shop-minimal.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let created = shops
        .create(&PostParams::default(), &shop)
        .await
        .expect("the Shop is accepted");

    // As many Services as the operator derives from this Shop (every component with an image:
    // tests/delivery checks the Dockerfile has one per component), all of them ready.
    let expected = tienda_operator::shop::desired_services(&created).len();
    let all_ready = format!("{expected}/{expected}");
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let mut ready = false;
    for _ in 0..120 {
        let current = shops.get("demo").await.unwrap();
        if current
            .status
            .as_ref()
            .and_then(|s| s.services_ready.as_deref())
            == Some(all_ready.as_str())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(ready, "the Shop became ready within 10 minutes");
    assert_eq!(
        services
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        expected
    );

    shops
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..60 {
        if shops.get_opt("demo").await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("the Shop was not deleted within 2 minutes");
}
