//! Campaigns: marketing content sent on one channel to a segment of people, in batches at a
//! rate, resumable after a crash without sending anyone twice.
//!
//! The [`Runner`] takes a due campaign with `FOR UPDATE SKIP LOCKED` (one replica per
//! campaign at a time), reads the next batch of people after the campaign's cursor (people in
//! `user_id` order, with their preferences, opt-outs and suppressions in the same query),
//! renders each person's message, writes the deliveries and moves the cursor — all in one
//! transaction. A crash before the commit leaves neither; after it, both. The deliveries'
//! `(event_id = campaign, recipient, channel)` uniqueness makes a batch written twice (a
//! cursor lost some other way) harmless. The delivery worker sends them as it sends
//! everything else: retries, quiet hours, suppression list, dead letters.
//!
//! The rate is kept by spacing batches: `batch = min(rate, 500)` people every
//! `batch / rate` seconds.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tienda_kit::Shutdown;
use uuid::Uuid;

use crate::{
    category::Category,
    channel::Channel,
    deliveries,
    locale::Locale,
    preferences,
    quiet::QuietHours,
    templates::{CampaignContent, CampaignTemplates},
    unsubscribe::Signer,
};

/// The most people one batch takes.
pub const MAX_BATCH: i64 = 500;

/// Who a campaign goes to; every condition given must hold. People who opted out of
/// marketing, or of marketing on the channel (SMS and push need a yes), are recorded as
/// suppressed; people with no address on the channel are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// People reading these languages (their preference, else the shop's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locales: Option<Vec<Locale>>,
    /// Registered at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_after: Option<DateTime<Utc>>,
    /// Registered before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_before: Option<DateTime<Utc>>,
    /// Only these people (at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Uuid>>,
}

/// A campaign as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    /// Its id (the deliveries' `event_id`).
    pub id: Uuid,
    /// `email`, `sms` or `push`.
    pub channel: String,
    /// Who.
    pub segment: sqlx::types::Json<Segment>,
    /// What, per locale.
    pub content: sqlx::types::Json<BTreeMap<Locale, CampaignContent>>,
    /// People per second.
    pub rate_per_second: i32,
    /// The last person enqueued.
    pub cursor: Option<Uuid>,
}

/// One person of a batch, with what decides their message.
#[derive(Debug, sqlx::FromRow)]
struct Person {
    user_id: Uuid,
    email: String,
    name: String,
    locale: Option<String>,
    address: Option<String>,
    timezone: Option<String>,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
    opted_out: bool,
    chosen: Option<bool>,
    suppressed: Option<String>,
}

/// What runs campaigns.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The database.
    pub db: PgPool,
    /// Signs unsubscribe links.
    pub signer: Signer,
    /// The shop's public address and name.
    pub links: crate::trigger::Links,
    /// The language of people who chose none.
    pub default_locale: Locale,
    /// The time zone of people who chose none.
    pub default_timezone: chrono_tz::Tz,
    /// How often to look for due campaigns when none is due sooner.
    pub poll: Duration,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No campaign is due.
    Idle,
    /// A batch of this many people was written.
    Batch(usize),
}

