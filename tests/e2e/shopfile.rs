//! The Shop file is live under `tienda up`: an edit to its components restarts them with the
//! new list, on the same data.

use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Component::Products;
use tienda_e2e::Shop;

fn shop_yaml(components: &[&str]) -> String {
    let list: Vec<String> = components
        .iter()
        .map(|c| format!("    - name: {c}"))
        .collect();
    format!(
        "apiVersion: tienda.dev/v1alpha1
kind: Shop
metadata:
  name: local
spec:
  version: 0.1.0
  postgres:
    host: 127.0.0.1
    adminSecretRef:
      name: postgres-admin
  nats:
    url: nats://127.0.0.1:4222
  components:
{}
",
        list.join("\n")
    )
}

#[tokio::test]
async fn a_shop_edited_on_disk_restarts_its_components_and_keeps_the_data() {
    let mut shop = Shop::start().await;
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Linen Apron", "status": "active",
                   "variants": [{"sku": "APRON-1", "price": {"amount": 2400, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());

    // Unchanged files: nothing restarts.
    assert!(!shop.system.reload(&shop.options).await.unwrap());

    shop.write_file("shop.yaml", &shop_yaml(&["gateway", "auth"]));
    assert!(
        shop.system.reload(&shop.options).await.unwrap(),
        "the edit restarts"
    );
    assert!(
        shop.system.process(Products).is_none(),
        "products is no longer run"
    );
    let (status, body) = shop.get(shop.url(Products, &path), None).await;
    assert_eq!(status, 503, "the gateway has no products endpoint: {body}");

    // An invalid Shop is refused and what runs stays.
    shop.write_file(
        "shop.yaml",
        "apiVersion: tienda.dev/v1alpha1\nkind: Shop\nmetadata: {name: local}\nspec: {}\n",
    );
    assert!(shop.system.reload(&shop.options).await.is_err());
    assert!(shop.system.process(tienda_crds::Component::Auth).is_some());

    shop.write_file("shop.yaml", &shop_yaml(&["gateway", "auth", "products"]));
    assert!(shop.system.reload(&shop.options).await.unwrap());
    let (status, read) = shop.get(shop.url(Products, &path), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["name"], "Linen Apron", "the data outlived the restart");
    let _ = shop.admin_token().await;
    shop.stop().await;
}
