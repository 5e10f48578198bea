//! The bulkhead: at most `max_concurrent` calls to a destination at once and `max_queued`
//! waiting for a slot; beyond that a call is refused at once, so a slow destination ties up a
//! bounded share of the caller's resources.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots and a bounded queue.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
}

impl Bulkhead {
    /// `max_concurrent` slots (at least one), `max_queued` waiting places.
    pub fn new(max_concurrent: usize, max_queued: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// A slot, waiting in the queue if there is room in it; `None`: full, refuse.
    pub async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let position = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = QueueGuard(&self.queued);
        if position >= self.max_queued {
            return None;
        }
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Like [`Bulkhead::enter`], but gives up waiting at `deadline` (a queued call must not
    /// outlive its caller's deadline).
    pub async fn enter_before(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), self.enter())
            .await
            .ok()
            .flatten()
    }
}

struct QueueGuard<'a>(&'a AtomicUsize);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn it_queues_up_to_its_limit_and_refuses_beyond() {
        let bulkhead = Arc::new(Bulkhead::new(1, 1));
        let first = bulkhead.enter().await.expect("a slot");
        let waiting = {
            let b = bulkhead.clone();
            tokio::spawn(async move { b.enter().await.is_some() })
        };
        // The queued call is parked on the semaphore: wait until it is counted.
        while bulkhead.queued.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(bulkhead.enter().await.is_none(), "the queue is full");
        drop(first);
        assert!(waiting.await.unwrap(), "the queued call got the freed slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_gives_up_at_its_deadline() {
        let bulkhead = Bulkhead::new(1, 5);
        let _held = bulkhead.enter().await.expect("a slot");
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(bulkhead.enter_before(deadline).await.is_none());
        assert_eq!(bulkhead.queued.load(Ordering::Acquire), 0, "left the queue");
    }
}
