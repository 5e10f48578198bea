//! CircuitPolicy at the gateway: breaker, retries and their budget, bulkhead, outlier
//! ejection, deadlines, fallback.

use std::time::Duration;

use pretty_assertions::assert_eq;

use crate::helpers::{Gateway, Seen, Upstream, circuit, upstream};

async fn payments_with(spec: &str) -> (Gateway, Upstream) {
    let payments = upstream("payments", Seen::default()).await;
    let gw = Gateway::start(
        &format!("payments={}", payments.url),
        &circuit("payments", "payments", spec),
        &[],
    )
    .await;
    (gw, payments)
}

#[tokio::test]
async fn the_breaker_opens_after_the_failures_half_opens_after_open_for_and_closes_on_success() {
    let (gw, payments) = payments_with(
        "  circuitBreaker: {consecutiveFailures: 3, window: 10s, openFor: 3s, halfOpenRequests: 1}
  fallback: {status: 503, detail: Payments are resting; your cart is kept.}",
    )
    .await;
    payments.set(500, 0);
    for _ in 0..3 {
        assert_eq!(
            gw.status("/v1/payments/p1", &[]).await,
            500,
            "failures pass through"
        );
    }
    assert_eq!(payments.hits(), 3);

    let refused = gw.get("/v1/payments/p1", &[]).await;
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(refused.headers()["retry-after"], "3");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["detail"], "Payments are resting; your cart is kept.");
    assert_eq!(
        payments.hits(),
        3,
        "an open breaker does not call the service"
    );
    assert!(
        gw.metrics()
            .await
            .contains("gateway_circuit_state{upstream=\"payments\",service=\"gateway\"} 1")
            || gw
                .metrics()
                .await
                .contains("gateway_circuit_state{service=\"gateway\",upstream=\"payments\"} 1")
    );

    // After openFor one probe goes through; the service has healed, so the breaker closes.
    // Polled rather than slept: until the probe, every answer is the fallback and the service
    // is not called; however late the machine gets there, the first call to reach it is the
    // probe.
    payments.set(0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = gw.status("/v1/payments/p1", &[]).await;
        if payments.hits() > 3 {
            assert_eq!(status, 200, "the probe");
            break;
        }
        assert_eq!(status, 503, "still open: refused without a call");
        assert!(std::time::Instant::now() < deadline, "never half-opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(payments.hits(), 4);
    for _ in 0..3 {
        assert_eq!(gw.status("/v1/payments/p1", &[]).await, 200, "closed again");
    }
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let (gw, payments) =
        payments_with("  circuitBreaker: {consecutiveFailures: 2, window: 10s, openFor: 3s}").await;
    payments.set(503, 0);
    for _ in 0..2 {
        gw.status("/v1/payments/p1", &[]).await;
    }
    assert_eq!(payments.hits(), 2);
    // Poll until a call reaches the service again: that call is the probe, and it fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = gw.status("/v1/payments/p1", &[]).await;
        assert_eq!(status, 503);
        if payments.hits() > 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never half-opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(payments.hits(), 3, "one probe");
    let hits = payments.hits();
    assert_eq!(gw.status("/v1/payments/p1", &[]).await, 503);
    assert_eq!(payments.hits(), hits, "open again: not called");
}

#[tokio::test]
async fn idempotent_requests_and_ones_with_a_key_are_retried_others_are_not() {
    let (gw, payments) = payments_with(
        "  retry: {attempts: 3, backoff: {base: 5ms, max: 20ms}, retryOn: [GatewayError]}",
    )
    .await;
    payments.set(503, 0);
    assert_eq!(gw.status("/v1/payments/p1", &[]).await, 503);
    assert_eq!(payments.hits(), 3, "GET: three attempts");

    let post = gw
        .http
        .post(format!("{}/v1/payments", gw.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 503);
    assert_eq!(payments.hits(), 4, "POST without a key: one attempt");

    let keyed = gw
        .http
        .post(format!("{}/v1/payments", gw.base))
        .header("idempotency-key", "k-1")
        .body("{\"amount\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status().as_u16(), 503);
    assert_eq!(
        payments.hits(),
        7,
        "POST with an Idempotency-Key: three attempts"
    );
    let bodies: Vec<u64> = payments.seen.lock().unwrap()[4..]
        .iter()
        .map(|r| r["body_len"].as_u64().unwrap())
        .collect();
    assert_eq!(bodies, [13, 13, 13], "each retry carries the whole body");

    // A 500 is not a GatewayError: not retried under this policy.
    payments.set(500, 0);
    assert_eq!(gw.status("/v1/payments/p1", &[]).await, 500);
    assert_eq!(payments.hits(), 8);
}

#[tokio::test]
async fn retries_stay_within_the_budget_under_concurrency() {
    let (gw, payments) = payments_with(
        "  retry: {attempts: 3, backoff: {base: 1ms, max: 2ms}, budgetPercent: 20, retryOn: [GatewayError]}",
    )
    .await;
    // Every call fails slowly, so 20 requests are in flight together.
    payments.set(503, 1_000);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (gw.http.clone(), format!("{}/v1/payments/p1", gw.base));
            tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 503);
    }
    let hits = payments.hits();
    // Without a budget: 60 attempts. 20 % of 20 in flight is 4 retries at a time.
    assert!(hits > 20, "some retries happened: {hits}");
    assert!(hits <= 20 + 8, "retries bounded by the budget: {hits}");
}

#[tokio::test]
async fn the_bulkhead_refuses_calls_beyond_its_slots_and_queue() {
    let (gw, payments) = payments_with("  bulkhead: {maxConcurrent: 2, maxQueued: 1}").await;
    payments.set(0, 1_500);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (http, url) = (gw.http.clone(), format!("{}/v1/payments/p1", gw.base));
            tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 200, 503, 503],
        "2 in flight + 1 queued; 2 refused"
    );
    assert_eq!(payments.hits(), 3);
}

