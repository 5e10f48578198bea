//! `Idempotency-Key` through a small real service: handlers write one `effects` row per run,
//! so what the layer let through is counted in the database.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    http::{StatusCode as AxumStatus, header as axum_header},
    middleware,
    response::{IntoResponse, Response},
    routing::post,
};
use pretty_assertions::assert_eq;
use reqwest::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tienda_kit::{
    Application, Needs, Platform, Problem,
    idempotency::{self, Options, Store, StoreConfig},
    json::Json,
    jwt::authenticate,
    testing::{self, TestDatabase, TokenIssuer},
};
use uuid::Uuid;

use crate::example::MIGRATOR;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    note: String,
}

/// Creates an effect: one row per run, `201` with its `Location`.
async fn create(State(db): State<PgPool>, Json(body): Json<Note>) -> Result<Response, Problem> {
    // Long enough for concurrent requests to overlap; nothing is timed on it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let id: i64 =
        sqlx::query_scalar("INSERT INTO effects (event_id, note) VALUES ($1, $2) RETURNING id")
            .bind(Uuid::now_v7())
            .bind(&body.note)
            .fetch_one(&db)
            .await
            .map_err(|_| Problem::internal())?;
    Ok((
        AxumStatus::CREATED,
        [(axum_header::LOCATION, format!("/v1/effects/{id}"))],
        Json(json!({"id": id, "note": body.note, "run": Uuid::now_v7()})),
    )
        .into_response())
}

/// Does its work, then takes its time answering: a client that gives up waits in vain.
async fn slow(State(db): State<PgPool>) -> Response {
    let _ = sqlx::query("INSERT INTO effects (event_id, note) VALUES ($1, 'slow')")
        .bind(Uuid::now_v7())
        .execute(&db)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (AxumStatus::CREATED, Json(json!({"done": true}))).into_response()
}

/// Does its work, then fails: the answer a crashed dependency gives.
async fn failing(State(db): State<PgPool>) -> Problem {
    let _ = sqlx::query("INSERT INTO effects (event_id, note) VALUES ($1, 'failing')")
        .bind(Uuid::now_v7())
        .execute(&db)
        .await;
    Problem::internal()
}

/// Does its work, then panics.
async fn panicking(State(db): State<PgPool>) -> Problem {
    let _ = sqlx::query("INSERT INTO effects (event_id, note) VALUES ($1, 'panicking')")
        .bind(Uuid::now_v7())
        .execute(&db)
        .await;
    panic!("the handler broke")
}

/// One instance of the test service.
struct Instance {
    base: String,
    platform: Platform,
    http: reqwest::Client,
}

