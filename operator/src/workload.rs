//! A Service resource's desired Kubernetes objects (pure): Deployment, Kubernetes Service,
//! ServiceAccount, PodDisruptionBudget, the component's Role and RoleBinding, and the
//! credentials Secret's contents.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext,
            Service as KubeService, ServiceAccount, ServicePort, ServiceSpec as KubeServiceSpec,
            Volume, VolumeMount,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use tienda_crds::{
    Component, Service, Shop,
    service::ReclaimPolicy,
    shop::{ServiceType, SslMode},
};

use tienda_provision::environment::{
    ADMIN_PORT, Placed, Value, component_environment, shop_keys_secret_name, var,
};

use crate::shop::{component_labels, labels, service_name};

/// Where the NATS credentials Secret is mounted.
pub use tienda_provision::environment::NATS_CREDS_DIR;
/// The non-root user the images run as (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;
/// Pod template annotation whose change rolls the Deployment when config or credentials change.
pub const CONFIG_HASH_ANNOTATION: &str = "tienda.dev/config-hash";

/// The credentials Secret of a Service: `<service>-db`.
pub fn credentials_secret_name(service: &Service) -> String {
    format!("{}-db", service.name_any())
}

fn owner(service: &Service) -> OwnerReference {
    service
        .controller_owner_ref(&())
        .expect("a stored Service has a name and uid")
}

fn meta(service: &Service, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: service.namespace(),
        labels: Some(component_labels(&service.spec.shop, service.spec.component)),
        owner_references: Some(vec![owner(service)]),
        ..ObjectMeta::default()
    }
}

/// The pod selector: shop and component (stable across upgrades; selectors are immutable).
pub fn selector(service: &Service) -> BTreeMap<String, String> {
    [
        (labels::INSTANCE.to_owned(), service.spec.shop.clone()),
        (
            labels::COMPONENT.to_owned(),
            service.spec.component.to_string(),
        ),
    ]
    .into_iter()
    .collect()
}

