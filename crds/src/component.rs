//! The six components a Shop is made of.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One of the services a shop runs. The name is also the Service resource's default name, the
/// database name and the stream prefix, so it is fixed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The public entry: routing, authentication, rate limits, circuit breaking.
    Gateway,
    /// Accounts, tokens, sessions, roles, 2FA.
    Auth,
    /// Catalog, search and inventory.
    Products,
    /// Cart, checkout and the order saga.
    Orders,
    /// Payment providers, refunds, invoices.
    Payments,
    /// Email, webhooks and other channels.
    Notifications,
}

impl Component {
    /// Every component, in start order (the gateway last: it fronts the others).
    pub const ALL: [Component; 6] = [
        Component::Auth,
        Component::Products,
        Component::Orders,
        Component::Payments,
        Component::Notifications,
        Component::Gateway,
    ];

    /// The lowercase name used in resource names, databases and binaries (`tienda-<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Auth => "auth",
            Component::Products => "products",
            Component::Orders => "orders",
            Component::Payments => "payments",
            Component::Notifications => "notifications",
        }
    }

    /// Whether the component keeps state in its own PostgreSQL database.
    pub fn has_database(self) -> bool {
        !matches!(self, Component::Gateway)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
