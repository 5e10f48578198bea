//! What deleting a Shop or a Service does to its external state: named by both kinds, so it
//! lives apart from both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What deletion does to external state (databases, streams).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the database and the streams: nothing is lost, a new Service reattaches to them.
    #[default]
    Retain,
    /// Drop the database (after terminating its connections), its role and the streams.
    Delete,
}
