use clap::Parser;
use serde_json::{Value, json};
use tienda_kit::testing::{NatsServer, TestDatabase, TokenIssuer};
use tienda_products::{Application, config::Config};

pub struct TestApp {
    pub base: String,
    /// The admin listener (`/metrics`, `/admin/dead-letters`).
    pub admin_base: String,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    pub admin: String,
    pub customer: String,
    pub nats: NatsServer,
    pub issuer: TokenIssuer,
    _database: TestDatabase,
}

/// A products service on its own database and nats-server, with the PRODUCT and INVENTORY
/// streams and its consumers provisioned.
pub async fn spawn_app() -> TestApp {
    tienda_kit::install_crypto_provider();
    let nats = NatsServer::start();
    provision(&nats.url()).await;
    let database = TestDatabase::create().await;
    let issuer = TokenIssuer::start().await;
    let (base, admin_base, db) = start(&database.url, &nats.url(), &issuer).await;
    TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        db,
        admin: issuer.token("00000000-0000-7000-8000-000000000001", &["admin"]),
        customer: issuer.token("00000000-0000-7000-8000-000000000002", &["customer"]),
        nats,
        issuer,
        _database: database,
    }
}

pub async fn provision(nats_url: &str) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    tienda_kit::testing::provision_topology(&js).await;
}

/// Another replica on the same database and NATS.
pub async fn spawn_replica(of: &TestApp) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&of.db)
        .await
        .unwrap();
    let url = tienda_kit::testing::with_database(&tienda_kit::testing::admin_database_url(), &name);
    start(&url, &of.nats.url(), &of.issuer).await.0
}

async fn start(
    database_url: &str,
    nats_url: &str,
    issuer: &TokenIssuer,
) -> (String, String, sqlx::PgPool) {
    let config = Config::parse_from([
        "tienda-products".to_owned(),
        "--listen-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--database-url={database_url}"),
        format!("--nats-url={nats_url}"),
        "--log-format=pretty".into(),
        "--log-filter=warn".into(),
        format!("--auth-jwks-url={}", issuer.jwks_url),
        format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
        format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
        "--sweep-interval-ms=100".into(),
    ]);
    let app = Application::build(config).await.expect("products builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let db = app.platform().db().clone();
    tokio::spawn(app.run_until_stopped());
    (base, admin_base, db)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.send(reqwest::Method::GET, path, None, None).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Creates an active product as admin; returns it.
    pub async fn create_product(&self, body: Value) -> Value {
        let response = self
            .send(
                reqwest::Method::POST,
                "/v1/products",
                Some(&self.admin),
                Some(body),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        body
    }

    /// Sets a SKU's on-hand stock as admin.
    pub async fn stock(&self, sku: &str, on_hand: i64) {
        let response = self
            .send(
                reqwest::Method::PUT,
                &format!("/v1/inventory/{sku}"),
                Some(&self.admin),
                Some(json!({"on_hand": on_hand, "reason": "initial count"})),
            )
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
}

/// A product body with one variant per `(sku, price)`.
pub fn product(name: &str, variants: &[(&str, i64)]) -> Value {
    json!({
        "name": name,
        "description": format!("{name}, made to last."),
        "status": "active",
        "variants": variants.iter().map(|(sku, amount)| json!({
            "sku": sku, "attributes": {}, "price": {"amount": amount, "currency": "EUR"}
        })).collect::<Vec<_>>(),
    })
}

/// Waits until `check` holds (up to 10 s).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
