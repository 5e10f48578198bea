//! RateLimitPolicy at the gateway: token bucket, sliding window, keys, shadow mode, headers.

use std::time::Duration;

use pretty_assertions::assert_eq;

use crate::helpers::{Gateway, Seen, rate_limit, upstream};

async fn gateway_with(policies: &str) -> (Gateway, crate::helpers::Upstream) {
    let products = upstream("products", Seen::default()).await;
    let gateway = Gateway::start(&format!("products={}", products.url), policies, &[]).await;
    (gateway, products)
}

#[tokio::test]
async fn a_token_bucket_allows_its_burst_then_limits_at_the_configured_rate() {
    // 3 per 30 s refills one token every 10 s; the bucket holds 3. (Slow enough that a busy
    // machine cannot refill a token between two requests the test sends back to back.)
    let (gw, products) = gateway_with(&rate_limit(
        "browse",
        "{name: browse, match: {pathPrefix: /v1/products, methods: [GET]}, clientKey: {type: ClientIP}, requests: 3, period: 30s, burst: 3}",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gw.status("/v1/products", &[]).await);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "the burst of 3 passes, the 4th is limited"
    );
    assert_eq!(
        products.hits(),
        3,
        "a limited request never reaches the service"
    );

    let refused = gw.get("/v1/products", &[]).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"browse\";q=3;w=30");
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"browse\";r=0;t=")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["detail"].as_str().unwrap().contains("browse"));

    // A token comes back every 10 s: polled, the first request to pass comes no sooner than
    // Retry-After said (a slow machine can only make it later), and it takes the one token:
    // the next is refused again.
    let refused_at = std::time::Instant::now();
    loop {
        if gw.status("/v1/products", &[]).await == 200 {
            break;
        }
        assert!(
            refused_at.elapsed() < Duration::from_secs(60),
            "never refilled"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        refused_at.elapsed() >= Duration::from_secs(retry_after - 1),
        "refilled after {:?}, before the {retry_after} s Retry-After",
        refused_at.elapsed()
    );
    assert_eq!(
        gw.status("/v1/products", &[]).await,
        429,
        "one token came back, not two"
    );

    // Unmatched requests are not counted: another method, another path.
    let posted = gw
        .http
        .post(format!("{}/v1/products", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    assert_eq!(gw.status("/v1/categories", &[]).await, 200);
}

#[tokio::test]
async fn allowed_answers_carry_the_remaining_quota() {
    let (gw, _products) = gateway_with(&rate_limit(
        "browse",
        "{name: browse, clientKey: {type: ClientIP}, requests: 5, period: 1m}",
    ))
    .await;
    let first = gw.get("/v1/products", &[]).await;
    assert_eq!(first.headers()["ratelimit-policy"], "\"browse\";q=5;w=60");
    assert_eq!(first.headers()["ratelimit"], "\"browse\";r=4;t=0");
}

#[tokio::test]
async fn a_sliding_window_holds_the_limit_per_client_key() {
    let (gw, _products) = gateway_with(&rate_limit(
        "per-key",
        "{name: per-key, clientKey: {type: Header, header: X-Client}, algorithm: SlidingWindow, requests: 5, period: 1m}",
    ))
    .await;
    let mut a = Vec::new();
    for _ in 0..7 {
        a.push(gw.status("/v1/products", &[("x-client", "a")]).await);
    }
    assert_eq!(a, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        gw.status("/v1/products", &[("x-client", "b")]).await,
        200,
        "b has its own window"
    );
    let refused = gw.get("/v1/products", &[("x-client", "a")]).await;
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=120).contains(&wait), "a window-sized wait: {wait}");
}

#[tokio::test]
async fn user_keys_come_from_the_verified_token_and_api_keys_from_their_header() {
    let products = upstream("products", Seen::default()).await;
    let policies = format!(
        "{}{}",
        rate_limit(
            "users",
            "{name: users, match: {path: /v1/products/mine}, clientKey: {type: User}, requests: 1, period: 1m}"
        ),
        rate_limit(
            "keys",
            "{name: keys, match: {path: /v1/products/keyed}, clientKey: {type: ApiKey}, requests: 1, period: 1m}"
        ),
    );
    let gw = Gateway::start(&format!("products={}", products.url), &policies, &[]).await;
    let alice = format!("Bearer {}", gw.issuer.token("alice", &["customer"]));
    let bob = format!("Bearer {}", gw.issuer.token("bob", &["customer"]));
    assert_eq!(
        gw.status("/v1/products/mine", &[("authorization", &alice)])
            .await,
        200
    );
    assert_eq!(
        gw.status("/v1/products/mine", &[("authorization", &alice)])
            .await,
        429
    );
    assert_eq!(
        gw.status("/v1/products/mine", &[("authorization", &bob)])
            .await,
        200,
        "bob is another key"
    );
    assert_eq!(
        gw.status("/v1/products/keyed", &[("x-api-key", "k1")])
            .await,
        200
    );
    assert_eq!(
        gw.status("/v1/products/keyed", &[("x-api-key", "k1")])
            .await,
        429
    );
    assert_eq!(
        gw.status("/v1/products/keyed", &[("x-api-key", "k2")])
            .await,
        200
    );
}

#[tokio::test]
async fn shadow_mode_counts_what_it_would_refuse_but_refuses_nothing() {
    let (gw, products) = gateway_with(&rate_limit(
        "trial",
        "{name: trial, clientKey: {type: ClientIP}, requests: 2, period: 1m, shadow: true}",
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(gw.status("/v1/products", &[]).await, 200);
    }
    assert_eq!(products.hits(), 5);
    let metrics = gw.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gateway_rate_limited_total") && l.contains("rule=\"trial\""))
        .unwrap_or_else(|| panic!("no shadow count in:\n{metrics}"));
    assert!(line.contains("shadow=\"true\""), "{line}");
    assert!(line.ends_with(" 3"), "3 of 5 were over the limit: {line}");
}

#[tokio::test]
async fn limits_for_the_whole_shop_are_shared_by_the_gateway_replicas() {
    let products = upstream("products", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}", products.url),
        &rate_limit("shop", "{name: shop, clientKey: {type: ClientIP}, algorithm: SlidingWindow, requests: 6, period: 1m}"),
        &["--replicas=3"],
    )
    .await;
    let mut passed = 0;
    for _ in 0..6 {
        if gw.status("/v1/products", &[]).await == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 2, "one of three replicas enforces a third of 6");
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_limited_like_any_other_traffic() {
    let (gw, products) = gateway_with(&rate_limit(
        "per-ip",
        "{name: per-ip, clientKey: {type: ClientIP}, algorithm: SlidingWindow, requests: 2, period: 1m}",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            gw.status("/v1/products", &[("authorization", "Bearer not-a-token")])
                .await,
        );
    }
    assert_eq!(
        statuses,
        [401, 401, 429, 429],
        "counted before the signature check"
    );
    assert_eq!(products.hits(), 0);
}
