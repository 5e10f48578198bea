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
        InventoryReserved, InventoryRestocked, Line, ReleaseReservation, ReserveInventory,
        RestockInventory,
    },
    order::{OrderCancelled, OrderConfirmed, OrderLine},
    payment::{
        AuthorizePayment, PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentFailed,
        PaymentOperation, PaymentRefunded, PaymentRequiresAction, PaymentReviewRejected,
        PaymentVoided, VoidPayment,
    },
};
use tienda_kit::{
    Shutdown,
    consumer::{Delivery, Handler, HandlerError},
    outbox,
    trace_context::{Kind, Span},
};
use uuid::Uuid;

use crate::{
    SOURCE,
    domain::{
        checkout::PricedLine,
        log::OrderEvent,
        saga::{
            Compensation, Decision, Reply, Requester, Step, cancel_requested, decide,
            payment_deadline,
        },
    },
    error::Error,
    store::{self, OrderRow, Saga, SagaKey},
};

/// How long each step may take, and how compensations are retried.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From checkout to inventory's answer.
    pub reserve: Duration,
    /// From `reserved` to payments' answer (a challenge extends it to its own expiry); never
    /// later than `commit_margin` before the reservation expires.
    pub authorize: Duration,
    /// How long inventory holds an uncommitted reservation (a backstop for compensation).
    pub reservation_ttl: Duration,
    /// How long before the reservation expires the payment steps give up, leaving time to
    /// commit.
    pub commit_margin: Duration,
    /// How often an unanswered commit or compensation is sent again.
    pub resend: Duration,
    /// The deadline of compensating commands (voids): long, they must get through.
    pub compensation_deadline: Duration,
    /// How long after a retryable authorization failure it is tried again.
    pub authorize_retry: Duration,
}

impl Timeouts {
    fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }

    fn margin(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.commit_margin).unwrap_or(chrono::Duration::zero())
    }
}

/// `data` as a message about `order_id`: correlated by the order, caused by `cause`.
pub fn about<T: Message>(data: T, order_id: Uuid, cause: Option<Uuid>) -> Envelope<T> {
    let mut envelope = Envelope::new(SOURCE, data);
    envelope.correlation_id = order_id;
    envelope.causation_id = cause;
    envelope
}

pub(crate) fn lines_of(lines: &[PricedLine]) -> (Vec<Line>, Vec<OrderLine>) {
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
        reservation_expires_at: None,
        void_pending: false,
        release_pending: false,
        restock_pending: false,
        retry_at: None,
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
    // A saga step is a span: the commands it sends are its children, so the checkout's trace
    // runs on through the services they go to.
    let mut span = Span::child(format!("saga {}", variant(&reply)), Kind::Internal);
    let context = span.context();
    let result: Result<(), Error> = context
        .scope(async {
            let Some((mut saga, mut order)) = store::lock_saga_and_order(conn, key).await? else {
                tracing::debug!(?key, "a reply for no order's saga");
                span.set("tienda.saga.decision", "no saga");
                return Ok(());
            };
            let decision = decide(order.status, &reply);
            decided(&mut span, &order, &reply, &decision);
            apply(
                conn,
                &mut saga,
                &mut order,
                &decision,
                Some(cause),
                timeouts,
            )
            .await?;
            span.set("tienda.saga.step", variant(&saga.step));
            Ok(())
        })
        .await;
    if let Err(error) = &result {
        span.fail(error.to_string());
    }
    result
}

/// Counts a saga step and describes it on its span: the order, its status, the decision.
fn decided(span: &mut Span, order: &OrderRow, reply: &Reply, decision: &Decision) {
    crate::metrics::SAGA
        .steps
        .with_label_values(&[&variant(reply), &variant(decision)])
        .inc();
    if span.is_recording() {
        span.set("tienda.order.id", order.id.to_string());
        span.set("tienda.order.status", order.status.to_string());
        span.set("tienda.saga.decision", variant(decision));
    }
}

