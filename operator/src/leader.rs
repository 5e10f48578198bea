//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. The holder renews the Lease every `retry_period`; a follower takes it
//! over once `renewTime + leaseDuration` has passed. Every write carries the Lease's
//! `resourceVersion`, so of two replicas racing for an expired Lease exactly one wins (the
//! other gets 409 Conflict and stays a follower).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, api::PostParams};

/// A Lease-based lock.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
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

impl LeaseLock {
    /// The lock `name` in `api`'s namespace, held as `identity` (the pod name).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration,
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

    /// One attempt at `now`: create the Lease, renew it, or take it over when expired.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<Holder, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Holder::Me),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Holder::Other("a replica that created it first".into()))
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(now, acquired, transitions)
        } else {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec
                .renew_time
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            if !holder.is_empty() && renewed + duration > now {
                return Ok(Holder::Other(holder));
            }
            tracing::info!(previous = %holder, "lease expired; taking over");
            self.spec(now, now, transitions + 1)
        };
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Holder::Me),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Holder::Other("a replica that wrote it first".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so a successor does not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
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
    }

    /// Waits until this replica holds the lock, trying every `retry`.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(Holder::Me) => return,
                Ok(Holder::Other(holder)) => tracing::info!(%holder, "waiting for leadership"),
                Err(err) => tracing::warn!(error = %err, "cannot read the lease"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews every `retry` while leading; returns when leadership is lost (another holder,
    /// or no successful renewal within the lease duration).
    pub async fn hold(&self, retry: Duration) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(Holder::Me) => last_renewal = tokio::time::Instant::now(),
                Ok(Holder::Other(holder)) => {
                    tracing::error!(%holder, "leadership lost");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "lease renewal failed");
                    if last_renewal.elapsed() >= self.lease_duration {
                        tracing::error!("no renewal within the lease duration; stepping down");
                        return;
                    }
                }
            }
        }
    }
}
