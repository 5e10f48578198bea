//! The consumer runtime: reads a durable pull consumer, applies each message exactly once.
//!
//! For each message: begin a transaction; record the message id in the inbox (a repeat finds
//! it there and is acknowledged without running the handler); run the handler in the same
//! transaction; commit; then `ack` (a lost ack is a redelivery the inbox absorbs). A transient
//! failure rolls back and `nak`s with a growing delay; a permanent failure — or a transient
//! one on the last allowed delivery — rolls back, copies the message with its headers and the
//! reason to the component's dead-letter stream, and `term`s it. A message that never gets an answer (handler hung, process killed)
//! and exhausts `max_deliver` is caught from JetStream's max-deliveries advisory and
//! dead-lettered too. Long handlers send `in_progress` so the ack wait does not expire.
//!
//! Streams and consumers are provisioned by the operator or `tienda up`; a missing consumer is
//! a startup error that says so.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use async_nats::{
    HeaderMap,
    jetstream::{self, AckKind, consumer::PullConsumer},
};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use sqlx::{PgConnection, PgPool};
use tienda_events::{Envelope, Message, header};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use crate::consumer_config::ConsumerConfig;
use crate::{
    dead_letter,
    resilience::Backoff,
    shutdown::Shutdown,
    trace_context::{self, TraceContext},
};

/// A message as the handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// The bytes (an [`Envelope`] as JSON for Tienda's own messages).
    pub payload: Bytes,
    /// Its NATS headers.
    pub headers: HeaderMap,
    /// The id the inbox keys on.
    pub message_id: String,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// Which delivery this is (1 for the first).
    pub delivered: i64,
}

impl Delivery {
    /// Decodes the payload as contract `T`; a payload that does not decode is permanent
    /// (retrying cannot fix it), so it is dead-lettered at once.
    pub fn envelope<T: Message>(&self) -> Result<Envelope<T>, HandlerError> {
        let raw: Envelope<serde_json::Value> = serde_json::from_slice(&self.payload)
            .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("not a Tienda envelope: {e}")))?;
        raw.decode::<T>()
            .map_err(|e| HandlerError::Permanent(e.into()))
    }
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a dependency was down, a lock timed out): the message is redelivered
    /// after a delay, and dead-lettered after the last allowed delivery.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (malformed, violates a rule): dead-lettered at once.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        HandlerError::Transient(err.into())
    }
}

/// What a service does with one message. The work must go through `conn` (the transaction the
/// inbox row is in) for exactly-once effects; events it emits go through
/// [`crate::outbox::enqueue`] on the same connection.
pub trait Handler: Send + Sync + 'static {
    /// Applies one message.
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        delivery: &'a Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// Consumer metrics, registered in the service's registry.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    messages: IntCounterVec,
    redeliveries: IntCounterVec,
    duration: HistogramVec,
    pending: IntGaugeVec,
    batches: IntCounterVec,
    dead_letters: IntGaugeVec,
}

impl ConsumerMetrics {
    /// Registers the consumer metrics in `registry`. Make one per registry and hand it to every
    /// consumer ([`Consumer::with_metrics`]): a second set registered in the same registry is
    /// refused by it, and what it counts is never exported.
    pub fn new(registry: &Registry) -> Self {
        let messages = IntCounterVec::new(
            Opts::new(
                "consumer_messages_total",
                "Messages handled, by outcome: processed, duplicate, retried, dead_lettered",
            ),
            &["consumer", "outcome"],
        )
        .unwrap();
        let redeliveries = IntCounterVec::new(
            Opts::new(
                "consumer_redeliveries_total",
                "Messages received more than once",
            ),
            &["consumer"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "consumer_handler_duration_seconds",
                "Time to handle and commit a message",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
            ]),
            &["consumer"],
        )
        .unwrap();
        let pending = IntGaugeVec::new(
            Opts::new(
                "consumer_pending_messages",
                "Messages in the stream the consumer has not received yet (lag)",
            ),
            &["consumer"],
        )
        .unwrap();
        let batches = IntCounterVec::new(
            Opts::new(
                "consumer_batches_total",
                "Batches of messages applied in one transaction, by outcome: committed, or split \
                 (a failure rolled the batch back and its messages were applied one by one)",
            ),
            &["consumer", "outcome"],
        )
        .unwrap();
        let dead_letters = IntGaugeVec::new(
            Opts::new(
                "dead_letters_waiting",
                "Messages parked in a dead-letter stream, waiting for a replay or a discard",
            ),
            &["stream"],
        )
        .unwrap();
        for metric in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(redeliveries.clone()),
            Box::new(duration.clone()),
            Box::new(pending.clone()),
            Box::new(batches.clone()),
            Box::new(dead_letters.clone()),
        ] {
            if let Err(error) = registry.register(metric) {
                tracing::warn!(%error, "consumer metrics registered twice; the second set is not exported");
            }
        }
        Self {
            messages,
            redeliveries,
            duration,
            pending,
            batches,
            dead_letters,
        }
    }
}

