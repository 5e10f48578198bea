//! Revoked sessions: access tokens stop working everywhere when their session ends, not when
//! they expire.
//!
//! Services verify access tokens alone (signature, issuer, audience, expiry), so without this a
//! token outlives a sign-out or a password change by up to its whole lifetime (10 minutes by
//! default, 15 at most). Auth announces every ended session (`user.sessions_revoked`, through
//! its outbox, in the transaction that ends it); every service with NATS follows those events
//! from the last [`HORIZON`] on and its [`Verifier`](crate::jwt::Verifier)s refuse a token
//! whose `sid` is among them.
//!
//! The set is process-wide, so every verifier a service builds checks it without being handed
//! it; each platform feeds it from its own NATS. Cost, as stated in docs/security.md: one
//! ordered consumer per process, memory for the sessions ended in the last 16 minutes (about
//! 60 bytes each), and a window of milliseconds (the relay and the feed) after a sign-out
//! while the old token still works. While NATS is unreachable revocations are not heard, and
//! tokens fall back to expiring on their own.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tienda_events::{Envelope, Message as _, user::UserSessionsRevoked};

use crate::{resilience::Backoff, shutdown::Shutdown};

/// How long a revocation matters: the longest access-token lifetime (15 minutes) and the
/// verifiers' clock leeway.
pub const HORIZON: Duration = Duration::from_secs(16 * 60);

/// Revoked session ids, each with when it no longer matters.
static REVOKED: LazyLock<Mutex<HashMap<String, DateTime<Utc>>>> = LazyLock::new(Mutex::default);

/// Records that `session` ended at `at` (its tokens are refused until `at` + [`HORIZON`]).
pub fn revoke(session: &str, at: DateTime<Utc>) {
    let until = at + chrono::Duration::from_std(HORIZON).expect("16 minutes fit");
    let now = Utc::now();
    if until <= now {
        return;
    }
    let mut revoked = REVOKED.lock().expect("not poisoned");
    // Forget what no longer matters, now and then (every insertion is cheap enough: the set
    // holds a quarter of an hour of sign-outs).
    if revoked.len() % 1024 == 1023 {
        revoked.retain(|_, until| *until > now);
    }
    revoked.insert(session.to_owned(), until);
}

/// Whether `session` was revoked (and its tokens may still be unexpired).
pub fn is_revoked(session: &str) -> bool {
    REVOKED
        .lock()
        .expect("not poisoned")
        .get(session)
        .is_some_and(|until| *until > Utc::now())
}

/// Follows `user.sessions_revoked` on the USER stream from [`HORIZON`] ago, until shutdown,
/// reconnecting with backoff. Started by the platform of every service with NATS.
pub async fn follow(jetstream: jetstream::Context, shutdown: Shutdown) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut attempt = 0u32;
    loop {
        let run = tokio::select! {
            run = follow_once(&jetstream) => run,
            () = shutdown.wait() => return,
        };
        attempt = attempt.saturating_add(1);
        if let Err(err) = run {
            tracing::warn!(error = %format!("{err:#}"), "session revocation feed failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.delay(attempt.min(8))) => {}
            () = shutdown.wait() => return,
        }
    }
}

async fn follow_once(jetstream: &jetstream::Context) -> anyhow::Result<()> {
    let stream = jetstream.get_stream("USER").await.map_err(|e| {
        anyhow::anyhow!("stream USER: {e} (is the shop provisioned?): signed-out tokens stay valid until they expire")
    })?;
    let since = Utc::now() - chrono::Duration::from_std(HORIZON).expect("16 minutes fit");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: UserSessionsRevoked::subject(),
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(
                    i128::from(since.timestamp()) * 1_000_000_000,
                )
                .expect("a time within range"),
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        match serde_json::from_slice::<Envelope<serde_json::Value>>(&message.payload)
            .ok()
            .and_then(|raw| raw.decode::<UserSessionsRevoked>().ok())
        {
            Some(event) => {
                for session in &event.data.session_ids {
                    revoke(&session.to_string(), event.time);
                }
            }
            None => tracing::warn!(subject = %message.subject, "unreadable session revocation"),
        }
    }
    anyhow::bail!("the feed ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_session_is_refused_until_its_tokens_have_expired() {
        let session = uuid::Uuid::now_v7().to_string();
        assert!(!is_revoked(&session));
        revoke(&session, Utc::now());
        assert!(is_revoked(&session));
        let old = uuid::Uuid::now_v7().to_string();
        revoke(&old, Utc::now() - chrono::Duration::minutes(17));
        assert!(!is_revoked(&old), "its tokens expired long ago");
    }
}
