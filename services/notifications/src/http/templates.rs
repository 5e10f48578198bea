//! `/v1/notifications/templates` (admins): every kind's templates per locale, their versions,
//! new versions (checked at save, refused with the part and the line) and previews against
//! a sample event. Going back to an older version is saving its sources again.

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;

use super::AppState;
use crate::{
    error::Error,
    locale::Locale,
    template_store::{self, VersionInfo},
    templates::{BUILTIN_VERSION, Draft, Templates},
    trigger::Kind,
};

/// One kind in one locale, as the list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateSummary {
    /// The message family.
    pub kind: String,
    /// `es` or `en`.
    pub locale: String,
    /// Its category.
    pub category: String,
    /// The version in use (1: shipped).
    pub version: i32,
}

/// Every kind in every locale.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// By kind, then locale.
    pub items: Vec<TemplateSummary>,
}

/// One version's sources.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateVersion {
    /// The message family.
    pub kind: String,
    /// `es` or `en`.
    pub locale: String,
    /// Its number (1: shipped).
    pub version: i32,
    /// One line (whitespace is folded).
    pub subject: String,
    /// The `text/plain` body.
    pub body_text: String,
    /// The `text/html` body (values are escaped).
    pub body_html: String,
    /// The short text of SMS and push messages, for kinds sent on those channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short: Option<String>,
    /// Who saved it (`tienda` for the shipped one).
    pub created_by: String,
    /// Why.
    pub note: Option<String>,
    /// When (null for the shipped one).
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl TemplateVersion {
    /// Its sources, as the renderer takes them.
    fn draft(&self) -> Draft {
        Draft {
            subject: self.subject.clone(),
            body_text: self.body_text.clone(),
            body_html: self.body_html.clone(),
            short: self.short.clone(),
        }
    }
}

/// A kind in a locale: the version in use and every version.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDetail {
    /// The version in use.
    pub current: TemplateVersion,
    /// Newest first; the last is the shipped one.
    pub versions: Vec<VersionInfo>,
}

/// `POST /v1/notifications/templates/{kind}/{locale}`: a new version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    /// One line (whitespace is folded).
    pub subject: String,
    /// The `text/plain` body.
    pub body_text: String,
    /// The `text/html` body (values are escaped).
    pub body_html: String,
    /// The one-line text of SMS and push (kinds sent on those channels); left out, the
    /// shipped one is kept.
    #[serde(default)]
    pub short: Option<String>,
    /// Why, at most 500 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// A version rendered against a sample event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// The version rendered.
    pub version: i32,
    /// The subject line.
    pub subject: String,
    /// The `text/plain` part, in the layout.
    pub text: String,
    /// The `text/html` part, in the layout.
    pub html: String,
    /// The SMS and push text (kinds sent on those channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short: Option<String>,
}

fn parse(kind: &str, locale: &str) -> Result<(Kind, Locale), Error> {
    let not_found = || {
        Error::NotFound(format!(
            "No templates for {kind:?} in {locale:?}: kinds are {}; locales es, en.",
            Kind::ALL.map(Kind::as_str).join(", ")
        ))
    };
    let kind = Kind::parse(kind).ok_or_else(not_found)?;
    let locale = locale.parse::<Locale>().map_err(|_| not_found())?;
    Ok((kind, locale))
}

fn shipped_info() -> VersionInfo {
    VersionInfo {
        version: BUILTIN_VERSION,
        created_by: "tienda".into(),
        note: Some("shipped".into()),
        created_at: None,
    }
}

/// Version `version` of `kind` in `locale`.
async fn version_of(
    conn: &mut sqlx::PgConnection,
    kind: Kind,
    locale: Locale,
    version: i32,
) -> Result<TemplateVersion, Error> {
    let (draft, info) = if version == BUILTIN_VERSION {
        (Templates::builtin_draft(kind, locale), shipped_info())
    } else {
        let stored = template_store::get(conn, kind, locale, version)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} in {locale} has no version {version}.",
                    kind.as_str()
                ))
            })?;
        let info = VersionInfo {
            version,
            created_by: stored.created_by.clone(),
            note: stored.note.clone(),
            created_at: Some(stored.created_at),
        };
        (stored.draft(), info)
    };
    // Written out field by field: `Draft` refuses unknown fields, and flattening its schema
    // into this one made every answer break the document (schemathesis).
    Ok(TemplateVersion {
        kind: kind.as_str().into(),
        locale: locale.as_str().into(),
        version,
        subject: draft.subject,
        body_text: draft.body_text,
        body_html: draft.body_html,
        short: draft.short,
        created_by: info.created_by,
        note: info.note,
        created_at: info.created_at,
    })
}

