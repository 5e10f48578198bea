use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use serde_json::Value;
use tienda_events::{
    Envelope, Message, header,
    money::Money,
    payment::{AuthorizePayment, CapturePayment, RefundPayment, VoidPayment},
};
use tienda_kit::testing::{NatsServer, TestDatabase, TokenIssuer};
use tienda_payments::{Application, config::Config};
use uuid::Uuid;

pub struct TestApp {
    pub base: String,
    /// The admin listener (`/metrics`).
    pub admin_base: String,
    pub http: reqwest::Client,
    pub db: sqlx::PgPool,
    pub admin: String,
    pub customer: String,
    pub jetstream: jetstream::Context,
    replies: pull::Stream,
    _nats: NatsServer,
    pub issuer: TokenIssuer,
    _database: TestDatabase,
}

/// A payments service on its own database and nats-server, with the topology provisioned.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The same with extra flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    try_spawn_app_with(extra).await.expect("payments builds")
}

/// The same, or why payments would not start.
pub async fn try_spawn_app_with(extra: &[&str]) -> anyhow::Result<TestApp> {
    tienda_kit::install_crypto_provider();
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = jetstream::new(client);
    tienda_kit::testing::provision_topology(&jetstream).await;
    let database = TestDatabase::create().await;
    let issuer = TokenIssuer::start().await;
    let mut args = vec![
        "tienda-payments".to_owned(),
        "--listen-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--database-url={}", database.url),
        format!("--nats-url={}", nats.url()),
        "--log-format=pretty".into(),
        "--log-filter=warn".into(),
        format!("--auth-jwks-url={}", issuer.jwks_url),
        format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
        format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
        "--sandbox-slow-ms=200".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let config = Config::parse_from(args);
    let app = Application::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let db = app.platform().db().clone();
    tokio::spawn(app.run_until_stopped());
    // Everything payments says, from the start of the stream (not its commands).
    let replies = jetstream
        .get_stream("PAYMENT")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            filter_subject: "tienda.payment.*".into(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    Ok(TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        db,
        admin: issuer.token("00000000-0000-7000-8000-000000000001", &["admin"]),
        customer: issuer.token("00000000-0000-7000-8000-000000000002", &["customer"]),
        jetstream,
        replies,
        _nats: nats,
        issuer,
        _database: database,
    })
}

/// A reply read from the stream.
#[derive(Debug)]
pub struct Reply {
    pub subject: String,
    pub envelope: Envelope<Value>,
}

impl Reply {
    /// The event's name: `authorized`, `failed`, ...
    pub fn name(&self) -> &str {
        self.subject.rsplit('.').next().unwrap()
    }

