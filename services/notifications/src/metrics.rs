//! Deliveries as Prometheus gauges, read from the table rather than counted in the worker (a
//! restarted process would start counters at zero; the table is exact and survives):
//!
//! - `notifications_deliveries{channel, status}`: deliveries created in the last hour by
//!   channel (`email`, `webhook`) and status;
//! - `notifications_backlog{channel}`: deliveries due now and not sent (what the worker is
//!   behind by; held quiet-hours messages are not due);
//! - `notifications_dead_letters{channel}`: failed deliveries waiting for an admin's replay;
//! - `notifications_suppressed_addresses`: addresses on the suppression list.
//!
//! Label values come from our own columns, so their number stays bounded.

use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;

/// The gauges.
#[derive(Clone)]
pub struct DeliveryMetrics {
    deliveries: IntGaugeVec,
    backlog: IntGaugeVec,
    dead_letters: IntGaugeVec,
    suppressed: IntGauge,
}

impl std::fmt::Debug for DeliveryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryMetrics")
    }
}

impl DeliveryMetrics {
    /// The gauges, registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let deliveries = IntGaugeVec::new(
            Opts::new(
                "notifications_deliveries",
                "Deliveries created in the last hour by channel and status",
            ),
            &["channel", "status"],
        )?;
        let backlog = IntGaugeVec::new(
            Opts::new(
                "notifications_backlog",
                "Deliveries due now and not yet sent, by channel",
            ),
            &["channel"],
        )?;
        let dead_letters = IntGaugeVec::new(
            Opts::new(
                "notifications_dead_letters",
                "Failed deliveries waiting for a replay, by channel",
            ),
            &["channel"],
        )?;
        let suppressed = IntGauge::new(
            "notifications_suppressed_addresses",
            "Addresses on the suppression list",
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(suppressed.clone()))?;
        Ok(Self {
            deliveries,
            backlog,
            dead_letters,
            suppressed,
        })
    }

    /// Reads the tables once and sets every gauge.
    pub async fn refresh(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let by_status: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT channel, status, count(*) FROM deliveries
             WHERE created_at > now() - interval '1 hour' GROUP BY 1, 2",
        )
        .fetch_all(db)
        .await?;
        let queues: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT channel,
                    count(*) FILTER (WHERE status = 'queued' AND next_attempt_at <= now()),
                    count(*) FILTER (WHERE status = 'failed')
             FROM deliveries WHERE status IN ('queued', 'failed') GROUP BY 1",
        )
        .fetch_all(db)
        .await?;
        let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
            .fetch_one(db)
            .await?;
        self.deliveries.reset();
        for (channel, status, n) in by_status {
            self.deliveries
                .with_label_values(&[&channel, &status])
                .set(n);
        }
        self.backlog.reset();
        self.dead_letters.reset();
        for channel in ["email", "webhook"] {
            self.backlog.with_label_values(&[channel]).set(0);
            self.dead_letters.with_label_values(&[channel]).set(0);
        }
        for (channel, due, failed) in queues {
            self.backlog.with_label_values(&[&channel]).set(due);
            self.dead_letters.with_label_values(&[&channel]).set(failed);
        }
        self.suppressed.set(suppressed);
        Ok(())
    }

    /// Refreshes every `every` until `shutdown`.
    pub async fn run(self, db: PgPool, every: Duration, shutdown: tienda_kit::shutdown::Shutdown) {
        loop {
            if let Err(e) = self.refresh(&db).await {
                tracing::warn!(error = %e, "refreshing notification metrics failed; will retry");
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}
