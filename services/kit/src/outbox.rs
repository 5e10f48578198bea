//! The transactional outbox: [`enqueue`] writes an event in the caller's transaction; the
//! [`Relay`] publishes committed rows to JetStream and marks them published.
//!
//! Guarantees:
//! - An event of a committed transaction is published at least once, and — because its
//!   `Nats-Msg-Id` is the row id and streams drop repeats within their duplicate window — lands
//!   in the stream exactly once, even when a relay dies between publishing and marking.
//! - An event of a rolled-back transaction never exists, so it is never published.
//! - Events of one aggregate are published in the order they were written: only the oldest
//!   pending row of each aggregate can be claimed, so a row waiting on a retry holds back the
//!   rows behind it, and two relays never publish one aggregate's rows concurrently.
//! - Several replicas can run the relay: rows are claimed with `FOR UPDATE SKIP LOCKED`.
//! - Nothing is published from a request path; the relay wakes on `NOTIFY tienda_outbox` (sent
//!   at commit) and also polls, so a lost notification only delays.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row, postgres::PgListener};
use tienda_events::{Envelope, Message, header};
use uuid::Uuid;

use crate::{
    resilience::Backoff,
    shutdown::Shutdown,
    trace_context::{self, TraceContext},
};

/// The channel the relay listens on.
pub const CHANNEL: &str = "tienda_outbox";

