//! Digests: a person who asked for a non-critical category as a digest (hourly, or daily in
//! their time zone) gets that category's email as one message per window listing what
//! happened, instead of one message per event.
//!
//! Exactly one digest per window: the consumer adds an event as an item of the open digest
//! of its window (`digests` is unique per person, category and window start; items are
//! unique per person and event, so a redelivered event is never listed twice, in this window
//! or a later one). The [`Closer`] takes digests whose window has ended with `FOR UPDATE SKIP
//! LOCKED`, renders them and writes one delivery each (its `event_id` is the digest's id) in
//! the transaction that marks them enqueued. An item arriving for a window being closed
//! waits on the row lock and then goes to the next window.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tienda_kit::Shutdown;
use uuid::Uuid;

use crate::{
    category::Category,
    channel::{Channel, Outgoing},
    deliveries::{self, NewDelivery, Status},
    locale::Locale,
    preferences,
    templates::Templates,
    trigger::Links,
    unsubscribe::Signer,
};

/// How often a digest goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// One message per clock hour.
    Hourly,
    /// One message per day, in the person's time zone.
    Daily,
}

impl Window {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hourly => "hourly",
            Window::Daily => "daily",
        }
    }

    /// The window a stored name stands for.
    pub fn parse(name: &str) -> Option<Window> {
        [Window::Hourly, Window::Daily]
            .into_iter()
            .find(|w| w.as_str() == name)
    }

    /// The window holding `at` for someone in `tz`: its start and end.
    pub fn around(self, at: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            Window::Hourly => {
                use chrono::DurationRound;
                let start = at.duration_trunc(chrono::TimeDelta::hours(1)).unwrap_or(at);
                (start, start + chrono::TimeDelta::hours(1))
            }
            Window::Daily => {
                let day = at.with_timezone(&tz).date_naive();
                let midnight = |d: chrono::NaiveDate| {
                    // A midnight the clocks skip starts the day at the first instant after.
                    tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
                        .earliest()
                        .or_else(|| {
                            tz.from_local_datetime(&d.and_hms_opt(1, 0, 0).unwrap_or_default())
                                .earliest()
                        })
                        .map_or(at, |t| t.with_timezone(&Utc))
                };
                let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
                (midnight(day), midnight(next))
            }
        }
    }
}

/// A person's digest choices.
pub async fn settings(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<(Category, Window)>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT category, window_kind FROM digest_settings WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(category, window)| {
            Some((Category::parse(&category)?, Window::parse(&window)?))
        })
        .collect())
}

/// Replaces a person's digest choices.
pub async fn save(
    conn: &mut PgConnection,
    user_id: Uuid,
    choices: &[(Category, Window)],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM digest_settings WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let categories: Vec<&str> = choices.iter().map(|(c, _)| c.as_str()).collect();
    let windows: Vec<&str> = choices.iter().map(|(_, w)| w.as_str()).collect();
    sqlx::query(
        "INSERT INTO digest_settings (user_id, category, window_kind)
         SELECT $1, * FROM unnest($2::text[], $3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(&categories)
    .bind(&windows)
    .execute(conn)
    .await?;
    Ok(())
}

/// An event's entry in a digest.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// The person.
    pub user_id: Uuid,
    /// The category.
    pub category: Category,
    /// The event.
    pub event_id: Uuid,
    /// Its kind.
    pub kind: &'static str,
    /// One line (the message's subject).
    pub line: &'a str,
    /// Where it points (the order), if anywhere.
    pub link: Option<&'a str>,
    /// Where the digest goes.
    pub recipient: &'a str,
    /// In which language.
    pub locale: Locale,
}

/// Adds `item` to the open digest of its window (`window`, in `tz`); the digest's id.
pub async fn add(
    conn: &mut PgConnection,
    item: &Item<'_>,
    window: Window,
    tz: Tz,
) -> Result<Uuid, sqlx::Error> {
    let (mut start, mut end) = window.around(Utc::now(), tz);
    // At most a few windows on: one being closed right now sends the item to the next.
    for _ in 0..3 {
        let (id, status): (Uuid, String) = sqlx::query_as(
            "INSERT INTO digests (id, user_id, category, window_start, window_end, status,
                                  recipient, locale)
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)
             ON CONFLICT ON CONSTRAINT digests_once DO UPDATE
             SET recipient = CASE WHEN digests.status = 'open' THEN EXCLUDED.recipient
                                  ELSE digests.recipient END
             RETURNING id, status",
        )
        .bind(Uuid::now_v7())
        .bind(item.user_id)
        .bind(item.category.as_str())
        .bind(start)
        .bind(end)
        .bind(item.recipient)
        .bind(item.locale.as_str())
        .fetch_one(&mut *conn)
        .await?;
        if status == "open" {
            sqlx::query(
                "INSERT INTO digest_items (digest_id, user_id, event_id, kind, line, link)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT ON CONSTRAINT digest_items_once DO NOTHING",
            )
            .bind(id)
            .bind(item.user_id)
            .bind(item.event_id)
            .bind(item.kind)
            .bind(item.line)
            .bind(item.link)
            .execute(&mut *conn)
            .await?;
            return Ok(id);
        }
        (start, end) = (end, end + (end - start));
    }
    Err(sqlx::Error::Protocol(
        "no open digest window found three windows on".into(),
    ))
}