    pub fn data(&self) -> &Value {
        &self.envelope.data
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Publishes `command` onto the PAYMENT stream as orders' relay does (its id as
    /// `Nats-Msg-Id`); returns its envelope.
    pub async fn send<T: Message>(&self, command: T) -> Envelope<T> {
        let envelope = Envelope::new("orders", command);
        self.publish(&envelope).await;
        envelope
    }

    pub async fn publish<T: Message>(&self, envelope: &Envelope<T>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, envelope.id.to_string().as_str());
        headers.insert(header::TYPE, envelope.message_type.as_str());
        self.jetstream
            .publish_with_headers(
                envelope.subject(),
                headers,
                serde_json::to_vec(envelope).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Publishes `envelope` again as a redelivery past the stream's de-duplication looks to
    /// the consumer: a fresh `Nats-Msg-Id`, the same envelope id as `Tienda-Event-Id` (the
    /// key of payments' inbox).
    pub async fn republish<T: Message>(&self, envelope: &Envelope<T>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, Uuid::now_v7().to_string().as_str());
        headers.insert(header::EVENT_ID, envelope.id.to_string().as_str());
        headers.insert(header::TYPE, envelope.message_type.as_str());
        self.jetstream
            .publish_with_headers(
                envelope.subject(),
                headers,
                serde_json::to_vec(envelope).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// From now on every transaction that writes a reply fails (as a commit lost after the
    /// provider answered): the command is redelivered until [`Self::restore_commits`].
    pub async fn lose_commits(&self) {
        sqlx::raw_sql(
            "CREATE FUNCTION lose_commit() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'the commit is lost'; END $$; \
             CREATE TRIGGER lose_commits BEFORE INSERT ON tienda_outbox \
               FOR EACH ROW EXECUTE FUNCTION lose_commit();",
        )
        .execute(&self.db)
        .await
        .unwrap();
    }

    pub async fn restore_commits(&self) {
        sqlx::raw_sql("DROP TRIGGER lose_commits ON tienda_outbox; DROP FUNCTION lose_commit();")
            .execute(&self.db)
            .await
            .unwrap();
    }

    /// Waits until payment `id` has a `started` attempt under `key` (the provider is being
    /// called).
    pub async fn wait_for_started_attempt(&self, id: Uuid, key: &str) {
        for _ in 0..400 {
            let started: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM payment_attempts \
                 WHERE payment_id = $1 AND idempotency_key = $2 AND outcome = 'started'",
            )
            .bind(id)
            .bind(key)
            .fetch_one(&self.db)
            .await
            .unwrap();
            if started > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no started attempt {key} on payment {id} within 20 s");
    }

    /// The next reply on the stream.
    pub async fn reply(&mut self) -> Reply {
        let message = tokio::time::timeout(Duration::from_secs(20), self.replies.next())
            .await
            .expect("a reply within 20 s")
            .unwrap()
            .unwrap();
        Reply {
            subject: message.subject.to_string(),
            envelope: serde_json::from_slice(&message.payload).unwrap(),
        }
    }

    /// Sends `command` and returns its reply, checking the reply answers it.
    pub async fn ask<T: Message>(&mut self, command: T) -> Reply {
        let sent = self.send(command).await;
        let reply = self.reply().await;
        assert_eq!(
            reply.envelope.causation_id,
            Some(sent.id),
            "answers the command"
        );
        assert_eq!(reply.envelope.correlation_id, sent.correlation_id);
        reply
    }

    /// POSTs no body to `path` with `token`.
    pub async fn post(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// A payment as admins see it.
    pub async fn payment(&self, id: Uuid) -> Value {
        let response = self
            .get(&format!("/v1/payments/{id}"), Some(&self.admin))
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Authorizes `amount` EUR cents on `card` for a new order; returns the command.
    pub async fn authorize(&mut self, card: &str, amount: i64) -> (AuthorizePayment, Reply) {
        let command = authorize(card, eur(amount));
        let reply = self.ask(command.clone()).await;
        (command, reply)
    }

    /// Fails if payments says anything within `wait`.
    pub async fn no_reply_for(&mut self, wait: Duration) {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, self.replies.next()).await {
            panic!(
                "no reply expected, got {}: {}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            );
        }
    }

    /// A refund's status in the ledger.
    pub async fn refund_status(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM refunds WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Makes a pending refund due for its next check now, as if its wait had passed.
    pub async fn refund_due_now(&self, id: Uuid) {
        sqlx::query(
            "UPDATE refunds SET next_check_at = now() WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&self.db)
        .await
        .unwrap();
    }

    /// Waits until a pending refund was asked about `checks` times.
    pub async fn wait_for_refund_checks(&self, id: Uuid, checks: i32) {
        for _ in 0..400 {
            let done: i32 = sqlx::query_scalar("SELECT checks FROM refunds WHERE id = $1")
                .bind(id)
                .fetch_one(&self.db)
                .await
                .unwrap();
            if done >= checks {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("refund {id} was not asked about {checks} times within 20 s");
    }

    /// Counts rows of a query.
    pub async fn count(&self, sql: &'static str, id: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

pub fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".parse().unwrap(),
    }
}

pub fn in_a_minute() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::minutes(1)
}

pub fn authorize(card: &str, amount: Money) -> AuthorizePayment {
    AuthorizePayment {
        payment_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        customer_id: Some(Uuid::now_v7()),
        email: "ada@example.com".into(),
        amount,
        payment_method: card.into(),
        // An address of its own (documentation range), so the card-testing rule does not
        // take many tests' customers for one address trying cards.
        client_ip: Some({
            let r = Uuid::new_v4().as_u128();
            format!("2001:db8::{:x}:{:x}", r as u16, (r >> 16) as u16)
        }),
        billing_country: Some("US".into()),
        deadline: in_a_minute(),
    }
}

pub fn capture(of: &AuthorizePayment, amount: Option<Money>) -> CapturePayment {
    CapturePayment {
        payment_id: of.payment_id,
        order_id: of.order_id,
        amount,
        deadline: in_a_minute(),
        invoice: None,
    }
}

pub fn void(of: &AuthorizePayment) -> VoidPayment {
    VoidPayment {
        payment_id: of.payment_id,
        order_id: of.order_id,
        deadline: in_a_minute(),
    }
}

pub fn refund(of: &AuthorizePayment, amount: Money) -> RefundPayment {
    RefundPayment {
        refund_id: Uuid::now_v7(),
        payment_id: of.payment_id,
        order_id: of.order_id,
        amount,
        reason: "returned".into(),
        deadline: in_a_minute(),
    }
}
