//! The sign-in throttle against password guessing, as trusted identity providers do it: failed
//! sign-ins are counted per account *from one client* and per client across accounts, never
//! per account alone — so a guesser slows only itself, and cannot lock the owner (or, from
//! one address, everyone) out. The client is the address the gateway saw
//! ([`tienda_kit::net::ClientIp`]), not the gateway's own.
//!
//! Counts live in a sliding window (a count that halves every 15 minutes). From a threshold on,
//! each further attempt waits, exponentially longer with each failure, up to a cap: an account
//! guessed from one client waits up to 15 minutes, a client failing across accounts up to a
//! minute. Attempts are counted *before* the password is checked (and taken back when it was
//! right), so parallel guesses cannot all pass one check. The first wait an account earns is
//! announced (`user.locked`), so its owner hears of it. Counts are kept for unknown emails too:
//! a wait says nothing about whether an account exists.

use std::{net::IpAddr, time::Duration};

use sqlx::PgConnection;
use tienda_events::{Envelope, user::UserLocked};
use tienda_kit::outbox;

use crate::{
    error::{Error, Result},
    store::{
        accounts::User,
        sign_in_failures::{self, Rule},
    },
};

/// One account guessed from one client: five failures in the window, then 30 s doubling up
/// to 15 minutes.
pub const ACCOUNT_FROM_CLIENT: Rule = Rule {
    threshold: 5.0,
    base: Duration::from_secs(30),
    cap: Duration::from_secs(15 * 60),
    half_life: Duration::from_secs(15 * 60),
};

/// One client failing across accounts (credential stuffing): twenty failures in the window,
/// then 1 s doubling up to a minute — slowed, never locked out.
pub const CLIENT: Rule = Rule {
    threshold: 20.0,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
    half_life: Duration::from_secs(15 * 60),
};

/// Wrong second-factor codes of one account, from anywhere: whoever sends them knows the
/// password already, so the count is the account's and a correct password does not reset it.
/// Five, then 30 s doubling up to 15 minutes: a six-digit code is out of reach.
pub const SECOND_FACTOR: Rule = Rule {
    threshold: 5.0,
    base: Duration::from_secs(30),
    cap: Duration::from_secs(15 * 60),
    half_life: Duration::from_secs(60 * 60),
};

/// Second-factor codes of one account (TOTP or recovery), counted before they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeThrottle {
    key: String,
}

impl CodeThrottle {
    /// The count of `user_id`'s codes.
    pub fn new(user_id: uuid::Uuid) -> Self {
        Self {
            key: format!("second-factor:{user_id}"),
        }
    }

    /// Counts a code about to be checked, or refuses it with [`Error::Locked`] while the
    /// account owes a wait. Runs in the caller's transaction.
    pub async fn attempt(&self, conn: &mut PgConnection) -> Result<()> {
        match sign_in_failures::count_attempt(conn, &self.key, SECOND_FACTOR).await? {
            Some(_) => Ok(()),
            None => Err(Error::Locked(
                sign_in_failures::wait_of(conn, &self.key, SECOND_FACTOR).await?,
            )),
        }
    }

    /// The code was right: the count is forgotten.
    pub async fn succeeded(&self, conn: &mut PgConnection) -> Result<()> {
        sign_in_failures::forget(conn, &self.key).await
    }
}

/// The keys one sign-in attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    account: String,
    client: String,
}

/// A counted attempt, to settle once the password has been checked.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "settle the attempt with `failed` or `succeeded`"]
pub struct Attempt {
    account_score: f64,
}

impl Throttle {
    /// The keys of a sign-in as `email` (already lower-cased) from the client at `ip`.
    pub fn new(email: &str, ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self {
            account: format!("account:{email}|client:{ip}"),
            client: format!("client:{ip}"),
        }
    }

    /// Counts the attempt under both keys in one transaction, or refuses it with
    /// [`Error::Locked`] (counting nothing) while either key still owes a wait.
    pub async fn attempt(&self, conn: &mut PgConnection) -> Result<Attempt> {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let Some(account_score) =
            sign_in_failures::count_attempt(&mut tx, &self.account, ACCOUNT_FROM_CLIENT).await?
        else {
            tx.rollback().await?;
            let wait = sign_in_failures::wait_of(conn, &self.account, ACCOUNT_FROM_CLIENT).await?;
            return Err(Error::Locked(wait));
        };
        if sign_in_failures::count_attempt(&mut tx, &self.client, CLIENT)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            let wait = sign_in_failures::wait_of(conn, &self.client, CLIENT).await?;
            return Err(Error::Locked(wait));
        }
        tx.commit().await?;
        Ok(Attempt { account_score })
    }

    /// The attempt failed: it stays counted. When it was the one that made `user`'s account
    /// wait, the owner is told in the same transaction. Now and then, long-forgotten keys
    /// are pruned.
    pub async fn failed(
        &self,
        tx: &mut PgConnection,
        attempt: Attempt,
        user: Option<&User>,
    ) -> Result<()> {
        let threshold = ACCOUNT_FROM_CLIENT.threshold;
        let first_wait = attempt.account_score.round() >= threshold
            && (attempt.account_score - 1.0).round() < threshold;
        if let (Some(user), true) = (user, first_wait) {
            let event = UserLocked {
                user_id: user.id,
                until: chrono::Utc::now()
                    + chrono::Duration::from_std(ACCOUNT_FROM_CLIENT.base).expect("short"),
                failed_attempts: attempt.account_score.round() as u32,
            };
            outbox::enqueue(tx, Envelope::new("auth", event)).await?;
        }
        if fastrand::u8(..) == 0 {
            sign_in_failures::prune(tx).await?;
        }
        Ok(())
    }

    /// The password was right: the account's failures from this client are forgotten and the
    /// attempt is taken back from the client's count (its failures elsewhere stay).
    pub async fn succeeded(&self, tx: &mut PgConnection) -> Result<()> {
        sign_in_failures::forget(tx, &self.account).await?;
        sign_in_failures::uncount(tx, &self.client).await
    }
}
