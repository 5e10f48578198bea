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

/// Version 1 of `user.password_reset_requested`, with the token in clear. No longer
/// published (a stream kept it readable for days); notifications still reads it, for messages
/// published before the upgrade. Version 2 is [`UserPasswordResetRequestedV2`].
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

/// Someone asked to reset an account's password; notifications delivers the link. Published
/// only for existing accounts, while the HTTP answer is the same either way. The token is
/// sealed with the shop's event-sealing keys (`tienda_kit::seal`, context
/// [`UserPasswordResetRequestedV2::seal_context`]): only auth and notifications can read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPasswordResetRequestedV2 {
    /// The account.
    pub user_id: Uuid,
    /// Where to send the link.
    pub email: String,
    /// The single-use reset token, sealed (only its hash is stored by auth).
    pub sealed_token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}
contract!(
    Event,
    UserPasswordResetRequestedV2,
    "user",
    "password_reset_requested",
    2,
    |m| m.user_id
);

impl UserPasswordResetRequestedV2 {
    /// What the sealed token is bound to: this kind of event, for this account.
    pub fn seal_context(user_id: Uuid) -> String {
        format!("user.password_reset_requested|{user_id}")
    }
}

/// An account's email address needs verifying (a new account, or the owner asked again);
/// notifications delivers the link. The token is sealed like a reset token's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEmailVerificationRequested {
    /// The account.
    pub user_id: Uuid,
    /// The address to verify (and send to).
    pub email: String,
    /// The single-use verification token, sealed (auth stores only its hash).
    pub sealed_token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}
contract!(
    Event,
    UserEmailVerificationRequested,
    "user",
    "email_verification_requested",
    1,
    |m| m.user_id
);

impl UserEmailVerificationRequested {
    /// What the sealed token is bound to: this kind of event, for this account.
    pub fn seal_context(user_id: Uuid) -> String {
        format!("user.email_verification_requested|{user_id}")
    }
}

/// Someone tried to register with an address that already has an account. Registration
/// answers the same either way (it must not tell who has an account); the owner is told by
/// email instead, with a way to sign in or reset the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistrationAttempted {
    /// The existing account.
    pub user_id: Uuid,
    /// Its address.
    pub email: String,
}
contract!(
    Event,
    UserRegistrationAttempted,
    "user",
    "registration_attempted",
    1,
    |m| m.user_id
);

/// Sessions ended (sign-out, a session ended from another device, a password changed or
/// reset, a refresh token reused). Every service refuses the access tokens of these sessions
/// from the moment it hears this, instead of honouring them until they expire (at most 15
/// minutes): `tienda_kit::revocation` follows these events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSessionsRevoked {
    /// The account.
    pub user_id: Uuid,
    /// The sessions (the `sid` claim of their access tokens).
    pub session_ids: Vec<Uuid>,
    /// Why, in words (`logout`, `password changed`, ...).
    pub reason: String,
}
contract!(
    Event,
    UserSessionsRevoked,
    "user",
    "sessions_revoked",
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
