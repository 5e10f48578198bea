//! `RateLimitPolicy`: request limits the gateway enforces.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{duration::Duration, status::PolicyStatus};

/// Rate limits for a Service's routes or for the whole Shop, enforced by the gateway. Limits
/// are for the whole shop: each gateway replica enforces its share.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tienda.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    doc = "Rate limits the gateway enforces for a Service or a whole Shop.",
    namespaced,
    status = "PolicyStatus",
    shortname = "rlp",
    derive = "PartialEq",
    cel,
    printcolumn(
        name = "Target Kind",
        type_ = "string",
        json_path = ".spec.targetRef.kind"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    /// What the policy applies to: a `Service` (its routes) or a `Shop` (every route).
    pub target_ref: RateLimitTargetRef,

    /// The limits; a request is counted by every rule it matches and rejected if any rejects it.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub rules: Vec<RateLimitRule>,
}

/// The target of a RateLimitPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitTargetRef {
    /// `Service` or `Shop`.
    pub kind: RateLimitTargetKind,
    /// Name of the Service or Shop in the policy's namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Kinds a RateLimitPolicy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RateLimitTargetKind {
    /// A `Service` resource (its routes at the gateway).
    Service,
    /// A `Shop` (every route).
    Shop,
}

/// One limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.burst) || self.algorithm == 'TokenBucket'")
        .message("burst applies to the TokenBucket algorithm only")
        .field_path(".burst"),
    validation = Rule::new("!has(self.burst) || self.burst <= self.requests")
        .message("burst must not exceed requests: a larger burst would let a client pass the limit itself")
        .field_path(".burst"),
    validation = Rule::new("duration(self.period) >= duration('1s') && duration(self.period) <= duration('24h')")
        .message("period must be between 1s and 24h")
        .field_path(".period")
)]
pub struct RateLimitRule {
    /// Name of the rule, unique in the policy; shown in metrics and the `RateLimit-Policy` header.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Which requests the rule counts (default: all requests to the target).
    #[serde(default, rename = "match")]
    pub match_: RequestMatch,

    /// What a client is: the key requests are counted under.
    pub client_key: ClientKey,

    /// `TokenBucket` (default; allows bursts up to `burst`) or `SlidingWindow`.
    #[serde(default)]
    pub algorithm: Algorithm,

    /// Requests allowed per `period` for each client, across all gateway replicas.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests: i32,

    /// The period `requests` is counted over, 1s to 24h, e.g. `1m`.
    pub period: Duration,

    /// Token bucket only: requests a client may send at once (the bucket's size); default
    /// `requests`. The bucket refills at `requests` per `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<i32>,

    /// Count and report, but never reject: try a limit on real traffic first.
    #[serde(default)]
    pub shadow: bool,
}

/// Which requests a rule applies to; every given field must match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.path) && has(self.pathPrefix))")
        .message("set either path or pathPrefix, not both")
)]
pub struct RequestMatch {
    /// Request paths starting with this prefix, at a segment boundary (`/v1/products` matches
    /// `/v1/products/42`, not `/v1/productsx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,

    /// Exactly this request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,

    /// These methods only (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub methods: Vec<HttpMethod>,

    /// Request headers that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
}

/// An HTTP method.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    /// GET
    GET,
    /// HEAD
    HEAD,
    /// POST
    POST,
    /// PUT
    PUT,
    /// PATCH
    PATCH,
    /// DELETE
    DELETE,
    /// OPTIONS
    OPTIONS,
}

/// A header that must be present with a value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// Exact value.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// The key requests are counted under.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'Header' ? has(self.header) : !has(self.header)")
        .message("header is required when type is Header, and only then")
)]
pub struct ClientKey {
    /// `ClientIP`, `User` (the JWT subject; anonymous requests share one key), `ApiKey` (the
    /// `X-Api-Key` header) or `Header` (the header named in `header`).
    #[serde(rename = "type")]
    pub type_: ClientKeyType,

    /// The header whose value is the key, for type `Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: Option<String>,
}

/// How a client is identified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClientKeyType {
    /// The client's IP (from `X-Forwarded-For` only when the peer is a trusted proxy).
    ClientIP,
    /// The authenticated user (JWT `sub`).
    User,
    /// The `X-Api-Key` header.
    ApiKey,
    /// A named header.
    Header,
}

/// Rate limiting algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Algorithm {
    /// Tokens refill continuously; a full bucket allows a burst.
    #[default]
    TokenBucket,
    /// A sliding-window counter: smooth, no burst beyond the limit.
    SlidingWindow,
}