/// Every kind in every locale with the version in use (admins).
#[utoipa::path(get, path = "/v1/notifications/templates", tag = "templates",
    responses((status = 200, body = TemplateList), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<TemplateList>, Error> {
    let current: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT kind, locale, max(version) FROM template_versions GROUP BY kind, locale",
    )
    .fetch_all(&state.db)
    .await?;
    let items = Kind::ALL
        .into_iter()
        .flat_map(|kind| Locale::ALL.into_iter().map(move |locale| (kind, locale)))
        .map(|(kind, locale)| TemplateSummary {
            kind: kind.as_str().into(),
            locale: locale.as_str().into(),
            category: kind.category().as_str().into(),
            version: current
                .iter()
                .find(|(k, l, _)| k == kind.as_str() && l == locale.as_str())
                .map_or(BUILTIN_VERSION, |(_, _, v)| *v),
        })
        .collect();
    Ok(Json(TemplateList { items }))
}

/// A kind's templates in a locale: the version in use and every version (admins).
#[utoipa::path(get, path = "/v1/notifications/templates/{kind}/{locale}", tag = "templates",
    params(("kind" = String, Path, description = "`welcome`, `order_shipped`, …"),
           ("locale" = String, Path, description = "`es` or `en`")),
    responses((status = 200, body = TemplateDetail), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path((kind, locale)): Path<(String, String)>,
) -> Result<Json<TemplateDetail>, Error> {
    let (kind, locale) = parse(&kind, &locale)?;
    let mut conn = state.db.acquire().await?;
    let mut versions = template_store::versions(&mut conn, kind, locale).await?;
    versions.push(shipped_info());
    let current = version_of(&mut conn, kind, locale, versions[0].version).await?;
    Ok(Json(TemplateDetail { current, versions }))
}

/// Saves a new version, used for every message from now on (admins). Refused with 422 when
/// a part does not compile or does not render against the kind's sample event, naming the
/// part and the line.
#[utoipa::path(post, path = "/v1/notifications/templates/{kind}/{locale}", tag = "templates",
    request_body = NewVersion,
    params(("kind" = String, Path, description = "`welcome`, `order_shipped`, …"),
           ("locale" = String, Path, description = "`es` or `en`")),
    responses((status = 201, body = TemplateVersion), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem, description = "A part that does not compile or render, with its line")),
    security(("bearer" = [])))]
pub async fn save(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path((kind, locale)): Path<(String, String)>,
    Json(new): Json<NewVersion>,
) -> Result<(StatusCode, Json<TemplateVersion>), Error> {
    let (kind, locale) = parse(&kind, &locale)?;
    let draft = Draft {
        subject: new.subject,
        body_text: new.body_text,
        body_html: new.body_html,
        short: new.short,
    };
    let mut errors = Templates::check(kind, locale, &draft);
    let note = new.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 500 || n.chars().any(char::is_control)) {
        errors.push((
            "note".into(),
            "must be at most 500 characters, without control characters".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut tx = state.db.begin().await?;
    let version = template_store::save(&mut tx, kind, locale, &draft, &admin.sub, note).await?;
    let saved = version_of(&mut tx, kind, locale, version).await?;
    tx.commit().await?;
    tracing::info!(kind = kind.as_str(), %locale, version, by = %admin.sub, "template version saved");
    Ok((StatusCode::CREATED, Json(saved)))
}

/// One version's sources (admins).
#[utoipa::path(get, path = "/v1/notifications/templates/{kind}/{locale}/versions/{version}",
    tag = "templates",
    params(("kind" = String, Path, description = "`welcome`, `order_shipped`, …"),
           ("locale" = String, Path, description = "`es` or `en`"),
           ("version" = i32, Path, description = "1: shipped")),
    responses((status = 200, body = TemplateVersion), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn version(
    State(state): State<AppState>,
    Path((kind, locale, version)): Path<(String, String, String)>,
) -> Result<Json<TemplateVersion>, Error> {
    let (kind, locale) = parse(&kind, &locale)?;
    let version = version
        .parse()
        .map_err(|_| Error::NotFound(format!("No version {version:?}.")))?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(version_of(&mut conn, kind, locale, version).await?))
}

/// A version rendered against the kind's sample event, in the shop's layout (admins).
#[utoipa::path(get,
    path = "/v1/notifications/templates/{kind}/{locale}/versions/{version}/preview",
    tag = "templates",
    params(("kind" = String, Path, description = "`welcome`, `order_shipped`, …"),
           ("locale" = String, Path, description = "`es` or `en`"),
           ("version" = i32, Path, description = "1: shipped")),
    responses((status = 200, body = Preview), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    Path((kind, locale, version)): Path<(String, String, String)>,
) -> Result<Json<Preview>, Error> {
    let (kind, locale) = parse(&kind, &locale)?;
    let number = version
        .parse()
        .map_err(|_| Error::NotFound(format!("No version {version:?}.")))?;
    let mut conn = state.db.acquire().await?;
    let found = version_of(&mut conn, kind, locale, number).await?;
    let rendered = state
        .templates
        .preview(kind, locale, number, &found.draft(), &state.links)
        .map_err(|e| {
            // Checked at save; a failure here is a bug worth a clear answer, not a 500.
            Error::Invalid(vec![("template".into(), crate::templates::describe(&e))])
        })?;
    Ok(Json(Preview {
        version: rendered.version,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        short: rendered.short,
    }))
}
