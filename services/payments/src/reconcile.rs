//! Daily reconciliation: every payment of a UTC day made with a provider that keeps its own
//! records (Stripe, PayPal) is compared with the provider's state of it, and every mismatch is
//! stored with both sides for admins (`GET /v1/payments/reconciliations/{day}`).
//!
//! Once a day a background task reconciles the day before, unless it was already (replicas
//! starting at the same moment may both run it; the report is the same); admins can run any
//! day again with `POST /v1/payments/reconciliations/{day}`, which replaces that day's report.
//!
//! What must agree, ours → the provider's:
//! - `authorized` → held (`requires_capture`, `CREATED`);
//! - `partially_captured`, `captured`, `partially_refunded`, `refunded` → captured;
//! - `voided` → cancelled;
//! - `requires_action` → waiting for the customer (or cancelled once it lapsed);
//! - `declined`, `failed` → nothing held (declined, cancelled, or never created).
//!
//! Sandbox payments have no records elsewhere and are counted as skipped; a provider that
//! cannot be reached leaves the payment `unchecked` in the report (the run can be repeated).

use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::payment::PaymentStatus,
    provider::{IntentState, Providers},
};

/// Whether the provider's state agrees with ours.
pub fn agrees(ours: PaymentStatus, theirs: &IntentState) -> bool {
    use IntentState as T;
    use PaymentStatus as S;
    match ours {
        S::Authorized => matches!(theirs, T::Authorized),
        S::PartiallyCaptured | S::Captured | S::PartiallyRefunded | S::Refunded => {
            matches!(theirs, T::Captured)
        }
        S::Voided => matches!(theirs, T::Canceled),
        S::RequiresAction => matches!(theirs, T::RequiresAction | T::Canceled),
        S::Declined | S::Failed | S::Pending => {
            matches!(theirs, T::Declined { .. } | T::Canceled | T::RequiresAction)
        }
    }
}

/// The provider's state as a word for the report.
fn word(state: &IntentState) -> String {
    match state {
        IntentState::RequiresAction => "requires_action".into(),
        IntentState::Processing => "processing".into(),
        IntentState::Authorized => "authorized".into(),
        IntentState::Captured => "captured".into(),
        IntentState::Declined { code, .. } => format!("declined ({code})"),
        IntentState::Canceled => "canceled".into(),
    }
}

/// A day's report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The UTC day.
    pub day: NaiveDate,
    /// Payments compared with their provider.
    pub checked: i32,
    /// Sandbox payments (no records elsewhere).
    pub skipped: i32,
    /// Payments the provider could not be asked about.
    pub unchecked: i32,
    /// When the run finished (null while it runs).
    pub finished_at: Option<chrono::DateTime<Utc>>,
    /// Every disagreement.
    pub mismatches: Vec<Mismatch>,
}

/// One disagreement.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Mismatch {
    /// The payment.
    pub payment_id: Uuid,
    /// Its provider.
    pub provider: String,
    /// The provider's id.
    pub provider_reference: Option<String>,
    /// Our status.
    pub ours: String,
    /// The provider's, or why it could not be read.
    pub theirs: String,
}

/// How long each provider lookup may take.
const PROVIDER_WAIT: TimeDelta = TimeDelta::seconds(10);

