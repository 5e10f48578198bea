//! The edge: access rules, body limits, trusted proxies, CORS, security headers.

use pretty_assertions::assert_eq;

use crate::helpers::{Gateway, Seen, rate_limit, upstream};

#[tokio::test]
async fn access_rules_need_a_user_or_a_role_before_the_service_is_called() {
    let orders = upstream("orders", Seen::default()).await;
    let gw = Gateway::start(
        &format!("orders={}", orders.url),
        "",
        &[r#"--access-rules=[{"path_prefix": "/v1/orders/admin", "access": "role:admin"},
                             {"path_prefix": "/v1/orders", "methods": ["POST"], "access": "authenticated"}]"#],
    )
    .await;
    let customer = format!("Bearer {}", gw.issuer.token("c1", &["customer"]));
    let admin = format!("Bearer {}", gw.issuer.token("a1", &["admin"]));

    let anonymous = gw
        .http
        .post(format!("{}/v1/orders", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let signed_in = gw
        .http
        .post(format!("{}/v1/orders", gw.base))
        .header("authorization", &customer)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 200);
    assert_eq!(gw.status("/v1/orders", &[]).await, 200, "GET is public");
    assert_eq!(
        gw.status("/v1/orders/admin/stats", &[("authorization", &customer)])
            .await,
        403
    );
    assert_eq!(gw.status("/v1/orders/admin/stats", &[]).await, 401);
    assert_eq!(
        gw.status("/v1/orders/admin/stats", &[("authorization", &admin)])
            .await,
        200
    );
    assert_eq!(orders.hits(), 3, "refused requests never reached orders");
}

#[tokio::test]
async fn a_token_that_cannot_be_checked_while_auth_is_down_is_a_503_not_a_401() {
    let orders = upstream("orders", Seen::default()).await;
    // Auth's JWKS on a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks = format!(
        "http://{}/.well-known/jwks.json",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let gw = Gateway::start(
        &format!("orders={}", orders.url),
        "",
        &[&format!("--auth-jwks-url={jwks}")],
    )
    .await;
    let token = format!("Bearer {}", gw.issuer.token("c1", &["customer"]));
    for _ in 0..3 {
        let response = gw.get("/v1/orders", &[("authorization", &token)]).await;
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("retry shortly"),
            "{problem}"
        );
    }
    assert_eq!(
        orders.hits(),
        0,
        "an unchecked token never reaches a service"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_the_service_never_sees_it() {
    let products = upstream("products", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}", products.url),
        "",
        &["--max-body-bytes=1000"],
    )
    .await;
    let big = gw
        .http
        .post(format!("{}/v1/products", gw.base))
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    assert_eq!(big.headers()["content-type"], "application/problem+json");
    let fits = gw
        .http
        .post(format!("{}/v1/products", gw.base))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status().as_u16(), 200);
    assert_eq!(products.hits(), 1);
}

#[tokio::test]
async fn client_addresses_come_from_forwarded_for_only_behind_trusted_proxies() {
    let products = upstream("products", Seen::default()).await;
    let policy = rate_limit(
        "ip",
        "{name: ip, clientKey: {type: ClientIP}, algorithm: SlidingWindow, requests: 1, period: 1m}",
    );
    // Loopback is a trusted proxy: each X-Forwarded-For client has its own limit.
    let trusting = Gateway::start(
        &format!("products={}", products.url),
        &policy,
        &["--trusted-proxies=127.0.0.0/8"],
    )
    .await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            trusting
                .status("/v1/products", &[("x-forwarded-for", ip)])
                .await,
            200
        );
    }
    assert_eq!(
        trusting
            .status("/v1/products", &[("x-forwarded-for", "203.0.113.1")])
            .await,
        429
    );
    // Untrusted: the header is the client's word and changes nothing.
    let wary = Gateway::start(&format!("products={}", products.url), &policy, &[]).await;
    assert_eq!(
        wary.status("/v1/products", &[("x-forwarded-for", "203.0.113.1")])
            .await,
        200
    );
    assert_eq!(
        wary.status("/v1/products", &[("x-forwarded-for", "203.0.113.2")])
            .await,
        429
    );
}

