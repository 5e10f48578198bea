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

#[tokio::test]
async fn relevance_pages_name_matches_before_description_matches_each_once() {
    let app = spawn_app().await;
    let mut in_name = BTreeSet::new();
    let mut in_description = BTreeSet::new();
    for i in 0..9 {
        let mut body =
            crate::helpers::product(&format!("Lantern {i}"), &[(&format!("LN-{i}"), 900)]);
        in_name.insert(
            app.create_product(body.clone()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        body = crate::helpers::product(&format!("Camp light {i}"), &[(&format!("CL-{i}"), 900)]);
        body["description"] = json!("Brighter than a lantern.");
        in_description.insert(
            app.create_product(body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut order = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/products?q=lantern&limit=4".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path).await;
        order.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(order.len(), 18, "each match once: {order:?}");
    let first: BTreeSet<String> = order[..9].iter().cloned().collect();
    let rest: BTreeSet<String> = order[9..].iter().cloned().collect();
    assert_eq!(
        first, in_name,
        "every name match comes before any description match"
    );
    assert_eq!(rest, in_description);
    let mut newest_first = order[..9].to_vec();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(order[..9], newest_first, "newest first within a tier");
}

#[tokio::test]
async fn attribute_and_category_filters_follow_variant_and_category_changes() {
    let app = spawn_app().await;
    let category = |name: &'static str| {
        let app = &app;
        async move {
            app.send(
                Method::POST,
                "/v1/categories",
                Some(&app.admin),
                Some(json!({"name": name})),
            )
            .await
            .json::<Value>()
            .await
            .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (hats, sale) = (category("Hats").await, category("Sale").await);
    let created = app
        .create_product(json!({
            "name": "Felt Hat", "status": "active", "category_ids": [hats],
            "variants": [
                {"sku": "HAT-RED-S", "attributes": {"color": "red", "size": "S"},
                 "price": {"amount": 2000, "currency": "EUR"}},
                {"sku": "HAT-BLUE-M", "attributes": {"color": "blue", "size": "M"},
                 "price": {"amount": 2000, "currency": "EUR"}}]}))
        .await;
    let found = |path: String| {
        let app = &app;
        async move { names(&app.get_json(&path).await) }
    };
    assert_eq!(
        found("/v1/products?attr.color=red".into()).await,
        ["Felt Hat"]
    );
    assert_eq!(
        found("/v1/products?attr.color=red&attr.size=S".into()).await,
        ["Felt Hat"]
    );
    assert!(
        found("/v1/products?attr.color=red&attr.size=M".into())
            .await
            .is_empty(),
        "red and M are on different variants"
    );
    assert_eq!(
        found(format!("/v1/products?category={hats}")).await,
        ["Felt Hat"]
    );
    assert!(
        found(format!("/v1/products?category={sale}"))
            .await
            .is_empty()
    );

    // The red variant goes, the product moves to Sale.
    let patched = app
        .http
        .patch(app.url(&format!("/v1/products/{}", created["id"].as_str().unwrap())))
        .bearer_auth(&app.admin)
        .header(reqwest::header::IF_MATCH, "\"1\"")
        .json(&json!({"category_ids": [sale], "variants": [
            {"sku": "HAT-BLUE-M", "attributes": {"color": "blue", "size": "M"},
             "price": {"amount": 2000, "currency": "EUR"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert!(found("/v1/products?attr.color=red".into()).await.is_empty());
    assert_eq!(
        found("/v1/products?attr.color=blue".into()).await,
        ["Felt Hat"]
    );
    assert!(
        found(format!("/v1/products?category={hats}"))
            .await
            .is_empty()
    );
    assert_eq!(
        found(format!("/v1/products?category={sale}")).await,
        ["Felt Hat"]
    );
    let facets = &app.get_json("/v1/products?q=hat&facets=true").await["facets"];
    assert_eq!(facets["categories"], json!([{"id": sale, "count": 1}]));
    assert_eq!(
        facets["attributes"],
        json!([{"name": "color", "value": "blue", "count": 1},
               {"name": "size", "value": "M", "count": 1}])
    );
}

#[tokio::test]
async fn typos_are_corrected_from_the_words_of_names_as_they_change() {
    let app = spawn_app().await;
    seed(&app).await;
    let corrected = names(&app.get_json("/v1/products?q=lether%20bots").await);
    assert_eq!(
        corrected[0], "Leather Boots",
        "each word corrected; both in the name ranks first"
    );
    assert_eq!(
        corrected[1..].iter().collect::<BTreeSet<_>>(),
        ["Suede Boots", "Wool Socks"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect(),
        "then both anywhere; never only one (Leather Wallet)"
    );
    assert_eq!(
        app.get_json("/v1/products?q=lether%20qwzx").await["items"],
        json!([]),
        "a word nothing is close to matches nothing"
    );
    let wallet = app.get_json("/v1/products?q=wallet").await["items"][0].clone();
    let renamed = app
        .http
        .patch(app.url(&format!("/v1/products/{}", wallet["id"].as_str().unwrap())))
        .bearer_auth(&app.admin)
        .header(reqwest::header::IF_MATCH, "\"1\"")
        .json(&json!({"name": "Leather Billfold"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    app.create_product(crate::helpers::product(
        "Rain Poncho",
        &[("PONCHO-1", 2500)],
    ))
    .await;
    assert_eq!(
        names(&app.get_json("/v1/products?q=bilfold").await),
        ["Leather Billfold"]
    );
    assert_eq!(
        names(&app.get_json("/v1/products?q=ponco").await),
        ["Rain Poncho"]
    );
}