/// Reconciles `day`, replacing an earlier report of it; the report.
pub async fn run(
    db: &PgPool,
    providers: &Providers,
    day: NaiveDate,
) -> Result<Report, sqlx::Error> {
    let run_id: Uuid = sqlx::query_scalar(
        "INSERT INTO reconciliations (id, day) VALUES ($1, $2) \
         ON CONFLICT (day) DO UPDATE SET started_at = now(), finished_at = NULL, checked = 0, \
             skipped = 0, unchecked = 0 \
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(day)
    .fetch_one(db)
    .await?;
    sqlx::query("DELETE FROM reconciliation_mismatches WHERE reconciliation_id = $1")
        .bind(run_id)
        .execute(db)
        .await?;
    let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let payments: Vec<(Uuid, String, Option<String>, String)> = sqlx::query_as(
        "SELECT id, provider, provider_reference, status FROM payments \
         WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id",
    )
    .bind(start)
    .bind(start + TimeDelta::days(1))
    .fetch_all(db)
    .await?;
    let (mut checked, mut skipped, mut unchecked) = (0, 0, 0);
    for (id, provider_name, reference, status) in payments {
        let ours: PaymentStatus = match status.parse() {
            Ok(s) => s,
            Err(_) => continue,
        };
        let provider = providers.get(&provider_name);
        let keeps_records = provider.as_ref().is_some_and(|p| p.keeps_records());
        if !keeps_records {
            skipped += 1;
            continue;
        }
        let provider = provider.expect("checked above");
        let theirs = match &reference {
            // Never reached the provider: nothing can be held there.
            None => {
                checked += 1;
                if matches!(
                    ours,
                    PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Pending
                ) {
                    continue;
                }
                "no record at the provider".to_owned()
            }
            Some(reference) => match provider
                .retrieve(reference, Utc::now() + PROVIDER_WAIT)
                .await
            {
                Ok(intent) => {
                    checked += 1;
                    if agrees(ours, &intent.state) {
                        continue;
                    }
                    word(&intent.state)
                }
                Err(e) => {
                    unchecked += 1;
                    format!("unchecked: {e}")
                }
            },
        };
        sqlx::query(
            "INSERT INTO reconciliation_mismatches \
                 (reconciliation_id, payment_id, provider, provider_reference, ours, theirs) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run_id)
        .bind(id)
        .bind(&provider_name)
        .bind(&reference)
        .bind(ours.as_str())
        .bind(&theirs)
        .execute(db)
        .await?;
    }
    sqlx::query(
        "UPDATE reconciliations SET finished_at = now(), checked = $2, skipped = $3, unchecked = $4 \
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(checked)
    .bind(skipped)
    .bind(unchecked)
    .execute(db)
    .await?;
    let report = report(db, day).await?.expect("just written");
    if !report.mismatches.is_empty() {
        tracing::warn!(%day, mismatches = report.mismatches.len(),
            "reconciliation found payments that disagree with their provider");
    }
    Ok(report)
}

/// A run's row: id, checked, skipped, unchecked, finished.
type RunRow = (Uuid, i32, i32, i32, Option<chrono::DateTime<Utc>>);

/// `day`'s report, if it was reconciled.
pub async fn report(db: &PgPool, day: NaiveDate) -> Result<Option<Report>, sqlx::Error> {
    let row: Option<RunRow> = sqlx::query_as(
        "SELECT id, checked, skipped, unchecked, finished_at FROM reconciliations WHERE day = $1",
    )
    .bind(day)
    .fetch_optional(db)
    .await?;
    let Some((id, checked, skipped, unchecked, finished_at)) = row else {
        return Ok(None);
    };
    let mismatches = sqlx::query_as(
        "SELECT payment_id, provider, provider_reference, ours, theirs \
         FROM reconciliation_mismatches WHERE reconciliation_id = $1 ORDER BY payment_id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(Some(Report {
        day,
        checked,
        skipped,
        unchecked,
        finished_at,
        mismatches,
    }))
}

/// Reconciles the day before once it is over, checking every `every` until `shutdown`.
pub async fn run_daily(
    db: PgPool,
    providers: Providers,
    every: Duration,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    loop {
        let yesterday = Utc::now().date_naive() - TimeDelta::days(1);
        let done: Result<Option<bool>, sqlx::Error> =
            sqlx::query_scalar("SELECT true FROM reconciliations WHERE day = $1")
                .bind(yesterday)
                .fetch_optional(&db)
                .await;
        match done {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = run(&db, &providers, yesterday).await {
                    tracing::warn!(error = %e, day = %yesterday, "reconciliation failed; will retry");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading reconciliations failed; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return,
        }
    }
}
