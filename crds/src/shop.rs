//! `Shop`: the whole shop, the one resource a user applies.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{EnvVar, ResourceRequirements},
    apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{component::Component, pull_policy::PullPolicy, reclaim_policy::ReclaimPolicy};

/// A whole shop: which components run, against which PostgreSQL server and NATS cluster. The
/// operator creates one `Service` resource per listed component, owned by the Shop.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tienda.dev",
    version = "v1alpha1",
    kind = "Shop",
    doc = "A whole shop: which components run, against which PostgreSQL server and NATS cluster.",
    namespaced,
    status = "ShopStatus",
    shortname = "shp",
    derive = "PartialEq",
    cel,
    validation = Rule::new(
        "self.metadata.name.size() <= 49 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message(
        "a Shop name must be at most 49 lowercase letters, digits and '-', start with a letter and end with a letter or digit: its Services are named <shop>-<component> and must be valid DNS labels"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Services",
        type_ = "string",
        json_path = ".status.servicesReady"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".status.gatewayAddress"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.gateway) || self.components.exists(c, c.name == 'gateway')")
        .message("gateway exposure is set but the gateway component is not listed")
        .field_path(".gateway")
)]
pub struct ShopSpec {
    /// Version of Tienda to run: the image tag of every component, e.g. `0.1.0`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub version: String,

    /// Registry and repository prefix of the images; a component's image is
    /// `<registry>/tienda-<component>:<version>` unless the component overrides it.
    #[serde(default = "default_registry")]
    #[schemars(length(min = 1, max = 255))]
    pub registry: String,

    /// Image pull policy of every component (default: Kubernetes' own, `IfNotPresent` for a tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets in the Shop's namespace used to pull the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<String>,

    /// The PostgreSQL server that holds one database per component.
    pub postgres: PostgresRef,

    /// The NATS cluster (JetStream enabled, NATS ≥ 2.10) the components talk over.
    pub nats: NatsRef,

    /// The components to run, each at most once. Default: all six with one replica.
    #[serde(default = "default_components")]
    #[schemars(length(min = 1, max = 6))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub components: Vec<ShopComponent>,

    /// How the gateway is exposed outside the cluster (default: a ClusterIP Service only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayExposure>,

    /// What happens to each component's database and streams when the Shop is deleted:
    /// `Retain` (default, nothing lost) or `Delete`.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,

    /// Tracing export (OpenTelemetry over OTLP); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,

    /// How the shop takes payments (default: the built-in `sandbox`, which moves no money).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<ShopPayments>,

    /// Where the shop's mail goes and what its webhooks may reach (default: no SMTP server,
    /// so mail is written as `.eml` files in the pod and logged; webhooks to public addresses
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<ShopNotifications>,

    /// Who may reach the shop's pods. By default the operator keeps a NetworkPolicy per
    /// component: its public port only from the gateway and the components that call it (the
    /// gateway's from anywhere), its admin port only from the operator and Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<ShopNetworkPolicy>,
}

/// The NetworkPolicies the operator keeps for a Shop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopNetworkPolicy {
    /// Whether to keep them (default true). Off, the operator deletes the ones it made.
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// The namespaces whose pods may scrape the admin port (`/metrics`), as a namespace
    /// selector (default: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_namespaces: Option<LabelSelector>,

    /// The pods that may scrape the admin port, as a pod selector within those namespaces
    /// (default: `app.kubernetes.io/name: prometheus`, the label of the Prometheus pods the
    /// Prometheus Operator runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_pods: Option<LabelSelector>,
}

fn enabled() -> bool {
    true
}

/// The notifications component's settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopNotifications {
    /// The mail server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,

    /// The `From` of every message (`Acme <no-reply@acme.example>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    pub mail_from: Option<String>,

    /// Whether webhook endpoints may be on private, loopback or link-local addresses (a
    /// receiver inside the cluster). Default false: only public addresses are called.
    #[serde(default)]
    pub allow_private_webhooks: bool,

    /// SMS providers (default none: texts are written as files in the pod and logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSettings>,

    /// Push providers (default none: notifications are written as files in the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSettings>,
}

/// SMS providers; with both, Twilio is tried first and Vonage when Twilio's circuit is open
/// (a CircuitPolicy with `targetRef: {kind: External, name: twilio}`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.twilio) || has(self.vonage)")
        .message("name at least one SMS provider: twilio or vonage")
)]
pub struct SmsSettings {
    /// Twilio's Programmable Messaging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio: Option<TwilioSettings>,
    /// Vonage's SMS API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vonage: Option<VonageSettings>,
}

/// A Twilio account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TwilioSettings {
    /// The account SID (`AC…`).
    #[schemars(length(min = 34, max = 34), regex(pattern = r"^AC[0-9a-fA-F]{32}$"))]
    pub account_sid: String,
    /// The sender: a number in E.164 or a Messaging Service SID (`MG…`).
    #[schemars(length(min = 3, max = 64))]
    pub from: String,
    /// A Secret in the Shop's namespace with `authToken`.
    pub secret_ref: SecretRef,
}

