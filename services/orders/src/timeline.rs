//! An order's timeline: its log entries as customers read them, and the feed that wakes open
//! event streams when an entry is appended (PostgreSQL `LISTEN order_events`, notified by a
//! trigger on commit, so every replica hears of appends made by any other).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, postgres::PgListener, types::Json};
use tienda_kit::{Shutdown, resilience::Backoff};
use tokio::sync::{Semaphore, watch};
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
        OrderEvent::StockRestocked => "Items put back in stock",
        OrderEvent::PaymentCaptured { .. } => "Payment charged",
        OrderEvent::CaptureFailed { .. } => "The payment could not be charged",
        OrderEvent::RefundRequested { .. } => "Refund on its way",
        OrderEvent::Refunded { .. } => "Refunded",
        OrderEvent::RefundFailed { .. } => "The refund could not be made",
        OrderEvent::ReturnRequested { .. } => "Return requested",
        OrderEvent::ReturnReceived { .. } => "Return received",
        OrderEvent::ReturnRestocked { .. } => "Returned items back in stock",
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
        OrderEvent::PaymentCaptured { amount } => json!({"amount": amount}),
        OrderEvent::RefundRequested {
            amount, return_id, ..
        } => json!({"amount": amount, "return_id": return_id}),
        OrderEvent::Refunded {
            amount,
            refunded_total,
            ..
        } => json!({"amount": amount, "refunded_total": refunded_total}),
        OrderEvent::ReturnRequested {
            return_id,
            items,
            amount,
            reason,
        } => json!({"return_id": return_id, "items": items, "amount": amount, "reason": reason}),
        OrderEvent::ReturnReceived { return_id } | OrderEvent::ReturnRestocked { return_id } => {
            json!({"return_id": return_id})
        }
        OrderEvent::CaptureFailed { detail } | OrderEvent::RefundFailed { detail, .. } => {
            match reader {
                Reader::Admin => json!({"detail": detail}),
                Reader::Owner => json!({}),
            }
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

/// Wakes open timelines when an order's log grows, and bounds how many are open. Each
/// watched order has one counter that the listener moves on every append; a stream waits for
/// its order's counter to change, so it never misses an append made while it was reading.
#[derive(Debug, Clone)]
pub struct Feed {
    watched: Arc<Mutex<HashMap<Uuid, watch::Sender<u64>>>>,
    /// One permit per open event stream.
    pub streams: Arc<Semaphore>,
    /// Open streams per caller (token subject).
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

/// Most event streams one caller keeps open at once (a few tabs; not the whole pool).
pub const MAX_STREAMS_PER_CALLER: usize = 5;

/// One of a caller's open streams; counted until dropped.
#[derive(Debug)]
pub struct CallerSlot {
    caller: String,
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut open = self.per_caller.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// A stream's watch on one order; stops watching when dropped.
#[derive(Debug)]
pub struct Watch {
    order_id: Uuid,
    /// Changes on every append to the order's log.
    pub appended: watch::Receiver<u64>,
    watched: Arc<Mutex<HashMap<Uuid, watch::Sender<u64>>>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.watched.lock().expect("not poisoned");
        // This receiver is still alive here: it is the last when the count is one.
        if watched
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watched.remove(&self.order_id);
        }
    }
}

impl Feed {
    /// A feed allowing `max_streams` open event streams; [`listen`] moves it.
    pub fn new(max_streams: usize) -> Self {
        Self {
            watched: Arc::default(),
            streams: Arc::new(Semaphore::new(max_streams)),
            per_caller: Arc::default(),
        }
    }

    /// A slot for one more stream of `caller`, or `None` at [`MAX_STREAMS_PER_CALLER`].
    pub fn caller_slot(&self, caller: &str) -> Option<CallerSlot> {
        let mut open = self.per_caller.lock().expect("not poisoned");
        let n = open.entry(caller.to_owned()).or_default();
        if *n >= MAX_STREAMS_PER_CALLER {
            return None;
        }
        *n += 1;
        Some(CallerSlot {
            caller: caller.to_owned(),
            per_caller: self.per_caller.clone(),
        })
    }

    /// Watches `order_id`'s log. A listener that reconnects misses appends made meanwhile:
    /// readers also look again every few seconds.
    pub fn watch(&self, order_id: Uuid) -> Watch {
        let appended = self
            .watched
            .lock()
            .expect("not poisoned")
            .entry(order_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Watch {
            order_id,
            appended,
            watched: self.watched.clone(),
        }
    }

    /// Tells the watchers of `order_id` its log grew.
    fn appended(&self, order_id: Uuid) {
        if let Some(sender) = self.watched.lock().expect("not poisoned").get(&order_id) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// How many orders are watched (for tests).
    pub fn watched(&self) -> usize {
        self.watched.lock().expect("not poisoned").len()
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
                            feed.appended(id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_sees_appends_made_while_it_was_busy_and_is_forgotten_when_dropped() {
        let feed = Feed::new(10);
        let id = Uuid::now_v7();
        let mut first = feed.watch(id);
        let second = feed.watch(id);
        assert_eq!(feed.watched(), 1);
        // Appended while nobody was waiting: the next wait returns at once.
        feed.appended(id);
        feed.appended(Uuid::now_v7());
        assert!(first.appended.has_changed().unwrap());
        tokio::time::timeout(Duration::from_secs(1), first.appended.changed())
            .await
            .expect("not missed")
            .unwrap();
        assert!(!first.appended.has_changed().unwrap());
        drop(second);
        assert_eq!(feed.watched(), 1, "still watched by the first");
        drop(first);
        assert_eq!(feed.watched(), 0);
    }

    #[test]
    fn one_caller_holds_a_few_streams_and_gets_them_back() {
        let feed = Feed::new(100);
        let slots: Vec<_> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| feed.caller_slot("ana").expect("within the cap"))
            .collect();
        assert!(feed.caller_slot("ana").is_none());
        assert!(feed.caller_slot("bea").is_some(), "others are not affected");
        drop(slots);
        assert!(feed.caller_slot("ana").is_some());
    }
}