/// A running consumer's parts.
pub struct Consumer<H> {
    pool: PgPool,
    jetstream: jetstream::Context,
    client: async_nats::Client,
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Shared<H> {
    pool: PgPool,
    jetstream: jetstream::Context,
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    max_deliver: i64,
    ack_wait: Duration,
}

impl<H: Handler> Consumer<H> {
    /// A consumer over `pool` and the NATS `client`.
    pub fn new(
        pool: PgPool,
        client: async_nats::Client,
        config: ConsumerConfig,
        handler: H,
        registry: &Registry,
    ) -> Self {
        Self::with_metrics(
            pool,
            client,
            config,
            handler,
            ConsumerMetrics::new(registry),
        )
    }

    /// Like [`Consumer::new`], counting into `metrics` (shared by a process's consumers).
    pub fn with_metrics(
        pool: PgPool,
        client: async_nats::Client,
        config: ConsumerConfig,
        handler: H,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self {
            pool,
            jetstream: jetstream::new(client.clone()),
            client,
            config,
            handler: Arc::new(handler),
            metrics,
        }
    }

    /// Binds to the durable consumer (an error if it is not provisioned) and handles messages
    /// until `shutdown`; then stops pulling and waits for the handlers in flight.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Self {
            pool,
            jetstream,
            client,
            config,
            handler,
            metrics,
        } = self;
        let name = format!("{}/{}", config.stream, config.durable);
        let stream = jetstream
            .get_stream(&config.stream)
            .await
            .with_context(|| {
                format!(
                    "stream {} not found: provisioning (the operator or `tienda up`) creates it",
                    config.stream
                )
            })?;
        let consumer: PullConsumer = stream.get_consumer(&config.durable).await.map_err(|err| {
            anyhow::anyhow!(
                "consumer {name} not found ({err}): provisioning (the operator or `tienda up`) creates it"
            )
        })?;
        let info = consumer.cached_info().config.clone();
        let shared = Arc::new(Shared {
            pool,
            jetstream: jetstream.clone(),
            config: config.clone(),
            handler,
            metrics: metrics.clone(),
            max_deliver: info.max_deliver,
            ack_wait: info.ack_wait,
        });

        let advisories = tokio::spawn(dead_letter::watch_max_deliveries(
            client,
            jetstream.clone(),
            config.clone(),
            shutdown.clone(),
        ));
        // Every series of this consumer exists from the start at 0, so rates and alerts work
        // before the first failure (a series that appears with its first increment is missed
        // by `rate()`).
        for outcome in ["processed", "duplicate", "retried", "dead_lettered"] {
            metrics.messages.with_label_values(&[&name, outcome]);
        }
        metrics.redeliveries.with_label_values(&[&name]);
        for outcome in ["committed", "split"] {
            metrics.batches.with_label_values(&[&name, outcome]);
        }
        let dead_letter_stream = tienda_events::dead_letter::stream(&config.component);
        let lag = tokio::spawn(track_lag(
            consumer.clone(),
            metrics.pending.with_label_values(&[&name]),
            jetstream.clone(),
            metrics
                .dead_letters
                .with_label_values(&[&dead_letter_stream]),
            dead_letter_stream,
            shutdown.clone(),
        ));

        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut in_flight = tokio::task::JoinSet::new();
        let mut failures = 0u32;
        'outer: while !shutdown.is_triggered() {
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(config.concurrency.max(1) * config.batch.max(1))
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
            {
                Ok(messages) => {
                    failures = 0;
                    messages
                }
                Err(err) => {
                    failures += 1;
                    let delay = Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
                        .delay(failures);
                    tracing::warn!(consumer = %name, error = %err, "cannot pull; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = shutdown.wait() => break,
                    }
                }
            };
            loop {
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = shutdown.wait() => break 'outer,
                };
                let next = tokio::select! {
                    next = messages.next() => next,
                    () = shutdown.wait() => break 'outer,
                };
                while in_flight.try_join_next().is_some() {}
                match next {
                    Some(Ok(message)) => {
                        // Batched: whatever else has already arrived joins this message.
                        let mut batch = vec![message];
                        let mut resubscribe = false;
                        while batch.len() < shared.config.batch {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(message))) => batch.push(message),
                                Some(Some(Err(err))) => {
                                    tracing::warn!(consumer = %name, error = %err, "pull failed; re-subscribing");
                                    resubscribe = true;
                                    break;
                                }
                                Some(None) => {
                                    resubscribe = true;
                                    break;
                                }
                                None => break,
                            }
                        }
                        let shared = shared.clone();
                        in_flight.spawn(async move {
                            if batch.len() == 1 {
                                process(&shared, batch.pop().expect("one message")).await;
                            } else {
                                process_batch(&shared, batch).await;
                            }
                            drop(permit);
                        });
                        if resubscribe {
                            break;
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(consumer = %name, error = %err, "pull failed; re-subscribing");
                        break;
                    }
                    None => break,
                }
            }
        }
        // Drain: no new pulls; messages already handed to handlers finish. Messages the client
        // buffered but never started are redelivered after their ack wait.
        while in_flight.join_next().await.is_some() {}
        advisories.abort();
        lag.abort();
        tracing::info!(consumer = %name, "consumer stopped");
        Ok(())
    }
}

