//! `GET /v1/products/{id}` throughput and latency, and search latency (with and without facet
//! counts) on a 100,000-product
//! catalog, over real HTTP against real PostgreSQL and NATS, on this machine.
//!
//!     tests/bench products
//!
//! The service runs on its own 2-thread runtime; the load generator on another (the same
//! cores, as in the budget: everything on one box). Reads: closed loop with 32 connections
//! for throughput; open loop at a fixed rate, latency measured from each request's scheduled
//! start (so a stall counts against every request it delays). A benchmark, not a test: it
//! prints numbers and asserts nothing about time.
//!
//! Environment: `BENCH_TRACING` = `off` (default), `1` or `100` — spans exported over OTLP to a
//! receiver inside the bench, sampling 1 % or 100 % of requests (the tracing overhead);
//! `BENCH_READS_ONLY=1` skips the searches; `BENCH_PRODUCTS` sizes the catalog (100,000).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tienda_kit::testing::{NatsServer, TestDatabase};
use tienda_products::{Application, config::Config};
use uuid::Uuid;

fn products() -> usize {
    std::env::var("BENCH_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const ADJECTIVES: [&str; 16] = [
    "Classic", "Modern", "Rustic", "Vintage", "Compact", "Deluxe", "Light", "Heavy", "Soft",
    "Sturdy", "Elegant", "Sporty", "Cozy", "Bold", "Slim", "Grand",
];
const MATERIALS: [&str; 12] = [
    "Leather", "Cotton", "Wool", "Canvas", "Steel", "Oak", "Bamboo", "Ceramic", "Glass", "Linen",
    "Suede", "Copper",
];
const NOUNS: [&str; 24] = [
    "Boots", "Jacket", "Mug", "Lamp", "Chair", "Table", "Backpack", "Wallet", "Scarf", "Hat",
    "Sneakers", "Blanket", "Bottle", "Watch", "Belt", "Gloves", "Vase", "Kettle", "Desk", "Shelf",
    "Pillow", "Rug", "Basket", "Apron",
];
const COLORS: [&str; 6] = ["red", "blue", "green", "black", "white", "brown"];

async fn seed(db: &sqlx::PgPool) -> anyhow::Result<Vec<Uuid>> {
    let mut categories = Vec::new();
    for (i, noun) in NOUNS.iter().enumerate() {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO categories (id, name, slug) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(*noun)
            .bind(format!("{}-{i}", noun.to_lowercase()))
            .execute(db)
            .await?;
        categories.push(id);
    }
    let mut ids = Vec::with_capacity(products());
    for batch in 0..products().div_ceil(10_000) {
        let mut id = Vec::new();
        let mut name = Vec::new();
        let mut description = Vec::new();
        let mut price = Vec::new();
        let mut category = Vec::new();
        let mut sku = Vec::new();
        let mut attrs = Vec::new();
        for j in 0..10_000 {
            let n = batch * 10_000 + j;
            let (a, m, o) = (
                ADJECTIVES[n % 16],
                MATERIALS[(n / 16) % 12],
                (n * 7 + n / 192) % 24,
            );
            id.push(Uuid::now_v7());
            name.push(format!("{a} {m} {} {n}", NOUNS[o]));
            description.push(format!(
                "A {} {} made of {} for everyday use. Model {n}.",
                a.to_lowercase(),
                NOUNS[o].to_lowercase(),
                m.to_lowercase()
            ));
            price.push(500 + ((n * 7919) % 60_000) as i64);
            category.push(categories[o]);
            sku.push(format!("SKU-{n:06}"));
            let size = ["S", "M", "L"][n % 3];
            attrs.push(json!({"color": COLORS[n % 6], "size": size}));
        }
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO products (id, name, description, status, min_price, currency) \
             SELECT * , 'EUR' FROM unnest($1::uuid[], $2::text[], $3::text[], \
                 array_fill('active'::text, ARRAY[cardinality($1::uuid[])]), $4::bigint[])",
        )
        .bind(&id)
        .bind(&name)
        .bind(&description)
        .bind(&price)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO product_categories (product_id, category_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[])",
        )
        .bind(&id)
        .bind(&category)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO variants (sku, product_id, position, attributes, price_amount, currency) \
             SELECT s, p, 0, a, m, 'EUR' FROM unnest($1::text[], $2::uuid[], $3::jsonb[], $4::bigint[]) \
                  AS w(s, p, a, m)",
        )
        .bind(&sku)
        .bind(&id)
        .bind(&attrs)
        .bind(&price)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO inventory (sku, on_hand) SELECT s, (row_number() OVER () % 50) \
             FROM unnest($1::text[]) AS s",
        )
        .bind(&sku)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        ids.extend(id);
    }
    sqlx::query("ANALYZE").execute(db).await?;
    Ok(ids)
}

