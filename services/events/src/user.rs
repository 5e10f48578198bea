//! Account events, published by auth.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract;

/// An account was created (by registration, social login or configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The new account.
    pub user_id: Uuid,
    /// Its email address (lower-cased).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Roles granted at creation.
    pub roles: Vec<String>,
}
contract!(Event, UserRegistered, "user", "registered", 1, |m| m
    .user_id);

/// Someone asked to reset an account's password; notifications delivers the link. Published
/// only for existing accounts, while the HTTP answer is the same either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPasswordResetRequested {
    /// The account.
    pub user_id: Uuid,
    /// Where to send the link.
    pub email: String,
    /// The single-use reset token (only its hash is stored by auth).
    pub token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}
contract!(
    Event,
    UserPasswordResetRequested,
    "user",
    "password_reset_requested",
    1,
    |m| m.user_id
);

/// An account was locked after repeated failed logins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLocked {
    /// The account.
    pub user_id: Uuid,
    /// When the lock lifts.
    pub until: DateTime<Utc>,
    /// Failed attempts that led to it.
    pub failed_attempts: u32,
}
contract!(Event, UserLocked, "user", "locked", 1, |m| m.user_id);

/// An account's roles changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRolesChanged {
    /// The account.
    pub user_id: Uuid,
    /// The roles it has now.
    pub roles: Vec<String>,
    /// The admin who changed them.
    pub changed_by: Uuid,
}
contract!(Event, UserRolesChanged, "user", "roles_changed", 1, |m| m
    .user_id);