/// Every 5 s: the consumer's lag, and what waits in its component's dead-letter stream.
async fn track_lag(
    mut consumer: PullConsumer,
    gauge: prometheus::IntGauge,
    jetstream: jetstream::Context,
    dead_letters: prometheus::IntGauge,
    dead_letter_stream: String,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        if let Ok(info) = consumer.info().await {
            gauge.set(info.num_pending as i64);
        }
        match jetstream.get_stream(&dead_letter_stream).await {
            Ok(mut stream) => {
                if let Ok(info) = stream.info().await {
                    dead_letters.set(info.state.messages as i64);
                }
            }
            // No dead letter yet: the stream is made with the first.
            Err(_) => dead_letters.set(0),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.wait() => {}
        }
    }
}

/// The id a consumer's inbox keys a message on: `Tienda-Event-Id` when set (a replayed dead
/// letter), else `Nats-Msg-Id` (the outbox row id), else `<stream>:<sequence>`. Dead letters
/// record it as `Tienda-Event-Id`, so a replay is recognised as the message it was.
pub(crate) fn message_id(headers: &HeaderMap, stream: &str, sequence: u64) -> String {
    headers
        .get(header::EVENT_ID)
        .or_else(|| headers.get(header::MSG_ID))
        .map(|v| v.to_string())
        .unwrap_or_else(|| format!("{stream}:{sequence}"))
}

/// A received message ready to apply: its delivery, its span (exported, a child of the
/// publishing span named by its `traceparent`) and the log span.
struct Received {
    message: jetstream::Message,
    delivery: Delivery,
    trace: trace_context::Span,
    span: tracing::Span,
}

