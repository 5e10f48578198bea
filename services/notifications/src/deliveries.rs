//! Deliveries: one row per message to one recipient on one channel, written in the
//! consumer's transaction and sent after commit by the [`crate::worker`]. Status moves
//! `queued` → `sent` → `delivered` | `bounced` (the provider's callback), or → `failed` after
//! the last attempt or a permanent error (the dead letter, which an admin replays);
//! `suppressed` rows record messages not sent because the recipient opted out or is on the
//! suppression list. Every change is kept in `delivery_events`.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tienda_kit::trace_context::TraceContext;
use uuid::Uuid;

use crate::channel::Outgoing;

/// The wake-up channel the worker listens on (notified at commit).
pub const QUEUED_CHANNEL: &str = "notifications_queued";

/// A new delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting to be sent (or retried).
    Queued,
    /// Not sent, and why: `opted_out` (the recipient's preferences), `hard_bounce` or
    /// `complaint` (the address is on the suppression list).
    Suppressed(&'static str),
    /// Listed in the recipient's digest instead (the digest's id in the history).
    Digested,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Suppressed(_) => "suppressed",
            Status::Digested => "digested",
        }
    }

    fn reason(self) -> Option<&'static str> {
        match self {
            Status::Queued | Status::Digested => None,
            Status::Suppressed(reason) => Some(reason),
        }
    }
}

/// Records a change of delivery `id`'s status in its history.
pub async fn log(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO delivery_events (delivery_id, status, detail) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(status)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The causing event.
    pub event_id: Uuid,
    /// Its type (`order.shipped`).
    pub event_type: String,
    /// The template family.
    pub kind: &'static str,
    /// Its category.
    pub category: &'static str,
    /// Whether it is critical.
    pub critical: bool,
    /// Whether its body is blanked once sent.
    pub sensitive: bool,
    /// The recipient's user, when known.
    pub user_id: Option<Uuid>,
    /// Where it goes.
    pub channel: crate::channel::Channel,
    /// The message (`to`: the address on the channel: an email address, a phone number, or
    /// `user:<id>` for push).
    pub outgoing: Outgoing,
    /// The locale rendered.
    pub locale: &'static str,
    /// The template version rendered.
    pub template_version: i32,
    /// Queued or suppressed.
    pub status: Status,
    /// Not sent before this (the end of the recipient's quiet hours).
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Records a delivery (nothing when the event already has one for this recipient) with the
/// first entry of its history and, when queued, wakes the worker once the transaction
/// commits: one statement, as it runs for every message of every event.
pub async fn record(conn: &mut PgConnection, new: &NewDelivery) -> Result<bool, sqlx::Error> {
    let o = &new.outgoing;
    let held = new
        .not_before
        .map(|t| format!("quiet hours: held until {}", t.to_rfc3339()));
    let detail = new.status.reason().or(held.as_deref());
    // A `SELECT` in `WITH` runs only when read: the last line reads `woken`.
    let (inserted, _woken): (i64, i64) = sqlx::query_as(
        "WITH delivery AS (
             INSERT INTO deliveries (id, event_id, event_type, kind, category, critical,
                 sensitive, channel, recipient, user_id, locale, template_version, subject,
                 body_text, body_html, unsubscribe_url, status, status_reason, next_attempt_at,
                 traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $19, $8, $9, $10, $11, $12, $13, $14, $15,
                     $16, $17, coalesce($18, now()), $20)
             ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING
             RETURNING id, status),
         history AS (
             INSERT INTO delivery_events (delivery_id, status, detail)
             SELECT id, status, $21 FROM delivery),
         woken AS (SELECT pg_notify($22, '') FROM delivery WHERE status = 'queued')
         SELECT (SELECT count(*) FROM delivery), (SELECT count(*) FROM woken)",
    )
    .bind(o.id)
    .bind(new.event_id)
    .bind(&new.event_type)
    .bind(new.kind)
    .bind(new.category)
    .bind(new.critical)
    .bind(new.sensitive)
    .bind(&o.to)
    .bind(new.user_id)
    .bind(new.locale)
    .bind(new.template_version)
    .bind(&o.subject)
    .bind(&o.text)
    .bind(&o.html)
    .bind(&o.unsubscribe_url)
    .bind(new.status.as_str())
    .bind(new.status.reason())
    .bind(new.not_before)
    .bind(new.channel.as_str())
    .bind(TraceContext::current().map(|c| c.to_header()))
    .bind(detail)
    .bind(QUEUED_CHANNEL)
    .fetch_one(&mut *conn)
    .await?;
    Ok(inserted == 1)
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `email` or `webhook`.
    pub channel: String,
    /// The message (for a webhook: `to` is the endpoint's id, `text` the event's JSON).
    pub outgoing: Outgoing,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The trace of the event that caused it.
    pub trace: Option<TraceContext>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    channel: String,
    recipient: String,
    subject: String,
    body_text: String,
    body_html: String,
    unsubscribe_url: Option<String>,
    attempts: i32,
    traceparent: Option<String>,
}

