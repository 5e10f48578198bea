//! The operations console in a real headless browser (Chromium through chromedriver): an
//! admin signs in, sees a dead letter with its reason, replays it — the poison message comes
//! back as a new dead letter, as it must — discards that one and sees it gone; the sagas,
//! streams, circuits and policies are on the same page. The test leaves a screenshot for the
//! README (`$TIENDA_CONSOLE_SCREENSHOT`, default target/tmp/console.png).

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
    browser
        .sign_in_to_console(&console, &shop.system.admin.0, &shop.system.admin.1)
        .await;

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
    // Cargo's scratch directory for integration tests (target/tmp), unless told where.
    let path = std::env::var("TIENDA_CONSOLE_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/console.png", env!("CARGO_TARGET_TMPDIR")));
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

/// In a cluster the operator serves each Shop's console on its metrics listener, finding the
/// components through their EndpointSlices. Here the Kubernetes API is the in-memory one,
/// whose EndpointSlices point at a `tienda up` shop's processes (their ports named in the
/// slices, as a cluster's are not: there the admin port is 9090 on the pod's address).
#[tokio::test]
async fn the_operator_serves_a_shops_console_from_its_endpoint_slices() {
    use serde_json::{Value, json};
    use tienda_crds::Component;

    let shop = Shop::start().await;
    let api = tienda_kit::testing::apiserver::ApiServer::start().await;
    let client = api.client("shops");
    let create = |api_version: &str, plural: &str, object: Value| {
        let client = client.clone();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), api_version.to_owned()),
        };
        let plural = plural.to_owned();
        async move {
            let kind = object["kind"].as_str().unwrap().to_owned();
            let resource = kube::api::ApiResource {
                group: group.clone(),
                version: version.clone(),
                api_version: if group.is_empty() {
                    version.clone()
                } else {
                    format!("{group}/{version}")
                },
                kind,
                plural,
            };
            let objects: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client, "shops", &resource);
            objects
                .create(
                    &Default::default(),
                    &serde_json::from_value(object).unwrap(),
                )
                .await
                .unwrap();
        }
    };
    // The Shop, its NATS credentials, auth's Deployment (the issuer) and one EndpointSlice
    // per component.
    let mut spec: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(tienda_e2e::repo_root().join("examples/local/shop.yaml")).unwrap(),
    )
    .unwrap();
    spec["metadata"]["namespace"] = json!("shops");
    spec["spec"]["nats"] =
        json!({"url": shop.system.nats_url, "credentialsSecretRef": {"name": "nats"}});
    create("tienda.dev/v1alpha1", "shops", spec).await;
    let creds = std::fs::read_to_string(shop.system.nats_creds.as_ref().unwrap().admin()).unwrap();
    create(
        "v1",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nats", "namespace": "shops"},
               "data": {"nats.creds": base64(&creds)}}),
    )
    .await;
    let auth_url = shop.system.urls[&Component::Auth].clone();
    create(
        "apps/v1",
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "local-auth", "namespace": "shops"},
               "spec": {"selector": {"matchLabels": {"app": "auth"}},
                        "template": {"metadata": {"labels": {"app": "auth"}},
                                     "spec": {"containers": [{"name": "auth", "image": "x",
                                              "env": [{"name": "AUTH_ISSUER", "value": auth_url}]}]}}}}),
    )
    .await;
    for component in Component::ALL {
        let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        create(
            "discovery.k8s.io/v1",
            "endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("local-{component}-x1"), "namespace": "shops",
                                "labels": {"kubernetes.io/service-name": format!("local-{component}")}},
                   "addressType": "IPv4",
                   "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                   "ports": [{"name": "http", "port": port(&shop.system.urls[&component]), "protocol": "TCP"},
                             {"name": "admin", "port": port(&shop.system.admin_urls[&component]), "protocol": "TCP"}]}),
        )
        .await;
    }

    let registry = prometheus::Registry::new();
    let ctx = std::sync::Arc::new(tienda_operator::controller::context::Context::new(
        client.clone(),
        &registry,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/shops/shops/local",
        listener.local_addr().unwrap()
    );
    let router = tienda_operator::console::Consoles::new(ctx).router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let page = shop
        .http
        .get(format!("{base}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Tienda · operations"));
    let state_url = format!("{base}/console/api/state");
    assert_eq!(
        shop.http.get(&state_url).send().await.unwrap().status(),
        401
    );
    let signed_in: Value = shop
        .http
        .post(format!("{base}/console/api/login"))
        .json(&json!({"email": shop.system.admin.0, "password": shop.system.admin.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned();
    let state: Value = shop
        .http
        .get(&state_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let components = state["components"].as_array().unwrap();
    assert_eq!(components.len(), 6, "{state}");
    assert!(components.iter().all(|c| c["up"] == true), "{state}");
    let streams: Vec<&str> = state["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("JetStream through the operator's connection: {state}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(streams.contains(&"ORDER"), "{streams:?}");
    let gateway = components.iter().find(|c| c["name"] == "gateway").unwrap();
    assert!(
        !gateway["circuits"].as_array().unwrap().is_empty(),
        "{gateway}"
    );
    assert!(gateway["policies"]["applied"].is_array(), "{gateway}");
    let orders = components.iter().find(|c| c["name"] == "orders").unwrap();
    assert!(orders["sagas"]["items"].is_array(), "{orders}");
    shop.stop().await;
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
