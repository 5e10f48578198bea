//! Event backbone throughput: outbox relay publishing and consumer applying, on this machine,
//! against real PostgreSQL and a private nats-server (with and without `sync_interval: always`).
//!
//!     tests/bench backbone            (starts PostgreSQL itself; or)
//!     DATABASE_URL=postgres://admin@host/postgres NATS_SERVER=/path/nats-server \
//!         cargo bench -p tienda-kit --bench backbone
//!
//! `BENCH_EVENTS` sets the number of events (default 20000). Prints a Markdown table and one
//! JSON object per run. A benchmark, not a test: nothing here asserts a time.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use prometheus::Registry;
use serde_json::json;
use sqlx::{PgConnection, postgres::PgPoolOptions};
use tienda_events::{Envelope, inventory::InventoryAdjusted};
use tienda_kit::{
    Shutdown,
    consumer::{Consumer, ConsumerConfig, Delivery, Handler, HandlerError},
    db,
    outbox::{Relay, RelayConfig, enqueue},
    testing::{NatsServer, TestDatabase},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

#[derive(Clone)]
struct Apply;

impl Handler for Apply {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let envelope = delivery.envelope::<InventoryAdjusted>()?;
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(envelope.id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Waits until `events` effect rows exist.
async fn wait_for_effects(pool: &sqlx::PgPool, events: usize) -> anyhow::Result<()> {
    loop {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(pool)
            .await?;
        if applied as usize >= events {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Numbers {
    sync_always: bool,
    events: usize,
    enqueue_per_s: f64,
    relay_per_s: f64,
    consumer_per_s: f64,
    batched_per_s: f64,
}

async fn run(events: usize, sync_always: bool) -> anyhow::Result<Numbers> {
    let nats = NatsServer::start_with(sync_always);
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client.clone());
    let database = TestDatabase::create().await;
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect(&database.url)
        .await?;
    db::migrate_all(&pool, &MIGRATOR).await?;
    let spec: tienda_crds::ServiceSpec = serde_json::from_value(json!({
        "shop": "bench", "component": "products", "image": "x",
        "streams": [{"name": "INVENTORY", "subjects": ["tienda.inventory.>"]}],
        "consumers": [{"name": "bench", "stream": "INVENTORY", "maxAckPending": 10000},
                      {"name": "bench-batched", "stream": "INVENTORY", "maxAckPending": 10000}],
    }))?;
    for item in tienda_provision::streams::provision_service(&js, &spec, 1, None).await {
        item.result?;
    }

    // Write the events as services do: in transactions (100 per transaction here).
    let started = Instant::now();
    for chunk in 0..events.div_ceil(100) {
        let mut tx = pool.begin().await?;
        for i in chunk * 100..((chunk + 1) * 100).min(events) {
            let event = InventoryAdjusted {
                sku: format!("SKU-{i}"),
                on_hand: 1,
                delta: 1,
                reason: "bench".into(),
            };
            enqueue(&mut tx, Envelope::new("bench", event)).await?;
        }
        tx.commit().await?;
    }
    let enqueue_per_s = events as f64 / started.elapsed().as_secs_f64();

    // Relay: publish everything, batch after batch, as the background task does.
    let registry = Registry::new();
    let relay = Relay::new(pool.clone(), js.clone(), RelayConfig::default(), &registry);
    let started = Instant::now();
    let mut published = 0;
    while published < events {
        published += relay.publish_batch().await?;
    }
    let relay_per_s = events as f64 / started.elapsed().as_secs_f64();

    // Consumer: apply every event (inbox row + effect row per transaction, then ack).
    let mut config = ConsumerConfig::new("products", "INVENTORY", "bench");
    config.concurrency = 32;
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let task = tokio::spawn(
        Consumer::new(pool.clone(), client.clone(), config, Apply, &registry).run(shutdown.clone()),
    );
    wait_for_effects(&pool, events).await?;
    let consumer_per_s = events as f64 / started.elapsed().as_secs_f64();
    shutdown.trigger();
    task.await??;

    // The same, batched: up to 64 received messages per transaction, 4 batches at once.
    sqlx::query("TRUNCATE effects").execute(&pool).await?;
    let mut config = ConsumerConfig::new("products", "INVENTORY", "bench-batched");
    config.concurrency = 4;
    config.batch = 64;
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let task = tokio::spawn(
        Consumer::new(pool.clone(), client, config, Apply, &registry).run(shutdown.clone()),
    );
    wait_for_effects(&pool, events).await?;
    let batched_per_s = events as f64 / started.elapsed().as_secs_f64();
    shutdown.trigger();
    task.await??;
    pool.close().await;
    Ok(Numbers {
        sync_always,
        events,
        enqueue_per_s,
        relay_per_s,
        consumer_per_s,
        batched_per_s,
    })
}

fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        for sync_always in [false, true] {
            results.push(run(events, sync_always).await?);
        }
        anyhow::Ok(results)
    })?;
    println!(
        "| NATS fsync | events | outbox writes/s | relay publish/s | consumer apply/s | batched apply/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            if r.sync_always {
                "always"
            } else {
                "default (2 min)"
            },
            r.events,
            r.enqueue_per_s,
            r.relay_per_s,
            r.consumer_per_s,
            r.batched_per_s
        );
    }
    for r in &results {
        println!(
            "{}",
            json!({"bench": "backbone", "sync_always": r.sync_always, "events": r.events,
                   "enqueue_per_s": r.enqueue_per_s.round(), "relay_per_s": r.relay_per_s.round(),
                   "consumer_per_s": r.consumer_per_s.round(),
                   "batched_per_s": r.batched_per_s.round()})
        );
    }
    Ok(())
}
