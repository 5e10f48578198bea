//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. client-go's rules (`tools/leaderelection`):
//!
//! - Expiry is judged by the local clock only. A follower notes *when it saw* the Lease record
//!   change; the Lease has expired once `leaseDuration` passes on the follower's own clock with
//!   no change. The holder's `renewTime` is written for people to read and never compared
//!   with a local clock, so clock skew between nodes cannot make two leaders.
//! - Every request is bounded: an attempt that has not finished within the renew deadline is
//!   abandoned (kube's client has no read timeout by default, and a stalled API server would
//!   otherwise hold the leader in a renewal forever).
//! - The leader steps down once `renewDeadline` has passed since it *sent* its last successful
//!   renewal, and `renewDeadline < leaseDuration`: a follower cannot have seen that renewal
//!   before it was sent, so it waits at least `leaseDuration` from then, and the old leader
//!   has stopped reconciling by the time a new one may start.
//! - Every write carries the Lease's `resourceVersion`, so of two replicas racing for an expired
//!   Lease exactly one wins (the other gets 409 Conflict and stays a follower).

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::time::Instant;

/// A Lease-based lock.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    /// The last Lease record seen and when it was first seen (local clock).
    observed: Mutex<Option<(LeaseSpec, Instant)>>,
    /// When the last successful acquisition or renewal was sent.
    renewed: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Who holds the lock after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This replica.
    Me,
    /// Another replica, whose lease has not expired.
    Other(String),
}

/// Why [`LeaseLock::hold`] returned: leadership is over, stop reconciling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteppedDown {
    /// Another replica holds the Lease.
    Lost(String),
    /// No renewal succeeded within the renew deadline.
    RenewDeadline,
}

impl LeaseLock {
    /// The lock `name` in `api`'s namespace, held as `identity` (the pod name).
    ///
    /// # Panics
    /// When `renew_deadline` is not shorter than `lease_duration` (the leader must stop before
    /// a follower may start).
    pub fn new(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        lease_duration: Duration,
        renew_deadline: Duration,
    ) -> Self {
        assert!(
            renew_deadline < lease_duration,
            "the renew deadline must be shorter than the lease duration"
        );
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline,
            observed: Mutex::new(None),
            renewed: Mutex::new(None),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes `spec` as seen now unless it is the record already seen; returns when the
    /// current record was first seen.
    fn observe(&self, spec: &LeaseSpec) -> Instant {
        let mut observed = self.observed.lock().expect("not poisoned");
        match &*observed {
            // client-go compares the whole record, not just the renew time.
            Some((seen, at)) if seen == spec => *at,
            _ => {
                let now = Instant::now();
                *observed = Some((spec.clone(), now));
                now
            }
        }
    }

    /// One attempt, writing `now` as the renew time: create the Lease, renew it, or take it
    /// over when it is free or has not changed for a lease duration on this replica's clock.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<Holder, kube::Error> {
        let sent = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let spec = self.spec(now, now, 0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.won(&spec, sent);
                    Ok(Holder::Me)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Holder::Other("a replica that created it first".into()))
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_at = self.observe(&spec);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(now, acquired, transitions)
        } else {
            if !holder.is_empty() && seen_at + self.lease_duration > Instant::now() {
                return Ok(Holder::Other(holder));
            }
            tracing::info!(previous = %holder, "lease free or expired; taking over");
            self.spec(now, now, transitions + 1)
        };
        lease.spec = Some(next.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.won(&next, sent);
                Ok(Holder::Me)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Holder::Other("a replica that wrote it first".into()))
            }
            Err(e) => Err(e),
        }
    }

    fn won(&self, spec: &LeaseSpec, sent: Instant) {
        *self.observed.lock().expect("not poisoned") = Some((spec.clone(), sent));
        *self.renewed.lock().expect("not poisoned") = Some(sent);
    }

    /// Gives the Lease up (on shutdown) so a successor does not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let release = async {
            if let Some(mut lease) = self.api.get_opt(&self.name).await?
                && lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(self.identity.as_str())
            {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = None;
                spec.renew_time = None;
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
            }
            Ok(())
        };
        match tokio::time::timeout(self.renew_deadline, release).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("the lease release timed out; a successor waits for expiry");
                Ok(())
            }
        }
    }

    /// Waits until this replica holds the lock, trying every `retry`; each attempt is bounded
    /// by the renew deadline.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            let attempt = self.try_acquire_or_renew(Timestamp::now());
            match tokio::time::timeout(self.renew_deadline, attempt).await {
                Ok(Ok(Holder::Me)) => return,
                Ok(Ok(Holder::Other(holder))) => tracing::info!(%holder, "waiting for leadership"),
                Ok(Err(err)) => tracing::warn!(error = %err, "cannot read the lease"),
                Err(_) => tracing::warn!("the API server did not answer within the renew deadline"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews every `retry` while leading; returns as soon as leadership is over: another
    /// holder, or no renewal *sent* within the renew deadline has succeeded (a renewal still
    /// waiting for its answer at the deadline is abandoned). The caller must stop reconciling
    /// when this returns.
    pub async fn hold(&self, retry: Duration) -> SteppedDown {
        loop {
            let last = self
                .renewed
                .lock()
                .expect("not poisoned")
                .unwrap_or_else(Instant::now);
            let deadline = last + self.renew_deadline;
            let next = (Instant::now() + retry).min(deadline);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= deadline {
                tracing::error!("no renewal within the renew deadline; stepping down");
                return SteppedDown::RenewDeadline;
            }
            let attempt = self.try_acquire_or_renew(Timestamp::now());
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(Holder::Me)) => {}
                Ok(Ok(Holder::Other(holder))) => {
                    tracing::error!(%holder, "leadership lost");
                    return SteppedDown::Lost(holder);
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "lease renewal failed"),
                Err(_) => {
                    tracing::error!(
                        "the renewal did not finish within the renew deadline; stepping down"
                    );
                    return SteppedDown::RenewDeadline;
                }
            }
        }
    }
}
