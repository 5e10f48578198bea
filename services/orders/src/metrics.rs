//! The saga's metrics: steps taken (by the reply that caused them and the decision made),
//! how long orders take to settle (by outcome), and the sagas in flight by step with the age
//! of the oldest.
//!
//! The collectors are process-wide and registered into each application's registry (one per
//! process in production; tests run several applications in one process, which then share the
//! counts).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;

/// Seconds from placing an order to its confirmation or cancellation: the saga's own budget
/// (DESIGN §7: p95 100 ms at 50 checkouts/s) up to the deadlines of a stuck step.
const SETTLE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// The saga's collectors.
#[derive(Clone)]
pub struct SagaMetrics {
    /// Steps by `reply` (what arrived: `Reserved`, `Authorized`, `DeadlinePassed`, …) and
    /// `decision` (what the saga did: `Authorize`, `Commit`, `Confirm`, `Cancel`, `Ignore`, …).
    pub steps: IntCounterVec,
    /// Placed → confirmed or cancelled, by `outcome`.
    pub settled: HistogramVec,
    /// Sagas waiting, by `step`.
    pub in_flight: IntGaugeVec,
    /// Age of the oldest order waiting at each `step`.
    pub oldest: IntGaugeVec,
}

impl std::fmt::Debug for SagaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SagaMetrics")
    }
}

/// The process's saga metrics.
pub static SAGA: LazyLock<SagaMetrics> = LazyLock::new(|| SagaMetrics {
    steps: IntCounterVec::new(
        Opts::new(
            "saga_steps_total",
            "Checkout saga steps, by the reply that caused them and the decision taken",
        ),
        &["reply", "decision"],
    )
    .expect("valid metric"),
    settled: HistogramVec::new(
        HistogramOpts::new(
            "saga_settle_duration_seconds",
            "Time from placing an order to its confirmation or cancellation, by outcome",
        )
        .buckets(SETTLE_BUCKETS.to_vec()),
        &["outcome"],
    )
    .expect("valid metric"),
    in_flight: IntGaugeVec::new(
        Opts::new(
            "saga_in_flight",
            "Checkout sagas waiting for a reply, a deadline or a compensation, by step",
        ),
        &["step"],
    )
    .expect("valid metric"),
    oldest: IntGaugeVec::new(
        Opts::new(
            "saga_oldest_in_flight_seconds",
            "Age of the oldest order whose saga waits at each step",
        ),
        &["step"],
    )
    .expect("valid metric"),
});

/// The steps a saga waits at.
const WAITING: [&str; 4] = ["reserving", "authorizing", "committing", "compensating"];

impl SagaMetrics {
    /// Registers the collectors in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.steps.clone()))?;
        registry.register(Box::new(self.settled.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        registry.register(Box::new(self.oldest.clone()))?;
        for step in WAITING {
            self.in_flight.with_label_values(&[step]).set(0);
            self.oldest.with_label_values(&[step]).set(0);
        }
        Ok(())
    }

    /// Reads the sagas in flight (a partial index keeps this to the waiting ones).
    pub async fn refresh(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT s.step, count(*), \
                    coalesce(extract(epoch FROM now() - min(o.created_at))::float8, 0) \
             FROM sagas s JOIN orders o ON o.id = s.order_id \
             WHERE s.step IN ('reserving', 'authorizing', 'committing', 'compensating') \
             GROUP BY s.step",
        )
        .fetch_all(db)
        .await?;
        for step in WAITING {
            let (count, age) = rows
                .iter()
                .find(|(s, _, _)| s == step)
                .map_or((0, 0.0), |(_, c, a)| (*c, *a));
            self.in_flight.with_label_values(&[step]).set(count);
            self.oldest.with_label_values(&[step]).set(age as i64);
        }
        Ok(())
    }
}
