//! What happens to a message after it is sent: the provider's callbacks (`delivered`,
//! `bounced`, `complained`) move the delivery on, and hard bounces and complaints put the
//! address on the suppression list, which later sends respect (the message is recorded as
//! `suppressed` and not sent, whatever its category: mail to an address that bounces or
//! complains hurts every later message's deliverability).
//!
//! Callbacks come signed with the Standard Webhooks scheme (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), checked with the
//! `standardwebhooks` crate against each secret in `NOTIFICATIONS_CALLBACK_SECRETS`; each is
//! applied once by its `webhook-id`. The body names the message by our `Message-ID`
//! (`<delivery id@domain>`, which providers echo) or the bare delivery id:
//!
//! ```json
//! {"type": "bounced", "message_id": "<0193…@tienda.test>", "bounce": "hard",
//!  "detail": "550 5.1.1 user unknown"}
//! ```

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::deliveries;

/// What a provider says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    /// The receiving server took it.
    Delivered,
    /// It came back.
    Bounced,
    /// The recipient marked it as spam.
    Complained,
}

/// A bounce's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bounce {
    /// The address does not exist or refuses for good: suppressed.
    Hard,
    /// A full mailbox, a server down: the provider retries; recorded only.
    Soft,
}

/// A provider's callback about one message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Callback {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: CallbackKind,
    /// The message: its `Message-ID` (`<id@domain>`) or the delivery id.
    pub message_id: String,
    /// For bounces: hard (the default) or soft.
    #[serde(default)]
    pub bounce: Option<Bounce>,
    /// The provider's words (the remote server's reply), at most 1,000 characters kept.
    #[serde(default)]
    pub detail: Option<String>,
}

/// What a callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The delivery moved on (or the event was recorded on it).
    Applied,
    /// Seen before (the same `webhook-id`): nothing done.
    Duplicate,
    /// No message of ours has that id: nothing done.
    UnknownMessage,
}

/// The delivery id in a `Message-ID` (`<id@domain>`) or a bare id.
pub fn delivery_id(message_id: &str) -> Option<Uuid> {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let local = inner.split('@').next().unwrap_or_default();
    Uuid::try_parse(local).ok()
}

/// The status a delivery goes to on `kind` from `current`, if it moves: `delivered` only
/// from `sent`; a hard bounce from `sent` or `delivered` (bounces can come after the
/// receiving server took it). Complaints and soft bounces are recorded without moving it.
pub fn next_status(current: &str, kind: CallbackKind, bounce: Bounce) -> Option<&'static str> {
    match (kind, bounce, current) {
        (CallbackKind::Delivered, _, "sent") => Some("delivered"),
        (CallbackKind::Bounced, Bounce::Hard, "sent" | "delivered") => Some("bounced"),
        _ => None,
    }
}

/// Why the address `recipient` gets nothing on `channel`, if it is suppressed.
pub async fn suppressed(
    conn: &mut PgConnection,
    channel: &str,
    recipient: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT reason FROM suppressions WHERE channel = $1 AND recipient = $2")
        .bind(channel)
        .bind(recipient.trim().to_lowercase())
        .fetch_optional(conn)
        .await
}

/// Applies callback `event_id` on `channel` once.
pub async fn apply(
    conn: &mut PgConnection,
    channel: &str,
    event_id: &str,
    callback: &Callback,
) -> Result<Applied, sqlx::Error> {
    let new = sqlx::query(
        "INSERT INTO callback_events (channel, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(channel)
    .bind(event_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !new {
        return Ok(Applied::Duplicate);
    }
    let Some(id) = delivery_id(&callback.message_id) else {
        return Ok(Applied::UnknownMessage);
    };
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT status, recipient FROM deliveries WHERE id = $1 AND channel = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, recipient)) = found else {
        return Ok(Applied::UnknownMessage);
    };
    let detail: Option<String> = callback
        .detail
        .as_deref()
        .map(|d| d.chars().filter(|c| !c.is_control()).take(1_000).collect());
    let bounce = callback.bounce.unwrap_or(Bounce::Hard);
    let event = match (callback.kind, bounce) {
        (CallbackKind::Delivered, _) => "delivered",
        (CallbackKind::Bounced, Bounce::Hard) => "bounced",
        (CallbackKind::Bounced, Bounce::Soft) => "soft_bounce",
        (CallbackKind::Complained, _) => "complaint",
    };
    if let Some(next) = next_status(&status, callback.kind, bounce) {
        sqlx::query(
            "UPDATE deliveries SET status = $2, status_reason = $3, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(detail.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    deliveries::log(conn, id, event, detail.as_deref()).await?;
    let reason = match (callback.kind, bounce) {
        (CallbackKind::Bounced, Bounce::Hard) => Some("hard_bounce"),
        (CallbackKind::Complained, _) => Some("complaint"),
        _ => None,
    };
    if let Some(reason) = reason {
        sqlx::query(
            "INSERT INTO suppressions (channel, recipient, reason, delivery_id, detail)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(channel)
        .bind(recipient.trim().to_lowercase())
        .bind(reason)
        .bind(id)
        .bind(detail.as_deref())
        .execute(&mut *conn)
        .await?;
        tracing::warn!(delivery = %id, reason, "address suppressed");
    }
    Ok(Applied::Applied)
}

/// A suppressed address as admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Suppression {
    /// `email`.
    pub channel: String,
    /// The address, lower-cased.
    pub recipient: String,
    /// `hard_bounce` or `complaint`.
    pub reason: String,
    /// The delivery that caused it.
    pub delivery_id: Option<Uuid>,
    /// The provider's words.
    pub detail: Option<String>,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Suppressions, newest first, at most 100; of one address with `recipient`.
pub async fn suppressions(
    conn: &mut PgConnection,
    recipient: Option<&str>,
) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM suppressions WHERE ($1::text IS NULL OR recipient = $1)
         ORDER BY created_at DESC LIMIT 100",
    )
    .bind(recipient.map(|r| r.trim().to_lowercase()))
    .fetch_all(conn)
    .await
}

/// Lifts a suppression (the address was fixed); `false` when there was none.
pub async fn lift(
    conn: &mut PgConnection,
    channel: &str,
    recipient: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM suppressions WHERE channel = $1 AND recipient = $2")
            .bind(channel)
            .bind(recipient.trim().to_lowercase())
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_id_is_read_from_a_message_id_or_given_bare() {
        let id = Uuid::now_v7();
        assert_eq!(delivery_id(&format!("<{id}@tienda.test>")), Some(id));
        assert_eq!(delivery_id(&format!(" {id} ")), Some(id));
        assert_eq!(delivery_id("<someone-else@example.com>"), None);
        assert_eq!(delivery_id(""), None);
    }

    #[test]
    fn callbacks_move_a_delivery_only_forward() {
        use CallbackKind::*;
        assert_eq!(
            next_status("sent", Delivered, Bounce::Hard),
            Some("delivered")
        );
        assert_eq!(
            next_status("bounced", Delivered, Bounce::Hard),
            None,
            "late"
        );
        assert_eq!(
            next_status("delivered", Bounced, Bounce::Hard),
            Some("bounced")
        );
        assert_eq!(next_status("sent", Bounced, Bounce::Soft), None);
        assert_eq!(next_status("delivered", Complained, Bounce::Hard), None);
        assert_eq!(next_status("queued", Delivered, Bounce::Hard), None);
    }
}