#[tokio::test]
async fn answers_carry_security_headers_and_cors_answers_configured_origins() {
    let products = upstream("products", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}", products.url),
        "",
        &["--cors-origins=https://shop.example"],
    )
    .await;
    let answer = gw
        .get("/v1/products", &[("origin", "https://shop.example")])
        .await;
    let h = answer.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");

    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/products", gw.base))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let foreign = gw
        .get("/v1/products", &[("origin", "https://evil.example")])
        .await;
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let problem = gw.get("/v1/nothing", &[]).await;
    assert_eq!(
        problem.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

#[tokio::test]
async fn operator_endpoints_answer_only_on_the_admin_listener() {
    let gw = Gateway::start("", "", &[]).await;
    for path in ["/metrics", "/policies"] {
        let public = gw.get(path, &[]).await;
        assert_eq!(public.status(), 404, "{path} on the public listener");
        assert_eq!(public.headers()["content-type"], "application/problem+json");
        assert_eq!(gw.admin_get(path).await.status(), 200, "{path} on admin");
    }
    assert_eq!(
        gw.admin_get("/readyz").await.status(),
        200,
        "probes on both"
    );
    assert_eq!(gw.get("/readyz", &[]).await.status(), 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/readyz""#),
        "{metrics}"
    );
    let doc: serde_json::Value = gw.get("/openapi.json", &[]).await.json().await.unwrap();
    assert!(doc["paths"]["/policies"].is_null(), "{doc}");
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metric_labels() {
    let gw = Gateway::start("", "", &[]).await;
    for method in ["BREW", "XYZZY", "PROPFIND"] {
        gw.http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/v1/products", gw.base),
            )
            .send()
            .await
            .unwrap();
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    for method in ["BREW", "XYZZY", "PROPFIND"] {
        assert!(!metrics.contains(method), "{method} became a label");
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_and_oversized_headers_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let products = upstream("products", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}", products.url),
        "",
        &["--header-read-timeout-seconds=1", "--max-header-bytes=8192"],
    )
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Slowloris: a header line every 300 ms, never the blank line that ends them. With a 1 s
    // header timeout the gateway cuts it off; without one it would stay open for the whole
    // 30 s this client keeps trickling (no bound on the time is asserted: the machine is shared).
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for i in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if slow
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_millis(10), slow.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // An answer (408) then close also ends it.
            Ok(Ok(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the connection stayed open for {:?}",
        started.elapsed()
    );
    assert_eq!(products.hits(), 0);

    let huge = "a".repeat(10_000);
    let answer = gw.get("/v1/products", &[("x-huge", &huge)]).await;
    assert_eq!(answer.status().as_u16(), 431);
    assert_eq!(products.hits(), 0);
    assert_eq!(
        gw.status("/v1/products", &[]).await,
        200,
        "the gateway still serves"
    );
}

/// auth rotates its signing key: the running gateway's verifier (built once at start) must
/// fetch the new key when a token names it — at most once per refresh interval however many
/// such tokens arrive, so a flood of made-up `kid`s cannot turn it into a JWKS hammer.
#[tokio::test]
async fn a_rotated_signing_key_is_fetched_by_the_running_gateway_at_a_bounded_rate() {
    use std::sync::atomic::Ordering;
    let orders = upstream("orders", Seen::default()).await;
    let gw = Gateway::start(
        &format!("orders={}", orders.url),
        "",
        &[r#"--access-rules=[{"path_prefix": "/v1/orders", "access": "authenticated"}]"#],
    )
    .await;
    let before = format!("Bearer {}", gw.issuer.token("c1", &["customer"]));
    assert_eq!(
        gw.status("/v1/orders", &[("authorization", &before)]).await,
        200
    );
    assert_eq!(gw.issuer.fetches.load(Ordering::SeqCst), 1);

    // auth publishes a new key beside the old one and signs with it.
    let rotated = tienda_kit::testing::TokenIssuer::start().await;
    let new_key = rotated.jwks.lock().unwrap()["keys"][0].clone();
    gw.issuer.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(new_key);
    let after = format!("Bearer {}", rotated.token("c1", &["customer"]));

    // Tokens with the new kid until one is accepted: refused while the last fetch is younger
    // than the refresh interval (5 s), accepted after the one refetch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut tries = 0;
    loop {
        tries += 1;
        match gw.status("/v1/orders", &[("authorization", &after)]).await {
            200 => break,
            401 => {}
            other => panic!("unexpected {other}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never fetched"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.issuer.fetches.load(Ordering::SeqCst),
        2,
        "one refetch for {tries} tokens naming the new key"
    );
    assert_eq!(
        gw.status("/v1/orders", &[("authorization", &before)]).await,
        200,
        "the old key still verifies"
    );
    assert_eq!(gw.issuer.fetches.load(Ordering::SeqCst), 2);
}
