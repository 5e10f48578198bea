use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{eventually, product, spawn_app, spawn_replica};

#[tokio::test]
async fn an_admin_creates_a_product_everyone_reads_it_with_an_etag() {
    let app = spawn_app().await;
    let mut body = product("Leather Boots", &[("BOOT-42", 12900), ("BOOT-43", 13900)]);
    body["variants"][0]["attributes"] = json!({"size": "42", "color": "brown"});
    body["images"] = json!(["https://img.test/boots.jpg"]);
    let response = app
        .send(Method::POST, "/v1/products", Some(&app.admin), Some(body))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["variants"][0]["attributes"]["color"], "brown");
    assert_eq!(
        created["variants"][1]["price"],
        json!({"amount": 13900, "currency": "EUR"})
    );

    let read = app
        .send(Method::GET, &format!("/v1/products/{id}"), None, None)
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers()[header::ETAG], "\"1\"");
    let read: Value = read.json().await.unwrap();
    assert_eq!(read, created);

    let cached = app
        .http
        .get(app.url(&format!("/v1/products/{id}")))
        .header(header::IF_NONE_MATCH, "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let events: Vec<String> = sqlx::query_scalar("SELECT subject FROM tienda_outbox ORDER BY seq")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(events, ["tienda.product.created"]);
    let stock = app.get_json("/v1/inventory/BOOT-43").await;
    assert_eq!(
        stock,
        json!({"sku": "BOOT-43", "on_hand": 0, "reserved": 0, "available": 0})
    );
}

