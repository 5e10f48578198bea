//! A minimal service built the way every Tienda service is, for the kit's tests.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, migrate::Migrator};
use tienda_events::{Envelope, inventory::InventoryAdjusted};
use tienda_kit::{
    Application, CommonConfig, Needs, Platform, Problem, json::Json, outbox, testing,
};
use uuid::Uuid;

pub static MIGRATOR: Migrator = sqlx::migrate!("tests/migrations");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    pub id: Uuid,
    pub name: String,
}

async fn create(
    State(db): State<PgPool>,
    Json(body): Json<CreateItem>,
) -> Result<(StatusCode, Json<Item>), Problem> {
    if body.name.trim().is_empty() {
        return Err(
            Problem::validation("name must not be blank").with_field("name", "must not be blank")
        );
    }
    let id = Uuid::now_v7();
    // The change and its event commit together, or neither does.
    let mut tx = db.begin().await.map_err(|_| Problem::internal())?;
    sqlx::query("INSERT INTO items (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(&body.name)
        .execute(&mut *tx)
        .await
        .map_err(|_| Problem::internal())?;
    let event = InventoryAdjusted {
        sku: body.name.clone(),
        on_hand: 1,
        delta: 1,
        reason: "created".into(),
    };
    outbox::enqueue(&mut tx, Envelope::new("example", event))
        .await
        .map_err(|_| Problem::internal())?;
    tx.commit().await.map_err(|_| Problem::internal())?;
    Ok((
        StatusCode::CREATED,
        Json(Item {
            id,
            name: body.name,
        }),
    ))
}

async fn fetch(State(db): State<PgPool>, Path(id): Path<String>) -> Result<Json<Item>, Problem> {
    let id: Uuid = id
        .parse()
        .map_err(|_| Problem::validation("id must be a UUID").with_field("id", "must be a UUID"))?;
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await
        .map_err(|_| Problem::internal())?;
    name.map(|name| Json(Item { id, name }))
        .ok_or_else(|| Problem::not_found(format!("no item {id}")))
}

/// `/v1/slow` requests that have started (the shutdown test waits for one to be in flight).
pub static SLOW_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn slow() -> &'static str {
    SLOW_STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    "done"
}

/// axum's own `Path<Uuid>`, whose rejection is plain text (the kit turns it into a problem).
async fn typed(Path(id): Path<Uuid>) -> String {
    id.to_string()
}

async fn boom() -> &'static str {
    panic!("secret internal detail: connection string postgres://x:y@z")
}

pub async fn build(config: CommonConfig, nats: bool) -> anyhow::Result<Application> {
    let platform = Platform::start(
        "example",
        config,
        Needs {
            database: Some(&MIGRATOR),
            nats,
        },
    )
    .await?;
    build_with(platform).await
}

pub async fn build_with(platform: Platform) -> anyhow::Result<Application> {
    let api = Router::new()
        .route("/v1/items", post(create))
        .route("/v1/items/{id}", get(fetch))
        .route("/v1/slow", get(slow))
        .route("/v1/typed/{id}", get(typed))
        .route("/v1/panic", get(boom))
        .with_state(platform.db().clone());
    let openapi = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("example")
                .version("0")
                .build(),
        )
        .build();
    Application::build(platform, api, openapi).await
}

/// A running example service on a fresh database.
pub struct Running {
    pub base: String,
    /// The admin listener.
    pub admin: String,
    pub platform: Platform,
    /// Dropped with the test: drops the database.
    pub _db: testing::TestDatabase,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

pub async fn spawn() -> Running {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let app = build(testing::config(Some(&db.url)), true)
        .await
        .expect("the example service builds");
    spawn_app(app, db)
}

pub fn spawn_app(app: Application, db: testing::TestDatabase) -> Running {
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let platform = app.platform().clone();
    let server = tokio::spawn(app.run_until_stopped());
    Running {
        base,
        admin,
        platform,
        _db: db,
        server,
        http: reqwest::Client::new(),
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }
}
