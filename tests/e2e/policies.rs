//! The shop's policies as users meet them under `tienda up`: edit a file beside the Shop and
//! the gateway changes its behaviour live; kill a service and its circuit opens, then closes
//! once the supervisor has it back.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use tienda_crds::Component::{Gateway, Products};
use tienda_e2e::Shop;

const TIGHT: &str = "# Edited by the e2e suite.
apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata:
  name: products-browse
spec:
  targetRef: {kind: Service, name: products}
  rules:
    - name: categories
      match: {pathPrefix: /v1/categories, methods: [GET]}
      clientKey: {type: ClientIP}
      algorithm: SlidingWindow
      requests: 3
      period: 1m
";

#[tokio::test]
async fn a_rate_limit_policy_edited_on_disk_changes_the_gateways_behaviour_live() {
    let shop = Shop::start().await;
    // examples/local's policies are in force from the start, the limits on sign-in,
    // registration and password resets among them.
    shop.wait_for_policy("products-browse", 1).await;
    shop.wait_for_policy("auth", 1).await;
    let categories = shop.url(Products, "/v1/categories");
    for _ in 0..5 {
        let (status, body) = shop.get(categories.clone(), None).await;
        assert_eq!(status, 200, "categories are not limited yet: {body}");
    }

    shop.write_file("ratelimitpolicy.yaml", TIGHT);
    shop.wait_for_policy("products-browse", 2).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(shop.get(categories.clone(), None).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "the edited limit holds");
    let limited = shop.http.get(&categories).send().await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited.headers()["ratelimit-policy"],
        "\"categories\";q=3;w=60"
    );

    // An invalid edit is refused; the limit in force stays.
    shop.write_file(
        "ratelimitpolicy.yaml",
        &TIGHT.replace("requests: 3", "requests: 0"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let policies = shop.gateway_policies().await;
        if policies["rejected"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            assert_eq!(policies["rejected"][0]["previous_kept"], true);
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {policies}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shop.get(categories.clone(), None).await.0, 429);

    // Loosened again: requests pass at once.
    shop.write_file(
        "ratelimitpolicy.yaml",
        &TIGHT.replace("requests: 3", "requests: 1000"),
    );
    shop.wait_for_policy("products-browse", 3).await;
    assert_eq!(shop.get(categories, None).await.0, 200);
    shop.stop().await;
}

const BREAKER: &str = "apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata:
  name: products
spec:
  targetRef: {kind: Service, name: products}
  timeout: 2s
  circuitBreaker: {consecutiveFailures: 3, window: 10s, openFor: 1s, halfOpenRequests: 1}
  fallback: {status: 503, detail: The catalog is restarting; try again in a moment.}
";

#[tokio::test]
async fn a_circuit_policy_opens_when_a_service_is_killed_and_recovers_when_the_supervisor_restarts_it()
 {
    let shop = Shop::start().await;
    shop.write_file("products-circuit.yaml", BREAKER);
    shop.wait_for_policy("products", 1).await;
    let categories = shop.url(Products, "/v1/categories");
    assert_eq!(shop.get(categories.clone(), None).await.0, 200);

    // SIGKILL: connections are refused until the supervisor has it back.
    let products = shop.system.process(Products).unwrap().clone();
    let before = products.pid();
    products.kill();
    let mut seen = Vec::new();
    let mut opened = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let answer = shop.http.get(&categories).send().await.unwrap();
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let kind = body["type"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        seen.push(format!("{status} {kind}"));
        if status == 503
            && body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("circuit-open"))
        {
            assert_eq!(
                body["detail"],
                "The catalog is restarting; try again in a moment."
            );
            opened = true;
            break;
        }
        if status == 200 {
            // The restart beat us to it; kill again and keep counting.
            products.kill();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        opened,
        "the circuit never opened; answers: {seen:?}\n{}",
        shop.log(Gateway)
    );
    // Failed calls get the policy's fallback answer too, until three in a row open it.
    assert!(
        seen.iter()
            .filter(|s| *s == "503 upstream-unavailable")
            .count()
            >= 3,
        "three failed calls opened it: {seen:?}"
    );

    // Back: the supervisor restarts products, the breaker half-opens and a probe closes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if products.pid() != 0 && products.pid() != before {
            let (status, _) = shop.get(categories.clone(), None).await;
            if status == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never recovered:\n{}\n{}",
            shop.log(Products),
            shop.log(Gateway)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(products.restarts() >= 1);
    for _ in 0..5 {
        assert_eq!(
            shop.get(categories.clone(), None).await.0,
            200,
            "closed again"
        );
    }
    let metrics = shop
        .http
        .get(shop.admin(Gateway, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_circuit_refused_total{reason=\"circuit-open\""),
        "{metrics}"
    );
    shop.stop().await;
}
