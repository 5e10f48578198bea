//! A campaign to 10,000 people by email: how fast they are enqueued and sent, and how much
//! memory the notifications process holds while it runs.
//!
//!     tests/bench notifications [-- --people 10000 --rate 10000 --concurrency 8]
//!
//! Real PostgreSQL (fsync on under tests/bench) and nats-server; mail goes over SMTP to a
//! sink in this process that answers like a server and counts what arrives (so the numbers
//! are ours, not a mail server's). A tenth of the people opted out of marketing (recorded
//! as suppressed, not sent). A benchmark, not a test: it prints numbers and asserts nothing
//! about time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tienda_kit::testing::{TestDatabase, TokenIssuer};
use tienda_notifications::{Application, config::Config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    /// People in the segment.
    #[arg(long, default_value_t = 10_000)]
    people: i64,
    /// The campaign's rate (people per second).
    #[arg(long, default_value_t = 10_000)]
    rate: i64,
    /// The worker's messages in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Ignored (cargo bench passes it).
    #[arg(long)]
    bench: bool,
}

/// An SMTP server that accepts everything and counts the messages.
async fn smtp_sink(count: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            // As a mail server does: answers are not held back for the client's ACK.
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                    return;
                }
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                                return;
                            }
                            while let Ok(Some(body)) = lines.next_line().await {
                                if body == "." {
                                    break;
                                }
                            }
                            count.fetch_add(1, Ordering::Relaxed);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// This process's resident memory now and at its peak, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tienda_kit::install_crypto_provider();
    tokio::runtime::Runtime::new()?.block_on(async {
        let database = TestDatabase::create().await;
        let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let js = async_nats::jetstream::new(async_nats::connect(&nats).await?);
        tienda_kit::testing::provision_topology(&js).await;
        let issuer = TokenIssuer::start().await;
        let sent = Arc::new(AtomicU64::new(0));
        let smtp = smtp_sink(sent.clone()).await;
        let config = Config::parse_from([
            "tienda-notifications".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            format!("--database-url={}", database.url),
            format!("--nats-url={nats}"),
            "--log-filter=error".into(),
            format!("--auth-jwks-url={}", issuer.jwks_url),
            format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
            format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
            format!("--smtp-url=smtp://127.0.0.1:{smtp}"),
            format!("--send-concurrency={}", args.concurrency),
            "--poll-interval-ms=100".into(),
        ]);
        let app = Application::build(config).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let db = app.platform().db().clone();
        tokio::spawn(app.run_until_stopped());

        // The people, as `user.registered` would have left them; a tenth opted out.
        sqlx::query(
            "INSERT INTO people (user_id, email, name, registered_at)
             SELECT gen_random_uuid(), 'person' || n || '@bench.test', 'Person ' || n, now()
             FROM generate_series(1, $1) AS n",
        )
        .bind(args.people)
        .execute(&db)
        .await?;
        sqlx::query(
            "INSERT INTO opt_outs (subject, category, source)
             SELECT 'user:' || user_id, 'marketing', 'preferences' FROM people
             WHERE email LIKE '%0@bench.test'",
        )
        .execute(&db)
        .await?;
        let opted_out: i64 = sqlx::query_scalar("SELECT count(*) FROM opt_outs")
            .fetch_one(&db)
            .await?;
        let (rss_idle, _) = memory();

        let admin = issuer.token("bench-admin", &["admin"]);
        let started = Instant::now();
        let created: serde_json::Value = reqwest::Client::new()
            .post(format!("{base}/v1/notifications/campaigns"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": "Bench", "channel": "email", "rate_per_second": args.rate,
                "content": {"en": {
                    "subject": "Spring sale, {{ name }}",
                    "body_text": "Hi {{ name }},\n\n20% off everything this week.\n",
                    "body_html": "<p>Hi {{ name }},</p><p>20% off everything this week.</p>\n"}},
            }))
            .send()
            .await?
            .json()
            .await?;
        let id: uuid::Uuid = created["id"].as_str().expect("created").parse()?;
        let expected = u64::try_from(args.people - opted_out)?;
        let mut enqueued_at = None;
        let mut peak_rss: f64 = rss_idle;
        loop {
            let (rss, _) = memory();
            peak_rss = peak_rss.max(rss);
            if enqueued_at.is_none() {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
                        .bind(id)
                        .fetch_one(&db)
                        .await?;
                if status == "completed" {
                    enqueued_at = Some(started.elapsed());
                }
            }
            if sent.load(Ordering::Relaxed) >= expected {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {} of {expected} sent after 10 minutes",
                sent.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_sent = started.elapsed();
        // The worker records `sent` just after the server's answer.
        loop {
            let recorded: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM deliveries WHERE event_id = $1 AND status = 'sent'",
            )
            .bind(id)
            .fetch_one(&db)
            .await?;
            if u64::try_from(recorded)? >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let recorded = started.elapsed();
        let (_, hwm) = memory();
        let enqueued = enqueued_at.unwrap_or(all_sent);
        println!(
            "| People | Sent | Suppressed | Rate asked | Enqueued in | All sent in | Sent/s | Recorded in | RSS idle MiB | RSS peak MiB | HWM MiB |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {expected} | {opted_out} | {}/s | {:.2} s | {:.2} s | {:.0} | {:.2} s | {rss_idle:.1} | {peak_rss:.1} | {hwm:.1} |",
            args.people,
            args.rate,
            enqueued.as_secs_f64(),
            all_sent.as_secs_f64(),
            expected as f64 / all_sent.as_secs_f64(),
            recorded.as_secs_f64(),
        );
        println!(
            "{}",
            json!({"bench": "campaign", "people": args.people, "sent": expected,
                   "rate": args.rate, "concurrency": args.concurrency,
                   "enqueued_s": enqueued.as_secs_f64(), "all_sent_s": all_sent.as_secs_f64(),
                   "recorded_s": recorded.as_secs_f64(), "rss_idle_mib": rss_idle,
                   "rss_peak_mib": peak_rss, "hwm_mib": hwm})
        );
        anyhow::Ok(())
    })
}
