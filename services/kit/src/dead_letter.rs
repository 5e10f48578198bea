//! Dead letters: messages a consumer gave up on, parked in the component's dead-letter stream
//! (`DLQ_<COMPONENT>`, subjects `tienda.dlq.<component>.<consumer>`) with their original
//! headers, payload and the reason — and the admin API to list, inspect, replay and discard them.
//!
//! A dead letter's `Nats-Msg-Id` is `dlq-<stream>-<sequence>`, so the consumer's own copy and
//! the copies made from max-deliveries advisories (every replica hears them) land once. The id
//! the consumer's inbox knew the message by is kept as `Tienda-Event-Id`, and a replay carries
//! it, so replaying a message whose effect committed applies nothing twice.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream};
use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tienda_events::{dead_letter as names, header};
use utoipa::{IntoParams, ToSchema};

use crate::{
    consumer_config::ConsumerConfig,
    json::Json,
    jwt::{RequireRole, Verifier, require_role},
    problem::Problem,
    resilience::Backoff,
    shutdown::Shutdown,
};

/// Headers added to a dead letter.
pub mod dlq_header {
    /// The stream the message came from.
    pub const STREAM: &str = "Tienda-Dlq-Stream";
    /// The consumer that gave up.
    pub const CONSUMER: &str = "Tienda-Dlq-Consumer";
    /// The subject it was published on (where a replay sends it).
    pub const SUBJECT: &str = "Tienda-Dlq-Subject";
    /// Its sequence in the original stream.
    pub const SEQUENCE: &str = "Tienda-Dlq-Sequence";
    /// How many times it was delivered.
    pub const DELIVERIES: &str = "Tienda-Dlq-Deliveries";
    /// Why it was given up on.
    pub const REASON: &str = "Tienda-Dlq-Reason";
}

/// What to park.
#[derive(Debug)]
pub struct Letter<'a> {
    /// Original stream.
    pub stream: &'a str,
    /// Consumer that gave up.
    pub consumer: &'a str,
    /// Original subject.
    pub subject: &'a str,
    /// Original stream sequence.
    pub sequence: u64,
    /// Deliveries made.
    pub deliveries: i64,
    /// Why.
    pub reason: &'a str,
    /// Original headers.
    pub headers: &'a HeaderMap,
    /// Original payload.
    pub payload: Bytes,
}

/// Publishes a dead letter and waits for the stream's acknowledgement.
pub async fn publish(
    js: &jetstream::Context,
    component: &str,
    letter: Letter<'_>,
) -> anyhow::Result<()> {
    // Everything but the atomic batch the relay published it in (`Nats-Batch-*`): on the
    // dead-letter stream those would start a batch of one that is never committed.
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        if crate::outbox::is_batch_header(name.as_ref()) {
            continue;
        }
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    // The dead letter's own `Nats-Msg-Id` replaces the original, so the id the consumer's inbox
    // knows the message by travels as `Tienda-Event-Id`: a replay of a message whose effect did
    // commit (its ack was lost) is then skipped as the duplicate it is.
    let event_id = crate::consumer::message_id(letter.headers, letter.stream, letter.sequence);
    headers.insert(header::EVENT_ID, event_id.as_str());
    headers.insert(
        header::MSG_ID,
        format!("dlq-{}-{}", letter.stream, letter.sequence).as_str(),
    );
    headers.insert(dlq_header::STREAM, letter.stream);
    headers.insert(dlq_header::CONSUMER, letter.consumer);
    headers.insert(dlq_header::SUBJECT, letter.subject);
    headers.insert(dlq_header::SEQUENCE, letter.sequence.to_string().as_str());
    headers.insert(
        dlq_header::DELIVERIES,
        letter.deliveries.to_string().as_str(),
    );
    // Header values are single-line.
    headers.insert(
        dlq_header::REASON,
        letter.reason.replace(['\r', '\n'], " ").as_str(),
    );
    let subject = names::subject(component, letter.consumer);
    js.publish_with_headers(subject, headers, letter.payload)
        .await?
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "dead-letter stream {} did not acknowledge: {e}",
                names::stream(component)
            )
        })?;
    Ok(())
}

/// JetStream's max-deliveries advisory payload (the fields we use).
#[derive(Debug, Deserialize)]
pub(crate) struct MaxDeliveriesAdvisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: i64,
}

