//! PostgreSQL: the pool and embedded migrations applied under an advisory lock.

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{resilience::Backoff, secret::Secret};

/// How long startup keeps trying to reach the database before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Opens a pool, retrying with backoff for up to 30 s so a service started alongside its
/// database (or by `tienda up`) does not crash-loop.
pub async fn connect(
    url: &Secret<String>,
    max_connections: u32,
    app_name: &str,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.expose().parse().context(
        "DATABASE_URL is not a valid PostgreSQL URL (postgres://user:password@host:port/db)",
    )?;
    // JIT compiles a plan when its cost estimate is high — ranking thousands of search hits
    // qualifies — and costs 50-300 ms per query to save a few: never worth it for requests.
    let options = options.application_name(app_name).options([("jit", "off")]);
    let started = std::time::Instant::now();
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut failures = 0;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(err) if started.elapsed() < CONNECT_PATIENCE => {
                failures += 1;
                let delay = backoff.delay(failures);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(delay).await;
            }
            Err(err) => {
                return Err(err).context(format!(
                    "could not reach the database within {CONNECT_PATIENCE:?}: check DATABASE_URL and that PostgreSQL is running"
                ));
            }
        }
    }
}

/// Applies `migrator`'s pending migrations. sqlx holds a PostgreSQL advisory lock (keyed by
/// the database name) while it migrates, so replicas starting together apply each migration
/// exactly once; a migration that changed after it was applied fails the start loudly.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    migrator
        .run(pool)
        .await
        .context("applying database migrations")?;
    Ok(())
}

/// The kit's own tables (outbox, inbox, idempotency keys), tracked in `_tienda_kit_migrations` so they never
/// collide with a service's `_sqlx_migrations`.
static KIT_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Applies the kit's migrations, then the service's, each under sqlx's advisory lock.
pub async fn migrate_all(pool: &PgPool, service: &Migrator) -> anyhow::Result<()> {
    let mut kit = Migrator::with_migrations(KIT_MIGRATIONS.migrations.to_vec());
    kit.dangerous_set_table_name("_tienda_kit_migrations");
    kit.run(pool)
        .await
        .context("applying the kit's migrations (outbox, inbox, idempotency keys)")?;
    migrate(pool, service).await
}

/// The readiness check: one round trip.
pub async fn ping(pool: &PgPool) -> Result<String, String> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(|_| format!("{} connections, {} idle", pool.size(), pool.num_idle()))
        .map_err(|e| e.to_string())
}

/// The pool's state at each scrape: `db_pool_connections{state="in_use"|"idle"}` and
/// `db_pool_max_connections`. In-use connections at the maximum mean requests and consumers
/// wait for a connection (raise `DATABASE_MAX_CONNECTIONS`, or find what holds them).
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    pool: PgPool,
    connections: prometheus::IntGaugeVec,
    max: prometheus::IntGauge,
}

impl PoolMetrics {
    /// Registers the collector for `pool` in `registry`.
    pub fn register(pool: &PgPool, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let metrics = Self {
            pool: pool.clone(),
            connections: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "db_pool_connections",
                    "Pooled PostgreSQL connections, in use or idle",
                ),
                &["state"],
            )?,
            max: prometheus::IntGauge::new(
                "db_pool_max_connections",
                "Most connections the pool opens (DATABASE_MAX_CONNECTIONS)",
            )?,
        };
        registry.register(Box::new(metrics))
    }
}

impl prometheus::core::Collector for PoolMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.connections.desc();
        descs.extend(self.max.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let idle = self.pool.num_idle() as i64;
        let size = i64::from(self.pool.size());
        self.connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        self.connections.with_label_values(&["idle"]).set(idle);
        self.max
            .set(i64::from(self.pool.options().get_max_connections()));
        let mut families = self.connections.collect();
        families.extend(self.max.collect());
        families
    }
}
