//! An order's timeline: its log entries as customers read them, and the feed that wakes open
//! event streams when an entry is appended (PostgreSQL `LISTEN order_events`, notified by a
//! trigger on commit, so every replica hears of appends made by any other).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, postgres::PgListener, types::Json};
use tienda_kit::{Shutdown, resilience::Backoff};
use tokio::sync::{Semaphore, broadcast};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{log::OrderEvent, status::Status},
    error::Error,
};

/// The notification channel the trigger uses.
const CHANNEL: &str = "order_events";

/// One entry of an order's timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// The entry's place in the order's log, from 1 (the event stream's `id`).
    pub seq: i32,
    /// What happened: `placed`, `stock_reserved`, `payment_action_required`,
    /// `payment_authorized`, `stock_committed`, `confirmed`, `shipped`, `delivered`,
    /// `cancelled`, `stock_released`, `payment_voided`, `late_reply_compensated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The order's status after it.
    pub status: Status,
    /// For people: "Payment authorized".
    pub title: String,
    /// The entry's details a customer may see (`carrier` and `tracking_number` when shipped,
    /// `reason` and `detail` when cancelled, the total when placed, ...).
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Who reads the timeline: the owner also sees where to complete a payment challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The order's customer.
    Owner,
    /// An admin who is not the owner.
    Admin,
}

fn title(event: &OrderEvent) -> &'static str {
    match event {
        OrderEvent::Placed { .. } => "Order placed",
        OrderEvent::StockReserved { .. } => "Items reserved",
        OrderEvent::PaymentActionRequired { .. } => "Payment needs your confirmation",
        OrderEvent::PaymentAuthorized { .. } => "Payment authorized",
        OrderEvent::StockCommitted => "Items set aside for shipping",
        OrderEvent::Confirmed => "Order confirmed",
        OrderEvent::Shipped { .. } => "Shipped",
        OrderEvent::Delivered => "Delivered",
        OrderEvent::Cancelled { .. } => "Order cancelled",
        OrderEvent::StockReleased => "Reserved items released",
        OrderEvent::PaymentVoided => "Payment authorization released",
        OrderEvent::LateReplyCompensated { .. } => "A late step was undone",
    }
}

/// What of an entry a reader may see: never the payment token, the checkout key, or the
/// internal ids of reservations and payments.
fn data(event: &OrderEvent, reader: Reader) -> Map<String, Value> {
    let value = match event {
        OrderEvent::Placed {
            total, subtotal, ..
        } => json!({"total": total, "subtotal": subtotal.unwrap_or(*total)}),
        OrderEvent::PaymentActionRequired { until, action_url } => match reader {
            Reader::Owner => json!({"until": until, "action_url": action_url}),
            Reader::Admin => json!({"until": until}),
        },
        OrderEvent::Shipped {
            carrier,
            tracking_number,
        } => json!({"carrier": carrier, "tracking_number": tracking_number}),
        OrderEvent::Cancelled { reason, detail } => json!({"reason": reason, "detail": detail}),
        OrderEvent::LateReplyCompensated { compensation } => {
            json!({"compensation": compensation})
        }
        _ => json!({}),
    };
    match value {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

/// The order's entries after `after` (exclusive), in order, with the status each left it in.
/// `None` when the order has no log.
pub async fn entries(
    conn: &mut PgConnection,
    order_id: Uuid,
    after: i32,
    reader: Reader,
) -> Result<Vec<TimelineEntry>, Error> {
    // The status after an entry depends on every entry before it: replay from the start.
    let rows: Vec<(i32, Json<OrderEvent>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT seq, data, occurred_at FROM order_events WHERE order_id = $1 ORDER BY seq",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut status = Status::Pending;
    let mut out = Vec::new();
    for (seq, Json(event), at) in rows {
        if let Some(transition) = event.transition() {
            status = status.apply(transition)?;
        }
        if seq > after {
            out.push(TimelineEntry {
                seq,
                kind: event.kind().to_owned(),
                status,
                title: title(&event).to_owned(),
                data: data(&event, reader),
                at,
            });
        }
    }
    Ok(out)
}

/// Wakes open timelines when an order's log grows, and bounds how many are open.
#[derive(Debug, Clone)]
pub struct Feed {
    appended: broadcast::Sender<Uuid>,
    /// One permit per open event stream.
    pub streams: Arc<Semaphore>,
}

impl Feed {
    /// A feed allowing `max_streams` open event streams; [`listen`] fills it.
    pub fn new(max_streams: usize) -> Self {
        let (appended, _) = broadcast::channel(1024);
        Self {
            appended,
            streams: Arc::new(Semaphore::new(max_streams)),
        }
    }

    /// Order ids as entries are appended to their logs. A receiver that lags, or a listener
    /// that reconnects, misses some: readers also look again every few seconds.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.appended.subscribe()
    }
}

/// Listens for appended entries until `shutdown`, reconnecting with backoff.
pub async fn listen(db: PgPool, feed: Feed, shutdown: Shutdown) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut attempt = 0;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&db).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = shutdown.wait() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(%error, "cannot listen for order log appends; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(backoff.delay(attempt)) => continue,
                    }
                }
            },
        };
        attempt = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                notification = listener.recv() => match notification {
                    Ok(notification) => {
                        if let Ok(id) = notification.payload().parse() {
                            // No receiver is not an error: nobody is watching that order.
                            let _ = feed.appended.send(id);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the order log listener; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