/// Writes `envelope` to the outbox inside the caller's transaction. It is published after the
/// transaction commits, and never if it rolls back. The current trace context (if any) is
/// kept with it: the relay's publish span is its child, and the message carries that span as
/// its `traceparent`.
pub async fn enqueue<T: Message + Serialize>(
    conn: &mut PgConnection,
    envelope: Envelope<T>,
) -> Result<(), sqlx::Error> {
    let subject = envelope.subject();
    let mut headers = BTreeMap::new();
    headers.insert(header::TYPE.to_owned(), envelope.message_type.clone());
    headers.insert(header::VERSION.to_owned(), envelope.version.to_string());
    headers.insert(header::SOURCE.to_owned(), envelope.source.clone());
    headers.insert(
        header::CORRELATION_ID.to_owned(),
        envelope.correlation_id.to_string(),
    );
    if let Some(context) = TraceContext::current() {
        headers.insert(header::TRACEPARENT.to_owned(), context.to_header());
    }
    let envelope = envelope.into_json();
    // One round trip: the insert and the notification (delivered at commit, dropped on
    // rollback; PostgreSQL folds repeats within a transaction into one).
    sqlx::query(
        "WITH row AS (INSERT INTO tienda_outbox (id, aggregate_id, subject, message_type, payload, headers) \
                      VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1) \
         SELECT pg_notify($7, '') FROM row",
    )
    .bind(envelope.id)
    .bind(&envelope.aggregate_id)
    .bind(&subject)
    .bind(&envelope.message_type)
    .bind(sqlx::types::Json(&envelope))
    .bind(sqlx::types::Json(&headers))
    .bind(CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per round (default 256).
    pub batch_size: i64,
    /// Longest sleep without a notification (default 1 s).
    pub poll_interval: Duration,
    /// First retry delay of a row that failed to publish; doubles per attempt (default 250 ms).
    pub retry_base: Duration,
    /// Longest retry delay (default 30 s).
    pub retry_max: Duration,
    /// How long to wait for a batch's acknowledgements (default 10 s).
    pub ack_timeout: Duration,
    /// How long published rows are kept before pruning (default 7 days). Keep it above the
    /// streams' duplicate window.
    pub retention: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Relay metrics, registered in the service's registry.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    pending: IntGauge,
    oldest_age: Gauge,
    published: IntCounter,
    failures: IntCounter,
    duplicates: IntCounter,
    batches: IntCounter,
    ack_latency: Histogram,
}

impl RelayMetrics {
    /// Registers the relay's metrics.
    pub fn new(registry: &Registry) -> Self {
        let pending =
            IntGauge::new("outbox_pending_messages", "Outbox rows not yet published").unwrap();
        let oldest_age = Gauge::new(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
        )
        .unwrap();
        let published = IntCounter::new(
            "outbox_published_total",
            "Outbox rows published and acknowledged",
        )
        .unwrap();
        let failures = IntCounter::new(
            "outbox_publish_failures_total",
            "Outbox publish attempts that failed",
        )
        .unwrap();
        let duplicates = IntCounter::new(
            "outbox_duplicates_total",
            "Rows published again after a relay stopped before marking them; the stream dropped the repeat",
        )
        .unwrap();
        let batches = IntCounter::new(
            "outbox_atomic_batches_total",
            "Atomic batches the stream stored whole (one disk sync for the batch)",
        )
        .unwrap();
        let ack_latency = Histogram::with_opts(
            HistogramOpts::new(
                "outbox_publish_duration_seconds",
                "Time from publishing a batch to its last ack",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )
        .unwrap();
        for metric in [
            Box::new(pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(oldest_age.clone()),
            Box::new(published.clone()),
            Box::new(failures.clone()),
            Box::new(duplicates.clone()),
            Box::new(batches.clone()),
            Box::new(ack_latency.clone()),
        ] {
            // A second relay in one process (tests) shares the first one's series.
            let _ = registry.register(metric);
        }
        Self {
            pending,
            oldest_age,
            published,
            failures,
            duplicates,
            batches,
            ack_latency,
        }
    }
}

/// Publishes committed outbox rows to JetStream.
#[derive(Clone, Debug)]
pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    config: RelayConfig,
    metrics: RelayMetrics,
    /// Subjects whose stream refused atomic batches, and since when: published one by one
    /// until [`RECHECK_AFTER`] has passed (the operator may have updated the stream).
    unbatched: Arc<Mutex<HashMap<String, Instant>>>,
}

/// How long a subject whose stream refused batches is published one by one before a batch
/// is tried again.
const RECHECK_AFTER: Duration = Duration::from_secs(300);

/// How a claim's transaction begins (see [`CLAIM`]).
#[doc(hidden)]
pub const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL enable_bitmapscan = off";

/// The relay's claim: up to `$1` rows, the oldest pending row of each aggregate whose retry
/// is due, locked, skipping rows another relay holds. Public for the test of its plan.
///
/// Its cost must stay linear in the pending rows whatever PostgreSQL's statistics say. They
/// nearly always say "no pending rows" (rows are published within milliseconds), so the
/// correlated `NOT EXISTS` this replaced was planned as a nested loop that rescanned every
/// pending row for each candidate: quadratic in a backlog (0.9 s a round at 20,000 rows,
/// found under the checkout bench at 200/s). Here the heads of the aggregates come from one
/// pass (a window over the pending rows), and no plan of this statement can nest one scan of
/// them inside another. Bitmap scans are off for the claim ([`CLAIM_BEGIN`]): they cannot
/// mark the dead index entries that published rows leave behind, so every claim would visit
/// all of them again until the next vacuum.
#[doc(hidden)]
pub const CLAIM: &str = "SELECT o.id, o.subject, o.payload::text AS payload, o.headers, o.attempts \
     FROM tienda_outbox o \
     WHERE o.seq = ANY (ARRAY( \
             SELECT h.seq FROM ( \
                 SELECT seq, next_attempt_at, \
                        row_number() OVER (PARTITION BY aggregate_id ORDER BY seq) AS n \
                   FROM tienda_outbox WHERE published_at IS NULL) h \
              WHERE h.n = 1 AND h.next_attempt_at <= now() \
              ORDER BY h.seq LIMIT $1)) \
       AND o.published_at IS NULL \
     ORDER BY o.seq FOR UPDATE SKIP LOCKED";

/// The most messages NATS takes in one atomic batch (its `max_batch_size` default).
const ATOMIC_MAX: usize = 1000;

/// A row ready to publish.
struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

/// Whether `name` is one of the headers of an atomic batch (`Nats-Batch-Id`, `-Sequence`,
/// `-Commit`). The stream keeps them on each message; whoever publishes a stored message again
/// (dead letters, replays) drops them, or the copy would open a batch that never commits.
pub fn is_batch_header(name: &str) -> bool {
    name.len() > 11 && name[..11].eq_ignore_ascii_case("Nats-Batch-")
}

/// Why an atomic batch was not stored.
#[derive(Debug)]
enum BatchRefused {
    /// The stream does not take atomic batches (`10174`).
    Disabled,
    /// Anything else: a repeated `Nats-Msg-Id` in it (`10201`, a relay that died between
    /// publishing and marking), a timeout, a lost connection.
    Other(String),
}

/// The server's answer to a batch commit: `{"stream","seq","batch","count"}` or an error.
#[derive(serde::Deserialize)]
struct BatchAck {
    #[serde(default)]
    count: u64,
    error: Option<BatchError>,
}

#[derive(serde::Deserialize)]
struct BatchError {
    err_code: u64,
    #[serde(default)]
    description: String,
}

struct Claimed {
    id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    attempts: i32,
}

impl Relay {
    /// A relay over `pool`'s outbox.
    pub fn new(
        pool: PgPool,
        jetstream: jetstream::Context,
        config: RelayConfig,
        registry: &Registry,
    ) -> Self {
        Self {
            pool,
            jetstream,
            config,
            metrics: RelayMetrics::new(registry),
            unbatched: Arc::default(),
        }
    }

    /// Runs until `shutdown` triggers: publish while rows are pending, then wait for a
    /// notification or the poll interval. Errors are logged and retried with backoff; the
    /// relay never gives up while the process lives.
    pub async fn run(self, shutdown: Shutdown) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay cannot LISTEN; polling only");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "outbox relay cannot LISTEN; polling only");
                None
            }
        };
        let mut failures = 0u32;
        let mut last_housekeeping = tokio::time::Instant::now() - Duration::from_secs(3600);
        while !shutdown.is_triggered() {
            if last_housekeeping.elapsed() >= Duration::from_secs(5) {
                last_housekeeping = tokio::time::Instant::now();
                if let Err(err) = self.housekeeping().await {
                    tracing::warn!(error = %err, "outbox housekeeping failed");
                }
            }
            match self.publish_batch().await {
                Ok(n) if n as i64 >= self.config.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    let notified = async {
                        match listener.as_mut() {
                            Some(l) => {
                                let _ = l.recv().await;
                                // Every transaction that enqueued notifies; those already
                                // here have committed, so the next round claims all their
                                // rows. One round for them all, not one (mostly empty) each.
                                while l.next_buffered().is_some() {}
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                        () = shutdown.wait() => {}
                    }
                }
                Err(err) => {
                    failures += 1;
                    let delay =
                        Backoff::new(self.config.retry_base, self.config.retry_max).delay(failures);
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "outbox relay round failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.wait() => {}
                    }
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// One round: claim up to `batch_size` rows (the oldest pending row of each aggregate),
    /// publish them, wait for the acks, mark the acknowledged rows published and schedule a
    /// retry for the others, all in one transaction. Returns how many rows were claimed.
    pub async fn publish_batch(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool.begin_with(CLAIM_BEGIN).await?;
        let rows = sqlx::query(CLAIM)
            .bind(self.config.batch_size)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let claimed: Vec<Claimed> = rows
            .into_iter()
            .map(|row| {
                let payload: String = row.get("payload");
                let headers: sqlx::types::Json<BTreeMap<String, String>> = row.get("headers");
                Claimed {
                    id: row.get("id"),
                    subject: row.get("subject"),
                    payload: payload.into_bytes(),
                    headers: headers.0,
                    attempts: row.get("attempts"),
                }
            })
            .collect();

        let started = Instant::now();
        let mut outgoing = Vec::with_capacity(claimed.len());
        let mut spans = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let mut headers = HeaderMap::new();
            for (name, value) in &row.headers {
                headers.insert(name.as_str(), value.as_str());
            }
            let id = row.id.to_string();
            // The publish is a span of the trace that wrote the row; the message names it
            // as the consumer's parent.
            let parent = row
                .headers
                .get(header::TRACEPARENT)
                .and_then(|v| TraceContext::parse(v));
            let mut span = trace_context::Span::start(
                format!("send {}", row.subject),
                trace_context::Kind::Producer,
                parent,
            );
            if span.is_recording() {
                span.set("messaging.system", "nats");
                span.set("messaging.operation.type", "send");
                span.set("messaging.destination.name", row.subject.clone());
                span.set("messaging.message.id", id.clone());
                span.set("tienda.outbox.attempt", i64::from(row.attempts) + 1);
            }
            headers.insert(header::TRACEPARENT, span.context().to_header().as_str());
            spans.push(span);
            headers.insert(header::MSG_ID, id.as_str());
            outgoing.push(Outgoing {
                subject: row.subject.clone(),
                headers,
                payload: row.payload.clone().into(),
            });
        }
        let acks = self.send(outgoing).await;
        self.metrics
            .ack_latency
            .observe(started.elapsed().as_secs_f64());

        let mut published = Vec::new();
        for ((row, ack), mut span) in claimed.iter().zip(acks).zip(spans) {
            match ack {
                Ok(()) => published.push(row.id),
                Err(error) => {
                    span.fail(error.clone());
                    self.metrics.failures.inc();
                    let delay = Backoff::new(self.config.retry_base, self.config.retry_max)
                        .delay(row.attempts as u32 + 1);
                    tracing::warn!(id = %row.id, subject = %row.subject, %error, retry_in_ms = delay.as_millis() as u64, "outbox publish failed");
                    sqlx::query(
                        "UPDATE tienda_outbox SET attempts = attempts + 1, last_error = $2, \
                         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                    )
                    .bind(row.id)
                    .bind(&error)
                    .bind(delay.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if !published.is_empty() {
            sqlx::query(
                "UPDATE tienda_outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL \
                 WHERE id = ANY($1)",
            )
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.metrics.published.inc_by(published.len() as u64);
        Ok(claimed.len())
    }

    /// Publishes `messages`, returning each one's outcome. The messages of one subject go in
    /// an atomic batch (a subject is stored in one stream, and a batch must stay in one), which
    /// the server stores and, with `sync_interval: always`, syncs to disk once per batch
    /// instead of once per message. A batch that is not stored whole — a stream without
    /// atomic batches, a message id it has already seen, a timeout — is published again one
    /// message at a time, where each repeat is dropped by the stream's duplicate window: never
    /// lost, never twice. No stream lookup: the component's NATS identity may not ask.
    async fn send(&self, messages: Vec<Outgoing>) -> Vec<Result<(), String>> {
        let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, message) in messages.iter().enumerate() {
            by_subject.entry(&message.subject).or_default().push(i);
        }
        let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; messages.len()];
        let mut one_by_one = Vec::new();
        for (subject, indexes) in by_subject {
            if indexes.len() < 2 || !self.takes_batches(subject) {
                one_by_one.extend(indexes);
                continue;
            }
            for chunk in indexes.chunks(ATOMIC_MAX) {
                match self.publish_atomic(&messages, chunk).await {
                    Ok(()) => {
                        for &i in chunk {
                            outcomes[i] = Some(Ok(()));
                        }
                        self.metrics.batches.inc();
                    }
                    Err(refused) => {
                        let reason = match &refused {
                            BatchRefused::Disabled => "atomic publish is disabled",
                            BatchRefused::Other(reason) => reason.as_str(),
                        };
                        tracing::debug!(
                            subject,
                            reason,
                            "atomic batch not stored; publishing one by one"
                        );
                        if matches!(refused, BatchRefused::Disabled) {
                            self.unbatched
                                .lock()
                                .expect("not poisoned")
                                .insert(subject.to_owned(), Instant::now());
                        }
                        one_by_one.extend_from_slice(chunk);
                    }
                }
            }
        }
        let pending: Vec<_> = {
            let mut pending = Vec::with_capacity(one_by_one.len());
            for &i in &one_by_one {
                let m = &messages[i];
                let sent = self
                    .jetstream
                    .publish_with_headers(m.subject.clone(), m.headers.clone(), m.payload.clone())
                    .await;
                pending.push(sent);
            }
            pending
        };
        let acks = futures::future::join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => match tokio::time::timeout(self.config.ack_timeout, ack).await {
                    Ok(Ok(ack)) => {
                        if ack.duplicate {
                            self.metrics.duplicates.inc();
                        }
                        Ok(())
                    }
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err("no acknowledgement in time".to_owned()),
                },
                Err(err) => Err(err.to_string()),
            }
        }))
        .await;
        for (i, ack) in one_by_one.into_iter().zip(acks) {
            outcomes[i] = Some(ack);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err("not published".to_owned())))
            .collect()
    }

    /// Whether `subject` is sent in batches: yes, unless its stream refused one lately.
    fn takes_batches(&self, subject: &str) -> bool {
        let mut unbatched = self.unbatched.lock().expect("not poisoned");
        match unbatched.get(subject) {
            Some(since) if since.elapsed() < RECHECK_AFTER => false,
            Some(_) => {
                unbatched.remove(subject);
                true
            }
            None => true,
        }
    }

    /// One atomic batch (ADR-50): every message but the last is sent without a reply
    /// subject, the last commits the batch and is answered once for all of them.
    async fn publish_atomic(
        &self,
        messages: &[Outgoing],
        chunk: &[usize],
    ) -> Result<(), BatchRefused> {
        let client = self.jetstream.client();
        let batch = Uuid::now_v7().simple().to_string();
        let last = chunk.len();
        let mut commit = None;
        for (n, &i) in chunk.iter().enumerate() {
            let m = &messages[i];
            let mut headers = m.headers.clone();
            headers.insert("Nats-Batch-Id", batch.as_str());
            headers.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            if n + 1 == last {
                headers.insert("Nats-Batch-Commit", "1");
                commit = Some(client.request_with_headers(
                    m.subject.clone(),
                    headers,
                    m.payload.clone(),
                ));
            } else {
                client
                    .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
                    .await
                    .map_err(|e| BatchRefused::Other(e.to_string()))?;
            }
        }
        let Some(commit) = commit else {
            return Ok(());
        };
        let reply = tokio::time::timeout(self.config.ack_timeout, commit)
            .await
            .map_err(|_| BatchRefused::Other("no acknowledgement in time".into()))?
            .map_err(|e| BatchRefused::Other(e.to_string()))?;
        let ack: BatchAck = serde_json::from_slice(&reply.payload)
            .map_err(|e| BatchRefused::Other(format!("unreadable batch acknowledgement: {e}")))?;
        match ack {
            BatchAck { error: Some(e), .. } if e.err_code == 10174 => Err(BatchRefused::Disabled),
            BatchAck { error: Some(e), .. } => Err(BatchRefused::Other(format!(
                "{} ({})",
                e.description, e.err_code
            ))),
            BatchAck { count, .. } if count == chunk.len() as u64 => Ok(()),
            BatchAck { count, .. } => Err(BatchRefused::Other(format!(
                "the batch of {last} was acknowledged with {count} messages"
            ))),
        }
    }

    /// Refreshes the pending gauges and prunes published rows past the retention period.
    pub async fn housekeeping(&self) -> Result<(), sqlx::Error> {
        let row = sqlx::query(
            "SELECT count(*) AS pending, \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest \
             FROM tienda_outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.pending.set(row.get::<i64, _>("pending"));
        self.metrics.oldest_age.set(row.get::<f64, _>("oldest"));
        sqlx::query(
            "DELETE FROM tienda_outbox WHERE id IN (SELECT id FROM tienda_outbox \
             WHERE published_at < now() - make_interval(secs => $1) LIMIT 10000)",
        )
        .bind(self.config.retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