impl Runner {
    /// Runs batches until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let pause = match self.step().await {
                Ok(Step::Batch(_)) => continue,
                Ok(Step::Idle) => self.until_next().await.unwrap_or(self.poll),
                Err(e) => {
                    tracing::warn!(error = %e, "a campaign batch failed; retrying");
                    self.poll
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause.min(self.poll)) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    async fn until_next(&self) -> Option<Duration> {
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(next_batch_at) FROM campaigns WHERE status IN ('scheduled', 'running')",
        )
        .fetch_one(&self.db)
        .await
        .ok()
        .flatten();
        next.map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    }

    /// Writes the next batch of one due campaign, if any. A batch that fails rolls back and
    /// its campaign is tried again in a minute, so one broken campaign holds up no other.
    pub async fn step(&self) -> anyhow::Result<Step> {
        let mut tx = self.db.begin().await?;
        let Some(campaign): Option<Stored> = sqlx::query_as(
            "SELECT id, channel, segment, content, rate_per_second, cursor FROM campaigns
             WHERE status IN ('scheduled', 'running') AND next_batch_at <= now()
             ORDER BY next_batch_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Step::Idle);
        };
        match self.batch(tx, &campaign).await {
            Ok(step) => Ok(step),
            Err(error) => {
                tracing::error!(campaign = %campaign.id, error = %format!("{error:#}"),
                    "a campaign batch failed; it is tried again in a minute");
                sqlx::query(
                    "UPDATE campaigns SET next_batch_at = now() + interval '1 minute' WHERE id = $1",
                )
                .bind(campaign.id)
                .execute(&self.db)
                .await?;
                Err(error)
            }
        }
    }

    /// One batch of `campaign`, in `tx`.
    async fn batch(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        campaign: &Stored,
    ) -> anyhow::Result<Step> {
        let channel = Channel::parse(&campaign.channel).ok_or_else(|| {
            anyhow::anyhow!(
                "campaign {} has channel {:?}",
                campaign.id,
                campaign.channel
            )
        })?;
        let templates =
            CampaignTemplates::compile(channel, &campaign.content).map_err(|errors| {
                anyhow::anyhow!("campaign {} no longer compiles: {errors:?}", campaign.id)
            })?;
        let batch = i64::from(campaign.rate_per_second).clamp(1, MAX_BATCH);
        let people = self.people(&mut tx, campaign, channel, batch).await?;
        let count = people.len();
        self.enqueue(&mut tx, campaign, channel, &templates, &people)
            .await?;
        let done = (count as i64) < batch;
        let pause = Duration::from_secs_f64(batch as f64 / f64::from(campaign.rate_per_second));
        sqlx::query(
            "UPDATE campaigns SET cursor = coalesce($2, cursor), enqueued = enqueued + $3,
                    status = CASE WHEN $4 THEN 'completed' ELSE 'running' END,
                    finished_at = CASE WHEN $4 THEN now() END,
                    next_batch_at = now() + make_interval(secs => $5)
             WHERE id = $1",
        )
        .bind(campaign.id)
        .bind(people.last().map(|p| p.user_id))
        .bind(i32::try_from(count).unwrap_or(i32::MAX))
        .bind(done)
        .bind(pause.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if done {
            tracing::info!(campaign = %campaign.id, "campaign fully enqueued");
        }
        Ok(Step::Batch(count))
    }

    /// The next `limit` people of the segment after the cursor, with their address on
    /// `channel` and what decides whether they get it.
    async fn people(
        &self,
        conn: &mut PgConnection,
        campaign: &Stored,
        channel: Channel,
        limit: i64,
    ) -> Result<Vec<Person>, sqlx::Error> {
        let segment = &campaign.segment.0;
        let locales: Option<Vec<&str>> = segment
            .locales
            .as_ref()
            .map(|ls| ls.iter().map(|l| l.as_str()).collect());
        sqlx::query_as(
            "SELECT pe.user_id, pe.email, pe.name, pr.locale, a.address, pr.timezone,
                    pr.quiet_start, pr.quiet_end,
                    EXISTS (SELECT 1 FROM opt_outs o
                            WHERE o.category = 'marketing'
                              AND o.subject IN ('user:' || pe.user_id, 'email:' || lower(pe.email)))
                        AS opted_out,
                    (SELECT c.enabled FROM channel_preferences c
                     WHERE c.user_id = pe.user_id AND c.category = 'marketing' AND c.channel = $2)
                        AS chosen,
                    (SELECT s.reason FROM suppressions s
                     WHERE s.channel = $2 AND s.recipient = lower(a.address)) AS suppressed
             FROM people pe
             LEFT JOIN preferences pr ON pr.user_id = pe.user_id
             CROSS JOIN LATERAL (SELECT CASE $2
                 WHEN 'email' THEN pe.email
                 WHEN 'sms' THEN pr.phone
                 ELSE CASE WHEN EXISTS (SELECT 1 FROM push_devices d WHERE d.user_id = pe.user_id)
                           THEN 'user:' || pe.user_id END
                 END AS address) a
             WHERE pe.user_id > coalesce($1, '00000000-0000-0000-0000-000000000000'::uuid)
               AND ($3::text[] IS NULL OR coalesce(pr.locale, $4) = ANY($3))
               AND ($5::timestamptz IS NULL OR pe.registered_at >= $5)
               AND ($6::timestamptz IS NULL OR pe.registered_at < $6)
               AND ($7::uuid[] IS NULL OR pe.user_id = ANY($7))
             ORDER BY pe.user_id
             LIMIT $8",
        )
        .bind(campaign.cursor)
        .bind(channel.as_str())
        .bind(locales)
        .bind(self.default_locale.as_str())
        .bind(segment.registered_after)
        .bind(segment.registered_before)
        .bind(segment.user_ids.as_deref())
        .bind(limit)
        .fetch_all(conn)
        .await
    }

    /// Renders and records one delivery per person with an address.
    async fn enqueue(
        &self,
        conn: &mut PgConnection,
        campaign: &Stored,
        channel: Channel,
        templates: &CampaignTemplates,
        people: &[Person],
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let mut rows = deliveries::Batch::default();
        for person in people {
            let Some(address) = person.address.clone() else {
                continue;
            };
            let preferred = person
                .locale
                .as_deref()
                .and_then(|l| l.parse().ok())
                .unwrap_or(self.default_locale);
            let locale = templates.locale_for(preferred);
            let subject = preferences::user_subject(person.user_id);
            let unsubscribe_url = (channel == Channel::Email).then(|| {
                format!(
                    "{}/v1/notifications/unsubscribe?token={}",
                    self.links.public_url,
                    self.signer.sign(&subject, Category::Marketing)
                )
            });
            let context = json!({
                "name": person.name, "email": person.email, "shop": self.links.shop,
                "lang": locale.as_str(), "unsubscribe_url": unsubscribe_url,
            });
            let rendered = match templates.render(locale, &context) {
                // PostgreSQL keeps no NUL: a value that renders one fails this message only.
                Ok(rendered)
                    if [&rendered.subject, &rendered.text, &rendered.html]
                        .iter()
                        .any(|part| part.contains('\0'))
                        || rendered.short.as_deref().is_some_and(|s| s.contains('\0')) =>
                {
                    rows.push_failed(
                        person.user_id,
                        channel,
                        &address,
                        locale,
                        "the message rendered a NUL character",
                    );
                    continue;
                }
                Ok(rendered) => rendered,
                Err(e) => {
                    // One person's values cannot stop the campaign: recorded as failed.
                    tracing::warn!(campaign = %campaign.id, user = %person.user_id,
                        error = %crate::templates::describe(&e), "a campaign message did not render");
                    rows.push_failed(person.user_id, channel, &address, locale, &e.to_string());
                    continue;
                }
            };
            let chosen = match person.chosen {
                Some(on) => vec![(Category::Marketing, channel, on)],
                None => Vec::new(),
            };
            let reason = match person.suppressed.as_deref() {
                Some("complaint") => Some("complaint"),
                Some("unsubscribed") => Some("unsubscribed"),
                Some(_) => Some("hard_bounce"),
                None if person.opted_out => Some("opted_out"),
                None if !preferences::enabled(&chosen, Category::Marketing, channel) => {
                    Some("channel_off")
                }
                None => None,
            };
            let not_before = match (reason, person.quiet_start, person.quiet_end) {
                (None, Some(start), Some(end)) => {
                    let zone = person
                        .timezone
                        .as_deref()
                        .and_then(crate::quiet::zone)
                        .unwrap_or(self.default_timezone);
                    QuietHours { start, end }.release_at(zone, now)
                }
                _ => None,
            };
            let short = rendered.short.unwrap_or_default();
            let (subject, text, html) = match channel {
                Channel::Email => (rendered.subject, rendered.text, rendered.html),
                Channel::Sms => (String::new(), short, String::new()),
                Channel::Push => (rendered.subject, short, String::new()),
            };
            rows.push(deliveries::BatchRow {
                id: Uuid::now_v7(),
                user_id: person.user_id,
                channel: channel.as_str(),
                recipient: address,
                locale: locale.as_str(),
                subject,
                text,
                html,
                unsubscribe_url,
                status: if reason.is_some() {
                    "suppressed"
                } else {
                    "queued"
                },
                reason,
                not_before,
            });
        }
        rows.record(conn, campaign.id).await?;
        Ok(())
    }
}