impl Instance {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("the service answers")
    }

    async fn effects(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(self.platform.db())
            .await
            .unwrap()
    }

    async fn records(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tienda_idempotency")
            .fetch_one(self.platform.db())
            .await
            .unwrap()
    }

    fn outcomes(&self, outcome: &str) -> u64 {
        let label = format!("outcome=\"{outcome}\"");
        self.platform
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("idempotency_requests_total{") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// The service on `database_url`: `/v1/effects` (key optional), `/v1/required`,
/// `/v1/failing`, and `/v1/mine` behind token authentication.
async fn start(database_url: &str, config: StoreConfig, issuer: Option<&TokenIssuer>) -> Instance {
    tienda_kit::install_crypto_provider();
    let platform = Platform::start(
        "idem",
        testing::config(Some(database_url)),
        Needs {
            database: Some(&MIGRATOR),
            nats: false,
        },
    )
    .await
    .expect("the platform starts");
    let store = Store::start(&platform, config);
    let optional = Router::new()
        .route("/v1/effects", post(create))
        .route("/v1/slow", post(slow))
        .route("/v1/notes/{name}", post(create))
        .route("/v1/failing", post(failing))
        .route("/v1/panicking", post(panicking))
        .route_layer(idempotency::layer(store.clone(), Options::optional()));
    let required = Router::new()
        .route("/v1/required", post(create))
        .route_layer(idempotency::layer(store.clone(), Options::required()));
    let mut api = optional.merge(required);
    if let Some(issuer) = issuer {
        api = api.merge(
            Router::new()
                .route("/v1/mine", post(create))
                .route_layer(idempotency::layer(store, Options::required()))
                .route_layer(middleware::from_fn_with_state(
                    issuer.verifier(),
                    authenticate,
                )),
        );
    }
    let api = api.with_state(platform.db().clone());
    let openapi = utoipa::openapi::OpenApiBuilder::new().build();
    let app = Application::build(platform, api, openapi)
        .await
        .expect("the service builds");
    let instance = Instance {
        base: format!("http://127.0.0.1:{}", app.port()),
        platform: app.platform().clone(),
        http: reqwest::Client::new(),
    };
    tokio::spawn(app.run_until_stopped());
    instance
}

async fn spawn() -> (Instance, TestDatabase) {
    let db = TestDatabase::create().await;
    (start(&db.url, StoreConfig::default(), None).await, db)
}

fn problem_type(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_same_key_and_body_twice_runs_once_and_replays_the_first_answer() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();

    let first = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;
    let second = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    for name in [header::LOCATION, header::CONTENT_TYPE] {
        assert_eq!(first.headers()[&name], second.headers()[&name], "{name}");
    }
    let (first, second): (Value, Value) =
        (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(
        first, second,
        "the replay is the first answer, not a second run"
    );
    assert_eq!(app.effects().await, 1);
    assert_eq!(app.outcomes("executed"), 1);
    assert_eq!(app.outcomes("replayed"), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422_and_runs_nothing() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();
    let first = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let reused = app
        .post("/v1/effects", Some(&key), json!({"note": "cup"}))
        .await;

    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem_type(&problem), "idempotency-key-reused");
    assert!(
        problem["detail"].as_str().unwrap().contains("new"),
        "{problem}"
    );
    assert_eq!(app.effects().await, 1);
}

#[tokio::test]
async fn one_key_on_two_endpoints_or_from_two_callers_is_two_requests() {
    let db = TestDatabase::create().await;
    let issuer = TokenIssuer::start().await;
    let app = start(&db.url, StoreConfig::default(), Some(&issuer)).await;
    let key = "shared-key";
    let body = json!({"note": "mug"});

    let optional = app.post("/v1/effects", Some(key), body.clone()).await;
    let required = app.post("/v1/required", Some(key), body.clone()).await;
    let mut mine = Vec::new();
    for user in ["user-a", "user-b", "user-a"] {
        let response = app
            .http
            .post(app.url("/v1/mine"))
            .bearer_auth(issuer.token(user, &["customer"]))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        mine.push((
            response.status(),
            response.headers().contains_key("idempotent-replayed"),
        ));
    }

    assert_eq!(optional.status(), StatusCode::CREATED);
    assert_eq!(required.status(), StatusCode::CREATED);
    assert!(!required.headers().contains_key("idempotent-replayed"));
    assert_eq!(
        mine,
        vec![
            (StatusCode::CREATED, false),
            (StatusCode::CREATED, false),
            (StatusCode::CREATED, true)
        ]
    );
    assert_eq!(app.effects().await, 4);
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_run_once() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();

    let answers = futures::future::join_all((0..50).map(|_| async {
        let response = app
            .post("/v1/effects", Some(&key), json!({"note": "mug"}))
            .await;
        let replayed = response.headers().contains_key("idempotent-replayed");
        let retry_after = response.headers().contains_key(header::RETRY_AFTER);
        (response.status(), replayed, retry_after)
    }))
    .await;

    let executed = answers
        .iter()
        .filter(|(s, replayed, _)| *s == StatusCode::CREATED && !replayed)
        .count();
    let replayed = answers
        .iter()
        .filter(|(s, replayed, _)| *s == StatusCode::CREATED && *replayed)
        .count();
    let in_flight = answers
        .iter()
        .filter(|(s, _, retry_after)| *s == StatusCode::CONFLICT && *retry_after)
        .count();
    assert_eq!(executed, 1, "{answers:?}");
    assert_eq!(executed + replayed + in_flight, 50, "{answers:?}");
    assert_eq!(app.effects().await, 1);
    assert_eq!(app.outcomes("replayed") as usize, replayed);
    assert_eq!(app.outcomes("in_flight") as usize, in_flight);
}

#[tokio::test]
async fn two_instances_on_one_database_run_a_key_once() {
    let db = TestDatabase::create().await;
    let one = start(&db.url, StoreConfig::default(), None).await;
    let two = start(&db.url, StoreConfig::default(), None).await;
    let key = Uuid::now_v7().to_string();

    let answers = futures::future::join_all((0..20).map(|i| {
        let instance = if i % 2 == 0 { &one } else { &two };
        let key = key.clone();
        async move {
            let response = instance
                .post("/v1/effects", Some(&key), json!({"note": "mug"}))
                .await;
            (
                response.status(),
                response.headers().contains_key("idempotent-replayed"),
            )
        }
    }))
    .await;

    let executed = answers
        .iter()
        .filter(|(s, replayed)| *s == StatusCode::CREATED && !replayed)
        .count();
    assert_eq!(executed, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, replayed)| (*s == StatusCode::CREATED)
                || (*s == StatusCode::CONFLICT && !replayed)),
        "{answers:?}"
    );
    assert_eq!(one.effects().await, 1);
    let replay = two
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_server_error_is_not_stored_so_a_retry_runs_again() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();

    let first = app.post("/v1/failing", Some(&key), json!({})).await;
    let retry = app.post("/v1/failing", Some(&key), json!({})).await;

    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!retry.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.effects().await, 2);
    assert_eq!(app.records().await, 0, "the claim was released");
}

