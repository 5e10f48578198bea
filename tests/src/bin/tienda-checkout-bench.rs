//! The checkout bench: the shop as `tienda up` runs it (release binaries, PostgreSQL and NATS
//! with fsync on), checkouts sent open loop through the gateway at fixed rates, each timed from
//! its scheduled start until its order reads `confirmed` — followed as a storefront does, on
//! the order's timeline (server-sent events). Writes JSON and Markdown.
//!
//!     tests/bench checkout [--seconds 10] [--rates 50,200] [--out target/bench/checkout]
//!
//! `BENCH_DATABASE_URL` runs it against a PostgreSQL of one's own instead of a private one,
//! for profiling (`pg_stat_statements`); the numbers in docs/benchmarks.md use the private one.
//!
//! Coordinated omission is avoided as in `tienda-bench`: a checkout sent late because the
//! machine stalled counts the stall in its latency.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tienda_crds::Component::{self, Auth, Gateway, Notifications, Orders, Payments, Products};
use tienda_e2e::{Shop, load, timeline};
use uuid::Uuid;

/// Limits far above what the bench sends (one client address, one customer).
const BENCH_POLICIES: &str = "apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: bench-checkout}
spec:
  targetRef: {kind: Shop, name: local}
  rules:
    - {name: checkout, match: {path: /v1/checkout, methods: [POST]}, clientKey: {type: User}, algorithm: SlidingWindow, requests: 1000000, period: 1s}
    - {name: reads, match: {methods: [GET]}, clientKey: {type: ClientIP}, algorithm: TokenBucket, requests: 1000000, period: 1s}
";

const SKUS: usize = 100;
/// Enough that no customer places more than five orders in ten minutes at the default rates
/// (payments' fraud rules block the sixth).
const CUSTOMERS: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let seconds: u64 = load::arg("--seconds", "10").parse()?;
    let rates: Vec<u64> = load::arg("--rates", "50,100,200")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let out = std::path::PathBuf::from(load::arg("--out", "target/bench/checkout"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(seconds, rates, out))
}

/// One checkout's fate.
struct Sample {
    /// From the scheduled start to `confirmed` (or to the failure).
    settled: Duration,
    /// From the scheduled start to the `202`.
    accepted: Duration,
    /// `confirmed`, or what went wrong.
    outcome: String,
    /// The order placed, if one was.
    order: Option<Uuid>,
}

async fn checkout(
    http: reqwest::Client,
    gateway: String,
    token: String,
    sku: String,
    due: Instant,
) -> Sample {
    let failed = |outcome: String| Sample {
        settled: due.elapsed(),
        accepted: due.elapsed(),
        outcome,
        order: None,
    };
    let response = http
        .post(format!("{gateway}/v1/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "email": "bench@bench.test",
            "shipping_address": {"name": "Bench", "line1": "Calle Mayor 1", "city": "Madrid",
                                 "postal_code": "28013", "country": "ES"},
            "payment_method": "pm_card_visa",
            "items": [{"sku": sku, "quantity": 1}],
        }))
        .send()
        .await;
    let order: Value = match response {
        Ok(r) if r.status() == 202 => match r.json().await {
            Ok(order) => order,
            Err(e) => return failed(format!("unreadable order: {e}")),
        },
        Ok(r) => return failed(format!("checkout answered {}", r.status())),
        Err(e) => return failed(format!("checkout failed: {e}")),
    };
    let accepted = due.elapsed();
    let url = format!(
        "{gateway}/v1/orders/{}/timeline",
        order["id"].as_str().unwrap_or_default()
    );
    let outcome = match timeline::until_settled(&http, &url, &token, Duration::from_secs(30)).await
    {
        Ok((status, _)) => status,
        Err(e) => e,
    };
    Sample {
        settled: due.elapsed(),
        accepted,
        outcome,
        order: order["id"].as_str().and_then(|id| id.parse().ok()),
    }
}

/// Where a phase's time went: for each saga step the order log records, percentiles of its
/// time after `placed` (each entry's `occurred_at` is its transaction's start), read from the
/// orders database.
async fn steps(orders_db: &sqlx::PgPool, ids: &[Uuid]) -> anyhow::Result<Value> {
    let rows: Vec<(String, f64, f64, f64)> = sqlx::query_as(
        "SELECT e.kind,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
           FROM (SELECT e.kind,
                        extract(epoch FROM e.occurred_at - p.occurred_at)::float8 * 1000 AS ms
                   FROM order_events e
                   JOIN order_events p ON p.order_id = e.order_id AND p.seq = 1
                  WHERE e.order_id = ANY($1) AND e.seq > 1) e
          GROUP BY e.kind ORDER BY 3",
    )
    .bind(ids)
    .fetch_all(orders_db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, p50, p95, p99)| json!({"after_placed": kind, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}))
        .collect())
}

