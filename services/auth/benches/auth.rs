//! Registration latency and login throughput at the stated Argon2id parameters (m = 19 MiB,
//! t = 2, p = 1), over real HTTP against real PostgreSQL, on this machine.
//!
//!     tests/bench auth
//!
//! A benchmark, not a test: it prints numbers and asserts nothing about time.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tienda_auth::{Application, config::Config};
use tienda_kit::testing::TestDatabase;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    tokio::runtime::Runtime::new()?.block_on(async {
        let database = TestDatabase::create().await;
        let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let config = Config::parse_from([
            "tienda-auth",
            "--listen-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            &format!("--database-url={}", database.url),
            &format!("--nats-url={nats}"),
            "--log-filter=error",
            "--key-encryption-key=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "--event-sealing-keys=c2VhbGluZy1rZXktZm9yLXRoZS1hdXRoLXRlc3RzISE=",
        ]);
        let app = Application::build(config).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::new();

        // Registration: sequential, one at a time, as users arrive.
        let mut latencies = Vec::new();
        for i in 0..60 {
            let started = Instant::now();
            let response = http
                .post(format!("{base}/v1/auth/register"))
                .json(&json!({"email": format!("user{i}@bench.test"), "password": "correct horse battery staple 42", "name": "Bench"}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 202, "registration failed: {}", response.status());
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let (p50, p95, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.95), percentile(&latencies, 0.99));

        // Login throughput: 8 clients for 10 s (closed loop), distinct accounts.
        let deadline = Instant::now() + Duration::from_secs(10);
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    let mut done = 0u64;
                    let mut i = w;
                    while Instant::now() < deadline {
                        let response = http
                            .post(format!("{base}/v1/auth/login"))
                            .json(&json!({"email": format!("user{}@bench.test", i % 60), "password": "correct horse battery staple 42"}))
                            .send()
                            .await;
                        if response.is_ok_and(|r| r.status() == 200) {
                            done += 1;
                        }
                        i += 8;
                    }
                    done
                })
            })
            .collect();
        let mut logins = 0;
        for worker in workers {
            logins += worker.await?;
        }
        println!("| Argon2id | registration p50 | p95 | p99 | login/s (8 clients, 10 s) |");
        println!("|---|---:|---:|---:|---:|");
        println!(
            "| m=19456 KiB, t=2, p=1 | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} |",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            logins as f64 / 10.0
        );
        println!(
            "{}",
            json!({"bench": "auth", "register_p50_ms": p50.as_secs_f64() * 1e3, "register_p95_ms": p95.as_secs_f64() * 1e3,
                   "register_p99_ms": p99.as_secs_f64() * 1e3, "login_per_s": logins as f64 / 10.0})
        );
        anyhow::Ok(())
    })
}