/// The data of a new credentials Secret: `username`, `password`, `DATABASE_URL`, and for auth
/// `AUTH_KEY_ENCRYPTION_KEY` (`key`: it encrypts auth's signing keys at rest; every replica
/// needs the same one). Created once; nothing in it is ever regenerated.
pub fn credentials_secret(
    service: &Service,
    shop: &Shop,
    password: &str,
    key: &str,
) -> Option<Secret> {
    let database = service.spec.database.as_ref()?;
    let pg = &shop.spec.postgres;
    let sslmode = match pg.ssl_mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    };
    let url = format!(
        "postgres://{user}:{password}@{host}:{port}/{db}?sslmode={sslmode}",
        user = database.name,
        host = pg.host,
        port = pg.port,
        db = database.name,
    );
    let auth_key = (service.spec.component == Component::Auth)
        .then(|| (var::AUTH_KEY_ENCRYPTION_KEY, key.to_owned()));
    let data = [
        ("username", database.name.clone()),
        ("password", password.to_owned()),
        (var::DATABASE_URL, url),
    ]
    .into_iter()
    .chain(auth_key)
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    // Under `Retain` the Secret outlives the Service and the Shop, like the database it opens:
    // a re-created Shop finds it by name and gets the same role password and, for auth, the
    // same key-encryption key its kept signing keys were sealed with. Owned by the Service,
    // garbage collection would delete it with the Shop.
    let mut metadata = meta(service, credentials_secret_name(service));
    if database.reclaim_policy == ReclaimPolicy::Retain {
        metadata.owner_references = None;
    }
    Some(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The Secret of a component's own NATS identity: `<service>-nats` (key `nats.creds`).
pub fn nats_secret_name(service: &Service) -> String {
    format!("{}-nats", service.name_any())
}

/// Whether the component gets its own NATS identity (the Shop's NATS is in operator mode and
/// the component uses NATS: every one but the gateway).
pub fn has_own_nats_identity(service: &Service, shop: &Shop) -> bool {
    shop.spec.nats.account_signing_key_secret_ref.is_some()
        && service.spec.component != Component::Gateway
}

/// What a component's NATS identity is minted from: its permissions and the signing Secret's
/// name. A change (an upgrade that adds a subject, another Secret) mints it again.
pub fn nats_identity_fingerprint(service: &Service, shop: &Shop) -> String {
    let permissions = tienda_provision::nats_auth::permissions(service.spec.component);
    let reference = shop
        .spec
        .nats
        .account_signing_key_secret_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .unwrap_or_default();
    config_hash(&[
        permissions.publish.join(",").as_bytes(),
        permissions.subscribe.join(",").as_bytes(),
        reference.as_bytes(),
    ])
}

/// The `<service>-nats` Secret: the minted `.creds` (key `nats.creds`, where the pod mounts
/// it) and the fingerprint it was minted for. Owned by the Service.
pub fn nats_secret(service: &Service, creds: String, fingerprint: String) -> Secret {
    let data = [
        ("nats.creds".to_owned(), ByteString(creds.into_bytes())),
        (
            "fingerprint".to_owned(),
            ByteString(fingerprint.into_bytes()),
        ),
    ]
    .into_iter()
    .collect();
    Secret {
        metadata: meta(service, nats_secret_name(service)),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// A new `<shop>-keys` Secret: the keys the whole Shop shares ([`Value::ShopKey`]), random,
/// made once and never regenerated (the streams hold events sealed with them). Owned by the
/// Shop, so it goes with it.
pub fn shop_keys_secret(shop: &Shop) -> Secret {
    let name = shop.name_any();
    let mut labels = component_labels(&name, Component::Gateway);
    labels.remove(crate::shop::labels::COMPONENT);
    labels.insert(crate::shop::labels::NAME.into(), "tienda".into());
    let data = [(
        var::EVENT_SEALING_KEYS.to_owned(),
        ByteString(tienda_provision::database::generate_key().into_bytes()),
    )]
    .into_iter()
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(shop_keys_secret_name(&name)),
            namespace: shop.namespace(),
            labels: Some(labels),
            owner_references: shop.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The labels of the operator's pods (the chart's selector labels), whatever its namespace.
const OPERATOR_POD: (&str, &str) = ("app.kubernetes.io/name", "tienda-operator");
/// The default label of the pods that may scrape admin ports: the Prometheus Operator's.
const PROMETHEUS_POD: (&str, &str) = ("app.kubernetes.io/name", "prometheus");

/// Whether the Shop wants the operator's NetworkPolicies (the default).
pub fn network_policies_enabled(shop: &Shop) -> bool {
    shop.spec.network_policy.as_ref().is_none_or(|n| n.enabled)
}

/// The component's NetworkPolicy, named like the Service: its pods take traffic on the public
/// port only from the gateway and the components that call it (the gateway's own public port
/// from anywhere: it is the shop's front door), and on the admin port only from the operator
/// and Prometheus. Egress is not restricted (providers, SMTP and webhooks are anywhere).
pub fn network_policy(service: &Service, shop: &Shop) -> NetworkPolicy {
    let component = service.spec.component;
    let shop_name = &service.spec.shop;
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let labelled = |labels: &[(&str, &str)]| LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..LabelSelector::default()
    };
    let any_namespace = || Some(LabelSelector::default());
    let public_from = (component != Component::Gateway).then(|| {
        let callers: Vec<String> = tienda_provision::environment::callers(shop, component)
            .into_iter()
            .map(|c| c.to_string())
            .collect();
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [(labels::INSTANCE.to_owned(), shop_name.clone())]
                        .into_iter()
                        .collect(),
                ),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::COMPONENT.into(),
                    operator: "In".into(),
                    values: Some(callers),
                }]),
            }),
            ..NetworkPolicyPeer::default()
        }]
    });
    let settings = shop.spec.network_policy.as_ref();
    let metrics = NetworkPolicyPeer {
        namespace_selector: settings
            .and_then(|n| n.metrics_namespaces.clone())
            .or_else(any_namespace),
        pod_selector: Some(
            settings
                .and_then(|n| n.metrics_pods.clone())
                .unwrap_or_else(|| labelled(&[PROMETHEUS_POD])),
        ),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: any_namespace(),
        pod_selector: Some(labelled(&[OPERATOR_POD])),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(service, service.name_any()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(service)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port("http")]),
                    from: public_from,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port("admin")]),
                    from: Some(vec![operator, metrics]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The gateway's setting of the proxies whose `X-Forwarded-For` it believes.
pub const TRUSTED_PROXIES: &str = "GATEWAY_TRUSTED_PROXIES";

/// The private address ranges a cluster's pods use (RFC 1918, and IPv6 unique local).
pub use tienda_kit::net::PRIVATE_RANGES;

/// A component's environment in a pod: [`component_environment`] with Secrets and fields
/// referenced, cluster addresses filled in, and the user's `env` after it. A user entry with
/// the name of one the operator sets replaces it in place: `env` is a list keyed by name, and
/// the API server refuses an apply that names a variable twice.
pub fn environment(service: &Service, shop: &Shop) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = component_environment(shop, service.spec.component)
        .into_iter()
        .map(|(name, value)| env_var(service, shop, name, value))
        .collect();
    // Behind an Ingress or a Gateway API route, requests reach the gateway from the ingress
    // controller's pods: trust `X-Forwarded-For` from the cluster's private ranges, so rate
    // limits and fraud checks see clients' own addresses. A user `env` entry replaces it.
    let fronted = shop
        .spec
        .gateway
        .as_ref()
        .is_some_and(|g| g.ingress.is_some() || g.http_route.is_some());
    if service.spec.component == Component::Gateway && fronted {
        env.push(EnvVar {
            name: TRUSTED_PROXIES.into(),
            value: Some(PRIVATE_RANGES.into()),
            value_from: None,
        });
    }
    for entry in &service.spec.env {
        match env.iter_mut().find(|e| e.name == entry.name) {
            // The last of two user entries with one name wins, as in a pod spec edit.
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    env
}

fn env_var(service: &Service, shop: &Shop, name: &str, value: Value) -> EnvVar {
    let source = |source: EnvVarSource| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    };
    let text = match value {
        Value::Literal(text) => text,
        Value::Secret { key } => {
            return source(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: credentials_secret_name(service),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            });
        }
        Value::ShopSecret {
            name: secret,
            key,
            optional,
        } => {
            return source(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key: key.into(),
                    optional: Some(optional),
                }),
                ..EnvVarSource::default()
            });
        }
        Value::ShopKey { key } => {
            return source(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: shop_keys_secret_name(&service.spec.shop),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            });
        }
        Value::Field { path } => {
            return source(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            });
        }
        Value::Placed(placed) => in_cluster(service, shop, placed),
    };
    EnvVar {
        name: name.into(),
        value: Some(text),
        value_from: None,
    }
}