struct Report {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Report {
    fn row(&mut self, what: &str) {
        self.latencies.sort();
        let l = &self.latencies;
        println!(
            "| {what} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.requests as f64 / self.seconds,
            ms(percentile(l, 0.5)),
            ms(percentile(l, 0.95)),
            ms(percentile(l, 0.99)),
            ms(*l.last().unwrap()),
            self.errors
        );
        println!(
            "{}",
            json!({"bench": what, "rps": self.requests as f64 / self.seconds,
                   "p50_ms": ms(percentile(l, 0.5)), "p95_ms": ms(percentile(l, 0.95)),
                   "p99_ms": ms(percentile(l, 0.99)), "errors": self.errors})
        );
    }
}

/// `connections` clients, each sending the next request when the last answered.
async fn closed_loop(
    http: &reqwest::Client,
    urls: Arc<Vec<String>>,
    connections: usize,
    length: Duration,
) -> Report {
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut i) = (Vec::new(), 0, w * 7919);
                while Instant::now() < deadline {
                    let url = &urls[i % urls.len()];
                    i += 1;
                    let t = Instant::now();
                    match http.get(url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        _ => errors += 1,
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut report = Report {
        requests: 0,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for w in workers {
        let (l, e) = w.await.unwrap();
        report.requests += l.len();
        report.errors += e;
        report.latencies.extend(l);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Requests at a fixed rate, each timed from when it was due.
async fn open_loop(
    http: &reqwest::Client,
    urls: Arc<Vec<String>>,
    rate: u64,
    length: Duration,
) -> Report {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total = (length.as_secs_f64() * rate as f64) as usize;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (http, url) = (http.clone(), urls[(i * 7919) % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            let ok = matches!(http.get(&url).send().await, Ok(r) if r.status().is_success());
            (due.elapsed(), ok)
        }));
    }
    let mut report = Report {
        requests: total,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (latency, ok) = t.await.unwrap();
        report.latencies.push(latency);
        report.errors += usize::from(!ok);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let nats = NatsServer::start_with(true);
    let tracing = std::env::var("BENCH_TRACING").unwrap_or_else(|_| "off".into());
    let receiver = match tracing.as_str() {
        "off" => None,
        percent => {
            let ratio: f64 = percent
                .parse::<f64>()
                .map_err(|_| anyhow::anyhow!("BENCH_TRACING is off, 1 or 100"))?
                / 100.0;
            // The receiver (a collector's stand-in) on a runtime of its own.
            let collector = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let receiver = collector.block_on(tienda_kit::testing::otlp::Receiver::start());
            std::mem::forget(collector);
            server.block_on(async {
                tienda_kit::telemetry::init_with_traces(
                    "products",
                    tienda_kit::config::LogFormat::Json,
                    "error",
                    Ok(Some(tienda_kit::telemetry::TraceExport {
                        endpoint: format!("{}/v1/traces", receiver.http_endpoint()),
                        protocol: "http/protobuf".into(),
                        sample_ratio: Some(ratio),
                    })),
                )
            });
            Some(receiver)
        }
    };
    eprintln!("tracing: {tracing}");
    let (database, base, db) = server.block_on(async {
        let client = async_nats::connect(nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        for item in tienda_provision::topology::provision_all(&js).await {
            item.result?;
        }
        let database = TestDatabase::create().await;
        let config = Config::parse_from([
            "tienda-products".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            format!("--database-url={}", database.url),
            format!("--nats-url={}", nats.url()),
            "--log-filter=error".into(),
            "--database-max-connections=16".into(),
        ]);
        let app = Application::build(config).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let db = app.platform().db().clone();
        tokio::spawn(app.run_until_stopped());
        anyhow::Ok((database, base, db))
    })?;
    let seeding = Instant::now();
    let ids = server.block_on(seed(&db))?;
    eprintln!(
        "seeded {} products in {:.1} s",
        products(),
        seeding.elapsed().as_secs_f64()
    );

    client.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let reads = Arc::new(
            ids.iter()
                .step_by(97)
                .map(|id| format!("{base}/v1/products/{id}"))
                .collect::<Vec<_>>(),
        );
        println!("| what | rps | p50 ms | p95 ms | p99 ms | max ms | errors |");
        println!("|---|---|---|---|---|---|---|");
        // Warm the cache and the connections.
        closed_loop(&http, reads.clone(), 32, Duration::from_secs(3)).await;
        closed_loop(&http, reads.clone(), 32, Duration::from_secs(10))
            .await
            .row("GET /v1/products/{id}, 32 connections, closed loop");
        open_loop(&http, reads.clone(), 1000, Duration::from_secs(10))
            .await
            .row("GET /v1/products/{id}, open loop 1000 rps");
        if std::env::var_os("BENCH_READS_ONLY").is_some() {
            return anyhow::Ok(());
        }

        let words = [
            "leather",
            "boots",
            "lether bots",
            "wool scarf",
            "ceramic",
            "oak table",
            "cozy",
        ];
        let mut searches = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let q = w.replace(' ', "%20");
            searches.push(format!("{base}/v1/products?q={q}"));
            searches.push(format!("{base}/v1/products?q={q}&sort=price_asc&limit=20"));
            searches.push(format!(
                "{base}/v1/products?q={q}&attr.color={}&in_stock=true",
                COLORS[i % 6]
            ));
        }
        searches.push(format!(
            "{base}/v1/products?min_price=1000&max_price=5000&sort=price_asc"
        ));
        searches.push(format!("{base}/v1/products?attr.color=red&sort=newest"));
        let searches = Arc::new(searches);
        closed_loop(&http, searches.clone(), 1, Duration::from_secs(3)).await;
        closed_loop(&http, searches.clone(), 1, Duration::from_secs(15))
            .await
            .row("search (q, filters), 1 connection");
        closed_loop(&http, searches.clone(), 4, Duration::from_secs(15))
            .await
            .row("search (q, filters), 4 connections");
        // Facets computed every time: each request has filters no earlier one had (no cache hit).
        let cold_facets = Arc::new(
            (0..2000)
                .map(|i| {
                    format!(
                        "{base}/v1/products?q={}&facets=true&min_price={i}",
                        ["leather", "wool", "oak"][i % 3]
                    )
                })
                .collect::<Vec<_>>(),
        );
        closed_loop(&http, cold_facets, 1, Duration::from_secs(10))
            .await
            .row("search with facets=true, uncached, 1 connection");
        anyhow::Ok(())
    })?;
    if let Some(receiver) = &receiver {
        server
            .block_on(async { tokio::task::spawn_blocking(tienda_kit::telemetry::flush).await })?;
        eprintln!("spans exported: {}", receiver.spans().len());
    }
    if std::env::var_os("TIENDA_BENCH_KEEP_DB").is_some() {
        eprintln!("kept the database: {}", database.url);
        std::mem::forget(database);
    }
    Ok(())
}
