//! Authorize and capture on the sandbox provider: how many commands per second payments
//! answers, and how long each waits, from publishing the command on JetStream to reading its
//! reply there (the consumer, the provider call, the database transaction with its invoice,
//! the outbox relay).
//!
//!     tests/bench payments
//!
//! Two runs per operation: a burst (every command published at once; throughput) and an open
//! loop at a fixed rate (latency percentiles). Real PostgreSQL (fsync on under tests/bench)
//! and nats-server; every authorization is a new customer, so the fraud rules' velocity limit
//! is not what is measured. A benchmark, not a test: it prints numbers and asserts nothing
//! about time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull};
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use tienda_events::{
    Envelope, Message, header,
    money::Money,
    payment::{AuthorizePayment, CapturePayment},
};
use tienda_kit::testing::TestDatabase;
use tienda_payments::{Application, config::Config};
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

async fn publish<T: Message>(js: &jetstream::Context, envelope: &Envelope<T>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::MSG_ID, envelope.id.to_string().as_str());
    headers.insert(header::TYPE, envelope.message_type.as_str());
    js.publish_with_headers(
        envelope.subject(),
        headers,
        serde_json::to_vec(envelope).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

fn authorize() -> AuthorizePayment {
    AuthorizePayment {
        payment_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        customer_id: Some(Uuid::now_v7()),
        email: "bench@example.com".into(),
        amount: Money {
            amount: 2_500,
            currency: "EUR".parse().unwrap(),
        },
        payment_method: "pm_card_visa".into(),
        client_ip: None,
        billing_country: None,
        deadline: Utc::now() + chrono::Duration::minutes(10),
    }
}

fn capture(of: &AuthorizePayment) -> CapturePayment {
    CapturePayment {
        payment_id: of.payment_id,
        order_id: of.order_id,
        amount: None,
        deadline: Utc::now() + chrono::Duration::minutes(10),
        invoice: None,
    }
}

/// When each command was sent, by envelope id; replies are timed against it.
type Sent = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// Reads replies until `count` arrived answering commands in `sent`; their latencies.
async fn replies(
    stream: &mut pull::Stream,
    sent: &Sent,
    expect: &str,
    count: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("a reply within 60 s")
            .unwrap()
            .unwrap();
        let envelope: Envelope<serde_json::Value> =
            serde_json::from_slice(&message.payload).unwrap();
        let Some(cause) = envelope.causation_id else {
            continue;
        };
        let Some(at) = sent.lock().unwrap().remove(&cause) else {
            continue;
        };
        let name = message
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(name, expect, "{:?}", envelope.data);
        latencies.push(at.elapsed());
    }
    latencies.sort();
    latencies
}

struct Row {
    operation: &'static str,
    mode: String,
    commands: usize,
    per_second: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

/// Sends `commands` at once (`rate` None) or at `rate` per second; one row.
async fn run<T: Message + Clone + Send + Sync + 'static>(
    js: &jetstream::Context,
    stream: &mut pull::Stream,
    operation: &'static str,
    expect: &str,
    commands: Vec<T>,
    rate: Option<u32>,
) -> Row {
    let sent: Sent = Arc::default();
    let count = commands.len();
    let started = Instant::now();
    let publisher = {
        let (js, sent) = (js.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick =
                rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r))));
            for command in commands {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let envelope = Envelope::new("orders", command);
                sent.lock().unwrap().insert(envelope.id, Instant::now());
                publish(&js, &envelope).await;
            }
        })
    };
    let latencies = replies(stream, &sent, expect, count).await;
    publisher.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    Row {
        operation,
        mode: rate.map_or_else(|| "burst".to_owned(), |r| format!("{r}/s")),
        commands: count,
        per_second: count as f64 / elapsed,
        p50: percentile(&latencies, 0.5),
        p95: percentile(&latencies, 0.95),
        p99: percentile(&latencies, 0.99),
    }
}

fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    tokio::runtime::Runtime::new()?.block_on(async {
        let database = TestDatabase::create().await;
        let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let js = jetstream::new(async_nats::connect(&nats).await?);
        tienda_kit::testing::provision_topology(&js).await;
        let config = Config::parse_from([
            "tienda-payments",
            "--listen-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            &format!("--database-url={}", database.url),
            &format!("--nats-url={nats}"),
            "--log-filter=error",
            "--auth-jwks-url=http://127.0.0.1:9/jwks.json",
        ]);
        let app = Application::build(config).await?;
        tokio::spawn(app.run_until_stopped());
        let mut stream = js
            .get_stream("PAYMENT")
            .await?
            .create_consumer(pull::Config {
                filter_subject: "tienda.payment.*".into(),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await?
            .messages()
            .await?;

        let mut rows = Vec::new();
        let auths: Vec<_> = (0..1_000).map(|_| authorize()).collect();
        rows.push(
            run(
                &js,
                &mut stream,
                "authorize",
                "authorized",
                auths.clone(),
                None,
            )
            .await,
        );
        let caps: Vec<_> = auths.iter().map(capture).collect();
        rows.push(run(&js, &mut stream, "capture", "captured", caps, None).await);
        for rate in [100, 200] {
            // Ten seconds at the rate.
            let auths: Vec<_> = (0..rate * 10).map(|_| authorize()).collect();
            rows.push(
                run(
                    &js,
                    &mut stream,
                    "authorize",
                    "authorized",
                    auths.clone(),
                    Some(rate),
                )
                .await,
            );
            let caps: Vec<_> = auths.iter().map(capture).collect();
            rows.push(run(&js, &mut stream, "capture", "captured", caps, Some(rate)).await);
        }
        println!("| Operation | Load | Commands | Answered/s | p50 ms | p95 ms | p99 ms |");
        println!("|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                r.operation, r.mode, r.commands, r.per_second, r.p50, r.p95, r.p99
            );
        }
        anyhow::Ok(())
    })
}
