//! Locks against password guessing. Failed sign-ins are counted per account (by email, whether
//! registered or not, so a lock says nothing about existence) and per client IP across
//! accounts; from a threshold on each further failure locks the key exponentially longer, up to
//! an hour. An account's first lock is announced (`user.locked`).

use std::net::IpAddr;

use sqlx::PgConnection;
use tienda_events::{Envelope, user::UserLocked};
use tienda_kit::outbox;

use crate::{
    error::{Error, Result},
    store::{accounts::User, login_failures},
};

/// Failed sign-ins in a row that lock an account (exponentially longer each further failure).
pub const ACCOUNT_LOCK_THRESHOLD: i32 = 5;
/// Failed sign-ins from one client IP, across accounts, that lock the IP.
pub const IP_LOCK_THRESHOLD: i32 = 20;
/// The first lock's length in seconds; it doubles with each further failure, up to an hour.
pub const LOCK_BASE_SECONDS: i32 = 30;

/// The two keys one sign-in attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    account: String,
    ip: String,
}

impl Lockout {
    /// The keys of a sign-in as `email` (already lower-cased) from `ip`.
    pub fn new(email: &str, ip: IpAddr) -> Self {
        Self {
            account: format!("account:{email}"),
            ip: format!("ip:{ip}"),
        }
    }

    /// [`Error::Locked`] while the account or the IP is locked.
    pub async fn check(&self, conn: &mut PgConnection) -> Result<()> {
        for key in [&self.account, &self.ip] {
            if let Some(until) = login_failures::locked_until(conn, key).await? {
                return Err(Error::Locked(until));
            }
        }
        Ok(())
    }

    /// Counts a failed sign-in under both keys; when it locks `user`'s account for the first
    /// time in a row, announces it in the same transaction.
    pub async fn record_failure(&self, tx: &mut PgConnection, user: Option<&User>) -> Result<()> {
        let (failures, lock) = login_failures::record_failure(
            tx,
            &self.account,
            ACCOUNT_LOCK_THRESHOLD,
            LOCK_BASE_SECONDS,
        )
        .await?;
        login_failures::record_failure(tx, &self.ip, IP_LOCK_THRESHOLD, LOCK_BASE_SECONDS).await?;
        if let (Some(user), Some(until), true) = (user, lock, failures == ACCOUNT_LOCK_THRESHOLD) {
            let event = UserLocked {
                user_id: user.id,
                until,
                failed_attempts: failures as u32,
            };
            outbox::enqueue(tx, Envelope::new("auth", event)).await?;
        }
        Ok(())
    }

    /// Forgets the account's failures after a successful sign-in (the IP's stay: they count
    /// across accounts).
    pub async fn clear(&self, tx: &mut PgConnection) -> Result<()> {
        login_failures::clear_failures(tx, &self.account).await
    }
}
