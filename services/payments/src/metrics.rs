//! Payments by outcome as Prometheus metrics, read from the ledger rather than counted in
//! handlers: a command's transaction can roll back after its handler ran, and a restarted
//! process would start its counters at zero, while the ledger is exact and survives. A
//! background task refreshes the gauges every period (default 15 s) over a rolling hour, so
//! each refresh reads an index range, not the whole history.
//!
//! - `payments_attempts_last_hour{provider, operation, outcome, code}`: provider calls
//!   (authorize, challenge, capture, void, refund) by outcome (`succeeded`, `declined`,
//!   `failed`, `requires_action`, `started`) and decline code;
//! - `payments_amount_last_hour_minor{provider, currency, kind}`: amounts in minor units by
//!   `kind` (`authorized`, `captured`, `refunded`) of the payments created in the hour;
//! - `payments_open_challenges`: 3-D Secure challenges waiting for the customer;
//! - `payments_webhook_backlog`: webhook events stored and not yet processed;
//! - `payments_refunds_pending`: refunds the providers have yet to make (followed up), and
//!   `payments_refund_pending_oldest_seconds`, the age of the oldest: alert when it grows.
//!
//! Label values come from our own tables (provider names, operations, outcomes, currencies and
//! the providers' decline codes), never from clients, so their number stays bounded.

use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;

/// The gauges.
#[derive(Clone)]
pub struct LedgerMetrics {
    attempts: IntGaugeVec,
    amounts: IntGaugeVec,
    open_challenges: IntGauge,
    webhook_backlog: IntGauge,
    refunds_pending: IntGauge,
    refund_pending_oldest: IntGauge,
}

impl std::fmt::Debug for LedgerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerMetrics")
    }
}

impl LedgerMetrics {
    /// The gauges, registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntGaugeVec::new(
            Opts::new(
                "payments_attempts_last_hour",
                "Provider calls in the last hour by provider, operation, outcome and decline code",
            ),
            &["provider", "operation", "outcome", "code"],
        )?;
        let amounts = IntGaugeVec::new(
            Opts::new(
                "payments_amount_last_hour_minor",
                "Amounts of the payments created in the last hour, in minor units, by kind",
            ),
            &["provider", "currency", "kind"],
        )?;
        let open_challenges = IntGauge::new(
            "payments_open_challenges",
            "3-D Secure challenges waiting for the customer",
        )?;
        let webhook_backlog = IntGauge::new(
            "payments_webhook_backlog",
            "Provider webhook events stored and not yet processed",
        )?;
        let refunds_pending = IntGauge::new(
            "payments_refunds_pending",
            "Refunds the provider accepted and has not made yet",
        )?;
        let refund_pending_oldest = IntGauge::new(
            "payments_refund_pending_oldest_seconds",
            "Age of the oldest refund still pending at the provider (0: none)",
        )?;
        registry.register(Box::new(refunds_pending.clone()))?;
        registry.register(Box::new(refund_pending_oldest.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(amounts.clone()))?;
        registry.register(Box::new(open_challenges.clone()))?;
        registry.register(Box::new(webhook_backlog.clone()))?;
        Ok(Self {
            attempts,
            amounts,
            open_challenges,
            webhook_backlog,
            refunds_pending,
            refund_pending_oldest,
        })
    }

    /// Reads the ledger once and sets every gauge.
    pub async fn refresh(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let attempts: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT p.provider, a.operation, a.outcome, coalesce(a.code, ''), count(*) \
             FROM payment_attempts a JOIN payments p ON p.id = a.payment_id \
             WHERE a.created_at > now() - interval '1 hour' \
             GROUP BY 1, 2, 3, 4",
        )
        .fetch_all(db)
        .await?;
        let amounts: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT provider, currency, \
                    coalesce(sum(amount) FILTER (WHERE status NOT IN ('pending', 'declined', 'failed', 'requires_action')), 0)::bigint, \
                    coalesce(sum(captured), 0)::bigint, coalesce(sum(refunded), 0)::bigint \
             FROM payments WHERE created_at > now() - interval '1 hour' GROUP BY 1, 2",
        )
        .fetch_all(db)
        .await?;
        let (open, backlog, pending, oldest): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM payments WHERE status = 'requires_action'), \
                    (SELECT count(*) FROM webhook_events WHERE processed_at IS NULL), \
                    count(*), \
                    coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint \
             FROM refunds WHERE status = 'pending'",
        )
        .fetch_one(db)
        .await?;
        // Label sets that had no rows this time disappear rather than keep an old value.
        self.attempts.reset();
        for (provider, operation, outcome, code, n) in attempts {
            self.attempts
                .with_label_values(&[&provider, &operation, &outcome, &code])
                .set(n);
        }
        self.amounts.reset();
        for (provider, currency, authorized, captured, refunded) in amounts {
            for (kind, value) in [
                ("authorized", authorized),
                ("captured", captured),
                ("refunded", refunded),
            ] {
                self.amounts
                    .with_label_values(&[&provider, &currency, kind])
                    .set(value);
            }
        }
        self.open_challenges.set(open);
        self.webhook_backlog.set(backlog);
        self.refunds_pending.set(pending);
        self.refund_pending_oldest.set(oldest);
        Ok(())
    }

    /// Refreshes every `every` until `shutdown`.
    pub async fn run(self, db: PgPool, every: Duration, shutdown: tienda_kit::shutdown::Shutdown) {
        loop {
            if let Err(e) = self.refresh(&db).await {
                tracing::warn!(error = %e, "refreshing payment metrics failed; will retry");
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}