/// Claims up to `limit` due deliveries for one attempt each. The lease (`next_attempt_at`
/// moved `lease` ahead) hands a delivery whose sender died to another worker later.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE deliveries
         SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM deliveries
                      WHERE status = 'queued' AND next_attempt_at <= now()
                      ORDER BY next_attempt_at LIMIT $1
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, channel, recipient, subject, body_text, body_html, unsubscribe_url,
                   attempts, traceparent",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            channel: r.channel,
            outgoing: Outgoing {
                id: r.id,
                to: r.recipient,
                subject: r.subject,
                text: r.body_text,
                html: r.body_html,
                unsubscribe_url: r.unsubscribe_url,
            },
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            trace: r.traceparent.as_deref().and_then(TraceContext::parse),
        })
        .collect())
}

/// Marks a delivery sent; bodies that grant access are blanked.
pub async fn sent(pool: &PgPool, id: Uuid, provider_ref: &str) -> Result<(), sqlx::Error> {
    // Not waiting for the WAL flush: only a crash of PostgreSQL itself in the next few
    // hundred milliseconds could lose this record, and then the message is sent again with
    // the same Message-ID — the at-least-once the provider hand-off already is. It saves a
    // disk flush per message (docs/benchmarks.md).
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    // The status and its history entry in one statement.
    sqlx::query(
        "WITH changed AS (
             UPDATE deliveries
             SET status = 'sent', sent_at = now(), updated_at = now(), provider_ref = $2,
                 last_error = NULL,
                 body_text = CASE WHEN sensitive THEN '' ELSE body_text END,
                 body_html = CASE WHEN sensitive THEN '' ELSE body_html END
             WHERE id = $1
               AND (status = 'queued'
                    -- A cancelled campaign's message already on its way: the record says so.
                    OR (status = 'suppressed' AND status_reason = 'campaign_cancelled'))
             RETURNING id)
         INSERT INTO delivery_events (delivery_id, status, detail)
         SELECT id, 'sent', $2 FROM changed",
    )
    .bind(id)
    .bind(provider_ref)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Schedules another attempt after `delay`, keeping the error. Only the claim that made
/// attempt `attempt` may (a claim whose lease ran out and was taken over changes nothing).
pub async fn retry(
    pool: &PgPool,
    id: Uuid,
    attempt: u32,
    delay: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3,
                updated_at = now()
         WHERE id = $1 AND status = 'queued' AND attempts = $4",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 0 {
        return tx.commit().await;
    }
    let detail = format!("{error}; next attempt in {} ms", delay.as_millis());
    log(&mut tx, id, "retrying", Some(&detail)).await?;
    tx.commit().await
}

/// The receiver asked to wait (`Retry-After`): tried again after `delay` without counting
/// this attempt.
pub async fn throttled(
    pool: &PgPool,
    id: Uuid,
    attempt: u32,
    delay: Duration,
    message: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE deliveries SET attempts = greatest(attempts - 1, 0), last_error = $3,
                next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
         WHERE id = $1 AND status = 'queued' AND attempts = $4",
    )
    .bind(id)
    .bind(delay.as_secs_f64())
    .bind(message)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 0 {
        return tx.commit().await;
    }
    log(&mut tx, id, "throttled", Some(message)).await?;
    tx.commit().await
}

/// Gives up on a delivery: it waits in the dead letter for an admin's replay.
pub async fn failed(pool: &PgPool, id: Uuid, attempt: u32, error: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE deliveries SET status = 'failed', last_error = $2, updated_at = now()
         WHERE id = $1 AND status = 'queued' AND attempts = $3",
    )
    .bind(id)
    .bind(error)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() == 0 {
        return tx.commit().await;
    }
    log(&mut tx, id, "failed", Some(error)).await?;
    tx.commit().await
}

/// Queues a failed delivery again with its attempts reset (an admin's replay); `false` when
/// it is not failed. Bodies blanked after sending cannot be replayed (they never fail).
pub async fn replay(conn: &mut PgConnection, id: Uuid, by: &str) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = now(),
                updated_at = now()
         WHERE id = $1 AND status = 'failed'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if changed {
        log(conn, id, "queued", Some(&format!("replayed by {by}"))).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(conn)
            .await?;
    }
    Ok(changed)
}