/// Counts an order settled, by `outcome`, with the time since it was placed.
fn settled(order: &OrderRow, outcome: &str) {
    let seconds = (Utc::now() - order.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    crate::metrics::SAGA
        .settled
        .with_label_values(&[outcome])
        .observe(seconds);
}

/// An enum value's variant name (`Reserved` of `Reserved { expires_at }`), for span names
/// and attributes.
fn variant(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let end = text
        .find(|c: char| !c.is_alphanumeric() && c != '_')
        .unwrap_or(text.len());
    text[..end].to_owned()
}

fn authorize_command(order: &OrderRow, saga: &Saga, deadline: DateTime<Utc>) -> AuthorizePayment {
    AuthorizePayment {
        payment_id: saga.payment_id,
        order_id: order.id,
        customer_id: Some(order.customer_id),
        email: order.email.clone(),
        amount: order.money(order.total),
        payment_method: order.payment_method.clone(),
        client_ip: order.client_ip.clone(),
        billing_country: Some(order.shipping_address.country.clone()),
        deadline,
    }
}

/// Sends `compensation` and marks it pending (re-sent at each deadline until answered).
async fn compensate(
    conn: &mut PgConnection,
    saga: &mut Saga,
    compensation: Compensation,
    cause: Option<Uuid>,
    now: DateTime<Utc>,
    timeouts: Timeouts,
) -> Result<(), Error> {
    let id = saga.order_id;
    match compensation {
        Compensation::Release => {
            let release = ReleaseReservation {
                reservation_id: saga.reservation_id,
            };
            outbox::enqueue(conn, about(release, id, cause)).await?;
            saga.release_pending = true;
        }
        Compensation::Void => {
            let void = VoidPayment {
                payment_id: saga.payment_id,
                order_id: id,
                deadline: Timeouts::after(now, timeouts.compensation_deadline),
            };
            outbox::enqueue(conn, about(void, id, cause)).await?;
            saga.void_pending = true;
        }
        Compensation::Restock => {
            let lines = store::lines(conn, id).await?;
            let restock = RestockInventory {
                // One restock per order: the saga's reservation is the sale it undoes.
                restock_id: saga.reservation_id,
                order_id: Some(id),
                items: lines_of(&lines).0,
                reason: format!("order {id} cancelled before shipping"),
            };
            outbox::enqueue(conn, about(restock, id, cause)).await?;
            saga.restock_pending = true;
        }
    }
    Ok(())
}

/// After a cancellation's compensations changed: wait for the pending ones, or stop.
fn settle_step(saga: &mut Saga, now: DateTime<Utc>, timeouts: Timeouts) {
    saga.retry_at = None;
    if saga.void_pending || saga.release_pending || saga.restock_pending {
        saga.step = Step::Compensating;
        saga.deadline = Some(Timeouts::after(now, timeouts.resend));
    } else {
        saga.step = Step::Compensated;
        saga.deadline = None;
    }
}

/// Applies `event` to `order` in memory, its entry kept in `staged` for [`store::save_saga`]
/// to write. A decision appends at most one entry.
fn stage(
    staged: &mut Option<store::Entry>,
    order: &mut OrderRow,
    event: &OrderEvent,
) -> Result<(), Error> {
    assert!(staged.is_none(), "one log entry per saga decision");
    *staged = Some(store::stage(order, event)?);
    Ok(())
}

/// Carries out `decision` for `order` (locked) and its `saga` (locked), and saves the saga.
async fn apply(
    conn: &mut PgConnection,
    saga: &mut Saga,
    order: &mut OrderRow,
    decision: &Decision,
    cause: Option<Uuid>,
    t: Timeouts,
) -> Result<(), Error> {
    let now = Utc::now();
    let id = order.id;
    // The decision's log entry, written with the saga's state in one statement at the end.
    let mut staged = None;
    match decision {
        Decision::Authorize {
            reservation_expires_at,
        } => {
            saga.reservation_expires_at = Some(*reservation_expires_at);
            let reserved = OrderEvent::StockReserved {
                reservation_id: saga.reservation_id,
                expires_at: Some(*reservation_expires_at),
            };
            stage(&mut staged, order, &reserved)?;
            let deadline = payment_deadline(
                Timeouts::after(now, t.authorize),
                saga.reservation_expires_at,
                t.margin(),
            );
            let authorize = authorize_command(order, saga, deadline);
            outbox::enqueue(conn, about(authorize, id, cause)).await?;
            saga.step = Step::Authorizing;
            saga.deadline = Some(deadline);
        }
        Decision::ScheduleAuthorizeRetry => {
            let retry = Timeouts::after(now, t.authorize_retry);
            tracing::info!(order_id = %id, %retry, "authorization failed (retryable); retrying");
            saga.retry_at = Some(match saga.deadline {
                Some(deadline) => retry.min(deadline),
                None => retry,
            });
        }
        Decision::RetryAuthorize => {
            let deadline = saga.deadline.unwrap_or(now);
            let authorize = authorize_command(order, saga, deadline);
            outbox::enqueue(conn, about(authorize, id, cause)).await?;
            saga.retry_at = None;
        }
        Decision::AwaitAction { until, action_url } => {
            let until = payment_deadline(*until, saga.reservation_expires_at, t.margin());
            let event = OrderEvent::PaymentActionRequired {
                until,
                action_url: Some(action_url.clone()),
            };
            stage(&mut staged, order, &event)?;
            saga.step = Step::Authorizing;
            saga.deadline = Some(until);
        }
        Decision::Commit => {
            let authorized = OrderEvent::PaymentAuthorized {
                payment_id: saga.payment_id,
            };
            stage(&mut staged, order, &authorized)?;
            let commit = CommitReservation {
                reservation_id: saga.reservation_id,
            };
            outbox::enqueue(conn, about(commit, id, cause)).await?;
            saga.step = Step::Committing;
            saga.deadline = Some(Timeouts::after(now, t.resend));
            saga.retry_at = None;
        }
        Decision::ResendCommit => {
            let commit = CommitReservation {
                reservation_id: saga.reservation_id,
            };
            outbox::enqueue(conn, about(commit, id, cause)).await?;
            saga.deadline = Some(Timeouts::after(now, t.resend));
        }
        Decision::Confirm => {
            stage(&mut staged, order, &OrderEvent::Confirmed)?;
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
            settled(order, "confirmed");
            saga.step = Step::Completed;
            saga.deadline = None;
            saga.retry_at = None;
        }
        Decision::Cancel {
            reason,
            detail,
            release,
            void,
            restock,
        } => {
            // A cancellation before confirmation ends the checkout; one after (a customer's,
            // an admin's) is after-sale.
            if saga.step.is_waiting() && saga.step != Step::Compensating {
                settled(order, "cancelled");
            }
            if *void {
                compensate(conn, saga, Compensation::Void, cause, now, t).await?;
            }
            if *release {
                compensate(conn, saga, Compensation::Release, cause, now, t).await?;
            }
            if *restock {
                compensate(conn, saga, Compensation::Restock, cause, now, t).await?;
            }
            let event = OrderEvent::Cancelled {
                reason: *reason,
                detail: detail.clone(),
            };
            stage(&mut staged, order, &event)?;
            let cancelled = OrderCancelled {
                order_id: id,
                customer_id: Some(order.customer_id),
                email: order.email.clone(),
                reason: *reason,
                detail: detail.clone(),
            };
            outbox::enqueue(conn, about(cancelled, id, cause)).await?;
            // A refused card should not cost the customer their cart.
            if matches!(
                reason,
                tienda_events::order::CancelReason::PaymentDeclined
                    | tienda_events::order::CancelReason::PaymentFailed
            ) && store::placed_from_cart(conn, id).await?
            {
                let lines = store::lines(conn, id).await?;
                crate::cart::restore(
                    conn,
                    order.customer_id,
                    &lines,
                    crate::domain::checkout::MAX_QUANTITY,
                )
                .await?;
            }
            settle_step(saga, now, t);
        }
        Decision::Compensate(compensation) => {
            let pending = match compensation {
                Compensation::Release => saga.release_pending,
                Compensation::Void => saga.void_pending,
                Compensation::Restock => saga.restock_pending,
            };
            if pending {
                // Already sent and re-sent until answered.
                tracing::debug!(order_id = %id, ?compensation, "compensation already pending");
            } else {
                compensate(conn, saga, *compensation, cause, now, t).await?;
                let event = OrderEvent::LateReplyCompensated {
                    compensation: *compensation,
                };
                stage(&mut staged, order, &event)?;
                settle_step(saga, now, t);
            }
        }
        Decision::Settled(compensation) => {
            let (pending, event) = match compensation {
                Compensation::Release => (&mut saga.release_pending, OrderEvent::StockReleased),
                Compensation::Void => (&mut saga.void_pending, OrderEvent::PaymentVoided),
                Compensation::Restock => (&mut saga.restock_pending, OrderEvent::StockRestocked),
            };
            if *pending {
                *pending = false;
                stage(&mut staged, order, &event)?;
                settle_step(saga, now, t);
            }
        }
        Decision::ResendCompensations => {
            if saga.void_pending {
                compensate(conn, saga, Compensation::Void, cause, now, t).await?;
            }
            if saga.release_pending {
                compensate(conn, saga, Compensation::Release, cause, now, t).await?;
            }
            if saga.restock_pending {
                compensate(conn, saga, Compensation::Restock, cause, now, t).await?;
            }
            settle_step(saga, now, t);
        }
        Decision::Ignore => {
            tracing::debug!(order_id = %id, status = %order.status, "reply ignored (duplicate or late)");
            return Ok(());
        }
    }
    store::save_saga(conn, saga, order, staged).await
}

/// Cancels `order` (locked) at a customer's or an admin's request, as
/// [`crate::domain::saga::cancel_requested`] decided: the compensations its state requires
/// (re-sent by the sweeper until answered), the log entry and `order.cancelled`, in the
/// caller's transaction. `saga` must be locked before the order, as the consumers do.
pub async fn cancel_on_request(
    conn: &mut PgConnection,
    saga: &mut Saga,
    order: &mut OrderRow,
    decision: &Decision,
    timeouts: Timeouts,
) -> Result<(), Error> {
    debug_assert!(matches!(decision, Decision::Cancel { .. }));
    apply(conn, saga, order, decision, None, timeouts).await
}

/// `payment.review_rejected`: an admin judged the payment fraudulent, so the order is
/// cancelled as an admin's cancellation would (the payment voided, or refunded once shipped;
/// the stock put back). An order past cancelling (delivered, cancelled already) is left as
/// it is, loudly.
async fn review_rejected(
    conn: &mut PgConnection,
    e: &PaymentReviewRejected,
    timeouts: Timeouts,
) -> Result<(), Error> {
    let Some((mut saga, mut order)) =
        store::lock_saga_and_order(conn, SagaKey::Payment(e.payment_id)).await?
    else {
        tracing::warn!(payment_id = %e.payment_id, "a rejected review names no order here");
        return Ok(());
    };
    let decision = match cancel_requested(order.status, Requester::Admin) {
        Ok(decision) => decision,
        Err(refused) => {
            tracing::error!(order_id = %order.id, status = %order.status, ?refused,
                "a payment rejected in review belongs to an order that can no longer be cancelled; an admin must act");
            return Ok(());
        }
    };
    let shipped = order.status == crate::domain::status::Status::Shipped;
    cancel_on_request(conn, &mut saga, &mut order, &decision, timeouts).await?;
    if shipped {
        crate::aftersale::cancelled_after_shipping(conn, &mut order, timeouts).await?;
    }
    tracing::warn!(order_id = %order.id, payment_id = %e.payment_id, by = %e.reviewed_by,
        "order cancelled: its payment was rejected in fraud review");
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
        let t = self.timeouts;
        let result = match name {
            "reserved" => {
                let e = delivery.envelope::<InventoryReserved>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                let reply = Reply::Reserved {
                    expires_at: e.data.expires_at,
                };
                react(conn, key, reply, e.id, t).await
            }
            "reservation_failed" => {
                let e = delivery.envelope::<InventoryReservationFailed>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                let skus = e.data.shortages.into_iter().map(|s| s.sku).collect();
                let reply = Reply::ReservationFailed { skus };
                react(conn, key, reply, e.id, t).await
            }
            "committed" => {
                let e = delivery.envelope::<InventoryCommitted>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                react(conn, key, Reply::Committed, e.id, t).await
            }
            "released" => {
                let e = delivery.envelope::<InventoryReleased>()?;
                let key = SagaKey::Reservation(e.data.reservation_id);
                react(conn, key, Reply::Released, e.id, t).await
            }
            "restocked" => {
                let e = delivery.envelope::<InventoryRestocked>()?;
                // A cancelled order's restock carries its saga's reservation id; a return's,
                // the return's id.
                let key = SagaKey::Reservation(e.data.restock_id);
                match store::lock_saga(conn, key).await {
                    Ok(Some(_)) => react(conn, key, Reply::Restocked, e.id, t).await,
                    Ok(None) => crate::aftersale::return_restocked(conn, &e.data, e.id).await,
                    Err(error) => Err(error),
                }
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
                let key = SagaKey::Payment(e.data.payment_id);
                react(conn, key, Reply::Authorized, e.id, t).await
            }
            "requires_action" => {
                let e = delivery.envelope::<PaymentRequiresAction>()?;
                let reply = Reply::PaymentActionRequired {
                    until: e.data.expires_at,
                    action_url: e.data.action_url,
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
                let key = SagaKey::Payment(e.data.payment_id);
                let f = &e.data;
                match f.operation {
                    PaymentOperation::Authorize => {
                        let reply = Reply::AuthorizationFailed {
                            retryable: f.retryable,
                        };
                        react(conn, key, reply, e.id, t).await
                    }
                    PaymentOperation::Void => {
                        // Refused for good (no such payment, never authorized): nothing is
                        // held. Unavailable or expired: the void is sent again.
                        let settled = !f.retryable && !f.expired;
                        tracing::warn!(payment_id = %f.payment_id, retryable = f.retryable,
                            expired = f.expired, detail = %f.detail, "a void failed");
                        react(conn, key, Reply::VoidFailed { settled }, e.id, t).await
                    }
                    PaymentOperation::Capture | PaymentOperation::Refund => {
                        crate::aftersale::failed(conn, f).await
                    }
                }
            }
            "voided" => {
                let e = delivery.envelope::<PaymentVoided>()?;
                react(
                    conn,
                    SagaKey::Payment(e.data.payment_id),
                    Reply::Voided,
                    e.id,
                    t,
                )
                .await
            }
            "captured" => {
                let e = delivery.envelope::<PaymentCaptured>()?;
                crate::aftersale::captured(conn, &e.data, t).await
            }
            "refunded" => {
                let e = delivery.envelope::<PaymentRefunded>()?;
                crate::aftersale::refunded(conn, &e.data).await
            }
            "review_rejected" => {
                let e = delivery.envelope::<PaymentReviewRejected>()?;
                review_rejected(conn, &e.data, t).await
            }
            _ => Ok(()),
        };
        result.map_err(handler_error)
    }
}

/// Acts on one due saga in its own transaction; `false` if it was no longer due or taken.
async fn sweep_one(db: &PgPool, order_id: Uuid, timeouts: Timeouts) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    let Some(mut saga) = store::lock_due_saga(&mut tx, order_id).await? else {
        return Ok(false);
    };
    let Some(mut order) = store::lock(&mut tx, order_id).await? else {
        return Ok(false);
    };
    let now = Utc::now();
    let reply = if saga.deadline.is_some_and(|d| d <= now) {
        Reply::DeadlinePassed
    } else {
        Reply::RetryDue
    };
    let decision = decide(order.status, &reply);
    // A step the sweeper takes is a trace of its own (nothing caused it but the clock).
    let mut span = Span::start(format!("saga {}", variant(&reply)), Kind::Internal, None);
    decided(&mut span, &order, &reply, &decision);
    let context = span.context();
    context
        .scope(async {
            if decision == Decision::Ignore {
                // The order moved on without the step being closed; stop watching it.
                saga.deadline = None;
                saga.retry_at = None;
                store::save_saga(&mut tx, &saga, &order, None).await?;
            } else {
                apply(&mut tx, &mut saga, &mut order, &decision, None, timeouts).await?;
            }
            tx.commit().await?;
            Ok::<_, Error>(())
        })
        .await
        .inspect_err(|error| span.fail(error.to_string()))?;
    Ok(true)
}

