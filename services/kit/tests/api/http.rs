use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::example::spawn;

#[tokio::test]
async fn the_operational_endpoints_answer_on_a_port_zero_listener() {
    let app = spawn().await;
    let live = app.http.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let report: Value = ready.json().await.unwrap();
    assert_eq!(report["status"], "ready");
    assert_eq!(report["checks"]["database"]["status"], "ok");
    assert_eq!(report["checks"]["database"]["critical"], true);
    assert_eq!(report["checks"]["nats"]["critical"], false);

    let openapi: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        openapi["openapi"].as_str().unwrap().starts_with("3."),
        "{openapi}"
    );
    assert!(openapi["paths"]["/readyz"]["get"].is_object(), "{openapi}");
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_and_not_the_public_one() {
    let app = spawn().await;
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let admin = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(
        admin
            .text()
            .await
            .unwrap()
            .contains("process_resident_memory_bytes")
    );
    let probe = app.http.get(app.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK, "probes answer on both");
    let unknown = app
        .http
        .get(app.admin_url("/v1/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        StatusCode::NOT_FOUND,
        "the API is not on the admin listener"
    );
}

#[tokio::test]
async fn a_valid_request_creates_a_row_and_reads_back() {
    let app = spawn().await;
    let created = app
        .http
        .post(app.url("/v1/items"))
        .json(&json!({"name": "mug"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let item: Value = created.json().await.unwrap();
    let id = item["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    let fetched: Value = app
        .http
        .get(app.url(&format!("/v1/items/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["name"], "mug");
}

async fn item_count(app: &crate::example::Running) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(app.platform.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unknown_field_is_a_422_problem_naming_it_and_changes_nothing() {
    let app = spawn().await;
    let response = app
        .http
        .post(app.url("/v1/items"))
        .json(&json!({"name": "mug", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://tienda.dev/problems/validation");
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["errors"][0]["field"], "colour");
    assert_eq!(item_count(&app).await, 0);
}

/// PostgreSQL stores no NUL in text: a NUL from a client must be a 4xx before it gets there,
/// never a 500 (which the gateway would count against the service's breaker).
#[tokio::test]
async fn a_nul_character_in_a_body_path_or_query_is_a_4xx_and_changes_nothing() {
    let app = spawn().await;
    let response = app
        .http
        .post(app.url("/v1/items"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"name": "mu\u0000g"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    assert_eq!(item_count(&app).await, 0);

    for path in ["/v1/items/a%00b", "/v1/items?name=%00", "/nowhere%00"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("%00"),
            "{problem}"
        );
    }
}

/// axum's extractors answer in plain text; every error a client meets is a problem document,
/// as each document's `default` response says (schemathesis found the plain ones).
#[tokio::test]
async fn an_extractors_plain_text_rejection_becomes_a_problem_and_the_document_says_so() {
    let app = spawn().await;
    let response = app
        .http
        .get(app.url("/v1/typed/null,null"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("UUID"),
        "{problem}"
    );

    let openapi: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let readyz = &openapi["paths"]["/readyz"]["get"]["responses"];
    assert_eq!(
        readyz["default"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(openapi["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn malformed_json_wrong_media_type_and_oversized_bodies_are_problems() {
    let app = spawn().await;
    let bad_json = app
        .http
        .post(app.url("/v1/items"))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_json.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let text = app
        .http
        .post(app.url("/v1/items"))
        .body("name=mug")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = json!({"name": "x".repeat(100 * 1024)});
    let too_large = app
        .http
        .post(app.url("/v1/items"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = too_large.json().await.unwrap();
    assert_eq!(problem["status"], 413);
    assert_eq!(item_count(&app).await, 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn().await;
    let missing = app
        .http
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let wrong_method = app.http.delete(app.url("/v1/items")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let problem: Value = wrong_method.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://tienda.dev/problems/method-not-allowed"
    );
}

#[tokio::test]
async fn a_panic_is_a_500_problem_that_leaks_nothing_and_the_service_keeps_serving() {
    let app = spawn().await;
    let response = app.http.get(app.url("/v1/panic")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("secret") && !body.contains("postgres://"),
        "{body}"
    );
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "https://tienda.dev/problems/internal");

    let again = app.http.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_id_is_generated_or_propagated() {
    let app = spawn().await;
    let generated = app.http.get(app.url("/livez")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let propagated = app
        .http
        .get(app.url("/livez"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(propagated.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn request_metrics_are_labelled_by_route_template_and_status() {
    let app = spawn().await;
    let id = uuid::Uuid::now_v7();
    for _ in 0..3 {
        let r = app
            .http
            .get(app.url(&format!("/v1/items/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let metrics = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("http_requests_total") && l.contains(r#"route="/v1/items/{id}""#))
        .unwrap_or_else(|| panic!("no request counter for the route template:\n{metrics}"));
    assert!(
        line.contains(r#"status="404""#) && line.contains(r#"method="GET""#),
        "{line}"
    );
    assert!(line.contains(r#"service="example""#), "{line}");
    assert!(line.ends_with(" 3"), "{line}");
    assert!(
        !metrics.contains(&id.to_string()),
        "raw paths must not become labels"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains("http_requests_in_flight"));
}

#[tokio::test]
async fn the_callers_trace_continues_into_the_outbox_row_written_by_the_request() {
    let app = spawn().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let created = app
        .http
        .post(app.url("/v1/items"))
        .header("traceparent", traceparent)
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let headers: sqlx::types::Json<std::collections::BTreeMap<String, String>> =
        sqlx::query_scalar("SELECT headers FROM tienda_outbox")
            .fetch_one(app.platform.db())
            .await
            .unwrap();
    let stored = tienda_kit::trace_context::TraceContext::parse(&headers.0["traceparent"]).unwrap();
    assert_eq!(stored.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(headers.0["Tienda-Type"], "inventory.adjusted");
}

#[tokio::test]
async fn a_rejected_request_writes_no_event() {
    let app = spawn().await;
    let rejected = app
        .http
        .post(app.url("/v1/items"))
        .json(&json!({"name": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM tienda_outbox")
        .fetch_one(app.platform.db())
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn readiness_names_the_process_when_its_supervisor_gave_it_a_name() {
    tienda_kit::install_crypto_provider();
    let db = tienda_kit::testing::TestDatabase::create().await;
    let mut config = tienda_kit::testing::config(Some(&db.url));
    config.instance = Some("products-4242-1a2b".into());
    let named = crate::example::spawn_app(crate::example::build(config, false).await.unwrap(), db);
    for url in [named.url("/readyz"), named.admin_url("/readyz")] {
        let ready = named.http.get(url).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(ready.headers()["tienda-instance"], "products-4242-1a2b");
    }

    let unnamed = spawn().await;
    let ready = unnamed
        .http
        .get(unnamed.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert!(!ready.headers().contains_key("tienda-instance"));

    let db = tienda_kit::testing::TestDatabase::create().await;
    let mut config = tienda_kit::testing::config(Some(&db.url));
    config.instance = Some("line\nbreak".into());
    let refused = crate::example::build(config, false).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("TIENDA_INSTANCE"),
        "{refused:#}"
    );
}

/// A client uploading a body the service refuses on sight (its declared length is over the
/// limit) keeps writing while the 413 travels back. The server must read and drop the rest
/// before it closes: closing on unread bytes makes the kernel reset the connection, and the
/// client, mid-write, sees "connection reset" instead of the answer.
#[tokio::test]
async fn a_refused_upload_is_read_to_its_end_so_the_client_gets_the_413_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LEN: usize = 8 * 1024 * 1024;
    let app = spawn().await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    for attempt in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {LEN}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let chunk = vec![b' '; 64 * 1024];
        for sent in (0..LEN).step_by(chunk.len()) {
            if let Err(error) = stream.write_all(&chunk).await {
                panic!("attempt {attempt}: writing the body failed after {sent} bytes: {error}");
            }
        }
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .unwrap_or_else(|error| panic!("attempt {attempt}: reading the answer: {error}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "attempt {attempt}: {answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    assert_eq!(item_count(&app).await, 0);
}
