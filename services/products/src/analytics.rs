//! Analytics for admins: product views (counted in memory, flushed every few seconds — a
//! crash loses at most that much of a count, never anything else) and top sellers (from the
//! stock ledger's sales, which committed reservations write).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tienda_kit::Shutdown;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::Error;

/// View counts not yet written.
#[derive(Debug, Default)]
pub struct Views(Mutex<HashMap<Uuid, i64>>);

impl Views {
    /// Counts one view.
    pub fn record(&self, id: Uuid) {
        *self.0.lock().expect("not poisoned").entry(id).or_default() += 1;
    }

    /// Writes the counts (added to today's).
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let counts: Vec<(Uuid, i64)> = self.0.lock().expect("not poisoned").drain().collect();
        if counts.is_empty() {
            return Ok(());
        }
        let (ids, views): (Vec<Uuid>, Vec<i64>) = counts.iter().copied().unzip();
        let written = sqlx::query(
            "INSERT INTO product_views (product_id, day, views) \
             SELECT w.id, current_date, w.n FROM unnest($1::uuid[], $2::bigint[]) AS w(id, n) \
             WHERE EXISTS (SELECT 1 FROM products p WHERE p.id = w.id) \
             ON CONFLICT (product_id, day) DO UPDATE SET views = product_views.views + EXCLUDED.views",
        )
        .bind(&ids)
        .bind(&views)
        .execute(pool)
        .await;
        if written.is_err() {
            // Put them back for the next try.
            let mut pending = self.0.lock().expect("not poisoned");
            for (id, n) in counts {
                *pending.entry(id).or_default() += n;
            }
        }
        written.map(|_| ())
    }

    /// Flushes every `every` until shutdown, then once more.
    pub async fn run(
        self: std::sync::Arc<Self>,
        pool: PgPool,
        every: Duration,
        shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => break,
            }
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(error = %e, "writing product views failed; kept for the next try");
            }
        }
        if let Err(e) = self.flush(&pool).await {
            tracing::warn!(error = %e, "writing product views at shutdown failed");
        }
    }
}

/// `GET /v1/products/analytics` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days back, today included (1-365, default 30).
    pub days: Option<i32>,
    /// Entries per list (1-100, default 10).
    pub limit: Option<i64>,
}

/// The report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Analytics {
    /// Days covered.
    pub days: i32,
    /// Most viewed products.
    pub most_viewed: Vec<ProductViews>,
    /// Best-selling SKUs by units sold.
    pub top_sellers: Vec<TopSeller>,
}

/// Views of a product.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ProductViews {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub name: String,
    /// Views.
    pub views: i64,
}

/// Sales of a SKU.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct TopSeller {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub name: String,
    /// The SKU.
    pub sku: String,
    /// Units sold.
    pub quantity: i64,
}

/// The report for a window.
pub async fn report(conn: &mut PgConnection, window: &Window) -> Result<Analytics, Error> {
    let days = window.days.unwrap_or(30);
    let limit = window.limit.unwrap_or(10);
    let mut problems = Vec::new();
    if !(1..=365).contains(&days) {
        problems.push(("days".to_owned(), "must be 1 to 365".to_owned()));
    }
    if !(1..=100).contains(&limit) {
        problems.push(("limit".to_owned(), "must be 1 to 100".to_owned()));
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let most_viewed = sqlx::query_as::<_, ProductViews>(
        "SELECT p.id AS product_id, p.name, sum(v.views)::bigint AS views FROM product_views v \
         JOIN products p ON p.id = v.product_id \
         WHERE v.day > current_date - $1 GROUP BY p.id, p.name ORDER BY views DESC, p.id LIMIT $2",
    )
    .bind(days)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let top_sellers = sqlx::query_as::<_, TopSeller>(
        "SELECT p.id AS product_id, p.name, l.sku, (-sum(l.delta))::bigint AS quantity \
         FROM stock_ledger l JOIN variants v ON v.sku = l.sku JOIN products p ON p.id = v.product_id \
         WHERE l.reason = 'sale' AND l.created_at > now() - make_interval(days => $1) \
         GROUP BY p.id, p.name, l.sku ORDER BY quantity DESC, l.sku LIMIT $2",
    )
    .bind(days)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Analytics {
        days,
        most_viewed,
        top_sellers,
    })
}
