//! `Service`: one component of a shop, with its database, streams and consumers.

use k8s_openapi::{
    api::core::v1::{EnvVar, ResourceRequirements},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::reclaim_policy::ReclaimPolicy;
use crate::{component::Component, duration::Duration, pull_policy::PullPolicy};

/// One component of a shop. Created by the Shop controller (one per listed component) and
/// reconciled into a Deployment, a Kubernetes Service, a ServiceAccount, a PodDisruptionBudget,
/// a credentials Secret, a PostgreSQL database and role, and JetStream streams and consumers.
///
/// The plural is `tiendaservices` (short name `tsvc`) so that `kubectl get services` keeps
/// meaning the core kind.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tienda.dev",
    version = "v1alpha1",
    kind = "Service",
    doc = "One component of a shop: its workload, database, JetStream streams and consumers.",
    plural = "tiendaservices",
    singular = "tiendaservice",
    shortname = "tsvc",
    namespaced,
    status = "ServiceStatus",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Shop", type_ = "string", json_path = ".spec.shop"),
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.component"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.database) || has(self.database)")
        .message("database cannot be removed; delete the Service to release it")
        .field_path(".database"),
    validation = Rule::new("self.component != 'gateway' || !has(self.database)")
        .message("the gateway keeps no state and takes no database")
        .field_path(".database")
)]
pub struct ServiceSpec {
    /// Name of the Shop this service belongs to, in the same namespace. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("shop is immutable"))]
    pub shop: String,

    /// Which component this is. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("component is immutable"))]
    pub component: Component,

    /// Container image, e.g. `ghcr.io/tienda-dev/tienda-products:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Image pull policy (default: Kubernetes' own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Number of pods (default 1).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// CPU and memory of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables, appended after the ones the operator sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Container port the HTTP API listens on (default 8080).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,

    /// The component's own PostgreSQL database; absent for stateless components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,

    /// JetStream streams this component owns (it is the only publisher of their subjects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub streams: Vec<StreamSpec>,

    /// Durable pull consumers this component reads with, on its own or other components'
    /// streams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub consumers: Vec<ConsumerSpec>,
}

fn default_replicas() -> i32 {
    1
}

fn default_port() -> i32 {
    8080
}

/// A PostgreSQL database and the login role that owns it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database name; also the role name. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("database name is immutable"))]
    pub name: String,

    /// `Retain` (default) or `Delete` the database when the Service is deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,

    /// Extensions created in the database (the role cannot create them itself), e.g. `pg_trgm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^[a-z_][a-z0-9_-]*$")))]
    pub extensions: Vec<String>,

    /// Maximum connections of the role (default: unlimited). Size it to replicas × pool size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub connection_limit: Option<i32>,
}

/// A JetStream stream (see NATS' StreamConfig).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.maxAge) || duration(self.duplicateWindow) <= duration(self.maxAge)")
        .message("duplicateWindow must not exceed maxAge")
        .field_path(".duplicateWindow")
)]
pub struct StreamSpec {
    /// Stream name, e.g. `ORDERS`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: String,

    /// Subjects captured by the stream, e.g. `tienda.orders.>`.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 255)))]
    pub subjects: Vec<String>,

    /// When messages are removed: `Limits` (default; age/size limits), `Interest` (once
    /// every consumer acknowledged) or `WorkQueue` (once one consumer acknowledged).
    #[serde(default)]
    pub retention: Retention,

    /// `File` (default, survives restarts) or `Memory`. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage is immutable"))]
    pub storage: Storage,

    /// Maximum age of a message; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,

    /// Maximum size of the stream in bytes; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<i64>,

    /// Maximum number of messages; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_msgs: Option<i64>,

    /// Replicas (1, 3 or 5); default: the Shop's `nats.streamReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("must be 1, 3 or 5"))]
    pub replicas: Option<i32>,

    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate (default `2m`).
    /// The outbox relay relies on it: keep it longer than the relay's retry horizon.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window: Duration,

    /// What a full stream does: `Old` (default) drops the oldest messages, `New` refuses new.
    #[serde(default)]
    pub discard: Discard,
}

fn default_duplicate_window() -> Duration {
    "2m".parse().expect("valid duration")
}

/// JetStream retention policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Retention {
    /// Keep messages until a limit (age, bytes, count) removes them.
    #[default]
    Limits,
    /// Keep messages while a consumer has not acknowledged them.
    Interest,
    /// Remove a message once any consumer acknowledged it.
    WorkQueue,
}

/// JetStream storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Storage {
    /// On disk.
    #[default]
    File,
    /// In memory; lost on restart.
    Memory,
}

/// JetStream discard policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Discard {
    /// Drop the oldest messages.
    #[default]
    Old,
    /// Refuse new messages.
    New,
}

/// A durable pull consumer (see NATS' ConsumerConfig).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.backoff) || size(self.backoff) < self.maxDeliver")
        .message("backoff must have fewer entries than maxDeliver")
        .field_path(".backoff")
)]
pub struct ConsumerSpec {
    /// Durable name, e.g. `orders-payments-events`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: String,

    /// Stream the consumer reads.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub stream: String,

    /// Subjects to deliver; the whole stream when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 255)))]
    pub filter_subjects: Vec<String>,

    /// How long a delivered message may stay unacknowledged before redelivery (default `30s`).
    #[serde(default = "default_ack_wait")]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')")
            .message("ackWait must be between 1s and 1h")
    )]
    pub ack_wait: Duration,

    /// Deliveries before a message is given up on and dead-lettered (default 5).
    #[serde(default = "default_max_deliver")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_deliver: i32,

    /// Redelivery delays after each failed delivery (default: `ackWait` each time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backoff: Vec<Duration>,

    /// Unacknowledged messages in flight at once, across all pods (default 1000).
    #[serde(default = "default_max_ack_pending")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_ack_pending: i32,

    /// Where a new consumer starts: `All` (default), `New`, `Last`, `LastPerSubject`.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
}

fn default_ack_wait() -> Duration {
    "30s".parse().expect("valid duration")
}

fn default_max_deliver() -> i32 {
    5
}

fn default_max_ack_pending() -> i32 {
    1000
}

/// JetStream deliver policy of a new consumer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeliverPolicy {
    /// From the first message in the stream.
    #[default]
    All,
    /// Only messages published after the consumer was created.
    New,
    /// From the last message.
    Last,
    /// From the last message of each subject.
    LastPerSubject,
}

/// What the operator observed of a Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `DatabaseReady`, `StreamsReady`, `Available`, `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Pods of the Deployment that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Secret holding the database credentials (`DATABASE_URL`, `username`, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// In-cluster URL of the component's HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// State of each stream and consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub streams: Vec<StreamStatus>,
}

/// Whether one stream or consumer matches its spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// Stream name, or `<stream>/<consumer>` for a consumer.
    pub name: String,
    /// Whether it exists with the spec's settings.
    pub ready: bool,
    /// What is wrong, e.g. an immutable setting that differs from the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