/// Closes digests whose window has ended.
#[derive(Debug, Clone)]
pub struct Closer {
    /// The database.
    pub db: PgPool,
    /// The templates.
    pub templates: Arc<Templates>,
    /// Signs unsubscribe links.
    pub signer: Signer,
    /// Where links point.
    pub links: Links,
    /// The time zone of people who chose none.
    pub default_timezone: Tz,
    /// How often to look.
    pub poll: Duration,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    user_id: Uuid,
    category: String,
    recipient: String,
    locale: String,
}

impl Closer {
    /// Closes due digests until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            match self.close_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "closing digests failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Renders and queues up to 50 digests whose window has ended; how many.
    pub async fn close_due(&self) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT id, user_id, category, recipient, locale FROM digests
             WHERE status = 'open' AND window_end <= now()
             ORDER BY window_end LIMIT 50 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        for digest in &due {
            self.close(&mut tx, digest).await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    async fn close(&self, conn: &mut PgConnection, digest: &Due) -> anyhow::Result<()> {
        let items: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT line, link FROM digest_items WHERE digest_id = $1 ORDER BY created_at",
        )
        .bind(digest.id)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query("UPDATE digests SET status = 'enqueued' WHERE id = $1")
            .bind(digest.id)
            .execute(&mut *conn)
            .await?;
        let category = Category::parse(&digest.category).unwrap_or(Category::Marketing);
        let locale: Locale = digest.locale.parse().unwrap_or(Locale::En);
        let subject = preferences::user_subject(digest.user_id);
        let unsubscribe_url = format!(
            "{}/v1/notifications/unsubscribe?token={}",
            self.links.public_url,
            self.signer.sign(&subject, category)
        );
        let context = json!({
            "shop": self.links.shop, "lang": locale.as_str(),
            "unsubscribe_url": unsubscribe_url, "count": items.len(),
            "items": items.iter().map(|(line, link)| json!({"line": line, "link": link}))
                .collect::<Vec<_>>(),
        });
        let rendered = self.templates.render_digest(locale, &context)?;
        // Whether the person left the category or the address bounced since: the same
        // rules as any message.
        let opted_out = preferences::opted_out(
            conn,
            &[
                subject.clone(),
                preferences::email_subject(&digest.recipient),
            ],
        )
        .await?;
        let status = match crate::tracking::suppressed(conn, "email", &digest.recipient).await? {
            Some(reason) if reason == "complaint" => Status::Suppressed("complaint"),
            Some(_) => Status::Suppressed("hard_bounce"),
            None if !category.is_sent_despite(&opted_out) => Status::Suppressed("opted_out"),
            None => Status::Queued,
        };
        let not_before = match preferences::quiet_hours(conn, digest.user_id).await? {
            Some((timezone, quiet)) if status == Status::Queued => quiet.release_at(
                timezone
                    .as_deref()
                    .and_then(crate::quiet::zone)
                    .unwrap_or(self.default_timezone),
                Utc::now(),
            ),
            _ => None,
        };
        deliveries::record(
            conn,
            &NewDelivery {
                event_id: digest.id,
                event_type: "digest".into(),
                kind: "digest",
                category: category.as_str(),
                critical: false,
                sensitive: false,
                user_id: Some(digest.user_id),
                channel: Channel::Email,
                outgoing: Outgoing {
                    id: Uuid::now_v7(),
                    to: digest.recipient.clone(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    unsubscribe_url: Some(unsubscribe_url),
                },
                locale: locale.as_str(),
                template_version: rendered.version,
                status,
                not_before,
            },
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_hourly_window_is_the_clock_hour() {
        let (start, end) = Window::Hourly.around(at("2026-12-03T10:42:07Z"), chrono_tz::UTC);
        assert_eq!(
            (start, end),
            (at("2026-12-03T10:00:00Z"), at("2026-12-03T11:00:00Z"))
        );
    }

    #[test]
    fn a_daily_window_is_the_persons_day_across_daylight_saving_time() {
        let madrid = chrono_tz::Europe::Madrid;
        // 23:30 UTC on 28 March is already 29 March in Madrid, the day clocks go forward.
        let (start, end) = Window::Daily.around(at("2026-03-28T23:30:00Z"), madrid);
        assert_eq!(start, at("2026-03-28T23:00:00Z"));
        assert_eq!(end, at("2026-03-29T22:00:00Z"), "a 23-hour day");
    }
}