/// A Vonage account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VonageSettings {
    /// The API key.
    #[schemars(length(min = 1, max = 64))]
    pub api_key: String,
    /// The sender (a number, or up to 11 letters).
    #[schemars(length(min = 1, max = 15))]
    pub from: String,
    /// A Secret in the Shop's namespace with `apiSecret`.
    pub secret_ref: SecretRef,
}

/// Push providers; with both, a person's app devices get FCM and, while FCM's circuit is
/// open, their browsers get Web Push.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.fcm) || has(self.webpush)")
        .message("name at least one push provider: fcm or webpush")
)]
pub struct PushSettings {
    /// Firebase Cloud Messaging (HTTP v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmSettings>,
    /// Web Push with VAPID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebPushSettings>,
}

/// FCM's service account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FcmSettings {
    /// A Secret in the Shop's namespace with `credentials.json`: the service account's key
    /// file as the Firebase console downloads it.
    pub secret_ref: SecretRef,
}

/// The shop's VAPID identity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.subject.startsWith('mailto:') || self.subject.startsWith('https://')")
        .message("subject is how push services reach the shop: a mailto: or https: URL")
        .field_path(".subject")
)]
pub struct WebPushSettings {
    /// `mailto:ops@shop.example` or an `https:` page.
    #[schemars(length(min = 8, max = 320))]
    pub subject: String,
    /// A Secret in the Shop's namespace with `vapidPrivateKey` (base64url, 32 bytes).
    pub secret_ref: SecretRef,
}

/// An SMTP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.tls != 'none' || !has(self.secretRef)")
        .message("credentials are never sent without TLS: use tls starttls or tls")
        .field_path(".tls")
)]
pub struct SmtpSettings {
    /// Its host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// Its port (default by `tls`: 587 for `starttls`, 465 for `tls`, 25 for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// `starttls` (default: upgrade after connecting, required), `tls` (TLS from the first
    /// byte) or `none` (a local relay; no credentials allowed).
    #[serde(default)]
    pub tls: SmtpTls,

    /// A Secret in the Shop's namespace with `username` and `password`. Under `tienda up`
    /// the same values come from `TIENDA_SMTP_USERNAME` and `TIENDA_SMTP_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// How an SMTP connection is protected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// Implicit TLS.
    Tls,
    /// In the clear (a relay on the same network).
    None,
}

/// The payment provider new payments go to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.provider != 'stripe' || has(self.stripe)")
        .message("provider stripe needs stripe.secretRef")
        .field_path(".stripe")
)]
#[x_kube(
    validation = Rule::new("self.provider != 'paypal' || has(self.paypal)")
        .message("provider paypal needs paypal.secretRef")
        .field_path(".paypal")
)]
pub struct ShopPayments {
    /// `sandbox` (built in, Stripe's test card tokens, no network), `stripe` or `paypal`.
    #[serde(default)]
    pub provider: PaymentProvider,

    /// Stripe's settings (required when the provider is `stripe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSettings>,

    /// PayPal's settings (required when the provider is `paypal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paypal: Option<PayPalSettings>,
}

/// A payment provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProvider {
    /// Built in; no network.
    #[default]
    Sandbox,
    /// Stripe's PaymentIntents.
    Stripe,
    /// PayPal's Orders v2.
    Paypal,
}

/// Where Stripe is and where its keys are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StripeSettings {
    /// Stripe's API base URL (default `https://api.stripe.com`; a test emulator's, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("must be an http:// or https:// URL")
    )]
    pub api_base: Option<String>,

    /// A Secret in the Shop's namespace with `secretKey` (the API secret key) and, optionally,
    /// `webhookSecrets` (comma-separated signing secrets; several while rotating). Under
    /// `tienda up` the same values come from `STRIPE_SECRET_KEY` and `STRIPE_WEBHOOK_SECRETS`
    /// in its own environment.
    pub secret_ref: SecretRef,
}

/// Where PayPal is and where the app's credentials are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PayPalSettings {
    /// PayPal's API base URL (default its sandbox, `https://api-m.sandbox.paypal.com`; live:
    /// `https://api-m.paypal.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("must be an http:// or https:// URL")
    )]
    pub api_base: Option<String>,

    /// A Secret in the Shop's namespace with the REST app's `clientId` and `clientSecret`.
    /// Under `tienda up` the same values come from `PAYPAL_CLIENT_ID` and
    /// `PAYPAL_CLIENT_SECRET` in its own environment.
    pub secret_ref: SecretRef,
}

fn default_registry() -> String {
    "ghcr.io/tienda-dev".into()
}