/// Listens to JetStream's max-deliveries advisories for one consumer and parks each message
/// that ran out of deliveries without an answer (handler hung, process killed).
pub(crate) async fn watch_max_deliveries(
    client: async_nats::Client,
    js: jetstream::Context,
    config: ConsumerConfig,
    shutdown: Shutdown,
) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        config.stream, config.durable
    );
    let mut advisories = match client.subscribe(subject.clone()).await {
        Ok(sub) => sub,
        Err(err) => {
            tracing::error!(error = %err, %subject, "cannot watch max-deliveries advisories");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            next = advisories.next() => match next { Some(m) => m, None => return },
            () = shutdown.wait() => return,
        };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload)
        else {
            tracing::warn!("unreadable max-deliveries advisory");
            continue;
        };
        let reason = format!(
            "exhausted {} deliveries without an acknowledgement (handler hung or process stopped)",
            advisory.deliveries
        );
        for attempt in 1..=5u32 {
            match park_from_stream(&js, &config.component, &advisory, &reason).await {
                Ok(()) => {
                    tracing::error!(stream = %advisory.stream, consumer = %advisory.consumer, sequence = advisory.stream_seq, "message dead-lettered after max deliveries");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "cannot dead-letter from advisory yet");
                    let pause = Backoff::new(Duration::from_millis(200), Duration::from_secs(2))
                        .delay(attempt);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

async fn park_from_stream(
    js: &jetstream::Context,
    component: &str,
    advisory: &MaxDeliveriesAdvisory,
    reason: &str,
) -> anyhow::Result<()> {
    let stream = js.get_stream(&advisory.stream).await?;
    let original = stream.get_raw_message(advisory.stream_seq).await?;
    publish(
        js,
        component,
        Letter {
            stream: &advisory.stream,
            consumer: &advisory.consumer,
            subject: original.subject.as_str(),
            sequence: advisory.stream_seq,
            deliveries: advisory.deliveries,
            reason,
            headers: &original.headers,
            payload: original.payload,
        },
    )
    .await
}

/// State of the admin router: JetStream and the component whose dead letters it serves.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    /// JetStream.
    pub jetstream: jetstream::Context,
    /// The component (`orders`), which names the stream.
    pub component: String,
}

/// A dead letter as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream: the id used by the other endpoints.
    pub sequence: u64,
    /// When it was parked (RFC 3339).
    pub dead_lettered_at: String,
    /// The consumer that gave up.
    pub consumer: String,
    /// Where it came from.
    pub stream: String,
    /// Its original subject (where a replay sends it).
    pub subject: String,
    /// Its original sequence.
    pub original_sequence: u64,
    /// Deliveries made before giving up.
    pub deliveries: i64,
    /// Why.
    pub reason: String,
    /// The envelope `type`, when it is a Tienda message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// All headers, original and dead-letter ones (inspect only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// The payload as JSON when it is JSON (inspect only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// The payload in base64 when it is not JSON (inspect only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    /// Oldest first.
    pub items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The answer to a replay.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// The subject the message was published to again.
    pub subject: String,
    /// Its new sequence in the original stream.
    pub stream_sequence: u64,
}

fn text(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.to_string()).unwrap_or_default()
}

fn describe(message: &jetstream::message::StreamMessage, full: bool) -> DeadLetter {
    let h = &message.headers;
    let mut letter = DeadLetter {
        sequence: message.sequence,
        dead_lettered_at: message.time.to_string(),
        consumer: text(h, dlq_header::CONSUMER),
        stream: text(h, dlq_header::STREAM),
        subject: text(h, dlq_header::SUBJECT),
        original_sequence: text(h, dlq_header::SEQUENCE).parse().unwrap_or_default(),
        deliveries: text(h, dlq_header::DELIVERIES).parse().unwrap_or_default(),
        reason: text(h, dlq_header::REASON),
        message_type: h.get(header::TYPE).map(|v| v.to_string()),
        headers: None,
        payload: None,
        payload_base64: None,
    };
    if full {
        letter.headers = Some(
            h.iter()
                .map(|(name, values)| {
                    let value = values
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    (name.to_string(), value)
                })
                .collect(),
        );
        match serde_json::from_slice(&message.payload) {
            Ok(json) => letter.payload = Some(json),
            Err(_) => {
                letter.payload_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(&message.payload))
            }
        }
    }
    letter
}

fn unavailable(err: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %err, "dead-letter stream unavailable");
    Problem::unavailable("The dead-letter stream cannot be read right now; retry shortly.")
}

impl DeadLetters {
    async fn stream(&self) -> Result<jetstream::stream::Stream, Problem> {
        self.jetstream
            .get_stream(names::stream(&self.component))
            .await
            .map_err(unavailable)
    }

    async fn get(&self, sequence: u64) -> Result<jetstream::message::StreamMessage, Problem> {
        let stream = self.stream().await?;
        stream.get_raw_message(sequence).await.map_err(|err| {
            if err.to_string().contains("no message found") || err.to_string().contains("not found")
            {
                Problem::not_found(format!("no dead letter with sequence {sequence}"))
            } else {
                unavailable(err)
            }
        })
    }
}

