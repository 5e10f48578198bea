//! Inventory events and the order saga's inventory commands, handled by products.
//!
//! The saga sends a command on `tienda.inventory.cmd.<name>` and waits for the matching event
//! (`reserved` or `reservation_failed`, `committed`, `released`) with the same
//! `reservation_id`. All commands are idempotent by `reservation_id`; `restock` (answered by
//! `restocked`) by its `restock_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contract;

/// A quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Stock keeping unit.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: u32,
}

/// A SKU that could not be reserved in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    /// Stock keeping unit.
    pub sku: String,
    /// Units asked for.
    pub requested: u32,
    /// Units available when asked (0 for an unknown SKU).
    pub available: u32,
}

/// Why a reservation was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The caller released it (e.g. the saga compensating).
    Requested,
    /// Its TTL passed before it was committed.
    Expired,
}

/// Command: hold stock for an order, all lines or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveInventory {
    /// Chosen by the caller; repeating it never reserves twice.
    pub reservation_id: Uuid,
    /// The order the stock is for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What to hold.
    pub items: Vec<Line>,
    /// Seconds until an uncommitted reservation is released.
    pub ttl_seconds: u32,
}
contract!(Command, ReserveInventory, "inventory", "reserve", 1, |m| m
    .reservation_id);

/// Command: turn a reservation into a sale (stock leaves on-hand).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitReservation {
    /// The reservation.
    pub reservation_id: Uuid,
}
contract!(Command, CommitReservation, "inventory", "commit", 1, |m| m
    .reservation_id);

/// Command: give reserved stock back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseReservation {
    /// The reservation.
    pub reservation_id: Uuid,
}
contract!(
    Command,
    ReleaseReservation,
    "inventory",
    "release",
    1,
    |m| m.reservation_id
);

/// Command: put units back on the shelf — a cancelled order's sold stock that never left the
/// warehouse, or goods a customer returned. Idempotent by `restock_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestockInventory {
    /// Chosen by the caller; repeating it never restocks twice.
    pub restock_id: Uuid,
    /// The order the units came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What goes back.
    pub items: Vec<Line>,
    /// Why (recorded in the stock ledger).
    pub reason: String,
}
contract!(Command, RestockInventory, "inventory", "restock", 1, |m| m
    .restock_id);

/// Stock is held for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The order, if the command named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What is held.
    pub items: Vec<Line>,
    /// When it is released unless committed.
    pub expires_at: DateTime<Utc>,
}
contract!(Event, InventoryReserved, "inventory", "reserved", 1, |m| m
    .reservation_id);

/// A reservation could not be made; nothing is held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReservationFailed {
    /// The reservation asked for.
    pub reservation_id: Uuid,
    /// The order, if the command named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// The lines that were short.
    pub shortages: Vec<Shortage>,
}
contract!(
    Event,
    InventoryReservationFailed,
    "inventory",
    "reservation_failed",
    1,
    |m| m.reservation_id
);

/// A reservation became a sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryCommitted {
    /// The reservation.
    pub reservation_id: Uuid,
    /// What was sold.
    pub items: Vec<Line>,
}
contract!(
    Event,
    InventoryCommitted,
    "inventory",
    "committed",
    1,
    |m| m.reservation_id
);

/// Reserved stock was given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReleased {
    /// The reservation.
    pub reservation_id: Uuid,
    /// What was given back.
    pub items: Vec<Line>,
    /// Why.
    pub reason: ReleaseReason,
}
contract!(Event, InventoryReleased, "inventory", "released", 1, |m| m
    .reservation_id);

/// Units went back on the shelf (on-hand grew by `items`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRestocked {
    /// The restock asked for.
    pub restock_id: Uuid,
    /// The order, if the command named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// What went back.
    pub items: Vec<Line>,
}
contract!(
    Event,
    InventoryRestocked,
    "inventory",
    "restocked",
    1,
    |m| m.restock_id
);

/// An admin changed a SKU's on-hand stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryAdjusted {
    /// Stock keeping unit.
    pub sku: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// The change (positive: received; negative: lost, damaged, counted).
    pub delta: i64,
    /// Why, as entered in the stock ledger.
    pub reason: String,
}
contract!(Event, InventoryAdjusted, "inventory", "adjusted", 1, |m| m
    .sku);

/// A SKU's available stock fell to or below its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryLowStock {
    /// Stock keeping unit.
    pub sku: String,
    /// Available now (on hand minus reserved).
    pub available: i64,
    /// The threshold crossed.
    pub threshold: i64,
}
contract!(Event, InventoryLowStock, "inventory", "low_stock", 1, |m| m
    .sku);
