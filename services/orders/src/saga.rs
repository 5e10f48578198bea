//! The checkout saga, orchestrated by orders over JetStream: [`begin`] (in the checkout's
//! transaction) asks inventory to reserve; [`InventoryReplies`] and [`PaymentReplies`] (the
//! durable consumers `orders-inventory-events` and `orders-payment-events`) carry replies to
//! the pure [`decide`]; [`sweeper`] gives up on steps whose deadline passed. Each reply is
//! applied in the consumer's transaction next to its inbox row, with the order and its saga
//! row locked, so duplicates and races between a reply and the sweeper are harmless: whoever
//! comes second finds the order moved on, and the decision table ignores or compensates.
//!
//! Every command and event this sends carries the order id as correlation id, and the reply
//! it answers as causation id. A restarted process resumes every saga in flight: the
//! consumers pick up where they acknowledged, and deadlines live in the database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tienda_events::{
    Envelope, Message,
    inventory::{
        CommitReservation, InventoryCommitted, InventoryReleased, InventoryReservationFailed,
        InventoryReserved, Line, ReleaseReservation, ReserveInventory,
    },
    order::{OrderCancelled, OrderConfirmed, OrderLine},
    payment::{
        AuthorizePayment, PaymentAuthorized, PaymentDeclined, PaymentFailed, PaymentOperation,
        PaymentRequiresAction, PaymentVoided, VoidPayment,
    },
};
use tienda_kit::{
    Shutdown,
    consumer::{Delivery, Handler, HandlerError},
    outbox,
};
use uuid::Uuid;

use crate::{
    SOURCE,
    domain::{
        checkout::PricedLine,
        log::OrderEvent,
        saga::{Compensation, Decision, Reply, Step, decide},
        status::Transition,
    },
    error::Error,
    store::{self, OrderRow, Saga, SagaKey},
};

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From checkout to inventory's answer.
    pub reserve: Duration,
    /// From `reserved` to payments' answer (a challenge extends it to its own expiry).
    pub authorize: Duration,
    /// How long inventory holds an uncommitted reservation (a backstop for compensation).
    pub reservation_ttl: Duration,
}

impl Timeouts {
    fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }
}

/// `data` as a message about `order_id`: correlated by the order, caused by `cause`.
fn about<T: Message>(data: T, order_id: Uuid, cause: Option<Uuid>) -> Envelope<T> {
    let mut envelope = Envelope::new(SOURCE, data);
    envelope.correlation_id = order_id;
    envelope.causation_id = cause;
    envelope
}

fn lines_of(lines: &[PricedLine]) -> (Vec<Line>, Vec<OrderLine>) {
    lines
        .iter()
        .map(|l| {
            (
                Line {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                },
                OrderLine {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                },
            )
        })
        .unzip()
}

/// Starts the saga of a just-placed `order` in the checkout's transaction: the saga row at
/// `reserving` and `tienda.inventory.cmd.reserve`.
pub async fn begin(
    conn: &mut PgConnection,
    order: &OrderRow,
    lines: &[PricedLine],
    timeouts: Timeouts,
) -> Result<(), Error> {
    let saga = Saga {
        order_id: order.id,
        step: Step::Reserving,
        deadline: Some(Timeouts::after(Utc::now(), timeouts.reserve)),
        reservation_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
    };
    store::insert_saga(conn, &saga).await?;
    let reserve = ReserveInventory {
        reservation_id: saga.reservation_id,
        order_id: Some(order.id),
        items: lines_of(lines).0,
        ttl_seconds: u32::try_from(timeouts.reservation_ttl.as_secs()).unwrap_or(u32::MAX),
    };
    outbox::enqueue(conn, about(reserve, order.id, None)).await?;
    Ok(())
}

fn handler_error(error: Error) -> HandlerError {
    match error {
        Error::Database(e) => HandlerError::Transient(e.into()),
        other => HandlerError::Permanent(anyhow::anyhow!("{other}")),
    }
}