/// Reads a message's JetStream metadata, counts a redelivery and opens its span; a message
/// without metadata is terminated (`None`).
async fn receive<H: Handler>(
    shared: &Shared<H>,
    consumer_label: &str,
    message: jetstream::Message,
) -> Option<Received> {
    let (sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(err) => {
            tracing::warn!(error = %err, "message without JetStream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        }
    };
    let headers = message.headers.clone().unwrap_or_default();
    let delivery = Delivery {
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        message_id: message_id(&headers, &shared.config.stream, sequence),
        headers,
        stream_sequence: sequence,
        delivered,
    };
    if delivered > 1 {
        shared
            .metrics
            .redeliveries
            .with_label_values(&[consumer_label])
            .inc();
    }
    let parent = delivery
        .headers
        .get(header::TRACEPARENT)
        .and_then(|v| TraceContext::parse(v.as_str()));
    let mut trace = trace_context::Span::start(
        format!("process {}", delivery.subject),
        trace_context::Kind::Consumer,
        parent,
    );
    if trace.is_recording() {
        trace.set("messaging.system", "nats");
        trace.set("messaging.operation.type", "process");
        trace.set("messaging.destination.name", delivery.subject.clone());
        trace.set(
            "messaging.consumer.group.name",
            shared.config.durable.clone(),
        );
        trace.set("messaging.message.id", delivery.message_id.clone());
        trace.set("tienda.stream", shared.config.stream.clone());
        trace.set("tienda.stream.sequence", sequence as i64);
        trace.set("tienda.delivery.count", delivered);
    }
    let context = trace.context();
    let span = tracing::info_span!(
        "consume",
        consumer = %consumer_label,
        subject = %delivery.subject,
        message_id = %delivery.message_id,
        delivered,
        trace_id = %context.trace_id(),
    );
    Some(Received {
        message,
        delivery,
        trace,
        span,
    })
}

async fn process<H: Handler>(shared: &Shared<H>, message: jetstream::Message) {
    let consumer_label = format!("{}/{}", shared.config.stream, shared.config.durable);
    let Some(received) = receive(shared, &consumer_label, message).await else {
        return;
    };
    apply_and_settle(shared, &consumer_label, received).await;
}

/// One message in its own transaction, then its acknowledgement.
async fn apply_and_settle<H: Handler>(
    shared: &Shared<H>,
    consumer_label: &str,
    received: Received,
) {
    let Received {
        message,
        delivery,
        trace,
        span,
    } = received;
    let started = std::time::Instant::now();
    let outcome = trace
        .context()
        .scope(apply(shared, &message, &delivery).instrument(span.clone()))
        .await;
    shared
        .metrics
        .duration
        .with_label_values(&[consumer_label])
        .observe(started.elapsed().as_secs_f64());
    settle(
        shared,
        consumer_label,
        &message,
        &delivery,
        outcome,
        trace,
        span,
    )
    .await;
}

/// Messages already received, applied in order in one transaction with one commit
/// ([`ConsumerConfig::batch`]). Any failure (a handler's, or the database's) rolls the batch
/// back and applies its messages one by one, so a bad message is retried or dead-lettered
/// on its own and the others still apply exactly once.
async fn process_batch<H: Handler>(shared: &Shared<H>, messages: Vec<jetstream::Message>) {
    let consumer_label = format!("{}/{}", shared.config.stream, shared.config.durable);
    let mut batch = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(received) = receive(shared, &consumer_label, message).await {
            batch.push(received);
        }
    }
    let started = std::time::Instant::now();
    let work = async {
        let mut tx = shared.pool.begin().await?;
        let ids: Vec<&str> = batch
            .iter()
            .map(|r| r.delivery.message_id.as_str())
            .collect();
        let mut fresh: std::collections::HashSet<String> = sqlx::query_scalar(
            "INSERT INTO tienda_inbox (consumer, message_id) SELECT $1, unnest($2::text[]) \
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&shared.config.durable)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        for received in &batch {
            // The first of two deliveries of one id in a batch is fresh, the second not.
            if !fresh.remove(&received.delivery.message_id) {
                outcomes.push(Applied::Duplicate);
                continue;
            }
            let handled = received
                .trace
                .context()
                .scope(
                    shared
                        .handler
                        .handle(&mut tx, &received.delivery)
                        .instrument(received.span.clone()),
                )
                .await;
            if let Err(err) = handled {
                tracing::debug!(parent: &received.span, error = %err, "handler failed in a batch; applying the batch's messages one by one");
                tx.rollback().await.ok();
                return Ok::<_, sqlx::Error>(None);
            }
            outcomes.push(Applied::Processed);
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    };
    let messages: Vec<&jetstream::Message> = batch.iter().map(|r| &r.message).collect();
    let result = with_heartbeat(shared, &messages, work).await;
    match result {
        Ok(Some(outcomes)) => {
            shared
                .metrics
                .batches
                .with_label_values(&[&consumer_label, "committed"])
                .inc();
            let elapsed = started.elapsed().as_secs_f64();
            for (received, outcome) in batch.into_iter().zip(outcomes) {
                shared
                    .metrics
                    .duration
                    .with_label_values(&[&consumer_label])
                    .observe(elapsed);
                settle(
                    shared,
                    &consumer_label,
                    &received.message,
                    &received.delivery,
                    outcome,
                    received.trace,
                    received.span,
                )
                .await;
            }
        }
        Ok(None) | Err(_) => {
            shared
                .metrics
                .batches
                .with_label_values(&[&consumer_label, "split"])
                .inc();
            if let Err(err) = result {
                tracing::warn!(consumer = %consumer_label, error = %err, "batch failed; applying its messages one by one");
            }
            for received in batch {
                apply_and_settle(shared, &consumer_label, received).await;
            }
        }
    }
}

/// Acknowledges a message by its outcome: ack, nak with a delay, or dead-letter and term.
async fn settle<H: Handler>(
    shared: &Shared<H>,
    consumer_label: &str,
    message: &jetstream::Message,
    delivery: &Delivery,
    outcome: Applied,
    mut trace: trace_context::Span,
    span: tracing::Span,
) {
    let (sequence, delivered) = (delivery.stream_sequence, delivery.delivered);
    let context = trace.context();

    // The acknowledgement and its logs belong to the message's span. Never `span.enter()`
    // here: a guard held across an `.await` corrupts the span stack of whatever task runs
    // next on the thread (tracing-subscriber then panics, "tried to clone a span that already
    // closed", killing that task — the outbox relay, say).
    let settled = async {
        let result = match outcome {
            Applied::Processed | Applied::Duplicate => {
                let label = if matches!(outcome, Applied::Processed) {
                    "processed"
                } else {
                    "duplicate"
                };
                shared
                    .metrics
                    .messages
                    .with_label_values(&[consumer_label, label])
                    .inc();
                // A plain ack, not a double ack waiting for the server's reply: an ack that
                // is lost only brings the message back after its ack wait, and the inbox
                // answers the repeat as a duplicate. The reply would cost a round trip per
                // message for nothing.
                trace.set("tienda.outcome", label);
                message.ack().await
            }
            Applied::Failed(HandlerError::Transient(err))
                if shared.max_deliver <= 0 || delivered < shared.max_deliver =>
            {
                let delay = Backoff::new(shared.config.retry_base, shared.config.retry_max)
                    .delay(delivered as u32);
                tracing::warn!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, "handler failed; will retry");
                trace.set("tienda.outcome", "retried");
                trace.fail(format!("{err:#}"));
                shared
                    .metrics
                    .messages
                    .with_label_values(&[consumer_label, "retried"])
                    .inc();
                message.ack_with(AckKind::Nak(Some(delay))).await
            }
            Applied::Failed(err) => {
                let reason = match &err {
                    HandlerError::Permanent(e) => format!("permanent failure: {e:#}"),
                    HandlerError::Transient(e) => {
                        format!(
                            "failed on the last of {} deliveries: {e:#}",
                            shared.max_deliver
                        )
                    }
                };
                let copy = dead_letter::Letter {
                    stream: &shared.config.stream,
                    consumer: &shared.config.durable,
                    subject: &delivery.subject,
                    sequence,
                    deliveries: delivered,
                    reason: &reason,
                    headers: &delivery.headers,
                    payload: delivery.payload.clone(),
                };
                match dead_letter::publish(&shared.jetstream, &shared.config.component, copy).await {
                    Ok(()) => {
                        tracing::error!(%reason, "message dead-lettered");
                        trace.set("tienda.outcome", "dead_lettered");
                        trace.fail(reason.clone());
                        shared
                            .metrics
                            .messages
                            .with_label_values(&[consumer_label, "dead_lettered"])
                            .inc();
                        message.ack_with(AckKind::Term).await
                    }
                    Err(dlq_err) => {
                        // Never drop a message we could not park: retry it instead.
                        tracing::error!(error = %dlq_err, %reason, "cannot dead-letter; retrying the message");
                        trace.set("tienda.outcome", "retried");
                        trace.fail(reason.clone());
                        shared
                            .metrics
                            .messages
                            .with_label_values(&[consumer_label, "retried"])
                            .inc();
                        message
                            .ack_with(AckKind::Nak(Some(shared.config.retry_max)))
                            .await
                    }
                }
            }
        };
        if let Err(err) = result {
            // The message will be redelivered; the inbox makes that harmless.
            tracing::warn!(error = %err, "acknowledging failed");
        }
    }
    .instrument(span);
    context.scope(settled).await;
    trace.end();
}

enum Applied {
    Processed,
    Duplicate,
    Failed(HandlerError),
}

async fn apply<H: Handler>(
    shared: &Shared<H>,
    message: &jetstream::Message,
    delivery: &Delivery,
) -> Applied {
    let work = async {
        let mut tx = shared.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO tienda_inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&shared.config.durable)
        .bind(&delivery.message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.commit().await?;
            return Ok::<_, sqlx::Error>(Applied::Duplicate);
        }
        match shared.handler.handle(&mut tx, delivery).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(Applied::Processed)
            }
            Err(err) => {
                tx.rollback().await.ok();
                Ok(Applied::Failed(err))
            }
        }
    };
    let work = async {
        match work.await {
            Ok(applied) => applied,
            Err(err) => Applied::Failed(HandlerError::from(err)),
        }
    };
    with_heartbeat(shared, &[message], work).await
}

/// Runs `work`, meanwhile sending `in_progress` for `messages` every third of the ack wait
/// (when [`ConsumerConfig::progress_heartbeat`] is on), so long work keeps its messages.
async fn with_heartbeat<H, T>(
    shared: &Shared<H>,
    messages: &[&jetstream::Message],
    work: impl Future<Output = T>,
) -> T {
    if !shared.config.progress_heartbeat {
        return work.await;
    }
    let every = (shared.ack_wait / 3).max(Duration::from_millis(100));
    let heartbeat = async {
        loop {
            tokio::time::sleep(every).await;
            for message in messages {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %err, "in_progress failed");
                }
            }
        }
    };
    tokio::select! {
        done = work => done,
        never = heartbeat => never,
    }
}
