//! Administration of accounts.

use axum::extract::{Path, State};
use serde::Deserialize;
use tienda_events::{Envelope, user::UserRolesChanged};
use tienda_kit::{Problem, json::Json, jwt::Claims, outbox};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, accounts::Me};
use crate::{error::Error, role::Role, store};

/// `PUT /v1/auth/users/{id}/roles`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    /// The complete new set, from `customer`, `support`, `admin`.
    pub roles: Vec<String>,
}

/// Replaces an account's roles (admin only). New tokens carry them; the account's current
/// access tokens keep the old roles until they expire (at most 15 minutes).
#[utoipa::path(put, path = "/v1/auth/users/{id}/roles", tag = "users", request_body = SetRoles,
    params(("id" = Uuid, Path, description = "The account's id")),
    responses((status = 200, body = Me), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn set_roles(
    State(state): State<AppState>,
    axum::Extension(admin): axum::Extension<Claims>,
    Path(id): Path<Uuid>,
    Json(body): Json<SetRoles>,
) -> Result<Json<Me>, Problem> {
    let mut roles = body
        .roles
        .iter()
        .map(|name| name.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| Error::Invalid(vec![("roles".into(), message)]))?;
    roles.sort();
    roles.dedup();
    let admin_id: Uuid = admin.sub.parse().map_err(|_| Error::InvalidCredentials)?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    if !store::accounts::set_roles(&mut tx, id, &roles).await? {
        return Err(Problem::not_found(format!("no account {id}")));
    }
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no account {id}")))?;
    let event = UserRolesChanged {
        user_id: id,
        roles: Role::names(&roles),
        changed_by: admin_id,
    };
    outbox::enqueue(&mut tx, Envelope::new("auth", event))
        .await
        .map_err(Error::from)?;
    tx.commit().await.map_err(Error::from)?;
    Ok(Json(Me {
        id: user.id,
        email: user.email,
        name: user.name,
        roles: user.roles,
        mfa_enabled: false,
        email_verified: user.email_verified,
    }))
}
