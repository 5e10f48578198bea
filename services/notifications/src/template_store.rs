//! `template_versions`: the edited versions of each kind's templates per locale. Version 1 is
//! the shipped one (in the binary); edits are numbered from 2 and the newest is used.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::{locale::Locale, templates::Draft, trigger::Kind};

/// A stored version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    /// Its number.
    pub version: i32,
    /// Subject.
    pub subject: String,
    /// Text body.
    pub body_text: String,
    /// HTML body.
    pub body_html: String,
    /// SMS and push text (null: the shipped one).
    pub short: Option<String>,
    /// Who saved it.
    pub created_by: String,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Stored {
    /// Its sources.
    pub fn draft(&self) -> Draft {
        Draft {
            subject: self.subject.clone(),
            body_text: self.body_text.clone(),
            body_html: self.body_html.clone(),
            short: self.short.clone(),
        }
    }
}

/// A version in a list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Its number (1: shipped).
    pub version: i32,
    /// Who saved it (`tienda` for the shipped one).
    pub created_by: String,
    /// Why.
    pub note: Option<String>,
    /// When (null for the shipped one).
    pub created_at: Option<DateTime<Utc>>,
}

/// The newest edited version of `kind` in `locale`, if any.
pub async fn latest(
    conn: &mut PgConnection,
    kind: Kind,
    locale: Locale,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, subject, body_text, body_html, short, created_by, note, created_at
         FROM template_versions WHERE kind = $1 AND locale = $2
         ORDER BY version DESC LIMIT 1",
    )
    .bind(kind.as_str())
    .bind(locale.as_str())
    .fetch_optional(conn)
    .await
}

/// Edited version `version`.
pub async fn get(
    conn: &mut PgConnection,
    kind: Kind,
    locale: Locale,
    version: i32,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, subject, body_text, body_html, short, created_by, note, created_at
         FROM template_versions WHERE kind = $1 AND locale = $2 AND version = $3",
    )
    .bind(kind.as_str())
    .bind(locale.as_str())
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Every edited version, newest first.
pub async fn versions(
    conn: &mut PgConnection,
    kind: Kind,
    locale: Locale,
) -> Result<Vec<VersionInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, created_by, note, created_at FROM template_versions
         WHERE kind = $1 AND locale = $2 ORDER BY version DESC",
    )
    .bind(kind.as_str())
    .bind(locale.as_str())
    .fetch_all(conn)
    .await
}

/// Saves `draft` as the next version (checked before); its number. Two saves at once are
/// serialized by a transaction-scoped lock on the kind and locale.
pub async fn save(
    conn: &mut PgConnection,
    kind: Kind,
    locale: Locale,
    draft: &Draft,
    by: &str,
    note: Option<&str>,
) -> Result<i32, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('template'), hashtext($1))")
        .bind(format!("{}/{}", kind.as_str(), locale.as_str()))
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "INSERT INTO template_versions (kind, locale, version, subject, body_text, body_html,
                                        created_by, note, short)
         SELECT $1, $2, coalesce(max(version), 1) + 1, $3, $4, $5, $6, $7, $8
         FROM template_versions WHERE kind = $1 AND locale = $2
         RETURNING version",
    )
    .bind(kind.as_str())
    .bind(locale.as_str())
    .bind(&draft.subject)
    .bind(&draft.body_text)
    .bind(&draft.body_html)
    .bind(by)
    .bind(note)
    .bind(&draft.short)
    .fetch_one(conn)
    .await
}
