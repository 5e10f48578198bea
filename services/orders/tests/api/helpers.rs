use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{Envelope, Message, header};
use tienda_kit::testing::{NatsServer, TestDatabase, TokenIssuer};
use uuid::Uuid;

pub const CUSTOMER: &str = "00000000-0000-7000-8000-00000000000c";
pub const OTHER_CUSTOMER: &str = "00000000-0000-7000-8000-00000000000d";

/// Every message published on orders' NATS, in arrival order.
#[derive(Clone, Default)]
pub struct Bus(Arc<Mutex<Vec<Published>>>);

/// A subject and the envelope published on it.
type Published = (String, Envelope<Value>);

impl Bus {
    /// The messages on `subject` about `order_id` (correlation id) so far.
    pub fn about(&self, subject: &str, order_id: Uuid) -> Vec<Envelope<Value>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, e)| s == subject && e.correlation_id == order_id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Waits for the first message on `subject` about `order_id`.
    pub async fn expect(&self, subject: &str, order_id: Uuid) -> Envelope<Value> {
        eventually(&format!("{subject} for {order_id}"), || async {
            !self.about(subject, order_id).is_empty()
        })
        .await;
        self.about(subject, order_id).remove(0)
    }
}

pub struct TestApp {
    pub base: String,
    /// The admin listener (`/admin/...`).
    pub admin_base: String,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    pub js: async_nats::jetstream::Context,
    pub bus: Bus,
    _issuer: TokenIssuer,
    pub customer: String,
    pub other_customer: String,
    pub admin: String,
    pub products: Products,
    /// The orders flags, to start it again on the same database and NATS.
    args: Vec<String>,
    /// The running orders process: its shutdown and its serving task.
    running: Option<(
        tienda_kit::Shutdown,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    _nats: NatsServer,
    _database: TestDatabase,
}

/// A real products service on its own database and nats-server (so nothing but the test
/// answers the saga's inventory commands on orders' NATS).
pub struct Products {
    pub base: String,
    admin: String,
    http: reqwest::Client,
    _nats: NatsServer,
    _database: TestDatabase,
}

impl Products {
    /// Creates a product with one variant per `(sku, price)`; returns its id.
    pub async fn create(&self, name: &str, status: &str, variants: &[(&str, i64)]) -> Uuid {
        let body = json!({
            "name": name,
            "description": format!("{name}, made to last."),
            "status": status,
            "variants": variants.iter().map(|(sku, amount)| json!({
                "sku": sku, "attributes": {}, "price": {"amount": amount, "currency": "EUR"}
            })).collect::<Vec<_>>(),
        });
        let response = self
            .http
            .post(format!("{}/v1/products", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let product: Value = response.json().await.unwrap();
        product["id"].as_str().unwrap().parse().unwrap()
    }

    /// An admin's token for products.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// Sets a SKU's on-hand stock.
    pub async fn stock(&self, sku: &str, on_hand: i64) {
        let response = self
            .http
            .put(format!("{}/v1/inventory/{sku}", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"on_hand": on_hand, "reason": "initial count"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Sets a SKU's price (EUR minor units), as an admin's price update would.
    pub async fn set_price(&self, sku: &str, amount: i64) {
        let response = self
            .http
            .post(format!("{}/v1/products/prices", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"items": [{"sku": sku, "price": {"amount": amount, "currency": "EUR"}}]}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let report: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
    }
}

pub async fn provision(nats_url: &str) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    tienda_kit::testing::provision_topology(&js).await;
}

fn auth_flags(issuer: &TokenIssuer) -> Vec<String> {
    vec![
        format!("--auth-jwks-url={}", issuer.jwks_url),
        format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
        format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
        "--log-format=pretty".into(),
        "--log-filter=warn".into(),
        "--listen-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
    ]
}

async fn spawn_products(issuer: &TokenIssuer) -> Products {
    let nats = NatsServer::start();
    provision(&nats.url()).await;
    let database = TestDatabase::create().await;
    let mut args = vec!["tienda-products".to_owned()];
    args.extend(auth_flags(issuer));
    args.push(format!("--database-url={}", database.url));
    args.push(format!("--nats-url={}", nats.url()));
    let app =
        tienda_products::Application::build(tienda_products::config::Config::parse_from(args))
            .await
            .expect("products builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Products {
        base,
        admin: issuer.token("00000000-0000-7000-8000-0000000000aa", &["admin"]),
        http: reqwest::Client::new(),
        _nats: nats,
        _database: database,
    }
}

/// Orders on its own database and nats-server (topology provisioned), pricing from a real
/// products service. `flags` are extra orders flags (step timeouts).
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    tienda_kit::install_crypto_provider();
    let issuer = TokenIssuer::start().await;
    let products = spawn_products(&issuer).await;
    let nats = NatsServer::start();
    provision(&nats.url()).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bus = Bus::default();
    let mut subscription = client.subscribe("tienda.>").await.unwrap();
    let sink = bus.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Ok(envelope) = serde_json::from_slice::<Envelope<Value>>(&message.payload) {
                sink.0
                    .lock()
                    .unwrap()
                    .push((message.subject.to_string(), envelope));
            }
        }
    });
    client.flush().await.unwrap();
    let database = TestDatabase::create().await;
    let mut args = vec!["tienda-orders".to_owned()];
    args.extend(auth_flags(&issuer));
    args.push(format!("--database-url={}", database.url));
    args.push(format!("--nats-url={}", nats.url()));
    args.push(format!("--products-url={}", products.base));
    args.push("--sweep-interval-ms=50".into());
    args.extend(flags.iter().map(|f| f.to_string()));
    let (base, admin_base, db, running) = start_orders(&args).await;
    TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        db,
        args,
        running: Some(running),
        js: async_nats::jetstream::new(client),
        bus,
        customer: issuer.token(CUSTOMER, &["customer"]),
        other_customer: issuer.token(OTHER_CUSTOMER, &["customer"]),
        admin: issuer.token("00000000-0000-7000-8000-0000000000aa", &["admin"]),
        _issuer: issuer,
        products,
        _nats: nats,
        _database: database,
    }
}

type Started = (
    String,
    String,
    sqlx::PgPool,
    (
        tienda_kit::Shutdown,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ),
);

/// Builds and serves an orders process from `args`.
async fn start_orders(args: &[String]) -> Started {
    let app = tienda_orders::Application::build(tienda_orders::config::Config::parse_from(args))
        .await
        .expect("orders builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let db = app.platform().db().clone();
    let shutdown = app.platform().shutdown.clone();
    let task = tokio::spawn(app.run_until_stopped());
    (base, admin_base, db, (shutdown, task))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A checkout body for `items` (`(product_id, sku, quantity)`).
/// The client address the tests' requests come from (`X-Real-IP`).
pub const CLIENT_IP: &str = "203.0.113.7";

pub fn checkout_body(items: &[(Uuid, &str, u32)]) -> Value {
    json!({
        "email": "ana@example.com",
        "shipping_address": {"name": "Ana García", "line1": "Calle Mayor 1", "city": "Madrid",
                             "postal_code": "28013", "country": "ES"},
        "payment_method": "pm_card_visa",
        "items": items.iter().map(|(product_id, sku, quantity)| json!({
            "product_id": product_id, "sku": sku, "quantity": quantity
        })).collect::<Vec<_>>(),
    })
}

impl TestApp {
    /// Stops the orders process as SIGTERM would (its platform's shutdown) and waits until it
    /// has drained and exited.
    pub async fn stop(&mut self) {
        let (shutdown, task) = self.running.take().expect("orders is running");
        shutdown.trigger();
        task.await
            .expect("orders did not panic")
            .expect("orders stopped cleanly");
    }

    /// Starts a new orders process on the same database and NATS.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "stop it first");
        let (base, admin_base, db, running) = start_orders(&self.args).await;
        self.base = base;
        self.admin_base = admin_base;
        self.db = db;
        self.running = Some(running);
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.send_with_cart(method, path, token, None, key, body)
            .await
    }

    /// [`Self::send`] with a guest cart's token.
    pub async fn send_with_cart(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        cart: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        // As the gateway sends every request: the client's address as it judged it.
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-real-ip", CLIENT_IP);
        if let Some(cart) = cart {
            request = request.header("Cart-Token", cart);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// Checks out `body` as the customer with a fresh key; asserts 202; returns the order.
    pub async fn place(&self, body: &Value) -> Value {
        let key = Uuid::now_v7().to_string();
        let response = self
            .send(
                Method::POST,
                "/v1/checkout",
                Some(&self.customer),
                Some(&key),
                Some(body),
            )
            .await;
        let status = response.status();
        let order: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{order}");
        order
    }

    /// A product with one SKU at `price`, and a placed order of `quantity` of it.
    pub async fn placed_order(&self, sku: &str, price: i64, quantity: u32) -> Uuid {
        let product = self.products.create("Mug", "active", &[(sku, price)]).await;
        let order = self
            .place(&checkout_body(&[(product, sku, quantity)]))
            .await;
        order["id"].as_str().unwrap().parse().unwrap()
    }

    /// The order as its owner reads it.
    pub async fn order(&self, id: Uuid) -> Value {
        let response = self
            .send(
                Method::GET,
                &format!("/v1/orders/{id}"),
                Some(&self.customer),
                None,
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Waits until the order reads `status`; returns it.
    pub async fn wait_for_status(&self, id: Uuid, status: &str) -> Value {
        eventually(&format!("order {id} {status}"), || async {
            self.order(id).await["status"] == status
        })
        .await;
        self.order(id).await
    }

    /// Publishes `data` onto its stream as the service that owns it would: answering `cause`.
    pub async fn reply<T: Message>(&self, source: &str, data: T, cause: &Envelope<Value>) -> Uuid {
        let mut envelope = Envelope::new(source, data);
        envelope.correlation_id = cause.correlation_id;
        envelope.causation_id = Some(cause.id);
        self.publish(envelope).await
    }

    /// Publishes an envelope with its id as `Nats-Msg-Id`; waits for the stream's ack.
    pub async fn publish<T: Message>(&self, envelope: Envelope<T>) -> Uuid {
        let id = envelope.id;
        let subject = envelope.subject();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, id.to_string().as_str());
        headers.insert(header::TYPE, envelope.message_type.as_str());
        let payload = serde_json::to_vec(&envelope).unwrap();
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        id
    }

    /// Publishes `envelope` again as a redelivery from the outbox would look after the stream's
    /// de-duplication window: a fresh `Nats-Msg-Id`, the same envelope id as
    /// `Tienda-Event-Id` (what the kit's consumer keys its inbox on). Returns the stream
    /// sequence; asserts the stream did not drop it as a duplicate.
    pub async fn publish_again<T: Message>(&self, envelope: &Envelope<T>) -> u64 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, Uuid::now_v7().to_string().as_str());
        headers.insert(header::EVENT_ID, envelope.id.to_string().as_str());
        headers.insert(header::TYPE, envelope.message_type.as_str());
        let payload = serde_json::to_vec(envelope).unwrap();
        let ack = self
            .js
            .publish_with_headers(envelope.subject(), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!ack.duplicate, "the stream must deliver it");
        ack.sequence
    }

    /// Waits until the durable consumer `durable` of `stream` has acknowledged everything up
    /// to stream sequence `sequence`.
    pub async fn acked(&self, stream: &str, durable: &str, sequence: u64) {
        let stream = self.js.get_stream(stream).await.unwrap();
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(durable).await.unwrap();
        eventually(&format!("{durable} acked {sequence}"), || {
            let mut consumer = consumer.clone();
            async move { consumer.info().await.unwrap().ack_floor.stream_sequence >= sequence }
        })
        .await;
    }

    /// The saga's step and whether it still has a deadline.
    pub async fn saga(&self, id: Uuid) -> (String, bool) {
        sqlx::query_as("SELECT step, deadline IS NOT NULL FROM sagas WHERE order_id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until the consumer `durable` has handled message `id` (its inbox row exists).
    pub async fn handled(&self, durable: &str, id: Uuid) {
        eventually(&format!("{durable} handled {id}"), || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM tienda_inbox WHERE consumer = $1 AND message_id = $2)",
            )
            .bind(durable)
            .bind(id.to_string())
            .fetch_one(&self.db)
            .await
            .unwrap()
        })
        .await;
    }

    /// The kinds of the order's log entries, in order.
    pub async fn log(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM order_events WHERE order_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.db)
            .await
            .unwrap()
    }
}

/// Waits until `check` holds (up to 20 s: a bound on waiting, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
