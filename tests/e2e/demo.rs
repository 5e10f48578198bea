//! `tienda up --demo`: a first look at a shop that is not empty, loaded once.

use pretty_assertions::assert_eq;
use serde_json::json;
use tienda_crds::Component::{Auth, Products};
use tienda_e2e::Shop;
use tienda_local::demo::{self, Catalog, Report};

/// The names of the active products a customer lists.
async fn listed_names(shop: &Shop) -> Vec<String> {
    let (status, page) = shop
        .get(shop.url(Products, "/v1/products?limit=100"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    let mut names: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_demo_shop_lists_a_stocked_bilingual_catalog_and_a_customer_signs_in_and_it_loads_once() {
    let catalog = Catalog::embedded().unwrap();
    let mut shop = Shop::start_with(|options| options.demo = true).await;
    assert_eq!(
        shop.system.demo,
        Some(Report::Loaded {
            categories: catalog.categories.len(),
            products: catalog.products.len(),
            existing: 0,
            stocked: catalog
                .products
                .iter()
                .flat_map(|p| &p.variants)
                .filter(|v| v.stock > 0)
                .count(),
            customer_registered: true,
        })
    );

    // A customer's first look, through the gateway: products, in Spanish, findable in English.
    let names = listed_names(&shop).await;
    assert_eq!(names.len(), catalog.products.len());
    assert!(
        names.contains(&"Zapatillas de lona".to_owned()),
        "{names:?}"
    );
    let (status, found) = shop
        .get(shop.url(Products, "/v1/products?q=sneakers"), None)
        .await;
    assert_eq!(status, 200, "{found}");
    let sneakers = &found["items"][0];
    assert_eq!(sneakers["name"], "Zapatillas de lona", "{found}");
    assert!(
        sneakers["description"]
            .as_str()
            .unwrap()
            .contains("Canvas sneakers")
    );
    assert_eq!(sneakers["variants"].as_array().unwrap().len(), 4);
    assert_eq!(
        sneakers["variants"][0]["price"],
        json!({"amount": 3490, "currency": "EUR"})
    );
    assert!(
        sneakers["images"][0]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let (_, stock) = shop
        .get(shop.url(Products, "/v1/inventory/DEMO-SNEAKER-40"), None)
        .await;
    assert_eq!(
        stock,
        json!({"sku": "DEMO-SNEAKER-40", "on_hand": 12, "reserved": 0, "available": 12})
    );
    let (status, categories) = shop.get(shop.url(Products, "/v1/categories"), None).await;
    assert_eq!(status, 200);
    assert!(
        categories["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Café / Coffee"),
        "{categories}"
    );

    // The demo customer signs in with the documented password.
    let (status, pair) = shop
        .post(
            shop.url(Auth, "/v1/auth/login"),
            None,
            json!({"email": catalog.customer.email, "password": catalog.customer.password}),
        )
        .await;
    assert_eq!(status, 200, "{pair}");
    assert!(pair["access_token"].is_string());

    // An interrupted load (no marker yet, a variant not stocked) is finished, not repeated.
    let admin = shop.admin_token().await;
    let unstocked = shop
        .http
        .put(shop.url(Products, "/v1/inventory/DEMO-SNEAKER-40"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 0, "reason": "as if the load stopped here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unstocked.status(), 200);
    std::fs::remove_file(shop.options.data_dir.join(demo::MARKER)).unwrap();
    let endpoints = demo::Endpoints {
        auth: shop.url(Auth, ""),
        products: shop.url(Products, ""),
    };
    let stale = demo::Admin {
        email: shop.system.admin.0.clone(),
        password: "the password before it was changed".into(),
        source: "kept in .tienda/secrets.json".into(),
    };
    let refused = demo::load(&endpoints, &stale, &shop.options.data_dir)
        .await
        .unwrap_err();
    let message = format!("{refused:#}");
    assert!(
        message.contains("could not sign in") && message.contains("TIENDA_ADMIN_PASSWORD"),
        "a changed admin password is said, with what to do: {message}"
    );
    let first_admin = demo::Admin {
        password: shop.system.admin.1.clone(),
        ..stale
    };
    let again = demo::load(&endpoints, &first_admin, &shop.options.data_dir)
        .await
        .unwrap();
    assert_eq!(
        again,
        Report::Loaded {
            categories: 0,
            products: 0,
            existing: catalog.products.len(),
            stocked: 1,
            customer_registered: false,
        }
    );
    let (_, stock) = shop
        .get(shop.url(Products, "/v1/inventory/DEMO-SNEAKER-40"), None)
        .await;
    assert_eq!(stock["on_hand"], 12);

    // A second `tienda up --demo` on the same data sends nothing.
    shop.restart().await;
    assert_eq!(
        shop.system.demo,
        Some(Report::AlreadyLoaded {
            marker: shop.options.data_dir.join(demo::MARKER)
        })
    );
    assert_eq!(listed_names(&shop).await, names);
    shop.stop().await;
}