#[tokio::test]
async fn bad_products_are_problems_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "x", "variants": [], "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            product("", &[("A", 1)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            product("Bad", &[("has space", 1)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].sku",
        ),
        (
            product("Bad", &[("A", -1)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[0].price.amount",
        ),
        (
            product("Bad", &[("A", 1), ("A", 2)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants[1].sku",
        ),
        (
            json!({"name": "Mixed", "variants": [
                {"sku": "M1", "price": {"amount": 1, "currency": "EUR"}},
                {"sku": "M2", "price": {"amount": 1, "currency": "USD"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants",
        ),
        (
            json!({"name": "Lost", "category_ids": ["0190f5c2-0000-7000-8000-000000000000"],
                   "variants": [{"sku": "L1", "price": {"amount": 1, "currency": "EUR"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "category_ids",
        ),
        (
            json!({"name": "Cur", "variants": [{"sku": "C1", "price": {"amount": 1, "currency": "euro"}}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency",
        ),
    ];
    for (body, status, field) in cases {
        let response = app
            .send(
                Method::POST,
                "/v1/products",
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem.to_string().contains(field),
            "{field} named in {problem}"
        );
    }
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(products, 0);

    let body = product("Mine", &[("OK-1", 100)]);
    let anonymous = app
        .send(Method::POST, "/v1/products", None, Some(body.clone()))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let customer = app
        .send(
            Method::POST,
            "/v1/products",
            Some(&app.customer),
            Some(body),
        )
        .await;
    assert_eq!(customer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn updates_need_the_current_etag_and_replace_variants() {
    let app = spawn_app().await;
    let created = app
        .create_product(product("Tee", &[("TEE-S", 1500), ("TEE-M", 1500)]))
        .await;
    let other = app.create_product(product("Cap", &[("CAP-1", 900)])).await;
    let path = format!("/v1/products/{}", created["id"].as_str().unwrap());
    let patch = json!({"name": "Organic Tee", "variants": [
        {"sku": "TEE-M", "price": {"amount": 1700, "currency": "EUR"}},
        {"sku": "TEE-L", "price": {"amount": 1800, "currency": "EUR"}}]});

    let without = app
        .send(Method::PATCH, &path, Some(&app.admin), Some(patch.clone()))
        .await;
    assert_eq!(without.status(), StatusCode::PRECONDITION_REQUIRED);

    let patch_with = |etag: &'static str, body: Value| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(&app.admin)
            .header(header::IF_MATCH, etag)
            .json(&body)
            .send()
    };
    let updated = patch_with("\"1\"", patch.clone()).await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()[header::ETAG], "\"2\"");
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["name"], "Organic Tee");
    let skus: Vec<&str> = updated["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["TEE-M", "TEE-L"]);
    let removed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT removed_at FROM variants WHERE sku = 'TEE-S'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(removed.is_some(), "a dropped SKU is kept, marked removed");

    let stale = patch_with("\"1\"", json!({"name": "Lost update"}))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.headers()[header::ETAG], "\"2\"");

    let stolen_sku = patch_with(
        "\"2\"",
        json!({"variants": [{"sku": "CAP-1", "price": {"amount": 1, "currency": "EUR"}}]}),
    )
    .await
    .unwrap();
    assert_eq!(stolen_sku.status(), StatusCode::CONFLICT);
    let cap = app
        .get_json(&format!("/v1/products/{}", other["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        cap["variants"][0]["price"]["amount"], 900,
        "nothing of the failed patch applied"
    );
    let tee = app.get_json(&path).await;
    assert_eq!(tee["version"], 2);
}

#[tokio::test]
async fn if_match_takes_a_list_of_etags_or_a_star_and_a_malformed_one_is_named() {
    let app = spawn_app().await;
    let created = app.create_product(product("Mug", &[("MUG-1", 900)])).await;
    let path = format!("/v1/products/{}", created["id"].as_str().unwrap());
    let patch_with = |if_match: &'static str, name: &'static str| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(&app.admin)
            .header(header::IF_MATCH, if_match)
            .json(&json!({ "name": name }))
            .send()
    };

    let listed = patch_with("\"7\", \"1\"", "Big Mug").await.unwrap();
    let starred = patch_with("*", "Bigger Mug").await.unwrap();
    let malformed = patch_with("\"two\"", "Lost").await.unwrap();

    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(listed.headers()[header::ETAG], "\"2\"");
    assert_eq!(starred.status(), StatusCode::OK);
    assert_eq!(starred.headers()[header::ETAG], "\"3\"");
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = malformed.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "If-Match");
    let mug = app.get_json(&path).await;
    assert_eq!(mug["name"], "Bigger Mug");
}

#[tokio::test]
async fn deleted_products_leave_the_catalog_but_keep_their_skus() {
    let app = spawn_app().await;
    let created = app
        .create_product(product("Old Lamp", &[("LAMP-1", 4000)]))
        .await;
    let path = format!("/v1/products/{}", created["id"].as_str().unwrap());
    app.get_json(&path).await; // cached now
    let deleted = app
        .http
        .delete(app.url(&path))
        .bearer_auth(&app.admin)
        .header(header::IF_MATCH, "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app.send(Method::GET, &path, None, None).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let list = app.get_json("/v1/products").await;
    assert_eq!(list["items"], json!([]));
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM variants WHERE sku = 'LAMP-1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn drafts_are_for_admins_only() {
    let app = spawn_app().await;
    let mut body = product("Secret Sneaker", &[("SNK-1", 9900)]);
    body["status"] = json!("draft");
    let created = app.create_product(body).await;
    let path = format!("/v1/products/{}", created["id"].as_str().unwrap());
    assert_eq!(
        app.send(Method::GET, &path, Some(&app.customer), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send(Method::GET, &path, Some(&app.admin), None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.get_json("/v1/products").await["items"], json!([]));
    let forbidden = app
        .send(
            Method::GET,
            "/v1/products?status=draft",
            Some(&app.customer),
            None,
        )
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let drafts: Value = app
        .send(
            Method::GET,
            "/v1/products?status=draft",
            Some(&app.admin),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drafts["items"][0]["id"], created["id"]);
}

#[tokio::test]
async fn categories_form_a_tree_and_listing_one_includes_its_subtree() {
    let app = spawn_app().await;
    let create = |body: Value| {
        let app = &app;
        async move {
            let r = app
                .send(Method::POST, "/v1/categories", Some(&app.admin), Some(body))
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()
        }
    };
    let clothing = create(json!({"name": "Clothing"})).await;
    assert_eq!(clothing["slug"], "clothing");
    let shoes = create(json!({"name": "Shoes", "parent_id": clothing["id"]})).await;
    let boots = create(json!({"name": "Boots", "parent_id": shoes["id"]})).await;
    let toys = create(json!({"name": "Toys"})).await;

    let mut boot = product("Hiking Boot", &[("HB-1", 9000)]);
    boot["category_ids"] = json!([boots["id"]]);
    app.create_product(boot).await;
    let mut shirt = product("Shirt", &[("SH-1", 2000)]);
    shirt["category_ids"] = json!([clothing["id"]]);
    app.create_product(shirt).await;
    let mut kite = product("Kite", &[("KT-1", 1500)]);
    kite["category_ids"] = json!([toys["id"]]);
    app.create_product(kite).await;

    let names = |page: Value| -> Vec<String> {
        let mut names: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let in_clothing = app
        .get_json(&format!(
            "/v1/products?category={}",
            clothing["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(names(in_clothing), ["Hiking Boot", "Shirt"]);
    let in_shoes = app
        .get_json(&format!(
            "/v1/products?category={}",
            shoes["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(names(in_shoes), ["Hiking Boot"]);

    let tree = app.get_json("/v1/categories").await;
    let order: Vec<&str> = tree["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["Clothing", "Shoes", "Boots", "Toys"],
        "parents before children"
    );

    // Moving Clothing under Boots would make a cycle.
    let cycle = app
        .http
        .patch(app.url(&format!(
            "/v1/categories/{}",
            clothing["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin)
        .header(header::IF_MATCH, "\"1\"")
        .json(&json!({"parent_id": boots["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(cycle.status(), StatusCode::CONFLICT);
    // Boots moves to the root; Clothing no longer lists the boot.
    let moved = app
        .http
        .patch(app.url(&format!("/v1/categories/{}", boots["id"].as_str().unwrap())))
        .bearer_auth(&app.admin)
        .header(header::IF_MATCH, "\"1\"")
        .json(&json!({"parent_id": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);
    let in_clothing = app
        .get_json(&format!(
            "/v1/products?category={}",
            clothing["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(names(in_clothing), ["Shirt"]);

    let busy = app
        .http
        .delete(app.url(&format!("/v1/categories/{}", toys["id"].as_str().unwrap())))
        .bearer_auth(&app.admin)
        .header(header::IF_MATCH, "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        busy.status(),
        StatusCode::CONFLICT,
        "a category with products stays"
    );
}

#[tokio::test]
async fn every_replica_sees_an_update_made_on_another_and_keeps_what_did_not_change() {
    let app = spawn_app().await;
    let replica = spawn_replica(&app).await;
    let read_on_replica = |path: String| {
        let replica = replica.clone();
        async move {
            let r: Value = reqwest::get(format!("{replica}{path}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["name"].as_str().unwrap_or_default().to_owned()
        }
    };
    let rename_behind_its_back = |id: String, name: &'static str| {
        let db = app.db.clone();
        async move {
            sqlx::query("UPDATE products SET name = $2 WHERE id = $1::uuid")
                .bind(id)
                .bind(name)
                .execute(&db)
                .await
                .unwrap();
        }
    };
    let update = |path: String, version: &'static str, name: &'static str| {
        let (http, url, admin) = (app.http.clone(), app.url(&path), app.admin.clone());
        async move {
            let updated = http
                .patch(url)
                .bearer_auth(admin)
                .header(header::IF_MATCH, format!("\"{version}\""))
                .json(&json!({"name": name}))
                .send()
                .await
                .unwrap();
            assert_eq!(updated.status(), StatusCode::OK);
        }
    };

    // Warm-up: the replica's event feed is live once an update made on the other replica
    // reaches it (its feed starts at new events and clears the cache when it starts).
    let warm = app
        .create_product(product("Warm", &[("WARM-1", 100)]))
        .await;
    let warm_path = format!("/v1/products/{}", warm["id"].as_str().unwrap());
    read_on_replica(warm_path.clone()).await;
    update(warm_path.clone(), "1", "Warmer").await;
    eventually("the replica follows product events", || async {
        read_on_replica(warm_path.clone()).await == "Warmer"
    })
    .await;

    let mug = app.create_product(product("Mug", &[("MUG-1", 1200)])).await;
    let tee = app.create_product(product("Tee", &[("TEE-1", 1900)])).await;
    let mug_id = mug["id"].as_str().unwrap().to_owned();
    let tee_id = tee["id"].as_str().unwrap().to_owned();
    let (mug_path, tee_path) = (
        format!("/v1/products/{mug_id}"),
        format!("/v1/products/{tee_id}"),
    );
    // Their `product.created` events reach the replica some time after the creations, and
    // each drops what the replica has cached of that product. A read cached before its event
    // arrives would be dropped later, and the stale-cache check below would see the database
    // instead. One more update, after the creations, is a barrier: the replica reads the
    // product stream in order, so once it shows that update it has handled both creations.
    update(warm_path.clone(), "2", "Warmest").await;
    eventually("the replica handled the creations", || async {
        read_on_replica(warm_path.clone()).await == "Warmest"
    })
    .await;
    assert_eq!(read_on_replica(mug_path.clone()).await, "Mug");
    assert_eq!(read_on_replica(tee_path.clone()).await, "Tee");

    // Changed in the database with no event: the replica answers from its cache, stale.
    rename_behind_its_back(mug_id.clone(), "Mug (changed in SQL)").await;
    rename_behind_its_back(tee_id.clone(), "Tee (changed in SQL)").await;
    assert_eq!(
        read_on_replica(mug_path.clone()).await,
        "Mug",
        "served from the replica's cache"
    );
    assert_eq!(read_on_replica(tee_path.clone()).await, "Tee");

    // An update through the other replica: its event drops the mug, and only the mug.
    update(mug_path.clone(), "1", "Big Mug").await;
    eventually("the replica drops its cached mug", || async {
        read_on_replica(mug_path.clone()).await == "Big Mug"
    })
    .await;
    assert_eq!(
        read_on_replica(tee_path.clone()).await,
        "Tee",
        "an unrelated product stays cached: invalidation is by product, not wholesale"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let operations = tienda_kit::testing::check_openapi(&doc);
    for expected in [
        "GET /v1/products",
        "POST /v1/products",
        "GET /v1/products/{id}",
        "PATCH /v1/products/{id}",
        "DELETE /v1/products/{id}",
        "GET /v1/categories",
        "POST /v1/categories",
        "GET /v1/categories/{id}",
        "PATCH /v1/categories/{id}",
        "DELETE /v1/categories/{id}",
        "GET /v1/inventory/{sku}",
        "PUT /v1/inventory/{sku}",
        "POST /v1/inventory/reservations",
        "GET /v1/inventory/reservations/{id}",
        "POST /v1/inventory/reservations/{id}/commit",
        "POST /v1/inventory/reservations/{id}/release",
        "POST /v1/inventory/adjustments",
        "POST /v1/products/import",
        "POST /v1/products/prices",
        "GET /v1/products/analytics",
    ] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected} missing: {operations:?}"
        );
    }
}

/// Found against `tienda up` and by schemathesis: a NUL character (which PostgreSQL cannot
/// store) in a path, a query or a JSON string answered 500 — and the gateway counts 5xx against
/// the service's breaker. Each is a 4xx now and changes nothing.
#[tokio::test]
async fn a_nul_character_anywhere_in_a_request_is_a_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    for path in [
        "/v1/inventory/%00",
        "/v1/products?q=%00",
        "/v1/products/%00",
        "/v1/categories/a%00b",
    ] {
        let r = app.send(Method::GET, path, None, None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    for (path, body) in [
        ("/v1/categories", json!({"name": "Sh\u{0}oes"})),
        ("/v1/products", product("Boots\u{0}", &[("BOOT-1", 100)])),
    ] {
        let r = app
            .send(Method::POST, path, Some(&app.admin), Some(body))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
    assert_eq!(app.get_json("/v1/categories").await["items"], json!([]));
}

/// The document must not forbid what the service accepts, nor allow what it refuses
/// (schemathesis found `facets` documented as required while every listing omits it).
#[tokio::test]
async fn the_listing_parameters_are_documented_as_the_service_checks_them() {
    let app = spawn_app().await;
    let openapi = app.get_json("/openapi.json").await;
    let params = openapi["paths"]["/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is documented"))
    };
    for p in params {
        assert_ne!(
            p["required"], true,
            "every listing parameter is optional: {p}"
        );
    }
    assert_eq!(param("limit")["schema"]["minimum"], 1);
    assert_eq!(param("limit")["schema"]["maximum"], 100);
    assert_eq!(param("min_price")["schema"]["minimum"], 0);
    assert_eq!(param("q")["schema"]["maxLength"], 200);
    let status = serde_json::to_string(&param("status")["schema"]).unwrap();
    for value in ["draft", "active", "archived"] {
        assert!(status.contains(value), "{status}");
    }
    // And the service does as documented: no parameter at all is a valid listing.
    assert!(app.get_json("/v1/products").await["items"].is_array());
    for bad in [
        "limit=0",
        "limit=101",
        "min_price=-1",
        "status=deleted",
        "facets=maybe",
    ] {
        let r = app
            .send(Method::GET, &format!("/v1/products?{bad}"), None, None)
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}