/// What a placement-dependent value is in a pod.
fn in_cluster(service: &Service, shop: &Shop, placed: Placed) -> String {
    match placed {
        Placed::ListenAddr => format!("0.0.0.0:{}", service.spec.port),
        Placed::AdminAddr => format!("0.0.0.0:{ADMIN_PORT}"),
        Placed::NatsUrl => shop.spec.nats.url.clone(),
        Placed::NatsCredsFile => format!("{NATS_CREDS_DIR}/nats.creds"),
        // Through the component's Kubernetes Service (same namespace, port 80).
        Placed::Url { component, path } => {
            format!(
                "http://{}{path}",
                service_name(&service.spec.shop, component)
            )
        }
        // Endpoints come from the EndpointSlices of the shop's Services.
        Placed::Upstreams => String::new(),
        Placed::PolicySource => "kubernetes".into(),
        Placed::LogFormat => "json".into(),
        Placed::Replicas => service.spec.replicas.max(1).to_string(),
    }
}

fn probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The Deployment. `config_hash` (of the credentials and the Shop settings the pods read) is
/// an annotation of the pod template, so a change rolls the pods.
pub fn deployment(service: &Service, shop: &Shop, config_hash: &str) -> Deployment {
    let name = service.name_any();
    let port = service.spec.port;
    let mut pod_labels = component_labels(&service.spec.shop, service.spec.component);
    pod_labels.extend(selector(service));
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    // The component's own NATS identity, else the Shop's shared credentials. The gateway
    // never uses NATS: it gets none.
    let nats_secret = if has_own_nats_identity(service, shop) {
        Some(nats_secret_name(service))
    } else {
        shop.spec
            .nats
            .credentials_secret_ref
            .as_ref()
            .filter(|_| service.spec.component != Component::Gateway)
            .map(|r| r.name.clone())
    };
    if let Some(secret_name) = nats_secret {
        volumes.push(Volume {
            name: "nats-creds".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "nats-creds".into(),
            mount_path: NATS_CREDS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let container = Container {
        name: service.spec.component.to_string(),
        image: Some(service.spec.image.clone()),
        image_pull_policy: service.spec.image_pull_policy.map(|p| format!("{p:?}")),
        // Probes stay on `http` (the kubelet reaches them there); `admin` (metrics, policies,
        // dead-letter admin) is for monitoring only and not in the Kubernetes Service.
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(ADMIN_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(environment(service, shop)),
        resources: service.spec.resources.clone(),
        startup_probe: Some(probe("/livez", port, 2, 30)),
        liveness_probe: Some(probe("/livez", port, 10, 3)),
        readiness_probe: Some(probe("/readyz", port, 5, 2)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let image_pull_secrets = (!shop.spec.image_pull_secrets.is_empty()).then(|| {
        shop.spec
            .image_pull_secrets
            .iter()
            .map(|name| k8s_openapi::api::core::v1::LocalObjectReference { name: name.clone() })
            .collect()
    });
    Deployment {
        metadata: meta(service, name.clone()),
        spec: DeploymentSpec {
            replicas: Some(service.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(service)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(
                        [(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name),
                    // Every component watches the policy resources (its Role allows
                    // nothing else but, for the gateway, EndpointSlices).
                    automount_service_account_token: Some(true),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    image_pull_secrets,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The Kubernetes Service in front of the pods (named like the Service resource).
pub fn kube_service(service: &Service, shop: &Shop) -> KubeService {
    // The gateway's Service is what the Shop exposes (`spec.gateway.serviceType`); a node port
    // or load balancer keeps traffic on the node that received it, so the gateway sees the
    // client's own address (its rate limits key on it) rather than another node's.
    let exposed = match (service.spec.component, shop.spec.gateway.as_ref()) {
        (Component::Gateway, Some(gateway)) => gateway.service_type,
        _ => ServiceType::ClusterIP,
    };
    let (type_, external_traffic_policy) = match exposed {
        ServiceType::ClusterIP => ("ClusterIP", None),
        ServiceType::NodePort => ("NodePort", Some("Local".to_owned())),
        ServiceType::LoadBalancer => ("LoadBalancer", Some("Local".to_owned())),
    };
    KubeService {
        metadata: meta(service, service.name_any()),
        spec: Some(KubeServiceSpec {
            selector: Some(selector(service)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            type_: Some(type_.into()),
            external_traffic_policy,
            ..KubeServiceSpec::default()
        }),
        status: None,
    }
}

/// The pods' ServiceAccount, bound to [`component_role`].
pub fn service_account(service: &Service) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(service, service.name_any()),
        ..ServiceAccount::default()
    }
}

/// The Role of a component: every component reads the policy resources (the gateway
/// enforces them, the others apply CircuitPolicies to what they call through the kit's
/// outbound client) and reports the generation it applied in their status; the gateway also
/// watches EndpointSlices to find its upstreams and count its replicas.
pub fn component_role(service: &Service) -> Role {
    let rule = |groups: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![groups.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let mut rules = vec![
        rule(
            tienda_crds::GROUP,
            &["ratelimitpolicies", "circuitpolicies"],
            &["get", "list", "watch"],
        ),
        rule(
            tienda_crds::GROUP,
            &["ratelimitpolicies/status", "circuitpolicies/status"],
            &["get", "patch"],
        ),
    ];
    if service.spec.component == Component::Gateway {
        rules.push(rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["list", "watch"],
        ));
    }
    Role {
        metadata: meta(service, service.name_any()),
        rules: Some(rules),
    }
}

/// Binds [`component_role`] to the component's ServiceAccount.
pub fn component_role_binding(service: &Service) -> RoleBinding {
    RoleBinding {
        metadata: meta(service, service.name_any()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: service.name_any(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service.name_any(),
            namespace: service.namespace(),
            ..Subject::default()
        }]),
    }
}

/// Lets voluntary disruptions (node drains) take one pod at a time: with several replicas the
/// others keep serving; with one, a drain is not blocked forever.
pub fn pod_disruption_budget(service: &Service) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(service, service.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector(service)),
                match_expressions: None,
            }),
            max_unavailable: Some(IntOrString::Int(1)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Where a Deployment's rollout stands, read the way `kubectl rollout status` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Every pod runs the current template and is available: the controller has seen the
    /// latest spec (`observedGeneration`), `updatedReplicas` reached the wanted count, no old
    /// pod is left, and every updated pod is available.
    pub complete: bool,
    /// Pods available (ready for `minReadySeconds`).
    pub available: i32,
    /// Pods ready.
    pub ready: i32,
    /// The Deployment gave up (`Progressing` with reason `ProgressDeadlineExceeded`).
    pub stalled: bool,
    /// For people: `2 of 3 updated, 1 available`.
    pub message: String,
}

/// The rollout of `deployment` towards `wanted` replicas (pure).
pub fn rollout(deployment: &Deployment, wanted: i32) -> Rollout {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let stalled = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let complete = observed && updated >= wanted && total == updated && available >= updated;
    let message = if !observed {
        "the Deployment controller has not seen the latest spec yet".to_owned()
    } else {
        format!("{updated} of {wanted} updated, {available} available, {total} in all")
    };
    Rollout {
        complete,
        available,
        ready: status.ready_replicas.unwrap_or(0),
        stalled,
        message,
    }
}

/// A stable hash (FNV-1a, hex) of everything the pods read at start, for the rollout annotation.
pub fn config_hash(parts: &[&[u8]]) -> String {
    // Each part is followed by 0xff (not valid UTF-8), so ["ab","c"] and ["a","bc"] differ.
    let hash = tienda_provision::stable_hash::fnv1a(
        parts.iter().flat_map(|p| p.iter().copied().chain([0xff])),
    );
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::EnvVar;
    use serde_json::json;

    use super::*;

    fn shop() -> Shop {
        let mut shop: Shop = serde_json::from_value(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "demo", "namespace": "shops", "uid": "shop-uid"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg.db", "adminSecretRef": {"name": "pg"}, "sslMode": "Require"},
                     "nats": {"url": "nats://nats:4222", "credentialsSecretRef": {"name": "nats-creds"}},
                     "telemetry": {"otlpEndpoint": "http://otel:4317"}}
        }))
        .unwrap();
        shop.metadata.uid = Some("shop-uid".into());
        shop
    }

    fn service() -> Service {
        let mut service = crate::shop::desired_services(&shop())
            .into_iter()
            .find(|s| s.spec.component == tienda_crds::Component::Orders)
            .unwrap();
        service.metadata.uid = Some("svc-uid".into());
        service.spec.env.push(EnvVar {
            name: "EXTRA".into(),
            value: Some("1".into()),
            value_from: None,
        });
        service
    }

    #[test]
    fn a_rollout_is_complete_only_when_every_pod_runs_the_latest_spec_and_is_available() {
        let at = |generation: i64, status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"name": "d", "generation": generation},
                                          "status": status}))
            .unwrap()
        };
        let done = json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2,
                          "readyReplicas": 2, "availableReplicas": 2});
        assert!(rollout(&at(4, done.clone()), 2).complete);
        assert!(
            !rollout(&at(5, done.clone()), 2).complete,
            "a spec change not yet seen by the Deployment controller"
        );
        let mut old_pod_left = done.clone();
        old_pod_left["replicas"] = json!(3);
        assert!(
            !rollout(&at(4, old_pod_left), 2).complete,
            "an old pod is still there"
        );
        let mut unavailable = done.clone();
        unavailable["availableReplicas"] = json!(1);
        let half = rollout(&at(4, unavailable), 2);
        assert!(!half.complete);
        assert_eq!(half.available, 1);
        assert_eq!(half.message, "2 of 2 updated, 1 available, 2 in all");
        let mut stuck = done;
        stuck["conditions"] = json!([{"type": "Progressing", "status": "False",
                                       "reason": "ProgressDeadlineExceeded"}]);
        assert!(rollout(&at(4, stuck), 2).stalled);
        assert!(
            rollout(&at(1, json!({"observedGeneration": 1})), 0).complete,
            "scaled to zero"
        );
    }

    #[test]
    fn the_gateway_is_exposed_as_the_shop_asks_and_trusts_the_ingress_in_front() {
        let mut shop = shop();
        let mut gateway = crate::shop::desired_services(&shop)
            .into_iter()
            .find(|s| s.spec.component == Component::Gateway)
            .unwrap();
        gateway.metadata.uid = Some("gw-uid".into());
        let plain = kube_service(&gateway, &shop).spec.unwrap();
        assert_eq!(plain.type_.as_deref(), Some("ClusterIP"));
        assert!(
            !environment(&gateway, &shop)
                .iter()
                .any(|e| e.name == TRUSTED_PROXIES),
            "no proxy in front, no proxy trusted"
        );

        shop.spec.gateway = Some(
            serde_json::from_value(json!({"serviceType": "LoadBalancer",
                "ingress": {"host": "shop.example.com"}}))
            .unwrap(),
        );
        let exposed = kube_service(&gateway, &shop).spec.unwrap();
        assert_eq!(exposed.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(exposed.external_traffic_policy.as_deref(), Some("Local"));
        let env = environment(&gateway, &shop);
        assert_eq!(
            var(&env, TRUSTED_PROXIES).value.as_deref(),
            Some(PRIVATE_RANGES)
        );
        let orders = kube_service(&service(), &shop).spec.unwrap();
        assert_eq!(
            orders.type_.as_deref(),
            Some("ClusterIP"),
            "only the gateway is exposed"
        );
    }

    #[test]
    fn a_user_entry_named_like_an_operator_one_replaces_it_once() {
        let mut service = service();
        let shop = shop();
        let operators = environment(&service, &shop);
        let first = operators[0].name.clone();
        service.spec.env.push(EnvVar {
            name: first.clone(),
            value: Some("mine".into()),
            value_from: None,
        });
        service.spec.env.push(EnvVar {
            name: "EXTRA".into(),
            value: Some("2".into()),
            value_from: None,
        });
        let env = environment(&service, &shop);
        let mut names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env[0].name, first, "replaced in place");
        assert_eq!(env[0].value.as_deref(), Some("mine"));
        assert_eq!(env[0].value_from, None);
        assert_eq!(
            var(&env, "EXTRA").value.as_deref(),
            Some("2"),
            "the last one wins"
        );
        assert_eq!(env.len(), operators.len(), "{names:?}");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), env.len(), "every name once");
    }

    fn var<'a>(env: &'a [EnvVar], name: &str) -> &'a EnvVar {
        env.iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn the_shop_chooses_the_payment_provider_and_stripes_keys_come_from_its_secret() {
        let mut shop = shop();
        shop.spec.payments = Some(
            serde_json::from_value(json!({
                "provider": "stripe",
                "stripe": {"secretRef": {"name": "stripe-keys"}}
            }))
            .unwrap(),
        );
        let payments = crate::shop::desired_services(&shop)
            .into_iter()
            .find(|s| s.spec.component == tienda_crds::Component::Payments)
            .unwrap();
        let env = environment(&payments, &shop);
        assert_eq!(
            var(&env, "PAYMENTS_PROVIDER").value.as_deref(),
            Some("stripe")
        );
        let key = var(&env, "STRIPE_SECRET_KEY");
        assert_eq!(key.value, None, "never copied into the Deployment");
        let selector = key
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .unwrap();
        assert_eq!(
            (
                selector.name.as_str(),
                selector.key.as_str(),
                selector.optional
            ),
            ("stripe-keys", "secretKey", Some(false))
        );
        let webhooks = var(&env, "STRIPE_WEBHOOK_SECRETS")
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .unwrap();
        assert_eq!(
            (
                webhooks.name.as_str(),
                webhooks.key.as_str(),
                webhooks.optional
            ),
            ("stripe-keys", "webhookSecrets", Some(true))
        );
        assert!(
            !env.iter().any(|v| v.name == "STRIPE_API_BASE"),
            "Stripe's own API unless the Shop says otherwise"
        );
        let orders = environment(&service(), &shop);
        assert!(!orders.iter().any(|v| v.name.starts_with("STRIPE_")));
    }

    #[test]
    fn every_component_finds_auth_and_auth_gets_its_key_from_its_secret() {
        let orders = environment(&service(), &shop());
        assert_eq!(
            var(&orders, "AUTH_JWKS_URL").value.as_deref(),
            Some("http://demo-auth/.well-known/jwks.json")
        );
        assert_eq!(
            var(&orders, "AUTH_ISSUER").value.as_deref(),
            Some("http://demo-auth")
        );
        assert!(orders.iter().all(|v| v.name != "AUTH_KEY_ENCRYPTION_KEY"));

        let mut auth = crate::shop::desired_services(&shop())
            .into_iter()
            .find(|s| s.spec.component == tienda_crds::Component::Auth)
            .unwrap();
        auth.metadata.uid = Some("auth-uid".into());
        let env = environment(&auth, &shop());
        let key = var(&env, "AUTH_KEY_ENCRYPTION_KEY")
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("demo-auth-db", "AUTH_KEY_ENCRYPTION_KEY")
        );
        let secret = credentials_secret(&auth, &shop(), "pw", "a2V5").unwrap();
        assert_eq!(
            secret.data.unwrap()["AUTH_KEY_ENCRYPTION_KEY"].0,
            b"a2V5".to_vec(),
            "the key is stored with the credentials, made once"
        );
    }

    #[test]
    fn every_component_reads_policies_and_only_the_gateway_endpoint_slices() {
        let auth = serde_json::to_value(component_role(&service())).unwrap();
        assert_eq!(
            auth["rules"],
            json!([
                {"apiGroups": ["tienda.dev"], "resources": ["ratelimitpolicies", "circuitpolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["tienda.dev"], "resources": ["ratelimitpolicies/status", "circuitpolicies/status"], "verbs": ["get", "patch"]},
            ])
        );
        let mut gateway = crate::shop::desired_services(&shop())
            .into_iter()
            .find(|s| s.spec.component == tienda_crds::Component::Gateway)
            .unwrap();
        gateway.metadata.uid = Some("gw-uid".into());
        let role = serde_json::to_value(component_role(&gateway)).unwrap();
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": ["tienda.dev"], "resources": ["ratelimitpolicies", "circuitpolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["tienda.dev"], "resources": ["ratelimitpolicies/status", "circuitpolicies/status"], "verbs": ["get", "patch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ])
        );
        let binding = serde_json::to_value(component_role_binding(&gateway)).unwrap();
        assert_eq!(binding["roleRef"]["name"], "demo-gateway");
        assert_eq!(binding["subjects"][0]["name"], "demo-gateway");
        assert_eq!(binding["metadata"]["ownerReferences"][0]["uid"], "gw-uid");
        let env = environment(&gateway, &shop());
        assert_eq!(
            var(&env, "GATEWAY_REPLICAS").value.as_deref(),
            Some(gateway.spec.replicas.max(1).to_string().as_str())
        );
    }

    #[test]
    fn the_deployment_gets_the_environment_a_service_needs() {
        let d = deployment(&service(), &shop(), "abc");
        let container = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let env = container.env.as_ref().unwrap();
        assert_eq!(
            var(env, "LISTEN_ADDR").value.as_deref(),
            Some("0.0.0.0:8080")
        );
        assert_eq!(
            var(env, "ADMIN_ADDR").value.as_deref(),
            Some("0.0.0.0:9090")
        );
        assert_eq!(
            var(env, "NATS_URL").value.as_deref(),
            Some("nats://nats:4222")
        );
        assert_eq!(
            var(env, "NATS_CREDS_FILE").value.as_deref(),
            Some("/var/run/tienda/nats/nats.creds")
        );
        assert_eq!(
            var(env, "TIENDA_POLICY_SOURCE").value.as_deref(),
            Some("kubernetes")
        );
        assert_eq!(
            var(env, "OTEL_EXPORTER_OTLP_ENDPOINT").value.as_deref(),
            Some("http://otel:4317")
        );
        let db = var(env, "DATABASE_URL")
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (db.name.as_str(), db.key.as_str()),
            ("demo-orders-db", "DATABASE_URL")
        );
        assert_eq!(
            env.last().unwrap().name,
            "EXTRA",
            "the user's env comes last"
        );
    }

    #[test]
    fn the_deployment_probes_livez_and_readyz_and_runs_locked_down() {
        let d = deployment(&service(), &shop(), "abc");
        let pod = d.spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&c.liveness_probe), "/livez");
        assert_eq!(path(&c.readiness_probe), "/readyz");
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_user,
            Some(RUN_AS_USER)
        );
        assert_eq!(
            pod.automount_service_account_token,
            Some(true),
            "it reads its policies"
        );
    }

    #[test]
    fn the_admin_port_is_a_container_port_but_neither_probed_nor_in_the_kubernetes_service() {
        let d = deployment(&service(), &shop(), "abc");
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let ports: Vec<(Option<&str>, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("http"), 8080), (Some("admin"), 9090)]);
        for probe in [&c.startup_probe, &c.liveness_probe, &c.readiness_probe] {
            let port = &probe.as_ref().unwrap().http_get.as_ref().unwrap().port;
            assert_eq!(
                port,
                &IntOrString::Int(8080),
                "probes stay on the public port"
            );
        }
        let svc = kube_service(&service(), &shop()).spec.unwrap();
        let names: Vec<_> = svc.ports.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, [Some("http".to_owned())]);
    }

    #[test]
    fn tienda_up_gives_a_component_the_deployments_environment_but_for_placement() {
        // A Shop as tienda up takes it: no NATS credentials (its NATS needs none).
        let mut shop: Shop = serde_json::from_value(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "demo", "namespace": "shops", "uid": "shop-uid"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg.db", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://nats:4222"},
                     "telemetry": {"otlpEndpoint": "http://otel:4317"},
                     "components": [{"name": "auth"}, {"name": "products"},
                                    {"name": "gateway", "replicas": 3,
                                     "env": [{"name": "GATEWAY_CORS_ORIGINS", "value": "*"}]}]}
        }))
        .unwrap();
        shop.metadata.uid = Some("shop-uid".into());
        let options = tienda_local::Options::new("examples/local".into());
        let running = [(Component::Auth, "http://127.0.0.1:3001".to_owned())].into();
        for service in crate::shop::desired_services(&shop) {
            let component = service.spec.component;
            let cluster = environment(&service, &shop);
            let placement = tienda_local::environment::Placement {
                options: &options,
                nats_url: "nats://127.0.0.1:4222",
                nats_creds: None,
                running: &running,
                credentials: [
                    (var::DATABASE_URL, "postgres://local".to_owned()),
                    (var::AUTH_KEY_ENCRYPTION_KEY, "a2V5".to_owned()),
                    (var::EVENT_SEALING_KEYS, "a2V5".to_owned()),
                ]
                .into(),
                admin: ("admin@tienda.local", "pw"),
            };
            let local = tienda_local::environment::environment(&shop, component, &placement);

            // Same names, but for what only a machine without a cluster needs.
            let local_only = [
                var::TIENDA_POLICY_PATH,
                var::TIENDA_ADMIN_EMAIL,
                var::TIENDA_ADMIN_PASSWORD,
                var::NOTIFICATIONS_OUTBOX_DIR,
                var::TOKIO_WORKER_THREADS,
            ];
            let mut cluster_names: Vec<&str> = cluster.iter().map(|v| v.name.as_str()).collect();
            cluster_names.sort();
            let local_names: Vec<&str> = local
                .keys()
                .map(String::as_str)
                .filter(|n| !local_only.contains(n))
                .collect();
            assert_eq!(cluster_names, local_names, "{component}");

            // Same values, but for addresses, secrets and fields.
            let placed: Vec<&str> = component_environment(&shop, component)
                .into_iter()
                .filter(|(_, value)| !matches!(value, Value::Literal(_)))
                .map(|(name, _)| name)
                .collect();
            for v in &cluster {
                if placed.contains(&v.name.as_str()) {
                    continue;
                }
                assert_eq!(
                    v.value.as_ref(),
                    Some(&local[&v.name]),
                    "{component}: {} differs",
                    v.name
                );
            }
            for v in cluster.iter().filter(|v| v.value_from.is_some()) {
                assert!(placed.contains(&v.name.as_str()), "{}", v.name);
            }
        }
    }

    #[test]
    fn a_changed_config_hash_changes_the_pod_template() {
        let a = deployment(&service(), &shop(), &config_hash(&[b"secret-v1"]));
        let b = deployment(&service(), &shop(), &config_hash(&[b"secret-v2"]));
        let annotation = |d: &Deployment| {
            d.spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(annotation(&a), annotation(&b));
        assert_eq!(config_hash(&[b"a", b"bc"]), config_hash(&[b"a", b"bc"]));
        assert_ne!(
            config_hash(&[b"ab", b"c"]),
            config_hash(&[b"a", b"bc"]),
            "parts are delimited"
        );
    }

    #[test]
    fn every_child_is_labelled_and_owned_by_the_service() {
        let s = service();
        let metas = [
            deployment(&s, &shop(), "h").metadata,
            kube_service(&s, &shop()).metadata,
            service_account(&s).metadata,
            pod_disruption_budget(&s).metadata,
        ];
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Service", "demo-orders", "svc-uid")
            );
            assert_eq!(owner.api_version, "tienda.dev/v1alpha1");
            assert_eq!(m.labels.as_ref().unwrap()[labels::COMPONENT], "orders");
            assert_eq!(m.namespace.as_deref(), Some("shops"));
        }
    }

    #[test]
    fn the_credentials_secret_is_owned_under_delete_and_outlives_the_shop_under_retain() {
        let mut s = service();
        s.spec.database.as_mut().unwrap().reclaim_policy = ReclaimPolicy::Delete;
        let owned = credentials_secret(&s, &shop(), "pw", "k").unwrap().metadata;
        assert_eq!(owned.owner_references.unwrap()[0].uid, "svc-uid");
        s.spec.database.as_mut().unwrap().reclaim_policy = ReclaimPolicy::Retain;
        let kept = credentials_secret(&s, &shop(), "pw", "k").unwrap().metadata;
        assert_eq!(kept.owner_references, None);
        assert_eq!(kept.labels.unwrap()[labels::SHOP], "demo");
    }

    #[test]
    fn the_credentials_secret_holds_a_database_url_for_the_role() {
        let secret = credentials_secret(&service(), &shop(), "s3cret", "k").unwrap();
        let data = secret.data.unwrap();
        let url = String::from_utf8(data["DATABASE_URL"].0.clone()).unwrap();
        assert_eq!(
            url,
            "postgres://shops_demo_orders:s3cret@pg.db:5432/shops_demo_orders?sslmode=require"
        );
        assert_eq!(data["username"].0, b"shops_demo_orders");
        let mut gateway = service();
        gateway.spec.database = None;
        assert!(
            credentials_secret(&gateway, &shop(), "x", "k").is_none(),
            "no database, no Secret"
        );
    }

    #[test]
    fn the_service_selects_the_pods_and_the_pdb_never_blocks_a_single_replica() {
        let s = service();
        let svc = kube_service(&s, &shop());
        let pod_labels = deployment(&s, &shop(), "h")
            .spec
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        for (k, v) in svc.spec.unwrap().selector.unwrap() {
            assert_eq!(pod_labels[&k], v);
        }
        assert_eq!(
            pod_disruption_budget(&s).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
    }
}
