use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn seed(app: &TestApp) -> Value {
    let category = app
        .send(
            Method::POST,
            "/v1/categories",
            Some(&app.admin),
            Some(json!({"name": "Footwear"})),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let catalog = [
        (
            "Leather Boots",
            "Sturdy boots for hiking.",
            12900,
            "brown",
            true,
            true,
        ),
        (
            "Suede Boots",
            "Soft leather-look suede.",
            9900,
            "black",
            true,
            true,
        ),
        (
            "Canvas Sneakers",
            "Light shoes for summer.",
            4900,
            "white",
            true,
            false,
        ),
        (
            "Leather Wallet",
            "A slim wallet.",
            3900,
            "brown",
            false,
            true,
        ),
        (
            "Wool Socks",
            "Warm socks to wear with leather boots.",
            900,
            "grey",
            false,
            true,
        ),
    ];
    for (name, description, price, color, footwear, stocked) in catalog {
        let sku = name.replace(' ', "-").to_uppercase();
        let mut body = json!({
            "name": name, "description": description, "status": "active",
            "variants": [{"sku": sku, "attributes": {"color": color},
                          "price": {"amount": price, "currency": "EUR"}}],
        });
        if footwear {
            body["category_ids"] = json!([category["id"]]);
        }
        app.create_product(body).await;
        if stocked {
            app.stock(&sku, 10).await;
        }
    }
    category
}

#[tokio::test]
async fn matches_in_the_name_outrank_matches_in_the_description_and_typos_still_find() {
    let app = spawn_app().await;
    seed(&app).await;
    let page = app.get_json("/v1/products?q=leather").await;
    let found = names(&page);
    assert_eq!(found.len(), 4, "{found:?}");
    let position = |n: &str| found.iter().position(|f| f == n).unwrap();
    assert!(
        position("Leather Boots") < position("Suede Boots"),
        "{found:?}"
    );
    assert!(
        position("Leather Wallet") < position("Wool Socks"),
        "{found:?}"
    );

    let typo = app.get_json("/v1/products?q=lether").await;
    let typo_names = names(&typo);
    assert!(
        typo_names.contains(&"Leather Boots".to_owned()),
        "{typo_names:?}"
    );
    assert!(
        typo_names.contains(&"Leather Wallet".to_owned()),
        "{typo_names:?}"
    );
    let stemmed = app.get_json("/v1/products?q=boot").await;
    assert!(names(&stemmed).contains(&"Suede Boots".to_owned()));
    assert_eq!(
        app.get_json("/v1/products?q=umbrella").await["items"],
        json!([])
    );
}

#[tokio::test]
async fn filters_sorts_and_facets() {
    let app = spawn_app().await;
    let footwear = seed(&app).await;
    let page = app
        .get_json("/v1/products?min_price=4000&max_price=13000&sort=price_asc")
        .await;
    assert_eq!(
        names(&page),
        ["Canvas Sneakers", "Suede Boots", "Leather Boots"]
    );
    let page = app
        .get_json("/v1/products?attr.color=brown&sort=price_desc")
        .await;
    assert_eq!(names(&page), ["Leather Boots", "Leather Wallet"]);
    let page = app
        .get_json(&format!(
            "/v1/products?category={}&in_stock=true&sort=price_asc",
            footwear["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(names(&page), ["Suede Boots", "Leather Boots"]);

    assert!(
        app.get_json("/v1/products?q=leather")
            .await
            .get("facets")
            .is_none()
    );
    let facets = &app.get_json("/v1/products?q=leather&facets=true").await["facets"];
    assert_eq!(
        facets["categories"],
        json!([{"id": footwear["id"], "count": 2}])
    );
    assert_eq!(
        facets["price"],
        json!([
            {"min": 0, "max": 1000, "count": 1},
            {"min": 2500, "max": 5000, "count": 1},
            {"min": 5000, "max": 10000, "count": 1},
            {"min": 10000, "max": 25000, "count": 1},
        ])
    );
    let colors: Vec<(String, i64)> = facets["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["value"].as_str().unwrap().to_owned(),
                a["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(colors[0], ("brown".to_owned(), 2));
    assert_eq!(colors.len(), 3);

    let bad = app
        .send(
            Method::GET,
            "/v1/products?sort=cheapest&limit=1000",
            None,
            None,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn paging_returns_each_product_once_while_products_are_added() {
    let app = spawn_app().await;
    let mut expected = BTreeSet::new();
    for i in 0..45 {
        let body =
            crate::helpers::product(&format!("Item {i:02}"), &[(&format!("ITEM-{i}"), 100 + i)]);
        expected.insert(
            app.create_product(body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for sort in ["newest", "price_asc", "price_desc"] {
        let mut seen = BTreeSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/products?limit=7&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get_json(&path).await;
            for item in page["items"].as_array().unwrap() {
                let id = item["id"].as_str().unwrap().to_owned();
                assert!(seen.insert(id), "{sort}: a product came twice");
            }
            // Meanwhile the catalog grows.
            let extra = crate::helpers::product(
                &format!("Extra {sort} {pages}"),
                &[(&format!("X-{sort}-{pages}"), 50 + pages)],
            );
            app.create_product(extra).await;
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(
            expected.is_subset(&seen),
            "{sort}: every product that existed before paging began was listed"
        );
    }
    let mismatched = app.get_json("/v1/products?limit=2&sort=newest").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = app
        .send(
            Method::GET,
            &format!("/v1/products?sort=price_asc&cursor={mismatched}"),
            None,
            None,
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
