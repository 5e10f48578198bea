//! The whole-system bench harness: starts the shop the way `tienda up` does (release
//! binaries, private PostgreSQL and NATS with fsync on), seeds a catalog, drives open-loop load
//! on the main endpoints, and writes latency percentiles, throughput, errors, CPU per request
//! and memory per process to JSON and Markdown.
//!
//!     tests/bench system [--seconds 10] [--products 10000] [--out target/bench/system]
//!
//! The load goes through the gateway, as users' requests do, with a RateLimitPolicy on every
//! route and a CircuitPolicy per service in force (limits set so they never refuse).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use reqwest::Method;
use serde_json::json;
use tienda_crds::Component::{self, Auth, Products};
use tienda_e2e::{
    Shop,
    load::{self, Request},
};

/// Rate limits on every route and a CircuitPolicy per service, none of them ever refusing.
const BENCH_POLICIES: &str = "apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: bench-reads}
spec:
  targetRef: {kind: Shop, name: local}
  rules:
    - {name: reads, match: {methods: [GET]}, clientKey: {type: ClientIP}, algorithm: TokenBucket, requests: 1000000, period: 1s}
    - {name: users, clientKey: {type: User}, algorithm: SlidingWindow, requests: 1000000, period: 1s}
---
apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: bench-products}
spec:
  targetRef: {kind: Service, name: products}
  timeout: 5s
  retry: {attempts: 2, backoff: {base: 25ms, max: 250ms}, budgetPercent: 20}
  circuitBreaker: {consecutiveFailures: 50, failureRatio: 0.5, minRequests: 100, window: 10s, openFor: 5s}
  bulkhead: {maxConcurrent: 1000, maxQueued: 100}
  outlierDetection: {consecutiveErrors: 50}
---
apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: bench-auth}
spec:
  targetRef: {kind: Service, name: auth}
  timeout: 5s
  circuitBreaker: {consecutiveFailures: 50, window: 10s, openFor: 5s}
  bulkhead: {maxConcurrent: 1000, maxQueued: 100}
";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = load::arg("--seconds", "10").parse()?;
    let products: usize = load::arg("--products", "10000").parse()?;
    let out = std::path::PathBuf::from(load::arg("--out", "target/bench/system"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(seconds, products, out))
}