/// `GET /admin/dead-letters`: oldest first, keyset-paged by sequence.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "dead letters", params(PageQuery),
    responses((status = 200, body = DeadLetterPage), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<DeadLetters>,
    Query(query): Query<PageQuery>,
) -> Result<Json<DeadLetterPage>, Problem> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Problem::validation("limit must be between 1 and 200")
            .with_field("limit", "must be between 1 and 200"));
    }
    let mut from = match query.cursor.as_deref() {
        Some(cursor) => cursor.parse::<u64>().map_err(|_| {
            Problem::validation("cursor is not one this API returned")
                .with_field("cursor", "invalid")
        })?,
        None => 1,
    };
    let mut stream = state.stream().await?;
    let last = stream
        .info()
        .await
        .map_err(unavailable)?
        .state
        .last_sequence;
    let mut items = Vec::new();
    while items.len() < limit && from <= last {
        match stream
            .direct_get_next_for_subject(names::all_subjects(&state.component), Some(from))
            .await
        {
            Ok(message) => {
                from = message.sequence + 1;
                items.push(describe(&message, false));
            }
            Err(err) if err.to_string().contains("not found") => break,
            Err(err) => return Err(unavailable(err)),
        }
    }
    let next_cursor = (items.len() == limit && from <= last).then(|| from.to_string());
    Ok(Json(DeadLetterPage { items, next_cursor }))
}

/// `GET /admin/dead-letters/{sequence}`: one dead letter with headers and payload.
#[utoipa::path(get, path = "/admin/dead-letters/{sequence}", tag = "dead letters",
    responses((status = 200, body = DeadLetter), (status = 404, body = Problem)))]
pub async fn inspect(
    State(state): State<DeadLetters>,
    Path(sequence): Path<u64>,
) -> Result<Json<DeadLetter>, Problem> {
    Ok(Json(describe(&state.get(sequence).await?, true)))
}

/// `POST /admin/dead-letters/{sequence}/replay`: publishes the original message to its
/// subject again (same event id, so a consumer that did apply it skips it) and removes the
/// dead letter.
#[utoipa::path(post, path = "/admin/dead-letters/{sequence}/replay", tag = "dead letters",
    responses((status = 202, body = Replayed), (status = 404, body = Problem)))]
pub async fn replay(
    State(state): State<DeadLetters>,
    Path(sequence): Path<u64>,
) -> Result<(StatusCode, Json<Replayed>), Problem> {
    let letter = state.get(sequence).await?;
    let subject = text(&letter.headers, dlq_header::SUBJECT);
    if subject.is_empty() {
        return Err(Problem::conflict(
            "this dead letter does not record its original subject",
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Tienda-Dlq-")
            || name == header::MSG_ID
            || crate::outbox::is_batch_header(&name)
        {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.as_str());
        }
    }
    // `Tienda-Event-Id` (set when the letter was parked) is copied above: the consumer's inbox
    // keys on it, not on the fresh de-duplication id below.
    // A fresh de-duplication id: the original one may still be inside the duplicate window.
    headers.insert(
        header::MSG_ID,
        format!("replay-{}-{}", names::stream(&state.component), sequence).as_str(),
    );
    let ack = state
        .jetstream
        .publish_with_headers(subject.clone(), headers, letter.payload.clone())
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    state
        .stream()
        .await?
        .delete_message(sequence)
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            subject,
            stream_sequence: ack.sequence,
        }),
    ))
}

/// `DELETE /admin/dead-letters/{sequence}`: discards a dead letter for good.
#[utoipa::path(delete, path = "/admin/dead-letters/{sequence}", tag = "dead letters",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn discard(
    State(state): State<DeadLetters>,
    Path(sequence): Path<u64>,
) -> Result<StatusCode, Problem> {
    state.get(sequence).await?;
    state
        .stream()
        .await?
        .delete_message(sequence)
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The admin router: every route needs an access token with the `admin` role (message
/// contents are exposed), verified by `verifier` against auth's keys.
pub fn router(state: DeadLetters, verifier: Verifier) -> Router {
    Router::new()
        .route("/admin/dead-letters", get(list))
        .route(
            "/admin/dead-letters/{sequence}",
            get(inspect).delete(discard),
        )
        .route("/admin/dead-letters/{sequence}/replay", post(replay))
        .route_layer(axum::middleware::from_fn_with_state(
            RequireRole {
                verifier,
                role: "admin",
            },
            require_role,
        ))
        .with_state(state)
}

/// The OpenAPI description of [`router`].
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, inspect, replay, discard),
    components(schemas(DeadLetter, DeadLetterPage, Replayed))
)]
pub struct DeadLetterApi;
