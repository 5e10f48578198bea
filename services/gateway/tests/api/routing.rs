//! Routing, header hygiene, identity forwarding, problems for unknown and absent services.

use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::setup;

#[tokio::test]
async fn requests_reach_their_service_with_clean_headers() {
    let s = setup().await;
    let answer: Value = s
        .http
        .get(format!("{}/v1/products?q=boots&limit=2", s.base))
        .header("connection", "x-private")
        .header("x-private", "hop")
        .header("x-tienda-user-id", "forged-admin")
        .header("x-tienda-user-roles", "admin")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "198.51.100.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["upstream"].as_str().unwrap().starts_with("products"));
    assert_eq!(answer["uri"], "/v1/products?q=boots&limit=2");
    let headers = &answer["headers"];
    assert!(
        headers.get("x-private").is_none(),
        "hop-by-hop named by Connection dropped"
    );
    assert!(
        headers.get("x-tienda-user-id").is_none(),
        "forged identity stripped"
    );
    assert!(headers.get("x-tienda-user-roles").is_none());
    // The client is no trusted proxy: what it wrote in X-Forwarded-For is replaced.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        headers["x-real-ip"], "127.0.0.1",
        "the client as the gateway judged it"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(
        headers["x-request-id"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    assert!(
        headers["traceparent"]
            .as_str()
            .is_some_and(|v| v.starts_with("00-"))
    );

    let jwks: Value = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["upstream"], "auth");

    // A body crosses whole; both product endpoints take requests.
    for _ in 0..6 {
        let posted: Value = s
            .http
            .post(format!("{}/v1/inventory/reservations", s.base))
            .body(vec![b'x'; 100_000])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(posted["body_len"], 100_000);
    }
    let used: std::collections::BTreeSet<String> = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r["upstream"].as_str().map(str::to_owned))
        .collect();
    assert!(
        used.contains("products-1") && used.contains("products-2"),
        "{used:?}"
    );
}

#[tokio::test]
async fn a_verified_token_becomes_identity_headers_and_a_bad_one_stops_at_the_gateway() {
    let s = setup().await;
    let token = s.gateway.issuer.token("user-7", &["customer", "support"]);
    let answer: Value = s
        .http
        .get(format!("{}/v1/auth/me", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["headers"]["x-tienda-user-id"], "user-7");
    assert_eq!(answer["headers"]["x-tienda-user-roles"], "customer,support");
    assert_eq!(
        answer["headers"]["authorization"],
        format!("Bearer {token}")
    );

    let before = s.seen.lock().unwrap().len();
    let refused = s
        .http
        .get(format!("{}/v1/auth/me", s.base))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        s.seen.lock().unwrap().len(),
        before,
        "the upstream never saw it"
    );
}

/// `Connection` names headers that end at the next hop; the gateway honours that for what the
/// client sent, never for what it sets itself.
#[tokio::test]
async fn a_client_cannot_strip_the_headers_the_gateway_sets_by_naming_them_in_connection() {
    let s = setup().await;
    let token = s.gateway.issuer.token("user-7", &["customer"]);
    let answer: Value = s
        .http
        .get(format!("{}/v1/auth/me", s.base))
        .bearer_auth(&token)
        .header(
            "connection",
            "x-tienda-user-id, x-tienda-user-roles, x-real-ip, x-forwarded-for, traceparent, x-client-note",
        )
        .header("x-client-note", "hop-by-hop")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &answer["headers"];
    assert_eq!(headers["x-tienda-user-id"], "user-7", "{headers}");
    assert_eq!(headers["x-tienda-user-roles"], "customer");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers["traceparent"].is_string(), "{headers}");
    assert!(
        headers.get("x-client-note").is_none(),
        "what the client named is still dropped: {headers}"
    );
    assert!(headers.get("connection").is_none());
}

#[tokio::test]
async fn unknown_paths_absent_and_down_services_are_problems() {
    let s = setup().await;
    for (path, status) in [
        ("/v1/nothing", StatusCode::NOT_FOUND),
        ("/v1/orders", StatusCode::SERVICE_UNAVAILABLE),
        ("/v1/payments/1", StatusCode::BAD_GATEWAY),
    ] {
        let response = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let ready = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_endpoint_failing_its_health_checks_leaves_the_rotation_and_returns_when_it_passes() {
    use crate::helpers::{Gateway, Seen, upstream};
    let sick = upstream("sick", Seen::default()).await;
    let well = upstream("well", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}|{}", sick.url, well.url),
        "",
        &["--health-check-seconds=1"],
    )
    .await;
    sick.set_unready(true);
    // Two failed checks (one a second) take it out: polled, not slept for, until ten requests
    // in a row leave it alone (every request is answered meanwhile).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let before = loop {
        let before = sick.hits();
        for _ in 0..10 {
            assert_eq!(gw.status("/v1/products", &[]).await, 200);
        }
        if sick.hits() == before {
            break before;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "traffic still reaches an endpoint failing /readyz"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for _ in 0..10 {
        assert_eq!(gw.status("/v1/products", &[]).await, 200);
    }
    assert_eq!(
        sick.hits(),
        before,
        "no traffic to an endpoint failing /readyz"
    );
    sick.set_unready(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sick.hits() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "never back once its checks pass"
        );
        gw.status("/v1/products", &[]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn upstreams_can_be_spoken_to_over_http2() {
    use crate::helpers::{Gateway, Seen, upstream};
    let products = upstream("products", Seen::default()).await;
    let h1 = Gateway::start(&format!("products={}", products.url), "", &[]).await;
    let answer: Value = h1.get("/v1/products", &[]).await.json().await.unwrap();
    assert_eq!(answer["version"], "HTTP/1.1");
    let h2 = Gateway::start(
        &format!("products={}", products.url),
        "",
        &["--upstream-http2"],
    )
    .await;
    for _ in 0..3 {
        let answer: Value = h2.get("/v1/products", &[]).await.json().await.unwrap();
        assert_eq!(answer["version"], "HTTP/2.0");
    }
}

#[tokio::test]
async fn serving_from_threads_of_its_own_proxies_every_request_once() {
    let products = crate::helpers::upstream("products", crate::helpers::Seen::default()).await;
    let gw = crate::helpers::Gateway::start(
        &format!("products={}", products.url),
        "",
        &["--serve-threads=2"],
    )
    .await;
    let token = format!("Bearer {}", gw.issuer.token("c1", &["customer"]));
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..16 {
        // A client each: sixteen connections, spread over the two threads' accepts.
        let (base, token) = (gw.base.clone(), token.clone());
        requests.spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..10 {
                let answer: Value = http
                    .get(format!("{base}/v1/products/{n}-{i}"))
                    .header("authorization", &token)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(answer["uri"], format!("/v1/products/{n}-{i}"));
                assert_eq!(answer["headers"]["x-tienda-user-id"], "c1");
            }
        });
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
    assert_eq!(products.hits(), 160, "each request reached products once");
}

#[test]
fn the_public_port_is_served_from_one_thread_per_core_unless_set() {
    use clap::Parser as _;
    use tienda_gateway::config::Config;

    let parse = |extra: &[&str]| {
        let mut args = vec!["tienda-gateway", "--auth-jwks-url=http://127.0.0.1:9/jwks"];
        args.extend_from_slice(extra);
        Config::parse_from(args).serve_threads
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(parse(&[]), cores);
    assert_eq!(parse(&["--serve-threads=0"]), 0, "0: the shared runtime");
    assert_eq!(parse(&["--serve-threads=3"]), 3);
}
