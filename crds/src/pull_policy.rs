//! When a component's image is pulled: set on a Shop for all its components or on one
//! Service, so it lives apart from both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When to pull a component's image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}
