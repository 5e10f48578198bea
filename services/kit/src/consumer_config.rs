//! Which durable consumer a service runs and how: shared by the consumer runtime and the
//! dead-letter watcher, so neither has to import the other for it.

use std::time::Duration;

/// Which consumer to run and how.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The stream.
    pub stream: String,
    /// The durable consumer's name (as provisioned).
    pub durable: String,
    /// The component running it (names its dead-letter stream `DLQ_<COMPONENT>`).
    pub component: String,
    /// Messages handled at once (default 16). Use 1 where one subject's order matters.
    pub concurrency: usize,
    /// First redelivery delay after a transient failure; doubles per delivery (default 1 s).
    pub retry_base: Duration,
    /// Longest redelivery delay (default 1 min).
    pub retry_max: Duration,
    /// Send `in_progress` while a handler runs, so long handlers keep their message.
    pub progress_heartbeat: bool,
    /// Messages applied in one transaction (default 1: a transaction each). Above 1, the
    /// messages already received (up to this many) are applied in order in one transaction
    /// with one commit — one fsync for the batch instead of one per message. A handler that
    /// fails rolls the batch back and its messages are applied one by one as with 1, so
    /// only handlers whose every effect goes through the transaction may run batched (not
    /// one that calls a provider).
    pub batch: usize,
}

impl ConsumerConfig {
    /// Defaults for `durable` on `stream`, run by `component`.
    pub fn new(component: &str, stream: &str, durable: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            component: component.to_owned(),
            concurrency: 16,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            progress_heartbeat: true,
            batch: 1,
        }
    }
}