/// Committed and rolled-back transactions so far in each service's database (by its name's
/// last part: `orders`, `products`, ...).
async fn transactions(pool: &sqlx::PgPool) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT datname, (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
          WHERE datname NOT IN ('postgres', 'template0', 'template1')",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, n)| (name.rsplit('_').next().unwrap_or(&name).to_owned(), n))
        .collect())
}

async fn run(seconds: u64, rates: Vec<u64>, out: std::path::PathBuf) -> anyhow::Result<()> {
    // For profiling only: `BENCH_DATABASE_URL` points the shop at a PostgreSQL of one's own
    // (say, one with `pg_stat_statements` loaded); it must have fsync on for honest numbers.
    let shop = Shop::start_with(|options| {
        options.database_url = std::env::var("BENCH_DATABASE_URL").ok();
    })
    .await;
    shop.write_file("ratelimitpolicy.yaml", BENCH_POLICIES);
    shop.wait_for_policy("bench-checkout", 1).await;
    let components = [Gateway, Auth, Products, Orders, Payments, Notifications];
    let pids: Vec<(String, u32)> = components
        .iter()
        .filter_map(|c| Some((c.to_string(), shop.system.process(*c)?.pid())))
        .collect();

    // Seed: SKUs with stock no run exhausts, and a customer.
    let admin = shop.admin_token().await;
    let mut csv =
        String::from("sku,name,description,price_amount,currency,status,attributes,on_hand\n");
    for i in 0..SKUS {
        let _ = writeln!(
            csv,
            "BENCH-{i:03},Bench mug {i},A mug.,{},EUR,active,color=blue,1000000",
            500 + i * 10
        );
    }
    let seeded: Value = shop
        .http
        .post(shop.direct(Products, "/v1/products/import"))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(seeded["failed"] == 0, "seeding failed: {seeded}");
    // Customers follow their own orders (a caller may hold only a few timelines open), so
    // the load comes from many of them, round robin.
    let password = "correct horse battery staple 42";
    let mut tokens = Vec::with_capacity(CUSTOMERS);
    for n in 0..CUSTOMERS {
        let email = format!("bench-{n}@bench.test");
        shop.post(
            shop.url(Auth, "/v1/auth/register"),
            None,
            json!({"email": email, "password": password, "name": "Bench"}),
        )
        .await;
        let (_, pair) = shop
            .post(
                shop.url(Auth, "/v1/auth/login"),
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        tokens.push(
            pair["access_token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no token: {pair}"))?
                .to_owned(),
        );
    }
    let orders_db = {
        let admin: sqlx::postgres::PgConnectOptions = shop.system.database_url.parse()?;
        let admin_pool = sqlx::PgPool::connect_with(admin.clone()).await?;
        let (name,): (String,) =
            sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE '%orders'")
                .fetch_one(&admin_pool)
                .await?;
        admin_pool.close().await;
        sqlx::PgPool::connect_with(admin.database(&name)).await?
    };
    let gateway = shop.system.urls[&Component::Gateway].clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;

    let mut results = Vec::new();
    // Round robin over the whole run, not per phase: each phase starting again at the first
    // customer gave those a sixth order within ten minutes, which the fraud rules block.
    let mut next_customer = 0usize;
    for rate in rates {
        for (phase, length) in [("warm-up", 2), ("measured", seconds)] {
            eprintln!("{rate}/s: {phase} for {length} s");
            let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| load::cpu_seconds(*p)).collect();
            let infra_before = [
                load::cpu_seconds_of("postgres"),
                load::cpu_seconds_of("nats-server"),
                load::cpu_seconds(std::process::id()),
            ];
            let machine_before = load::machine_ticks();
            let transactions_before = transactions(&orders_db).await?;
            let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
            let total = (length * rate) as usize;
            let started = Instant::now();
            let mut tasks = Vec::with_capacity(total);
            for i in 0..total {
                let due = started + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let customer = next_customer % CUSTOMERS;
                next_customer += 1;
                tasks.push(tokio::spawn(checkout(
                    http.clone(),
                    gateway.clone(),
                    tokens[customer].clone(),
                    format!("BENCH-{:03}", (i * 37) % SKUS),
                    due,
                )));
            }
            let mut settled = Vec::with_capacity(total);
            let mut accepted = Vec::with_capacity(total);
            let mut failures: BTreeMap<String, usize> = BTreeMap::new();
            let mut orders = Vec::with_capacity(total);
            for task in tasks {
                let sample = task.await?;
                orders.extend(sample.order);
                if sample.outcome != "confirmed" {
                    *failures.entry(sample.outcome.clone()).or_default() += 1;
                }
                settled.push(sample.settled);
                accepted.push(sample.accepted);
            }
            let elapsed = started.elapsed().as_secs_f64();
            let machine_after = load::machine_ticks();
            let busy = (machine_after.0 - machine_before.0) as f64
                / (machine_after.1 - machine_before.1).max(1) as f64
                * 100.0;
            let infra_ms = |after: f64, i: usize| (after - infra_before[i]) * 1000.0 / total as f64;
            // PostgreSQL publishes its counters about once a second: wait for this phase's.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let transactions_after = transactions(&orders_db).await?;
            let transactions_per_checkout: BTreeMap<String, f64> = transactions_after
                .iter()
                .map(|(db, after)| {
                    let before = transactions_before.get(db).copied().unwrap_or(0);
                    (db.clone(), (after - before) as f64 / total as f64)
                })
                .collect();
            let infra = json!({
                "postgres": infra_ms(load::cpu_seconds_of("postgres"), 0),
                "nats-server": infra_ms(load::cpu_seconds_of("nats-server"), 1),
                "load generator": infra_ms(load::cpu_seconds(std::process::id()), 2),
            });
            if phase == "warm-up" {
                continue;
            }
            settled.sort();
            accepted.sort();
            let ms = |sorted: &[Duration], p| load::percentile(sorted, p);
            let result = json!({
                "rate": rate,
                "checkouts": total,
                "seconds": elapsed,
                "confirmed_p50_ms": ms(&settled, 0.5),
                "confirmed_p95_ms": ms(&settled, 0.95),
                "confirmed_p99_ms": ms(&settled, 0.99),
                "confirmed_max_ms": settled.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                "accepted_p50_ms": ms(&accepted, 0.5),
                "accepted_p95_ms": ms(&accepted, 0.95),
                "accepted_p99_ms": ms(&accepted, 0.99),
                "failures": failures,
                "cpu_ms_per_checkout": load::cpu_ms_per_request(&pids, &cpu_before, total),
                "steps": steps(&orders_db, &orders).await?,
                "machine_busy_percent": busy,
                "infra_cpu_ms_per_checkout": infra,
                "postgres_transactions_per_checkout": transactions_per_checkout,
            });
            eprintln!(
                "{rate}/s: confirmed p95 {:.1} ms, p99 {:.1} ms; {} not confirmed",
                result["confirmed_p95_ms"].as_f64().unwrap_or(0.0),
                result["confirmed_p99_ms"].as_f64().unwrap_or(0.0),
                failures.values().sum::<usize>()
            );
            results.push(result);
        }
    }
    let peak: BTreeMap<String, f64> = pids
        .iter()
        .map(|(c, pid)| (c.clone(), load::peak_rss_mib(*pid)))
        .collect();
    let (machine, cores) = load::machine();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}, {cores} cores; {seconds} s per rate, open loop through the gateway; \
         latency from each checkout's scheduled start.\n"
    );
    let _ = writeln!(
        md,
        "| rate /s | checkouts | confirmed p50 ms | p95 ms | p99 ms | max ms | 202 p50 ms | 202 p99 ms | not confirmed | machine busy | CPU ms per checkout |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|");
    for r in &results {
        let cpu: Vec<String> = ["cpu_ms_per_checkout", "infra_cpu_ms_per_checkout"]
            .iter()
            .filter_map(|k| r[k].as_object())
            .flatten()
            .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
            .collect();
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} % | {} |",
            r["rate"],
            r["checkouts"],
            f("confirmed_p50_ms"),
            f("confirmed_p95_ms"),
            f("confirmed_p99_ms"),
            f("confirmed_max_ms"),
            f("accepted_p50_ms"),
            f("accepted_p99_ms"),
            r["failures"],
            f("machine_busy_percent"),
            cpu.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\nPostgreSQL transactions per checkout, per database:\n"
    );
    for r in &results {
        let per_db: Vec<String> = r["postgres_transactions_per_checkout"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_f64().unwrap_or(0.0) > 0.005)
            .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(md, "- {}/s: {}", r["rate"], per_db.join(", "));
    }
    let _ = writeln!(
        md,
        "\nSaga steps, time after `placed` (order log, transaction start):\n\n\
         | rate /s | step | p50 ms | p95 ms | p99 ms |\n|---:|---|---:|---:|---:|"
    );
    for r in &results {
        for step in r["steps"].as_array().into_iter().flatten() {
            let f = |k: &str| step[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | {:.1} |",
                r["rate"],
                step["after_placed"].as_str().unwrap_or_default(),
                f("p50_ms"),
                f("p95_ms"),
                f("p99_ms")
            );
        }
    }
    let _ = writeln!(md, "\n| process | peak RSS MiB |\n|---|---:|");
    for (c, mib) in &peak {
        let _ = writeln!(md, "| {c} | {mib:.1} |");
    }
    let result = json!({
        "machine": {"cpu": machine, "cores": cores},
        "seconds": seconds,
        "rates": results,
        "peak_rss_mib": peak,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(out.with_extension("md"), &md)?;
    println!("{md}");
    // What went wrong, if anything did: the services' warnings and errors.
    for component in components {
        for line in shop.log(component).lines() {
            if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("{component}: {line}");
            }
        }
    }
    shop.stop().await;
    Ok(())
}