/// One delivery of a campaign batch.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// Its id.
    pub id: Uuid,
    /// The person.
    pub user_id: Uuid,
    /// `email`, `sms` or `push`.
    pub channel: &'static str,
    /// The address on the channel.
    pub recipient: String,
    /// The locale rendered.
    pub locale: &'static str,
    /// Subject (email), title (push).
    pub subject: String,
    /// The text.
    pub text: String,
    /// The HTML (email).
    pub html: String,
    /// The one-click unsubscribe link (email).
    pub unsubscribe_url: Option<String>,
    /// `queued`, `suppressed` or `failed`.
    pub status: &'static str,
    /// Why suppressed or failed.
    pub reason: Option<&'static str>,
    /// Not sent before (quiet hours).
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// A written delivery: its id, status, reason and hold.
type Inserted = (
    Uuid,
    String,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// A campaign batch's deliveries, written in one statement.
#[derive(Debug, Default)]
pub struct Batch {
    rows: Vec<BatchRow>,
    errors: Vec<(Uuid, String)>,
}

impl Batch {
    /// Adds a delivery.
    pub fn push(&mut self, row: BatchRow) {
        self.rows.push(row);
    }

    /// Adds a delivery that could not be rendered: failed, with the error.
    pub fn push_failed(
        &mut self,
        user_id: Uuid,
        channel: crate::channel::Channel,
        recipient: &str,
        locale: crate::locale::Locale,
        error: &str,
    ) {
        let id = Uuid::now_v7();
        self.errors.push((id, error.to_owned()));
        self.rows.push(BatchRow {
            id,
            user_id,
            channel: channel.as_str(),
            recipient: recipient.to_owned(),
            locale: locale.as_str(),
            subject: String::new(),
            text: String::new(),
            html: String::new(),
            unsubscribe_url: None,
            status: "failed",
            reason: None,
            not_before: None,
        });
    }

    /// Writes the deliveries of campaign `campaign` (those it already has are left alone),
    /// their first history entries, and wakes the worker at commit.
    pub async fn record(self, conn: &mut PgConnection, campaign: Uuid) -> Result<u64, sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(self.rows.len());
        let mut users = Vec::with_capacity(self.rows.len());
        let mut channels = Vec::with_capacity(self.rows.len());
        let mut recipients = Vec::with_capacity(self.rows.len());
        let mut locales = Vec::with_capacity(self.rows.len());
        let mut subjects = Vec::with_capacity(self.rows.len());
        let mut texts = Vec::with_capacity(self.rows.len());
        let mut htmls = Vec::with_capacity(self.rows.len());
        let mut links = Vec::with_capacity(self.rows.len());
        let mut statuses = Vec::with_capacity(self.rows.len());
        let mut reasons = Vec::with_capacity(self.rows.len());
        let mut not_before = Vec::with_capacity(self.rows.len());
        for row in self.rows {
            ids.push(row.id);
            users.push(row.user_id);
            channels.push(row.channel);
            recipients.push(row.recipient);
            locales.push(row.locale);
            subjects.push(row.subject);
            texts.push(row.text);
            htmls.push(row.html);
            links.push(row.unsubscribe_url);
            statuses.push(row.status);
            reasons.push(row.reason);
            not_before.push(row.not_before);
        }
        let inserted: Vec<Inserted> = sqlx::query_as(
            "INSERT INTO deliveries (id, event_id, event_type, kind, category, critical,
                     sensitive, channel, recipient, user_id, locale, template_version, subject,
                     body_text, body_html, unsubscribe_url, status, status_reason, next_attempt_at)
                 SELECT r.id, $1, 'campaign', 'campaign', 'marketing', false, false, r.channel,
                        r.recipient, r.user_id, r.locale, 0, r.subject, r.body_text, r.body_html,
                        r.link, r.status, r.reason, coalesce(r.not_before, now())
                 FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                             $12::text[], $13::timestamptz[])
                      AS r(id, user_id, channel, recipient, locale, subject, body_text, body_html,
                           link, status, reason, not_before)
                 ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING
                 RETURNING id, status, status_reason,
                           CASE WHEN next_attempt_at > now() THEN next_attempt_at END",
        )
        .bind(campaign)
        .bind(&ids)
        .bind(&users)
        .bind(&channels)
        .bind(&recipients)
        .bind(&locales)
        .bind(&subjects)
        .bind(&texts)
        .bind(&htmls)
        .bind(&links)
        .bind(&statuses)
        .bind(&reasons)
        .bind(&not_before)
        .fetch_all(&mut *conn)
        .await?;
        let (mut event_ids, mut event_statuses, mut details) = (vec![], vec![], vec![]);
        let mut queued = false;
        for (id, status, reason, held) in &inserted {
            queued |= status == "queued";
            let detail = match (reason, held) {
                (Some(reason), _) => Some(reason.clone()),
                (None, Some(t)) => Some(format!("quiet hours: held until {}", t.to_rfc3339())),
                _ => self
                    .errors
                    .iter()
                    .find(|(e, _)| e == id)
                    .map(|(_, m)| m.clone()),
            };
            event_ids.push(*id);
            event_statuses.push(status.clone());
            details.push(detail);
        }
        sqlx::query(
            "INSERT INTO delivery_events (delivery_id, status, detail)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])",
        )
        .bind(&event_ids)
        .bind(&event_statuses)
        .bind(&details)
        .execute(&mut *conn)
        .await?;
        if queued {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(QUEUED_CHANNEL)
                .execute(conn)
                .await?;
        }
        Ok(inserted.len() as u64)
    }
}