#[tokio::test]
async fn a_handler_that_panics_stores_nothing_so_a_retry_runs_again() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();

    let first = app.post("/v1/panicking", Some(&key), json!({})).await;
    let retry = app.post("/v1/panicking", Some(&key), json!({})).await;

    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.effects().await, 2);
    assert_eq!(app.records().await, 0, "the claim was released");
}

#[tokio::test]
async fn a_client_error_is_stored_and_replayed() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();

    let first = app
        .post("/v1/effects", Some(&key), json!({"nope": 1}))
        .await;
    let retry = app
        .post("/v1/effects", Some(&key), json!({"nope": 1}))
        .await;

    assert_eq!(first.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(retry.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        retry.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        retry.json::<Value>().await.unwrap()
    );
}

#[tokio::test]
async fn malformed_and_missing_keys_are_400_problems_that_run_nothing() {
    let (app, _db) = spawn().await;
    let body = json!({"note": "mug"});

    let too_long = app
        .post("/v1/effects", Some(&"k".repeat(256)), body.clone())
        .await;
    let empty = app.post("/v1/effects", Some(""), body.clone()).await;
    let missing = app.post("/v1/required", None, body.clone()).await;
    let longest = app
        .post("/v1/effects", Some(&"k".repeat(255)), body.clone())
        .await;
    let optional = app.post("/v1/effects", None, body.clone()).await;

    for (response, slug) in [
        (too_long, "idempotency-key-invalid"),
        (empty, "idempotency-key-invalid"),
        (missing, "idempotency-key-missing"),
    ] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem_type(&problem), slug, "{problem}");
    }
    assert_eq!(longest.status(), StatusCode::CREATED);
    assert_eq!(optional.status(), StatusCode::CREATED);
    assert_eq!(
        app.effects().await,
        2,
        "only the valid and the keyless request ran"
    );
    assert_eq!(app.records().await, 1, "the keyless request left no record");
}

