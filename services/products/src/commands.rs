//! The order saga's inventory commands from JetStream (`tienda.inventory.cmd.reserve|commit|
//! release|restock`), applied in the consumer's transaction with the same code as the HTTP API. Each
//! answers with an event: `inventory.reserved` or `inventory.reservation_failed`,
//! `inventory.committed` (or `inventory.released` for a commit that came after the
//! reservation expired or was released), `inventory.released`. A command repeated by the saga (a new message
//! with the same `reservation_id`) gets the answer again and changes nothing.

use sqlx::PgConnection;
use tienda_events::{
    Envelope, Message,
    inventory::{
        CommitReservation, InventoryCommitted, InventoryReleased, InventoryReservationFailed,
        InventoryReserved, ReleaseReason, ReleaseReservation, ReserveInventory, RestockInventory,
    },
};
use tienda_kit::{
    consumer::{Delivery, Handler, HandlerError},
    outbox,
};

use crate::{
    SOURCE,
    error::Error,
    inventory::{
        self, CommitOutcome, ItemRequest, Reservation, ReservationRequest, ReservationStatus, lines,
    },
};

/// The consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct InventoryCommands;

fn permanent(error: Error) -> HandlerError {
    match error {
        Error::Database(e) => HandlerError::Transient(e.into()),
        other => HandlerError::Permanent(anyhow::anyhow!("{other}")),
    }
}

/// The event that says what state `reservation` is in (sent again for repeated commands).
async fn restate(
    conn: &mut PgConnection,
    reservation: &Reservation,
    correlation: &Envelope<impl Message>,
) -> Result<(), HandlerError> {
    let items = lines(&reservation.items);
    let id = reservation.reservation_id;
    let result = match reservation.status {
        ReservationStatus::Held => {
            let event = InventoryReserved {
                reservation_id: id,
                order_id: reservation.order_id,
                items,
                expires_at: reservation.expires_at,
            };
            outbox::enqueue(conn, Envelope::caused_by(SOURCE, event, correlation)).await
        }
        ReservationStatus::Committed => {
            let event = InventoryCommitted {
                reservation_id: id,
                items,
            };
            outbox::enqueue(conn, Envelope::caused_by(SOURCE, event, correlation)).await
        }
        status @ (ReservationStatus::Released | ReservationStatus::Expired) => {
            let reason = if status == ReservationStatus::Expired {
                ReleaseReason::Expired
            } else {
                ReleaseReason::Requested
            };
            let event = InventoryReleased {
                reservation_id: id,
                items,
                reason,
            };
            outbox::enqueue(conn, Envelope::caused_by(SOURCE, event, correlation)).await
        }
    };
    result.map_err(HandlerError::from)
}

impl Handler for InventoryCommands {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let name = delivery.subject.rsplit('.').next().unwrap_or_default();
        match name {
            "reserve" => {
                let command = delivery.envelope::<ReserveInventory>()?;
                let request = ReservationRequest {
                    reservation_id: command.data.reservation_id,
                    order_id: command.data.order_id,
                    items: command
                        .data
                        .items
                        .iter()
                        .map(|l| ItemRequest {
                            sku: l.sku.clone(),
                            quantity: i64::from(l.quantity),
                        })
                        .collect(),
                    ttl_seconds: i64::from(command.data.ttl_seconds),
                };
                match inventory::reserve(conn, &request).await {
                    Ok((_, true)) => Ok(()),
                    Ok((existing, false)) => restate(conn, &existing, &command).await,
                    Err(Error::Insufficient(shortages)) => {
                        let event = InventoryReservationFailed {
                            reservation_id: request.reservation_id,
                            order_id: request.order_id,
                            shortages,
                        };
                        outbox::enqueue(conn, Envelope::caused_by(SOURCE, event, &command))
                            .await
                            .map_err(HandlerError::from)
                    }
                    Err(e) => Err(permanent(e)),
                }
            }
            "commit" => {
                let command = delivery.envelope::<CommitReservation>()?;
                // Answered whatever the reservation's state: a reservation that expired or was
                // released is answered `released`, so the saga cancels instead of waiting.
                match inventory::commit_reservation(
                    conn,
                    command.data.reservation_id,
                    Some(&command),
                )
                .await
                {
                    Ok(CommitOutcome::Committed(_) | CommitOutcome::ExpiredNow(_)) => Ok(()),
                    Ok(CommitOutcome::AlreadyCommitted(r) | CommitOutcome::NotHeld(r)) => {
                        restate(conn, &r, &command).await
                    }
                    Err(e) => Err(permanent(e)),
                }
            }
            "release" => {
                let command = delivery.envelope::<ReleaseReservation>()?;
                match inventory::release(conn, command.data.reservation_id).await {
                    Ok((_, true)) => Ok(()),
                    Ok((existing, false)) => restate(conn, &existing, &command).await,
                    Err(e) => Err(permanent(e)),
                }
            }
            "restock" => {
                let command = delivery.envelope::<RestockInventory>()?;
                inventory::restock(conn, &command.data, &command)
                    .await
                    .map(|_| ())
                    .map_err(permanent)
            }
            other => Err(HandlerError::Permanent(anyhow::anyhow!(
                "unknown inventory command {other:?} on {}",
                delivery.subject
            ))),
        }
    }
}