fn default_components() -> Vec<ShopComponent> {
    Component::ALL
        .into_iter()
        .map(|name| ShopComponent {
            name,
            replicas: 1,
            resources: None,
            env: Vec::new(),
            image: None,
        })
        .collect()
}

fn default_replicas() -> i32 {
    1
}

/// A PostgreSQL server reached with an administrative login.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRef {
    /// Host name of the server as the operator and the pods reach it.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// TCP port (default 5432).
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Secret in the Shop's namespace with an administrative login (keys `username` and
    /// `password`) allowed to create databases and roles. The operator alone reads it; each
    /// component gets its own least-privileged role.
    pub admin_secret_ref: SecretRef,

    /// Database the operator connects to for administration (default `postgres`).
    #[serde(default = "default_admin_database")]
    #[schemars(length(min = 1, max = 63))]
    pub admin_database: String,

    /// TLS towards the server (default `Prefer`).
    #[serde(default)]
    pub ssl_mode: SslMode,
}

fn default_postgres_port() -> i32 {
    5432
}

fn default_admin_database() -> String {
    "postgres".into()
}

/// libpq's `sslmode`, the subset that makes sense for a server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS, any certificate.
    Require,
    /// TLS, certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, trusted certificate matching the host name.
    VerifyFull,
}

/// A Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A NATS cluster with JetStream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsRef {
    /// Server URL(s), comma-separated: `nats://nats.nats.svc:4222`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.split(',').all(u, u.trim().matches('^(nats|tls)://[^\\\\s/]+$'))")
            .message("must be nats:// or tls:// URLs separated by commas")
    )]
    pub url: String,

    /// Secret with credentials: key `nats.creds` (a JWT creds file), or `username` and
    /// `password`, or `token`. Anonymous when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// For a NATS run with decentralized JWT authorization (operator mode): a Secret with
    /// the shop's account public key (key `account`, `A…`) and one of its signing keys' seed
    /// (key `signingKey`, `SA…`). The operator then mints each component its own NATS user,
    /// allowed only the subjects it publishes and consumes (the gateway none), into
    /// `<service>-nats`; `credentialsSecretRef` remains the operator's own, to provision.
    /// Without it every component uses `credentialsSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_signing_key_secret_ref: Option<SecretRef>,

    /// Replicas of every stream unless a stream says otherwise: 1, 3 or 5 (default 1).
    #[serde(default = "default_stream_replicas")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("must be 1, 3 or 5"))]
    pub stream_replicas: i32,
}

fn default_stream_replicas() -> i32 {
    1
}

/// One component of the shop and how it runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopComponent {
    /// Which component.
    pub name: Component,

    /// Number of pods (default 1; 0 stops the component without deleting anything).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// CPU and memory of each pod (default: the component's own defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables, appended after the ones the operator sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Full image reference overriding `registry` and `version` for this component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

/// How the gateway is reached from outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.ingress) && has(self.httpRoute))")
        .message("set either ingress or httpRoute, not both")
)]
pub struct GatewayExposure {
    /// Type of the gateway's Kubernetes Service (default `ClusterIP`).
    #[serde(default)]
    pub service_type: ServiceType,

    /// An Ingress in front of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExposure>,

    /// A Gateway API HTTPRoute in front of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteExposure>,
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

/// An Ingress for the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressExposure {
    /// IngressClass to use (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,

    /// Host name the shop answers on, e.g. `shop.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// Secret with the TLS certificate for `host`; plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,

    /// Annotations for the Ingress (e.g. for cert-manager).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Gateway API HTTPRoute for the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteExposure {
    /// The Gateways (and listeners) the route attaches to.
    #[schemars(length(min = 1, max = 16))]
    pub parent_refs: Vec<ParentRef>,

    /// Host names the route matches; all of the Gateway's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
}

/// A Gateway API parent reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway (default: the Shop's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener of the Gateway to attach to (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Trace export.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// OTLP/gRPC endpoint, e.g. `http://otel-collector.observability:4317`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("must be an http:// or https:// URL")
    )]
    pub otlp_endpoint: String,
}

/// What the operator observed of a Shop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (every component ready), `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Ready components over listed components, e.g. `5/6` (a printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_ready: Option<String>,

    /// One entry per listed component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub components: Vec<ComponentStatus>,

    /// Where the gateway answers: the Ingress/HTTPRoute host, the load balancer address, or the
    /// in-cluster Service address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<String>,

    /// What the operator made to expose the gateway (`Ingress`, `HTTPRoute`), so what the
    /// spec no longer asks for is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub exposed_by: Vec<String>,
}

/// Readiness of one component, copied from its Service resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Which component.
    pub name: Component,
    /// Name of the `Service` resource running it.
    pub service: String,
    /// Whether that Service's `Ready` condition is true.
    pub ready: bool,
    /// Why it is not ready, from the Service's conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
