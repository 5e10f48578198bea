use clap::Parser;
use serde_json::{Value, json};
use tienda_auth::{Application, config::Config};
use tienda_kit::testing::TestDatabase;

pub const ADMIN_EMAIL: &str = "root@shop.test";
pub const ADMIN_PASSWORD: &str = "an admin passphrase nobody guesses 9";
/// The shop's event-sealing key in these tests (notifications would have the same).
pub const SEALING_KEYS: &str = "c2VhbGluZy1rZXktZm9yLXRoZS1hdXRoLXRlc3RzISE=";

/// Opens sealed tokens as notifications does.
pub fn sealer() -> tienda_kit::seal::Sealer {
    tienda_kit::seal::Sealer::from_config(SEALING_KEYS).unwrap()
}

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
    // The streams (USER carries the session revocations every verifier follows), once per run.
    static PROVISIONED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    PROVISIONED
        .get_or_init(|| async {
            let client = async_nats::connect(&nats).await.unwrap();
            tienda_kit::testing::provision_topology(&async_nats::jetstream::new(client)).await;
        })
        .await;
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
        format!("--event-sealing-keys={SEALING_KEYS}"),
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

    /// The newest `message_type` event (a reset or a verification) sent to `email`, as
    /// notifications reads it: the payload as stored, and its token opened.
    pub async fn account_link(&self, message_type: &str, email: &str) -> (Value, String) {
        let payload: Value = sqlx::query_scalar(
            "SELECT payload FROM tienda_outbox WHERE message_type = $1 \
             AND payload->'data'->>'email' = $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(message_type)
        .bind(email)
        .fetch_one(&self.db)
        .await
        .unwrap_or_else(|e| panic!("no {message_type} event for {email}: {e}"));
        let data = &payload["data"];
        let context = format!("{message_type}|{}", data["user_id"].as_str().unwrap());
        let token = sealer()
            .open(&context, data["sealed_token"].as_str().unwrap())
            .unwrap();
        (payload, token)
    }

    /// Follows the newest verification link sent to `email`.
    pub async fn verify_email(&self, email: &str) {
        let (_, token) = self
            .account_link("user.email_verification_requested", email)
            .await;
        let response = self
            .post("/v1/auth/email/verify", json!({"token": token}))
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
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