async fn run(seconds: u64, products: usize, out: std::path::PathBuf) -> anyhow::Result<()> {
    let shop = Shop::start().await;
    // Policies active on every measured route, with limits no scenario reaches (one client
    // address sends everything here): the cost of enforcing them is what is measured.
    shop.write_file("ratelimitpolicy.yaml", BENCH_POLICIES);
    shop.wait_for_policy("bench-reads", 1).await;
    shop.wait_for_policy("bench-products", 1).await;
    let pids: Vec<(String, u32)> = [Component::Gateway, Auth, Products]
        .iter()
        .filter_map(|c| Some((c.to_string(), shop.system.process(*c)?.pid())))
        .collect();
    let idle: BTreeMap<String, f64> = pids
        .iter()
        .map(|(c, pid)| (c.clone(), load::rss_mib(*pid)))
        .collect();

    // Seed: a catalog through the import endpoint (CSV with stock), and a customer.
    let admin = shop.admin_token().await;
    let mut csv =
        String::from("sku,name,description,price_amount,currency,status,attributes,on_hand\n");
    let words = [
        "Leather", "Wool", "Canvas", "Oak", "Steel", "Ceramic", "Linen", "Bamboo",
    ];
    let nouns = [
        "Boots", "Jacket", "Mug", "Lamp", "Chair", "Scarf", "Bag", "Table",
    ];
    for i in 0..products {
        let _ = writeln!(
            csv,
            "SKU-{i:06},{} {} {i},A sturdy {} {} for every day.,{},EUR,active,color={},{}",
            words[i % 8],
            nouns[(i / 8) % 8],
            words[i % 8].to_lowercase(),
            nouns[(i / 8) % 8].to_lowercase(),
            500 + (i * 7919) % 50_000,
            ["red", "blue", "green"][i % 3],
            i % 40
        );
    }
    // Straight to products: a 10,000-row import takes longer than the gateway's 30 s wait for
    // an answer to start, and seeding is not what is measured.
    let seeded = shop
        .http
        .post(shop.direct(Products, "/v1/products/import"))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .timeout(Duration::from_secs(1800))
        .send()
        .await?;
    let report: serde_json::Value = seeded.json().await?;
    anyhow::ensure!(
        report["failed"] == 0,
        "seeding failed: {}",
        report["results"][0]
    );
    let (_, page) = shop
        .get(shop.url(Products, "/v1/products?limit=100"), None)
        .await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let password = "correct horse battery staple 42";
    shop.post(
        shop.url(Auth, "/v1/auth/register"),
        None,
        json!({"email": "bench@bench.test", "password": password, "name": "Bench"}),
    )
    .await;
    let (_, pair) = shop
        .post(
            shop.url(Auth, "/v1/auth/login"),
            None,
            json!({"email": "bench@bench.test", "password": password}),
        )
        .await;
    let customer = pair["access_token"].as_str().unwrap_or_default().to_owned();

    let get = |component: Component, path: String, token: Option<&str>| Request {
        method: Method::GET,
        url: shop.url(component, &path),
        token: token.map(str::to_owned),
        body: None,
    };
    let scenarios: Vec<(&str, u64, Vec<Request>)> = vec![
        (
            "GET /v1/products/{id}",
            1000,
            ids.iter()
                .map(|id| get(Products, format!("/v1/products/{id}"), None))
                .collect(),
        ),
        (
            "GET /v1/products?q= (search)",
            50,
            [
                "leather",
                "wool%20scarf",
                "oak",
                "lether%20boots",
                "ceramic%20mug",
            ]
            .iter()
            .map(|q| get(Products, format!("/v1/products?q={q}"), None))
            .collect(),
        ),
        (
            "GET /v1/inventory/{sku}",
            500,
            (0..100)
                .map(|i| get(Products, format!("/v1/inventory/SKU-{i:06}"), None))
                .collect(),
        ),
        (
            "GET /v1/auth/me (JWT check + read)",
            500,
            vec![get(Auth, "/v1/auth/me".into(), Some(&customer))],
        ),
        (
            "POST /v1/auth/login (Argon2id)",
            20,
            vec![Request {
                method: Method::POST,
                url: shop.url(Auth, "/v1/auth/login"),
                token: None,
                body: Some(json!({"email": "bench@bench.test", "password": password})),
            }],
        ),
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut outcomes = Vec::new();
    for (name, rate, requests) in scenarios {
        // Warm-up, then the measured run.
        load::open_loop(name, &http, &requests, rate, Duration::from_secs(2), &pids).await;
        let outcome = load::open_loop(
            name,
            &http,
            &requests,
            rate,
            Duration::from_secs(seconds),
            &pids,
        )
        .await;
        eprintln!(
            "{name}: p99 {:.2} ms at {:.0} rps, {} errors",
            outcome.p99_ms, outcome.achieved_rps, outcome.errors
        );
        outcomes.push(outcome);
    }
    let peak: BTreeMap<String, f64> = pids
        .iter()
        .map(|(c, pid)| (c.clone(), load::peak_rss_mib(*pid)))
        .collect();

    let (machine, cores) = load::machine();
    let result = json!({
        "machine": {"cpu": machine, "cores": cores},
        "products": products,
        "seconds": seconds,
        "scenarios": outcomes,
        "idle_rss_mib": idle,
        "peak_rss_mib": peak,
    });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}, {cores} cores; {products} products; {seconds} s per scenario, open loop.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | target rps | achieved | p50 ms | p95 ms | p99 ms | max ms | errors | CPU ms/req |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for o in result["scenarios"].as_array().unwrap() {
        let cpu: Vec<String> = o["cpu_ms_per_request"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k} {:.3}", v.as_f64().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            o["name"].as_str().unwrap(),
            o["target_rps"],
            o["achieved_rps"].as_f64().unwrap(),
            o["p50_ms"].as_f64().unwrap(),
            o["p95_ms"].as_f64().unwrap(),
            o["p99_ms"].as_f64().unwrap(),
            o["max_ms"].as_f64().unwrap(),
            o["errors"],
            cpu.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\n| process | idle RSS MiB | peak RSS MiB |\n|---|---:|---:|"
    );
    for (c, mib) in &idle {
        let _ = writeln!(
            md,
            "| {c} | {mib:.1} | {:.1} |",
            peak.get(c).copied().unwrap_or(0.0)
        );
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(out.with_extension("md"), &md)?;
    println!("{md}");
    eprintln!(
        "wrote {} and {}",
        out.with_extension("json").display(),
        out.with_extension("md").display()
    );
    shop.stop().await;
    Ok(())
}
