//! `/v1/notifications/devices`: where the signed-in user's push notifications go, and the
//! VAPID key browsers subscribe with.

use std::collections::BTreeMap;

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    devices::{self, DeviceInfo, NewDevice},
    error::Error,
};

fn user(claims: &Claims) -> Result<Uuid, Error> {
    claims.sub.parse().map_err(|_| Error::NotAUser)
}

/// A device to register: an FCM registration token, or a browser's Web Push subscription
/// (`PushSubscription.toJSON()` as the browser gives it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `fcm` or `webpush`.
    pub provider: String,
    /// FCM: the registration token.
    #[serde(default)]
    pub token: Option<String>,
    /// Web Push: the subscription.
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// A name for it (`Ana's phone`), at most 100 characters.
    #[serde(default)]
    pub label: Option<String>,
}

/// A Web Push subscription.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Subscription {
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// Its keys.
    pub keys: SubscriptionKeys,
    /// Ignored (browsers send it).
    #[serde(default, rename = "expirationTime")]
    #[schema(value_type = Option<f64>)]
    pub expiration_time: Option<serde_json::Value>,
}

/// A subscription's keys (base64url).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key.
    pub p256dh: String,
    /// The browser's auth secret.
    pub auth: String,
}

/// The signed-in user's devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// Newest first.
    pub items: Vec<DeviceInfo>,
}

/// The key browsers pass as `applicationServerKey` when subscribing.
#[derive(Debug, Serialize, ToSchema)]
pub struct VapidKey {
    /// The VAPID public key (base64url, uncompressed P-256 point).
    pub public_key: String,
}

/// Registers a device for the signed-in user's push notifications. The same token or
/// endpoint registered again moves to this user; a user keeps at most 20 devices.
#[utoipa::path(post, path = "/v1/notifications/devices", tag = "devices",
    request_body = Registration,
    responses((status = 201, body = DeviceInfo), (status = 401, body = Problem),
              (status = 422, body = Problem, description = "An unknown provider, a missing or \
                  malformed token, or a subscription to a push service this shop does not call")),
    security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Json(registration): Json<Registration>,
) -> Result<(StatusCode, Json<DeviceInfo>), Error> {
    let user_id = user(&claims)?;
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let label = registration
        .label
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    if label.is_some_and(|l| l.chars().count() > 100 || l.chars().any(char::is_control)) {
        errors.insert(
            "label".into(),
            "must be at most 100 characters, without control characters".into(),
        );
    }
    let device = match (
        registration.provider.as_str(),
        &registration.token,
        &registration.subscription,
    ) {
        ("fcm", Some(token), None) => {
            if token.is_empty()
                || token.len() > 4_096
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                errors.insert(
                    "token".into(),
                    "must be an FCM registration token (printable ASCII, at most 4096)".into(),
                );
            }
            NewDevice {
                provider: "fcm",
                token,
                p256dh: None,
                auth: None,
                label,
            }
        }
        ("webpush", None, Some(subscription)) => {
            match &state.webpush {
                None => {
                    errors.insert(
                        "provider".into(),
                        "this shop does not send Web Push (no VAPID key is configured)".into(),
                    );
                }
                Some(_)
                    if subscription.endpoint.len() > 2_048
                        || !subscription.endpoint.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    errors.insert(
                        "subscription.endpoint".into(),
                        "must be a URL of at most 2048 printable ASCII characters".into(),
                    );
                }
                Some(webpush) => errors.extend(webpush.check_subscription(
                    &subscription.endpoint,
                    &subscription.keys.p256dh,
                    &subscription.keys.auth,
                )),
            }
            NewDevice {
                provider: "webpush",
                token: &subscription.endpoint,
                p256dh: Some(&subscription.keys.p256dh),
                auth: Some(&subscription.keys.auth),
                label,
            }
        }
        ("fcm", _, _) => {
            return Err(Error::Invalid(vec![(
                "token".into(),
                "an fcm device is its registration token (and no subscription)".into(),
            )]));
        }
        ("webpush", _, _) => {
            return Err(Error::Invalid(vec![(
                "subscription".into(),
                "a webpush device is its subscription {endpoint, keys: {p256dh, auth}} (and no token)"
                    .into(),
            )]));
        }
        _ => {
            return Err(Error::Invalid(vec![(
                "provider".into(),
                "must be fcm or webpush".into(),
            )]));
        }
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors.into_iter().collect()));
    }
    let mut tx = state.db.begin().await?;
    let info = devices::register(&mut tx, user_id, &device).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The signed-in user's devices.
#[utoipa::path(get, path = "/v1/notifications/devices", tag = "devices",
    responses((status = 200, body = DeviceList), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<DeviceList>, Error> {
    let user_id = user(&claims)?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(DeviceList {
        items: devices::list(&mut conn, user_id).await?,
    }))
}

/// Forgets one of the signed-in user's devices (another user's is 404).
#[utoipa::path(delete, path = "/v1/notifications/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "The device")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    let user_id = user(&claims)?;
    let mut conn = state.db.acquire().await?;
    if devices::remove(&mut conn, user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("You have no device {id}.")))
    }
}

/// The VAPID public key browsers subscribe with; 404 when this shop does not send Web Push.
#[utoipa::path(get, path = "/v1/notifications/push/vapid-public-key", tag = "devices",
    responses((status = 200, body = VapidKey), (status = 404, body = Problem)))]
pub async fn vapid_key(State(state): State<AppState>) -> Result<Json<VapidKey>, Error> {
    match &state.webpush {
        Some(webpush) => Ok(Json(VapidKey {
            public_key: webpush.public_key().to_owned(),
        })),
        None => Err(Error::NotFound(
            "This shop does not send Web Push: no VAPID key is configured (WEBPUSH_VAPID_PRIVATE_KEY)."
                .into(),
        )),
    }
}
