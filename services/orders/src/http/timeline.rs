//! `GET /v1/orders/{id}/timeline`: what happened to an order, as JSON or — with
//! `Accept: text/event-stream` — as server-sent events that go on as it moves, resumable from
//! `Last-Event-ID` (an entry's `seq`).

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde::Serialize;
use tienda_kit::{Problem, Shutdown, json::Json, jwt::Claims};
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    error::Error,
    store,
    timeline::{self, Reader, TimelineEntry, Watch},
};

/// How long one event stream stays open before the server ends it (the client's
/// `EventSource` reconnects with `Last-Event-ID` and misses nothing).
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// How often an open stream looks at the log even without a notification.
const POLL: Duration = Duration::from_secs(5);

/// An order's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// The entries after `Last-Event-ID` (all without it), oldest first.
    pub items: Vec<TimelineEntry>,
}

/// The order's timeline, for its owner or an admin (another customer's order is 404). With
/// `Accept: text/event-stream`: one event per entry (`id` the entry's `seq`, `event` its
/// `type`, `data` the entry as JSON), then each new entry as it is appended, until the
/// client leaves or the stream has been open five minutes; `Last-Event-ID` resumes after
/// that entry.
#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"),
           ("Last-Event-ID" = Option<i32>, Header, description = "Only entries after this seq")),
    responses((status = 200, description = "The entries (JSON) or their event stream",
               content((Timeline = "application/json"), (String = "text/event-stream"))),
              (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem, description = "A malformed Last-Event-ID"),
              (status = 429, body = Problem, description = "The caller follows too many timelines"),
              (status = 503, body = Problem, description = "Too many open event streams")),
    security(("bearer" = [])))]
pub async fn timeline(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let not_found = || Error::NotFound(format!("No order {id}."));
    let order_id = Uuid::try_parse(&id).map_err(|_| not_found())?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| {
                Error::Invalid(vec![(
                    "Last-Event-ID".into(),
                    "must be the id (seq) of an event of this stream".into(),
                )])
            })?,
    };
    let mut conn = state.db.acquire().await?;
    let owner = store::owner(&mut conn, order_id)
        .await?
        .ok_or_else(not_found)?;
    let reader = if claims.sub.parse::<Uuid>().ok() == Some(owner) {
        Reader::Owner
    } else if claims.has_role("admin") {
        Reader::Admin
    } else {
        return Err(not_found());
    };
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if !streaming {
        let items = timeline::entries(&mut conn, order_id, after, reader).await?;
        return Ok(Json(Timeline { items }).into_response());
    }
    drop(conn);
    let caller = state.feed.caller_slot(&claims.sub).ok_or_else(|| {
        Error::TooManyRequests(format!(
            "You already follow {} order timelines; close one, or read GET \
             /v1/orders/{{id}}/timeline as JSON.",
            timeline::MAX_STREAMS_PER_CALLER
        ))
    })?;
    let permit = state
        .feed
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            Error::Unavailable(
                "Too many order timelines are being streamed; retry shortly, or read \
                 GET /v1/orders/{id}/timeline as JSON."
                    .into(),
            )
        })?;
    let follow = Follow {
        state: state.clone(),
        order_id,
        reader,
        after,
        // Watched before the first read, so an entry appended in between wakes it.
        watch: state.feed.watch(order_id),
        pending: VecDeque::new(),
        first: true,
        ends_at: Instant::now() + STREAM_LIFETIME,
        shutdown: state.shutdown.clone(),
        _permit: permit,
        _caller: caller,
    };
    Ok(Sse::new(events(follow))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// An open stream's place in an order's log.
struct Follow {
    state: AppState,
    order_id: Uuid,
    reader: Reader,
    after: i32,
    watch: Watch,
    pending: VecDeque<TimelineEntry>,
    first: bool,
    ends_at: Instant,
    shutdown: Shutdown,
    _permit: OwnedSemaphorePermit,
    _caller: timeline::CallerSlot,
}

impl Follow {
    /// Reads the entries after the last one sent; `false` when the stream must end.
    async fn read(&mut self) -> bool {
        let read = async {
            let mut conn = self.state.db.acquire().await?;
            timeline::entries(&mut conn, self.order_id, self.after, self.reader).await
        };
        match read.await {
            Ok(entries) => {
                if let Some(last) = entries.last() {
                    self.after = last.seq;
                }
                self.pending.extend(entries);
                true
            }
            Err(error) => {
                tracing::warn!(%error, order_id = %self.order_id, "timeline read failed; ending the stream");
                false
            }
        }
    }

    /// Waits for a reason to read again; `false` when the stream must end.
    async fn wait(&mut self) -> bool {
        tokio::select! {
            _ = self.shutdown.wait() => false,
            _ = tokio::time::sleep_until(self.ends_at) => false,
            _ = tokio::time::sleep(POLL) => true,
            changed = self.watch.appended.changed() => changed.is_ok(),
        }
    }
}

fn events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(entry) = follow.pending.pop_front() {
                let mut event = Event::default()
                    .id(entry.seq.to_string())
                    .event(entry.kind.clone())
                    .json_data(&entry)
                    .expect("an entry serializes");
                if follow.first {
                    // How long a client waits before reconnecting.
                    event = event.retry(Duration::from_secs(2));
                    follow.first = false;
                }
                return Some((Ok(event), follow));
            }
            if follow.first {
                follow.first = false;
                if !follow.read().await {
                    return None;
                }
                follow.first = !follow.pending.is_empty();
                continue;
            }
            if !follow.wait().await || !follow.read().await {
                return None;
            }
        }
    })
}