#[tokio::test]
async fn expired_records_are_swept_and_their_key_can_be_used_afresh() {
    let db = TestDatabase::create().await;
    let config = StoreConfig {
        sweep_interval: Duration::from_millis(50),
        sweep_batch: 2,
        ..StoreConfig::default()
    };
    let app = start(&db.url, config, None).await;
    let key = Uuid::now_v7().to_string();
    for i in 0..5 {
        let other = format!("{key}-{i}");
        app.post("/v1/effects", Some(&other), json!({"note": "old"}))
            .await;
    }
    let first = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    // A day and an hour ago, as far as the store can tell.
    sqlx::query("UPDATE tienda_idempotency SET created_at = now() - interval '25 hours'")
        .execute(app.platform.db())
        .await
        .unwrap();

    tokio::time::timeout(Duration::from_secs(30), async {
        while app.records().await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sweeper deletes expired records (in batches of 2)");
    let again = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;

    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(!again.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.effects().await, 7);
}

#[tokio::test]
async fn an_abandoned_claim_answers_409_until_its_lease_runs_out_then_is_taken_over() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();
    let body = json!({"note": "mug"});
    // What a replica that died mid-request leaves: a claim on this exact request, still leased.
    let fingerprint = idempotency::fingerprint(
        &axum::http::Method::POST,
        &"/v1/effects".parse().unwrap(),
        &serde_json::to_vec(&body).unwrap(),
    );
    sqlx::query(
        "INSERT INTO tienda_idempotency (scope, method, path, key, fingerprint, claim, locked_until) \
         VALUES ('anonymous', 'POST', '/v1/effects', $1, $2, $3, now() + interval '1 hour')",
    )
    .bind(&key)
    .bind(&fingerprint)
    .bind(Uuid::now_v7())
    .execute(app.platform.db())
    .await
    .unwrap();

    let while_leased = app.post("/v1/effects", Some(&key), body.clone()).await;
    assert_eq!(while_leased.status(), StatusCode::CONFLICT);
    assert_eq!(while_leased.headers()[header::RETRY_AFTER], "1");
    let problem: Value = while_leased.json().await.unwrap();
    assert_eq!(problem_type(&problem), "idempotency-key-in-use");
    assert_eq!(app.effects().await, 0);

    sqlx::query("UPDATE tienda_idempotency SET locked_until = now() - interval '1 second'")
        .execute(app.platform.db())
        .await
        .unwrap();
    let after_lease = app.post("/v1/effects", Some(&key), body.clone()).await;
    let replay = app.post("/v1/effects", Some(&key), body.clone()).await;

    assert_eq!(after_lease.status(), StatusCode::CREATED);
    assert!(!after_lease.headers().contains_key("idempotent-replayed"));
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.effects().await, 1);
    assert_eq!(app.outcomes("reclaimed"), 1);
}

#[tokio::test]
async fn an_abandoned_claim_is_not_taken_over_by_another_request() {
    let (app, _db) = spawn().await;
    let key = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO tienda_idempotency (scope, method, path, key, fingerprint, claim, locked_until) \
         VALUES ('anonymous', 'POST', '/v1/effects', $1, '\\x00', $2, now() - interval '1 second')",
    )
    .bind(&key)
    .bind(Uuid::now_v7())
    .execute(app.platform.db())
    .await
    .unwrap();

    let other = app
        .post("/v1/effects", Some(&key), json!({"note": "mug"}))
        .await;

    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.effects().await, 0);
}

#[tokio::test]
async fn a_client_that_hangs_up_after_the_work_is_done_gets_the_stored_answer_on_retry() {
    let db = TestDatabase::create().await;
    let app = start(&db.url, StoreConfig::default(), None).await;
    let key = Uuid::now_v7().to_string();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(app.url("/v1/slow"))
        .header("Idempotency-Key", &key)
        .json(&json!({}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client hung up: {gave_up:?}");

    // The handler's answer is stored although nobody was there to read it.
    let stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tienda_idempotency WHERE status IS NOT NULL",
        )
        .fetch_one(app.platform.db())
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored().await == 0 {
        assert!(std::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry = app.post("/v1/slow", Some(&key), json!({})).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(app.effects().await, 1, "the work ran once");
}

#[tokio::test]
async fn a_path_too_long_to_key_is_refused_before_anything_runs() {
    let db = TestDatabase::create().await;
    let app = start(&db.url, StoreConfig::default(), None).await;
    let long = format!("/v1/notes/{}", "x".repeat(3000));
    let answer = app.post(&long, Some("k-1"), json!({"note": "n"})).await;
    assert_eq!(answer.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(app.records().await, 0);
}