#[tokio::test]
async fn a_deadline_cuts_a_slow_call_and_per_try_timeouts_retry_elsewhere() {
    // The upstream takes 30 s; the deadline is 300 ms. The margin is wide on purpose: only
    // "waited for the upstream" must fail, not a slow machine.
    let (gw, payments) = payments_with("  timeout: 300ms").await;
    payments.set(0, 30_000);
    let started = std::time::Instant::now();
    let answer = gw.get("/v1/payments/p1", &[]).await;
    assert_eq!(answer.status().as_u16(), 504);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "did not wait for the upstream"
    );
    assert_eq!(payments.hits(), 1);

    // Two endpoints, one slow: a per-try timeout moves the retry to the other. Requests go on
    // until the slow endpoint has been tried twice, so the test shows the cut-and-retry
    // happened rather than the balancer simply never picking the slow one.
    let slow = upstream("slow", Seen::default()).await;
    let fast = upstream("fast", Seen::default()).await;
    slow.set(0, 30_000);
    let gw = Gateway::start(
        &format!("payments={}|{}", slow.url, fast.url),
        &circuit(
            "payments",
            "payments",
            "  timeout: 10s\n  retry: {attempts: 2, backoff: {base: 1ms, max: 2ms}, retryOn: [Timeout], perTryTimeout: 1s}",
        ),
        &[],
    )
    .await;
    let mut sent = 0;
    while slow.hits() < 2 {
        assert!(
            sent < 40,
            "the slow endpoint was never picked in {sent} requests"
        );
        assert_eq!(gw.status("/v1/payments/p1", &[]).await, 200);
        sent += 1;
    }
    assert_eq!(
        fast.hits(),
        sent,
        "every request was answered by the fast endpoint, those cut on the slow one included"
    );
}

#[tokio::test]
async fn an_outlier_endpoint_is_ejected_and_returns_after_its_ejection_time() {
    let bad = upstream("bad", Seen::default()).await;
    let good = upstream("good", Seen::default()).await;
    bad.set(500, 0);
    let gw = Gateway::start(
        &format!("payments={}|{}", bad.url, good.url),
        &circuit(
            "payments",
            "payments",
            // Long enough that the twenty requests below fit inside it on a loaded machine.
            "  outlierDetection: {consecutiveErrors: 2, baseEjectionTime: 8s, maxEjectionPercent: 50}",
        ),
        &[],
    )
    .await;
    for _ in 0..10 {
        gw.status("/v1/payments/p1", &[]).await;
    }
    assert_eq!(bad.hits(), 2, "ejected after two errors in a row");
    let good_before = good.hits();
    for _ in 0..10 {
        assert_eq!(gw.status("/v1/payments/p1", &[]).await, 200);
    }
    assert_eq!(
        good.hits(),
        good_before + 10,
        "only the good endpoint while ejected"
    );
    assert!(
        gw.metrics()
            .await
            .contains("gateway_endpoint_ejections_total")
    );

    bad.set(0, 0);
    // Polled: back in rotation once the ejection time is over, however slow the machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while bad.hits() == 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never back in rotation after the ejection time"
        );
        assert_eq!(gw.status("/v1/payments/p1", &[]).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_body_over_the_limit_is_the_clients_fault_not_the_services() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payments = upstream("payments", Seen::default()).await;
    let gw = Gateway::start(
        &format!("payments={}", payments.url),
        &circuit(
            "payments",
            "payments",
            "  circuitBreaker: {consecutiveFailures: 2, window: 10s, openFor: 30s}\n  outlierDetection: {consecutiveErrors: 2}",
        ),
        &["--max-body-bytes=1000"],
    )
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // Chunked: no Content-Length to refuse up front, so the limit trips while streaming.
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let chunk = "x".repeat(3000);
        let request = format!(
            "POST /v1/payments HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{}",
            answer.lines().next().unwrap_or("")
        );
    }
    // The breaker stayed closed and the endpoint in rotation: the service did nothing wrong.
    assert_eq!(gw.status("/v1/payments/p1", &[]).await, 200);
    let metrics = gw.metrics().await;
    let ejections: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gateway_endpoint_ejections_total{") && l.contains("payments"))
        .collect();
    assert_eq!(ejections.len(), 1, "{metrics}");
    assert!(
        ejections[0].ends_with(" 0"),
        "no ejection: {}",
        ejections[0]
    );
}
