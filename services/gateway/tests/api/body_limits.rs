//! Body limits per route: the catalog import streams through with its own large limit, every
//! other route keeps the common one, and `GATEWAY_BODY_LIMITS` changes the table.

use clap::{CommandFactory, Parser};
use pretty_assertions::assert_eq;
use serde_json::Value;
use tienda_gateway::{Application, config::Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Gateway, Seen, Upstream, circuit, upstream};

const MIB: usize = 1024 * 1024;
const IMPORT: &str = "/v1/products/import";

async fn products_behind_gateway(policies: &str, extra: &[&str]) -> (Gateway, Upstream, Seen) {
    let seen = Seen::default();
    let products = upstream("products", seen.clone()).await;
    let gw = Gateway::start(&format!("products={}", products.url), policies, extra).await;
    (gw, products, seen)
}

fn body_lengths(seen: &Seen) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|r| r["body_len"].as_u64().unwrap())
        .collect()
}

async fn post(gw: &Gateway, path: &str, len: usize) -> reqwest::Response {
    gw.http
        .post(format!("{}{path}", gw.base))
        .body(vec![b'x'; len])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_5_mib_catalog_import_streams_through_the_gateway_whole() {
    // The gateway's common limit (and the kit's DefaultBodyLimit on its router) is 1 MiB.
    let (gw, products, seen) = products_behind_gateway("", &[]).await;

    let (status, answer) = gw
        .post_streamed(IMPORT, &[("content-type", "application/x-ndjson")], 5 * MIB)
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(products.hits(), 1);
    assert_eq!(body_lengths(&seen), [5 * MIB as u64]);
    let echoed: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        echoed["headers"]["transfer-encoding"], "chunked",
        "streamed on to the service, not collected into one sized body"
    );
}

#[tokio::test]
async fn a_2_mib_body_to_another_route_is_refused_before_the_service_is_called() {
    let (gw, products, _) = products_behind_gateway("", &[]).await;

    for path in [
        "/v1/products",
        "/v1/products/prices",
        "/v1/inventory/adjustments",
    ] {
        let answer = post(&gw, path, 2 * MIB).await;
        assert_eq!(answer.status().as_u16(), 413, "{path}");
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    let put = gw
        .http
        .put(format!("{}{IMPORT}", gw.base))
        .body(vec![b'x'; 2 * MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status().as_u16(),
        413,
        "only POST has the import's limit"
    );

    assert_eq!(products.hits(), 0);
}

#[tokio::test]
async fn a_streamed_body_over_its_route_limit_is_cut_with_413() {
    let (gw, _products, seen) = products_behind_gateway("", &[]).await;

    let (status, answer) = gw.post_streamed("/v1/products", &[], 2 * MIB).await;

    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("1048576 bytes"), "{answer}");
    assert!(body_lengths(&seen).is_empty(), "no body arrived whole");
}

#[tokio::test]
async fn a_declared_length_over_the_import_limit_is_refused_before_any_body_is_sent() {
    let (gw, products, _) = products_behind_gateway("", &[]).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Only the head: a body of 64 MiB + 1 announced and never sent.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {IMPORT} HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                64 * MIB + 1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("67108864 bytes"), "{answer}");
    assert_eq!(products.hits(), 0);
}

#[tokio::test]
async fn an_import_that_may_be_retried_is_streamed_once_and_not_retried() {
    let (gw, products, seen) = products_behind_gateway(
        &circuit(
            "products",
            "products",
            "  retry: {attempts: 3, backoff: {base: 1ms, max: 2ms}, retryOn: [GatewayError]}",
        ),
        &[],
    )
    .await;
    products.set(503, 0);

    // Too large to hold for a retry: sent once, the failure passed on.
    let (status, _) = gw
        .post_streamed(IMPORT, &[("idempotency-key", "import-1")], 5 * MIB)
        .await;
    assert_eq!(status, 503);
    assert_eq!(products.hits(), 1, "not retried");
    assert_eq!(body_lengths(&seen), [5 * MIB as u64]);

    // A small import declaring its length fits the common limit: held and retried as before.
    let small = gw
        .http
        .post(format!("{}{IMPORT}", gw.base))
        .header("idempotency-key", "import-2")
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status().as_u16(), 503);
    assert_eq!(products.hits(), 4, "tried three times");
}

#[tokio::test]
async fn limits_from_gateway_body_limits_replace_and_add_to_the_built_in_ones() {
    let (gw, products, seen) = products_behind_gateway(
        "",
        &["--body-limits=POST /v1/products/bulk=3MiB, POST /v1/products/import=1KiB"],
    )
    .await;

    assert_eq!(post(&gw, "/v1/products/bulk", 2 * MIB).await.status(), 200);
    assert_eq!(post(&gw, "/v1/products", 2 * MIB).await.status(), 413);
    assert_eq!(post(&gw, IMPORT, 1025).await.status(), 413);
    assert_eq!(post(&gw, IMPORT, 1024).await.status(), 200);

    assert_eq!(products.hits(), 2);
    assert_eq!(body_lengths(&seen), [2 * MIB as u64, 1024]);
}

#[test]
fn the_body_limits_flag_is_read_from_gateway_body_limits() {
    let command = Config::command();
    let flag = command
        .get_arguments()
        .find(|a| a.get_long() == Some("body-limits"))
        .expect("--body-limits");

    assert_eq!(
        flag.get_env().and_then(|e| e.to_str()),
        Some("GATEWAY_BODY_LIMITS")
    );
}

#[tokio::test]
async fn a_bad_body_limits_entry_stops_the_gateway_at_startup_naming_it() {
    let config = Config::parse_from([
        "tienda-gateway",
        "--listen-addr=127.0.0.1:0",
        "--auth-jwks-url=http://127.0.0.1:9/jwks",
        "--body-limits=/v1/orders=2MiB,POST /v1/products/import=64MB",
    ]);

    let error = Application::build(config).await.unwrap_err().to_string();

    assert!(
        error.contains("GATEWAY_BODY_LIMITS")
            && error.contains("\"POST /v1/products/import=64MB\""),
        "{error}"
    );
}
