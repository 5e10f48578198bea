use serde_json::Value;
use tienda_kit::{Needs, Platform, testing};

use crate::example::{MIGRATOR, build_with, spawn_app};

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let starts = (0..4).map(|_| {
        let config = testing::config(Some(&db.url));
        async move {
            Platform::start(
                "example",
                config,
                Needs {
                    database: Some(&MIGRATOR),
                    nats: false,
                },
            )
            .await
        }
    });
    let platforms = futures::future::join_all(starts).await;
    for platform in &platforms {
        assert!(platform.is_ok(), "{:?}", platform.as_ref().err());
    }
    let pool = platforms[0].as_ref().unwrap().db();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'items'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn a_missing_database_url_fails_the_start_with_a_hint() {
    let err = Platform::start(
        "example",
        testing::config(None),
        Needs {
            database: Some(&MIGRATOR),
            nats: false,
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("DATABASE_URL is not set"),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_failing_critical_check_makes_the_service_unready() {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let mut platform = Platform::start(
        "example",
        testing::config(Some(&db.url)),
        Needs {
            database: Some(&MIGRATOR),
            nats: false,
        },
    )
    .await
    .unwrap();
    platform.health.add("payment-provider", true, || async {
        Err("connection refused".to_owned())
    });
    platform
        .health
        .add("cache", false, || async { Err("cold".to_owned()) });
    let app = spawn_app(build_with(platform).await.unwrap(), db);
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["status"], "not_ready");
    assert_eq!(
        report["checks"]["payment-provider"]["detail"],
        "connection refused"
    );
    assert_eq!(report["checks"]["database"]["status"], "ok");
}

#[tokio::test]
async fn jetstream_is_usable_through_the_platform_connection() {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let platform = start(&db, true).await;
    let nats = platform.nats.as_ref().unwrap();
    let _account = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        nats.jetstream.query_account(),
    )
    .await
    .expect("JetStream answers")
    .expect("JetStream is enabled on the test server");
    // JetStream answered for this account: the context is wired to a JetStream-enabled server.
    assert_eq!(nats.check(), Ok("connected".to_owned()));
}

#[tokio::test]
async fn a_service_starts_and_stays_ready_while_nats_is_unreachable() {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let mut config = testing::config(Some(&db.url));
    // A port nothing listens on: the outbox absorbs NATS outages, so this must not block start.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.nats_url = format!("nats://127.0.0.1:{unused}");
    let platform = Platform::start(
        "example",
        config,
        Needs {
            database: Some(&MIGRATOR),
            nats: true,
        },
    )
    .await
    .unwrap();
    let app = spawn_app(build_with(platform).await.unwrap(), db);
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["checks"]["nats"]["status"], "failing");
    assert_eq!(report["checks"]["nats"]["critical"], false);
}

#[tokio::test]
async fn the_pool_reports_connections_in_use_and_its_maximum() {
    tienda_kit::install_crypto_provider();
    let db = testing::TestDatabase::create().await;
    let platform = start(&db, false).await;
    let gauge = |text: &str, name: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let in_use = || {
        gauge(
            &platform.metrics.render(),
            "db_pool_connections{state=\"in_use\"",
        )
    };
    // Connections go back to the pool in the background: wait until the start's are back.
    let settled = |want: i64| async move {
        for _ in 0..100 {
            if in_use() == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("in use: {}, not {want}", in_use());
    };
    settled(0).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(platform.db().acquire().await.unwrap());
    }
    assert_eq!(in_use(), 3);
    let text = platform.metrics.render();
    assert_eq!(
        gauge(&text, "db_pool_max_connections"),
        i64::from(testing::config(None).database_max_connections)
    );
    drop(held);
    settled(0).await;
    assert!(
        gauge(
            &platform.metrics.render(),
            "db_pool_connections{state=\"idle\""
        ) >= 3
    );
}

/// The example service's platform on `db`, with NATS or without.
async fn start(db: &testing::TestDatabase, nats: bool) -> Platform {
    Platform::start(
        "example",
        testing::config(Some(&db.url)),
        Needs {
            database: Some(&MIGRATOR),
            nats,
        },
    )
    .await
    .unwrap()
}