/// The people a campaign's segment holds right now (for the answer at creation).
pub async fn audience(
    conn: &mut PgConnection,
    segment: &Segment,
    default_locale: Locale,
) -> Result<i64, sqlx::Error> {
    let locales: Option<Vec<&str>> = segment
        .locales
        .as_ref()
        .map(|ls| ls.iter().map(|l| l.as_str()).collect());
    sqlx::query_scalar(
        "SELECT count(*) FROM people pe LEFT JOIN preferences pr ON pr.user_id = pe.user_id
         WHERE ($1::text[] IS NULL OR coalesce(pr.locale, $2) = ANY($1))
           AND ($3::timestamptz IS NULL OR pe.registered_at >= $3)
           AND ($4::timestamptz IS NULL OR pe.registered_at < $4)
           AND ($5::uuid[] IS NULL OR pe.user_id = ANY($5))",
    )
    .bind(locales)
    .bind(default_locale.as_str())
    .bind(segment.registered_after)
    .bind(segment.registered_before)
    .bind(segment.user_ids.as_deref())
    .fetch_one(conn)
    .await
}

/// Remembers a registered person (campaigns go to people).
pub async fn remember(
    conn: &mut PgConnection,
    user_id: Uuid,
    email: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO people (user_id, email, name) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name",
    )
    .bind(user_id)
    .bind(email)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// A campaign's counts by delivery status.
pub async fn counts(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM deliveries WHERE event_id = $1 GROUP BY status",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}
