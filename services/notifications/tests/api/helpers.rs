use std::path::{Path, PathBuf};

use async_nats::{HeaderMap, jetstream};
use clap::Parser;
use serde_json::Value;
use tienda_events::{Envelope, Message};
use tienda_kit::testing::{NatsServer, TestDatabase, TokenIssuer};
use tienda_notifications::{Application, config::Config};
use uuid::Uuid;

/// What links in messages start with; tests swap it for the app's address.
pub const PUBLIC_URL: &str = "http://shop.test";

pub struct TestApp {
    pub base: String,
    pub admin_base: String,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    pub jetstream: jetstream::Context,
    pub outbox: PathBuf,
    pub issuer: TokenIssuer,
    _nats: NatsServer,
    _database: TestDatabase,
}

/// A notifications service writing `.eml` files into a fresh directory.
/// The shop's event-sealing key in these tests (auth would seal with it).
pub const SEALING_KEYS: &str = "c2VhbGluZy1rZXktZm9yLXRoZS1hdXRoLXRlc3RzISE=";

/// Seals as auth does.
pub fn sealer() -> tienda_kit::seal::Sealer {
    tienda_kit::seal::Sealer::from_config(SEALING_KEYS).unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The same with extra flags (`--smtp-url=...`).
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    try_spawn_app_with(extra)
        .await
        .expect("notifications builds")
}

/// The same, or why notifications would not start.
pub async fn try_spawn_app_with(extra: &[&str]) -> anyhow::Result<TestApp> {
    tienda_kit::install_crypto_provider();
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    tienda_kit::testing::provision_topology(&js).await;
    let database = TestDatabase::create().await;
    let issuer = TokenIssuer::start().await;
    let outbox = std::env::temp_dir().join(format!("tienda-notifications-{}", Uuid::now_v7()));
    let mut args = vec![
        "tienda-notifications".to_owned(),
        "--listen-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--database-url={}", database.url),
        format!("--nats-url={}", nats.url()),
        "--log-format=pretty".into(),
        "--log-filter=warn".into(),
        format!("--auth-jwks-url={}", issuer.jwks_url),
        format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
        format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
        format!("--outbox-dir={}", outbox.display()),
        format!("--public-url={PUBLIC_URL}"),
        format!("--event-sealing-keys={SEALING_KEYS}"),
        "--shop-name=Tienda Test".into(),
        "--poll-interval-ms=100".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let app = Application::build(Config::parse_from(args)).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let db = app.platform().db().clone();
    tokio::spawn(app.run_until_stopped());
    Ok(TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        db,
        jetstream: js,
        outbox,
        issuer,
        _nats: nats,
        _database: database,
    })
}

/// A delivery as recorded.
#[derive(Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub provider_ref: Option<String>,
    pub locale: String,
    pub template_version: i32,
    pub body_text: String,
}

impl TestApp {
    /// Publishes `envelope` as its producer's outbox relay would (`Nats-Msg-Id` = `msg_id`).
    pub async fn publish_as<T: Message + serde::Serialize>(
        &self,
        envelope: &Envelope<T>,
        msg_id: &str,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.jetstream
            .publish_with_headers(
                envelope.subject(),
                headers,
                serde_json::to_vec(envelope).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .expect("the stream acknowledges");
    }

    /// Publishes `data` in a new envelope from `source`; returns the event id.
    pub async fn publish<T: Message + serde::Serialize>(&self, source: &str, data: T) -> Uuid {
        let envelope = Envelope::new(source, data);
        self.publish_as(&envelope, &envelope.id.to_string()).await;
        envelope.id
    }

    /// The delivery of `event_id`, once it reached a state other than `queued`.
    pub async fn settled(&self, event_id: Uuid) -> DeliveryRow {
        settled_on(self, event_id, "email").await
    }

    /// The mail sent for `event_id`.
    pub async fn mail_for(&self, event_id: Uuid) -> Mail {
        let delivery = self.settled(event_id).await;
        assert_eq!(delivery.status, "sent", "{delivery:?}");
        Mail::read(Path::new(delivery.provider_ref.as_deref().unwrap()))
    }

    /// Waits until the consumer has answered every message published on its stream.
    pub async fn drained(&self, stream: &str, durable: &str) {
        eventually("the consumer has answered everything", || async {
            let mut consumer: jetstream::consumer::PullConsumer = self
                .jetstream
                .get_consumer_from_stream(durable, stream)
                .await
                .unwrap();
            let info = consumer.info().await.unwrap();
            info.num_pending == 0 && info.num_ack_pending == 0
        })
        .await;
    }

    /// The `.eml` files in the outbox.
    pub fn mails(&self) -> Vec<Mail> {
        match std::fs::read_dir(&self.outbox) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| Mail::read(&p))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A link from a message, pointed at this app.
    pub fn local(&self, link: &str) -> String {
        link.replacen(PUBLIC_URL, &self.base, 1)
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
}

/// An `.eml` file, parsed as far as the tests need.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
}

impl Mail {
    pub fn read(path: &Path) -> Self {
        Self {
            raw: std::fs::read_to_string(path).unwrap(),
        }
    }

    /// A top-level header's value (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        tienda_kit::testing::mail_header(&self.raw, name)
    }

    /// The decoded body of the part with `content_type` (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> String {
        tienda_kit::testing::mail_part(&self.raw, content_type)
    }
}

/// Waits until `check` holds (up to 20 s).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.outbox);
    }
}

/// A local HTTP server standing in for a provider; answers with `router`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// The delivery of `event_id` on `channel` once settled (not `queued`).
pub async fn settled_on(app: &TestApp, event_id: Uuid, channel: &str) -> DeliveryRow {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = sqlx::query_as::<_, DeliveryRow>(
            "SELECT status, attempts, last_error, provider_ref, locale, template_version,
                    body_text
             FROM deliveries WHERE event_id = $1 AND channel = $2 AND status <> 'queued'",
        )
        .bind(event_id)
        .bind(channel)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the {channel} delivery of {event_id} to settle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A directory of CircuitPolicy files with `yaml` as one policy.
pub fn policy_dir(yaml: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tienda-notifications-policies-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
    dir
}