/// Applies `reply` to the saga `key` names; a reply for no saga of ours (a reservation an
/// admin made over HTTP) is not the saga's business.
async fn react(
    conn: &mut PgConnection,
    key: SagaKey,
    reply: Reply,
    cause: Uuid,
    timeouts: Timeouts,
) -> Result<(), Error> {
    let Some(saga) = store::lock_saga(conn, key).await? else {
        tracing::debug!(?key, "a reply for no order's saga");
        return Ok(());
    };
    let mut order = store::lock(conn, saga.order_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the saga's order {}", saga.order_id)))?;
    let decision = decide(order.status, &reply);
    apply(conn, &saga, &mut order, &decision, Some(cause), timeouts).await
}

/// Records what inventory or payments did in answer to a command (a commit, a release, a
/// void) in the order's log; the order's state does not change.
async fn note(conn: &mut PgConnection, key: SagaKey, event: OrderEvent) -> Result<(), Error> {
    let Some(saga) = store::lock_saga(conn, key).await? else {
        return Ok(());
    };
    let mut order = store::lock(conn, saga.order_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the saga's order {}", saga.order_id)))?;
    let status = order.status;
    store::append(conn, &mut order, &event, status).await
}

/// Carries out `decision` for `order` (locked) and its `saga` (locked).
async fn apply(
    conn: &mut PgConnection,
    saga: &Saga,
    order: &mut OrderRow,
    decision: &Decision,
    cause: Option<Uuid>,
    timeouts: Timeouts,
) -> Result<(), Error> {
    let now = Utc::now();
    let id = order.id;
    let next = |order: &OrderRow, t: Transition| order.status.apply(t);
    match decision {
        Decision::Authorize => {
            let reserved = OrderEvent::StockReserved {
                reservation_id: saga.reservation_id,
            };
            let status = next(order, Transition::Reserve)?;
            store::append(conn, order, &reserved, status).await?;
            let deadline = Timeouts::after(now, timeouts.authorize);
            let authorize = AuthorizePayment {
                payment_id: saga.payment_id,
                order_id: id,
                customer_id: Some(order.customer_id),
                email: order.email.clone(),
                amount: order.money(order.total),
                payment_method: order.payment_method.clone(),
                client_ip: None,
                deadline,
            };
            outbox::enqueue(conn, about(authorize, id, cause)).await?;
            store::update_saga(conn, id, Step::Authorizing, Some(deadline)).await?;
        }
        Decision::AwaitAction { until } => {
            let status = next(order, Transition::RequireAction)?;
            let event = OrderEvent::PaymentActionRequired { until: *until };
            store::append(conn, order, &event, status).await?;
            store::update_saga(conn, id, Step::Authorizing, Some(*until)).await?;
        }
        Decision::Confirm => {
            let status = next(order, Transition::Authorize)?;
            let authorized = OrderEvent::PaymentAuthorized {
                payment_id: saga.payment_id,
            };
            store::append(conn, order, &authorized, status).await?;
            let status = next(order, Transition::Confirm)?;
            store::append(conn, order, &OrderEvent::Confirmed, status).await?;
            let commit = CommitReservation {
                reservation_id: saga.reservation_id,
            };
            outbox::enqueue(conn, about(commit, id, cause)).await?;
            let lines = store::lines(conn, id).await?;
            let confirmed = OrderConfirmed {
                order_id: id,
                customer_id: Some(order.customer_id),
                email: order.email.clone(),
                items: lines_of(&lines).1,
                total: order.money(order.total),
                payment_id: saga.payment_id,
            };
            outbox::enqueue(conn, about(confirmed, id, cause)).await?;
            store::update_saga(conn, id, Step::Completed, None).await?;
        }
        Decision::Cancel {
            reason,
            detail,
            release,
        } => {
            if *release {
                let release = ReleaseReservation {
                    reservation_id: saga.reservation_id,
                };
                outbox::enqueue(conn, about(release, id, cause)).await?;
            }
            let status = next(order, Transition::Cancel)?;
            let event = OrderEvent::Cancelled {
                reason: *reason,
                detail: detail.clone(),
            };
            store::append(conn, order, &event, status).await?;
            let cancelled = OrderCancelled {
                order_id: id,
                customer_id: Some(order.customer_id),
                email: order.email.clone(),
                reason: *reason,
                detail: detail.clone(),
            };
            outbox::enqueue(conn, about(cancelled, id, cause)).await?;
            store::update_saga(conn, id, Step::Compensated, None).await?;
        }
        Decision::Compensate(compensation) => {
            match compensation {
                Compensation::Release => {
                    let release = ReleaseReservation {
                        reservation_id: saga.reservation_id,
                    };
                    outbox::enqueue(conn, about(release, id, cause)).await?;
                }
                Compensation::Void => {
                    let void = VoidPayment {
                        payment_id: saga.payment_id,
                        order_id: id,
                        deadline: Timeouts::after(now, timeouts.authorize),
                    };
                    outbox::enqueue(conn, about(void, id, cause)).await?;
                }
            }
            let event = OrderEvent::LateReplyCompensated {
                compensation: *compensation,
            };
            let status = order.status;
            store::append(conn, order, &event, status).await?;
        }
        Decision::Ignore => {
            tracing::debug!(order_id = %id, status = %order.status, "reply ignored (duplicate or late)");
        }
    }
    Ok(())
}

/// The consumer `orders-inventory-events`: inventory's answers to the saga's commands.
#[derive(Debug, Clone)]
pub struct InventoryReplies {
    /// Step deadlines.
    pub timeouts: Timeouts,
}

impl Handler for InventoryReplies {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let name = delivery.subject.rsplit('.').next().unwrap_or_default();
        let result = match name {
            "reserved" => {
                let e = delivery.envelope::<InventoryReserved>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                react(conn, key, Reply::Reserved, e.id, self.timeouts).await
            }
            "reservation_failed" => {
                let e = delivery.envelope::<InventoryReservationFailed>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                let skus = e.data.shortages.into_iter().map(|s| s.sku).collect();
                let reply = Reply::ReservationFailed { skus };
                react(conn, key, reply, e.id, self.timeouts).await
            }
            "committed" => {
                let e = delivery.envelope::<InventoryCommitted>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                note(conn, key, OrderEvent::StockCommitted).await
            }
            "released" => {
                let e = delivery.envelope::<InventoryReleased>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                note(conn, key, OrderEvent::StockReleased).await
            }
            // `adjusted`, `low_stock`: not the saga's business.
            _ => Ok(()),
        };
        result.map_err(handler_error)
    }
}

/// The consumer `orders-payment-events`: payments' answers to the saga's commands.
#[derive(Debug, Clone)]
pub struct PaymentReplies {
    /// Step deadlines.
    pub timeouts: Timeouts,
}

impl Handler for PaymentReplies {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let name = delivery.subject.rsplit('.').next().unwrap_or_default();
        let t = self.timeouts;
        let result = match name {
            "authorized" => {
                let e = delivery.envelope::<PaymentAuthorized>()?;
                react(
                    conn,
                    SagaKey::Payment(e.data.payment_id),
                    Reply::Authorized,
                    e.id,
                    t,
                )
                .await
            }
            "requires_action" => {
                let e = delivery.envelope::<PaymentRequiresAction>()?;
                let reply = Reply::PaymentActionRequired {
                    until: e.data.expires_at,
                };
                react(conn, SagaKey::Payment(e.data.payment_id), reply, e.id, t).await
            }
            "declined" => {
                let e = delivery.envelope::<PaymentDeclined>()?;
                let reply = Reply::Declined {
                    message: e.data.message,
                };
                react(conn, SagaKey::Payment(e.data.payment_id), reply, e.id, t).await
            }
            "failed" => {
                let e = delivery.envelope::<PaymentFailed>()?;
                if e.data.operation == PaymentOperation::Authorize {
                    let key = SagaKey::Payment(e.data.payment_id);
                    react(conn, key, Reply::AuthorizationFailed, e.id, t).await
                } else {
                    tracing::warn!(payment_id = %e.data.payment_id, operation = ?e.data.operation,
                        detail = %e.data.detail, "a payment command failed");
                    Ok(())
                }
            }
            "voided" => {
                let e = delivery.envelope::<PaymentVoided>()?;
                note(
                    conn,
                    SagaKey::Payment(e.data.payment_id),
                    OrderEvent::PaymentVoided,
                )
                .await
            }
            // `captured`, `refunded`: not part of checkout.
            _ => Ok(()),
        };
        result.map_err(handler_error)
    }
}

/// Gives up on up to 50 overdue steps in one transaction; returns how many.
pub async fn sweep(db: &PgPool, timeouts: Timeouts) -> Result<usize, Error> {
    let mut tx = db.begin().await?;
    let due = store::lock_overdue(&mut tx, 50).await?;
    for saga in &due {
        let Some(mut order) = store::lock(&mut tx, saga.order_id).await? else {
            continue;
        };
        let decision = decide(order.status, &Reply::DeadlinePassed);
        if decision == Decision::Ignore {
            // The order moved on without the step being closed; stop watching it.
            store::update_saga(&mut tx, saga.order_id, saga.step, None).await?;
            continue;
        }
        apply(&mut tx, saga, &mut order, &decision, None, timeouts).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Runs [`sweep`] every `every` until shutdown.
pub async fn sweeper(db: PgPool, timeouts: Timeouts, every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        loop {
            match sweep(&db, timeouts).await {
                Ok(50) => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(timed_out = n, "overdue saga steps given up");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saga sweep failed");
                    break;
                }
            }
        }
    }
}