/// How many due sagas one [`sweep`] looks at.
const SWEEP_BATCH: i64 = 50;

/// Acts on up to 50 due sagas (deadlines passed, retries due), each in its own transaction:
/// one that fails is logged and postponed, the others go on. Returns how many were due.
pub async fn sweep(db: &PgPool, timeouts: Timeouts) -> Result<usize, Error> {
    let due = {
        let mut conn = db.acquire().await?;
        store::due_sagas(&mut conn, SWEEP_BATCH).await?
    };
    for order_id in &due {
        if let Err(error) = sweep_one(db, *order_id, timeouts).await {
            tracing::warn!(%order_id, %error, "a due saga could not be handled; postponed");
            let until = Timeouts::after(Utc::now(), timeouts.resend);
            if let Ok(mut conn) = db.acquire().await {
                let _ = store::postpone_saga(&mut conn, *order_id, until).await;
            }
        }
    }
    Ok(due.len())
}

/// How often the in-flight gauges are read.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// Runs [`sweep`] every `every` until shutdown, and refreshes the in-flight gauges.
pub async fn sweeper(db: PgPool, timeouts: Timeouts, every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut measured = tokio::time::Instant::now() - METRICS_EVERY;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        if measured.elapsed() >= METRICS_EVERY {
            measured = tokio::time::Instant::now();
            if let Err(e) = crate::metrics::SAGA.refresh(&db).await {
                tracing::warn!(error = %e, "reading the sagas in flight failed");
            }
        }
        // Full batches are followed by another, a bounded number of times per tick (sagas
        // another replica holds stay due and must not spin this loop).
        if let Err(e) = crate::aftersale::sweep(&db, timeouts).await {
            tracing::warn!(error = %e, "resending captures and refunds failed");
        }
        for _ in 0..20 {
            match sweep(&db, timeouts).await {
                Ok(n) if n as i64 == SWEEP_BATCH => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::debug!(due = n, "due saga steps handled");
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
