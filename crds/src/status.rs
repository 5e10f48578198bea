//! Status pieces shared by the four kinds: conditions and the policy status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Condition types written by the operator. Kind-specific ones are listed beside each kind.
pub mod condition {
    /// The resource does what it asks for.
    pub const READY: &str = "Ready";
    /// The operator is moving the resource towards its desired state.
    pub const PROGRESSING: &str = "Progressing";
    /// The resource works, but not fully (some replicas or dependencies down).
    pub const DEGRADED: &str = "Degraded";
    /// Service: the database and login role exist and the credentials Secret matches them.
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// Service: every stream and durable consumer exists with the spec's settings.
    pub const STREAMS_READY: &str = "StreamsReady";
    /// Service: the Deployment has its minimum of available replicas.
    pub const AVAILABLE: &str = "Available";
    /// Policies: the policy is valid and attached to its target.
    pub const ACCEPTED: &str = "Accepted";
}

/// Status of a RateLimitPolicy or CircuitPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (reasons `Accepted`, `TargetNotFound`, `Conflicted`, `Invalid`), `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Service resources the policy applies to once its target is resolved (a Shop target
    /// resolves to every Service of that shop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Which generation of this policy each enforcing replica has applied, so a user can see a
    /// change take effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["replica".into()]))]
    pub applied: Vec<AppliedGeneration>,
}

/// One replica's report of the policy generation it enforces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppliedGeneration {
    /// The replica (pod name, or `local` under `tienda up`).
    pub replica: String,
    /// The policy's `metadata.generation` that replica enforces.
    pub generation: i64,
}
