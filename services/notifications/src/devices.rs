//! `push_devices`: where someone's push notifications go. A token registered again (by the
//! same person or, after a sign-in on a shared device, by another) is moved, not duplicated;
//! a person keeps at most [`MAX_PER_USER`], the oldest giving way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Devices kept per person.
pub const MAX_PER_USER: i64 = 20;

/// A device as its owner sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeviceInfo {
    /// Its id.
    pub id: Uuid,
    /// `fcm` or `webpush`.
    pub provider: String,
    /// What they called it (`Ana's phone`).
    pub label: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    /// `fcm` or `webpush`.
    pub provider: &'static str,
    /// The FCM token or the Web Push endpoint.
    pub token: &'a str,
    /// Web Push keys.
    pub p256dh: Option<&'a str>,
    /// Web Push auth secret.
    pub auth: Option<&'a str>,
    /// A name.
    pub label: Option<&'a str>,
}

/// Registers `device` for `user_id` (moving it from whoever had it).
pub async fn register(
    conn: &mut PgConnection,
    user_id: Uuid,
    device: &NewDevice<'_>,
) -> Result<DeviceInfo, sqlx::Error> {
    let info: DeviceInfo = sqlx::query_as(
        "INSERT INTO push_devices (id, user_id, provider, token, p256dh, auth, label)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT push_devices_once DO UPDATE
         SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth,
             label = EXCLUDED.label, created_at = now()
         RETURNING id, provider, label, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(device.provider)
    .bind(device.token)
    .bind(device.p256dh)
    .bind(device.auth)
    .bind(device.label)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM push_devices WHERE user_id = $1 AND id NOT IN
             (SELECT id FROM push_devices WHERE user_id = $1
              ORDER BY created_at DESC LIMIT $2)",
    )
    .bind(user_id)
    .bind(MAX_PER_USER)
    .execute(conn)
    .await?;
    Ok(info)
}

/// A person's devices, newest first.
pub async fn list(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<DeviceInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, label, created_at FROM push_devices WHERE user_id = $1
         ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Forgets one of a person's devices; `false` when they have no such device.
pub async fn remove(conn: &mut PgConnection, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM push_devices WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}
