use clap::Parser;
use serde_json::{Value, json};
use tienda_auth::{Application, config::Config};
use tienda_kit::testing::TestDatabase;

pub const ADMIN_EMAIL: &str = "root@shop.test";
pub const ADMIN_PASSWORD: &str = "an admin passphrase nobody guesses 9";

pub struct TestApp {
    pub base: String,
    /// The admin listener (`/metrics`).
    pub admin: String,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("127.0.0.1:0", &[]).await
}

/// An app listening on `listen_addr` with more flags.
pub async fn spawn_app_with(listen_addr: &str, flags: &[String]) -> TestApp {
    tienda_kit::install_crypto_provider();
    let database = TestDatabase::create().await;
    let (base, admin, db) = start(&database.url, listen_addr, flags).await;
    TestApp {
        base,
        admin,
        http: reqwest::Client::new(),
        db,
        _database: database,
    }
}

/// Another replica (or a restarted process) on the same database.
pub async fn spawn_replica(of: &TestApp) -> String {
    let url: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&of.db)
        .await
        .unwrap();
    let admin = tienda_kit::testing::admin_database_url();
    start(
        &tienda_kit::testing::with_database(&admin, &url),
        "127.0.0.1:0",
        &[],
    )
    .await
    .0
}

async fn start(
    database_url: &str,
    listen_addr: &str,
    flags: &[String],
) -> (String, String, sqlx::PgPool) {
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut args = vec![
        "tienda-auth".to_owned(),
        format!("--listen-addr={listen_addr}"),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--database-url={database_url}"),
        format!("--nats-url={nats}"),
        "--log-format=pretty".into(),
        "--log-filter=warn".into(),
        "--issuer=http://auth.test".into(),
        "--key-encryption-key=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        format!("--admin-email={ADMIN_EMAIL}"),
        format!("--admin-password={ADMIN_PASSWORD}"),
    ];
    args.extend(flags.iter().cloned());
    let config = Config::parse_from(args);
    let app = Application::build(config).await.expect("auth builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let db = app.platform().db().clone();
    tokio::spawn(app.run_until_stopped());
    (base, admin, db)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, email: &str) -> reqwest::Response {
        self.post(
            "/v1/auth/register",
            json!({"email": email, "password": "correct horse battery staple 42", "name": "Ada"}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// A login as the gateway forwards it for a client at `ip` (`X-Real-IP`; the test client
    /// connects from loopback, which auth trusts as a proxy by default).
    pub async fn login_from(&self, ip: &str, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/auth/login"))
            .header("x-real-ip", ip)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// A verifier as another service would build it: JWKS over HTTP.
    pub fn verifier(&self) -> tienda_kit::jwt::Verifier {
        tienda_kit::jwt::Verifier::new(tienda_kit::jwt::VerifierConfig {
            jwks_url: self.url("/.well-known/jwks.json"),
            issuer: "http://auth.test".into(),
            audience: "tienda".into(),
            min_refresh_interval: std::time::Duration::from_secs(1),
            leeway_seconds: 0,
        })
    }
}
