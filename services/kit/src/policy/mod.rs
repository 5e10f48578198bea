//! The RateLimitPolicy and CircuitPolicy resources a process enforces, compiled and swapped
//! whole and lock-free ([`ArcSwap`]) when their source changes, so a reload never blocks or
//! drops a call in flight: a call keeps the set it started with.
//!
//! Each document is checked the way the API server checks it (schema and CEL rules) and
//! resolved against this process's shop. One that fails is rejected with a log line and its
//! previous valid version stays in force. Counters and breaker state carry over for every
//! rule and circuit whose spec did not change.
//!
//! Who enforces what ([`Scope`]): the gateway enforces rate limits and the CircuitPolicies of
//! the services behind it; every other component enforces, through [`crate::outbound`], the
//! CircuitPolicies of what it calls — other services (`targetRef: {kind: Service}`) and
//! external providers (`{kind: External, name: stripe}`).
//!
//! Sources: files ([`file`]: `tienda up`, or a mounted ConfigMap), polled for changes; and,
//! in a cluster, the resources themselves ([`cluster`]), with each applied generation written
//! back into the policy's `status.applied`.
//!
//! # Layout
//! - [`file`]: the file source
//! - [`cluster`]: the Kubernetes source and `status.applied` reports
//! - [`rate_limit`], [`sliding_window`]: RateLimitPolicy rules

pub mod cluster;
pub mod file;
pub mod rate_limit;
pub mod sliding_window;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use serde_json::Value;
use tienda_crds::{
    CircuitPolicy, CircuitPolicySpec, Component, RateLimitPolicy, RateLimitPolicySpec,
    circuit_policy::CircuitTargetKind, rate_limit_policy::RateLimitTargetKind,
};

pub use self::file::{FileSource, watch_files};
use self::rate_limit::Limit;
use crate::resilience::Circuit;

/// Where policies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicySource {
    /// RateLimitPolicy and CircuitPolicy resources in the pod's namespace (in a cluster).
    Kubernetes,
    /// YAML files under `TIENDA_POLICY_PATH`, watched (`tienda up`, or a mounted ConfigMap).
    File,
    /// None: no policy applies.
    None,
}

/// Where a process takes its policies from: flattened into the configuration of every
/// process that enforces them (the operator sets these in every Deployment, `tienda up` in
/// every process it starts).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyConfig {
    /// The shop this process belongs to: Shop policy targets and `<shop>-<component>` Service
    /// names resolve against it (default `local`).
    #[arg(long, env = "TIENDA_SHOP", default_value = "local")]
    pub shop: String,

    /// Where policies come from: `file` (default when TIENDA_POLICY_PATH is set),
    /// `kubernetes`, or `none`.
    #[arg(long, env = "TIENDA_POLICY_SOURCE", value_enum)]
    pub policy_source: Option<PolicySource>,

    /// A YAML file or directory of them holding RateLimitPolicy and CircuitPolicy documents
    /// (other kinds are ignored), for the `file` source.
    #[arg(long, env = "TIENDA_POLICY_PATH")]
    pub policy_path: Option<std::path::PathBuf>,

    /// The name this replica reports its applied policy generations under (`POD_NAME` in a
    /// cluster; default `local`).
    #[arg(long, env = "POD_NAME", default_value = "local")]
    pub replica: String,

    /// The namespace to watch policies in (`POD_NAMESPACE` in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

impl PolicyConfig {
    /// The effective source.
    pub fn source(&self) -> PolicySource {
        self.policy_source.unwrap_or(if self.policy_path.is_some() {
            PolicySource::File
        } else {
            PolicySource::None
        })
    }
}

/// Compiles the policies `scope` enforces from `config`'s source, in force before this
/// returns (files) or as soon as the cluster is listed, and kept live by a background task of
/// `platform` (files polled every `poll`).
pub async fn start(
    platform: &crate::Platform,
    config: &PolicyConfig,
    scope: Scope,
    poll: std::time::Duration,
) -> anyhow::Result<Arc<Policies>> {
    use anyhow::Context as _;
    let policies = Arc::new(Policies::new(scope, &platform.metrics.registry));
    match config.source() {
        PolicySource::File => {
            let path = config.policy_path.clone().context(
                "TIENDA_POLICY_SOURCE=file needs TIENDA_POLICY_PATH (a YAML file or directory)",
            )?;
            if !path.exists() {
                tracing::error!(
                    path = %path.display(),
                    "TIENDA_POLICY_PATH does not exist: no policy applies until it does; \
                     point it at the directory or file holding the policy YAML"
                );
            }
            let mut source = FileSource::new(path);
            policies.apply(&source.poll().unwrap_or_default());
            platform.spawn(watch_files(
                source,
                policies.clone(),
                poll.max(std::time::Duration::from_millis(10)),
                platform.shutdown.clone(),
            ));
        }
        PolicySource::Kubernetes => {
            let source = cluster::Source::connect(&config.namespace, &config.replica).await?;
            platform.spawn(cluster::run(
                source,
                policies.clone(),
                platform.shutdown.clone(),
            ));
        }
        PolicySource::None => {}
    }
    Ok(policies)
}

/// The services a policy's `Service` target may name (every component but the gateway).
pub const SERVICES: [&str; 5] = ["auth", "products", "orders", "payments", "notifications"];

/// Which policies a process enforces.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The shop (Shop targets, `<shop>-<component>` Service names).
    pub shop: String,
    /// This process's component: metric names (`<component>_policy_applied_generation`) and
    /// the field manager of its status reports (`tienda-<component>-<replica>`).
    pub component: &'static str,
    /// Replicas sharing each rate limit.
    pub replicas: u32,
    /// Rate limits are enforced here (the gateway).
    pub rate_limits: bool,
    /// CircuitPolicies on external destinations are enforced here (every caller of a
    /// provider; not the gateway, which calls only the shop's services).
    pub external_circuits: bool,
}

impl Scope {
    /// The gateway of `shop`, one of `replicas`.
    pub fn gateway(shop: &str, replicas: u32) -> Self {
        Self {
            shop: shop.to_owned(),
            component: Component::Gateway.as_str(),
            replicas,
            rate_limits: true,
            external_circuits: false,
        }
    }

    /// A service of `shop` calling other services and providers.
    pub fn component(shop: &str, component: &'static str) -> Self {
        Self {
            shop: shop.to_owned(),
            component,
            replicas: 1,
            rate_limits: false,
            external_circuits: true,
        }
    }
}

/// A policy in force.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Applied {
    /// `RateLimitPolicy` or `CircuitPolicy`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The generation enforced: `metadata.generation` in a cluster; from files, a counter
    /// that grows with each change of the spec.
    pub generation: i64,
    /// The services it covers (`*`: every one).
    pub targets: Vec<String>,
}

/// A document not in force, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejected {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// What is wrong; what to change.
    pub reason: String,
    /// Whether an earlier valid version stays in force.
    pub previous_kept: bool,
}

/// The compiled policies.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Every rate-limit rule.
    pub limits: Vec<Arc<Limit>>,
    /// The circuit of each service that has one, by component.
    pub circuits: BTreeMap<String, Arc<Circuit>>,
    /// The circuit of each external destination that has one, by `targetRef.name`.
    pub externals: BTreeMap<String, Arc<Circuit>>,
    /// What is in force.
    pub applied: Vec<Applied>,
    /// What was refused at the last reload.
    pub rejected: Vec<Rejected>,
}

/// The last valid version of a policy.
#[derive(Debug, Clone)]
struct Known {
    spec: Spec,
    generation: i64,
    /// Its place in line when policies conflict ([`tienda_crds::precedence`]).
    precedence: (Option<k8s_openapi::jiff::Timestamp>, String),
}

/// A checked policy's spec.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    RateLimit(RateLimitPolicySpec),
    Circuit(CircuitPolicySpec),
}

impl Spec {
    fn kind(&self) -> &'static str {
        match self {
            Self::RateLimit(_) => "RateLimitPolicy",
            Self::Circuit(_) => "CircuitPolicy",
        }
    }
}

/// What a reload starts from.
#[derive(Debug, Default)]
struct State {
    /// The last valid version of each policy.
    known: BTreeMap<(String, String), Known>,
    /// The documents of the last apply, compiled again when the replica count changes.
    last: Vec<Value>,
}

/// The live policies of a process.
#[derive(Debug)]
pub struct Policies {
    current: ArcSwap<PolicySet>,
    scope: Scope,
    /// Replicas sharing each limit (from the Shop, or the gateway's endpoints).
    replicas: std::sync::atomic::AtomicU32,
    /// What reloads work from; held through a whole reload, so two never interleave.
    state: Mutex<State>,
    generation: IntGaugeVec,
    rejected: IntCounterVec,
}

impl Policies {
    /// No policies yet; metrics registered in `registry`.
    pub fn new(scope: Scope, registry: &Registry) -> Self {
        let generation = IntGaugeVec::new(
            Opts::new(
                format!("{}_policy_applied_generation", scope.component),
                "The generation of each policy this replica enforces",
            ),
            &["kind", "name"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                format!("{}_policy_rejected_total", scope.component),
                "Policy versions refused at reload (the previous version stays)",
            ),
            &["kind", "name"],
        )
        .expect("valid metric");
        for m in [
            Box::new(generation.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejected.clone()),
        ] {
            if let Err(error) = registry.register(m) {
                tracing::warn!(%error, "policy metrics not registered");
            }
        }
        Self {
            current: ArcSwap::from_pointee(PolicySet::default()),
            replicas: std::sync::atomic::AtomicU32::new(scope.replicas.max(1)),
            scope,
            state: Mutex::new(State::default()),
            generation,
            rejected,
        }
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Replicas sharing the limits (from the Shop or the gateway's endpoints).
    pub fn replicas(&self) -> u32 {
        self.replicas.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Who enforces these policies.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Changes the replica count; a change rebuilds the limits with the new share.
    pub fn set_replicas(&self, replicas: u32) {
        let before = self
            .replicas
            .swap(replicas.max(1), std::sync::atomic::Ordering::Relaxed);
        if before != replicas.max(1) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let docs = std::mem::take(&mut state.last);
            self.reload(&mut state, docs);
        }
    }

    /// The component a Service target names: the component itself, or `<shop>-<component>`
    /// (the operator's Service resource name).
    fn component(&self, name: &str) -> Option<&'static str> {
        SERVICES.iter().copied().find(|c| {
            name == *c
                || name
                    .strip_prefix(self.scope.shop.as_str())
                    .and_then(|r| r.strip_prefix('-'))
                    == Some(*c)
        })
    }

    /// Replaces the policies with those in `docs` (every document of the source; other
    /// kinds are ignored).
    pub fn apply(&self, docs: &[Value]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.reload(&mut state, docs.to_vec());
    }

    fn reload(&self, state: &mut State, docs: Vec<Value>) {
        let previous = self.current();
        let known = &state.known;
        let mut next_known = BTreeMap::new();
        let mut rejected = Vec::new();

        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let wanted = match kind {
                "RateLimitPolicy" => self.scope.rate_limits,
                "CircuitPolicy" => true,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = (kind.to_owned(), name.clone());
            let check = tienda_crds::validation::validate(doc, None)
                .map_err(|violations| {
                    violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .and_then(|()| match kind {
                    "RateLimitPolicy" => serde_json::from_value::<RateLimitPolicy>(doc.clone())
                        .map(|p| {
                            (
                                tienda_crds::precedence(&p.metadata),
                                Spec::RateLimit(p.spec),
                            )
                        })
                        .map_err(|e| e.to_string()),
                    _ => serde_json::from_value::<CircuitPolicy>(doc.clone())
                        .map(|p| (tienda_crds::precedence(&p.metadata), Spec::Circuit(p.spec)))
                        .map_err(|e| e.to_string()),
                });
            match check {
                Ok((precedence, spec)) => {
                    let generation = doc["metadata"]["generation"].as_i64().unwrap_or_else(|| {
                        match known.get(&key) {
                            Some(k) if k.spec == spec => k.generation,
                            Some(k) => k.generation + 1,
                            None => 1,
                        }
                    });
                    next_known.insert(
                        key,
                        Known {
                            spec,
                            generation,
                            precedence,
                        },
                    );
                }
                Err(reason) => {
                    let kept = known.get(&key).cloned();
                    tracing::error!(
                        kind,
                        name,
                        %reason,
                        previous_kept = kept.is_some(),
                        "policy rejected; fix it and save again"
                    );
                    self.rejected.with_label_values(&[kind, &name]).inc();
                    rejected.push(Rejected {
                        kind: kind.to_owned(),
                        name: name.clone(),
                        reason,
                        previous_kept: kept.is_some(),
                    });
                    if let Some(k) = kept {
                        next_known.insert(key, k);
                    }
                }
            }
        }

        let replicas = self.replicas();
        let mut set = PolicySet {
            rejected,
            ..PolicySet::default()
        };
        // Conflicts are settled as the operator settles them: the older policy (creation
        // time, then name) wins, so a status that says Accepted is what is applied.
        let mut in_line: Vec<(&(String, String), &Known)> = next_known.iter().collect();
        in_line.sort_by(|a, b| a.1.precedence.cmp(&b.1.precedence));
        // Rate-limit rules claimed so far: (target kind, target name, rule) -> policy.
        let mut claimed: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for ((kind, name), k) in in_line {
            let targets = match &k.spec {
                Spec::RateLimit(spec) => {
                    let services =
                        match spec.target_ref.kind {
                            RateLimitTargetKind::Shop
                                if spec.target_ref.name == self.scope.shop =>
                            {
                                None
                            }
                            RateLimitTargetKind::Shop => {
                                set.rejected.push(not_ours(
                                    kind,
                                    name,
                                    &format!(
                                        "targets Shop {}; this gateway serves shop {}",
                                        spec.target_ref.name, self.scope.shop
                                    ),
                                ));
                                continue;
                            }
                            RateLimitTargetKind::Service => {
                                match self.component(&spec.target_ref.name) {
                                    Some(c) => Some(vec![c.to_owned()]),
                                    None => {
                                        set.rejected.push(not_ours(kind, name, &format!(
                                        "targets Service {}, which is no service of shop {}",
                                        spec.target_ref.name, self.scope.shop
                                    )));
                                        continue;
                                    }
                                }
                            }
                        };
                    let target = (
                        format!("{:?}", spec.target_ref.kind),
                        spec.target_ref.name.clone(),
                    );
                    let taken: Vec<(&String, &String)> = spec
                        .rules
                        .iter()
                        .filter_map(|rule| {
                            claimed
                                .get(&(target.0.clone(), target.1.clone(), rule.name.clone()))
                                .map(|other| (&rule.name, other))
                        })
                        .collect();
                    if let Some((rule, other)) = taken.first() {
                        set.rejected.push(not_ours(kind, name, &format!(
                            "RateLimitPolicy {other} already applies rule {rule} to {} {}; it is older, so it wins",
                            target.0, target.1
                        )));
                        continue;
                    }
                    for rule in &spec.rules {
                        claimed.insert(
                            (target.0.clone(), target.1.clone(), rule.name.clone()),
                            name.clone(),
                        );
                    }
                    for rule in &spec.rules {
                        let reused = previous.limits.iter().find(|l| {
                            l.policy == *name
                                && l.rule == *rule
                                && l.replicas == replicas
                                && l.services == services
                        });
                        set.limits.push(reused.cloned().unwrap_or_else(|| {
                            Arc::new(Limit::new(name, rule, replicas, services.clone()))
                        }));
                    }
                    services.unwrap_or_else(|| vec!["*".to_owned()])
                }
                Spec::Circuit(spec) => {
                    if spec.target_ref.kind == CircuitTargetKind::External {
                        if !self.scope.external_circuits {
                            // Providers are called by the components, not by the gateway.
                            continue;
                        }
                        let target = &spec.target_ref.name;
                        if let Some(other) = set.externals.get(target) {
                            set.rejected.push(not_ours(kind, name, &format!(
                                "CircuitPolicy {} already applies to External {target}; one policy per target (the older wins, then the first by name)",
                                other.policy
                            )));
                            continue;
                        }
                        let before = previous.externals.get(target).filter(|c| c.policy == *name);
                        let circuit =
                            before
                                .filter(|c| c.spec == *spec)
                                .cloned()
                                .unwrap_or_else(|| {
                                    Arc::new(Circuit::evolve(name, spec, before.map(|c| &**c)))
                                });
                        set.externals.insert(target.clone(), circuit);
                        vec![format!("external:{target}")]
                    } else {
                        let Some(service) = self.component(&spec.target_ref.name) else {
                            set.rejected.push(not_ours(
                                kind,
                                name,
                                &format!(
                                    "targets Service {}, which is no service of shop {}",
                                    spec.target_ref.name, self.scope.shop
                                ),
                            ));
                            continue;
                        };
                        if let Some(other) = set.circuits.get(service) {
                            set.rejected.push(not_ours(kind, name, &format!(
                            "CircuitPolicy {} already applies to {service}; one policy per target (the older wins, then the first by name)",
                            other.policy
                        )));
                            continue;
                        }
                        let circuit = previous
                            .circuits
                            .get(service)
                            .filter(|c| c.policy == *name && c.spec == *spec)
                            .cloned()
                            .unwrap_or_else(|| {
                                let before =
                                    previous.circuits.get(service).filter(|c| c.policy == *name);
                                Arc::new(Circuit::evolve(name, spec, before.map(|c| &**c)))
                            });
                        set.circuits.insert(service.to_owned(), circuit);
                        vec![service.to_owned()]
                    }
                }
            };
            set.applied.push(Applied {
                kind: k.spec.kind(),
                name: name.clone(),
                generation: k.generation,
                targets,
            });
        }

        for gone in previous.applied.iter().filter(|a| {
            !set.applied
                .iter()
                .any(|b| b.kind == a.kind && b.name == a.name)
        }) {
            let _ = self
                .generation
                .remove_label_values(&[gone.kind, &gone.name]);
        }
        for a in &set.applied {
            self.generation
                .with_label_values(&[a.kind, &a.name])
                .set(a.generation);
            let before = previous
                .applied
                .iter()
                .find(|b| b.kind == a.kind && b.name == a.name);
            if before.map(|b| b.generation) != Some(a.generation) {
                tracing::info!(kind = a.kind, name = %a.name, generation = a.generation, targets = ?a.targets, "policy applied");
            }
        }
        state.known = next_known;
        state.last = docs;
        self.current.store(Arc::new(set));
    }
}

fn not_ours(kind: &str, name: &str, reason: &str) -> Rejected {
    tracing::warn!(kind, name, reason, "policy not applied by this process");
    Rejected {
        kind: kind.to_owned(),
        name: name.to_owned(),
        reason: reason.to_owned(),
        previous_kept: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(yaml).unwrap()
    }

    const LIMIT: &str = "apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: browse}
spec:
  targetRef: {kind: Service, name: products}
  rules:
    - {name: r, clientKey: {type: ClientIP}, requests: 10, period: 1m}
";

    fn policies() -> Policies {
        Policies::new(Scope::gateway("local", 1), &Registry::new())
    }

    #[test]
    fn conflicting_policies_are_settled_as_the_operator_settles_them_the_older_wins() {
        // The newer policy's name sorts first: name order alone would pick it.
        let p = Policies::new(Scope::component("local", "payments"), &Registry::new());
        p.apply(&docs(
            "apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: a-new, creationTimestamp: '2026-06-01T00:00:00Z'}
spec:
  targetRef: {kind: External, name: stripe}
  timeout: 2s
---
apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: z-old, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  targetRef: {kind: External, name: stripe}
  timeout: 5s
",
        ));
        let set = p.current();
        assert_eq!(set.externals["stripe"].policy, "z-old");
        assert_eq!(set.rejected.len(), 1);
        assert_eq!(set.rejected[0].name, "a-new");
        assert!(
            set.rejected[0].reason.contains("z-old"),
            "{:?}",
            set.rejected
        );

        let g = policies();
        g.apply(&docs(&format!(
            "{}---\n{}",
            LIMIT.replace(
                "{name: browse}",
                "{name: z-old, creationTimestamp: '2026-01-01T00:00:00Z'}"
            ),
            LIMIT
                .replace(
                    "{name: browse}",
                    "{name: a-new, creationTimestamp: '2026-06-01T00:00:00Z'}"
                )
                .replace("requests: 10", "requests: 99")
        )));
        let set = g.current();
        assert_eq!(set.limits.len(), 1, "one rule r on products");
        assert_eq!(set.limits[0].policy, "z-old");
        assert_eq!(set.rejected[0].name, "a-new");
    }

    #[test]
    fn a_changed_spec_raises_the_generation_and_an_unchanged_one_keeps_its_state() {
        let p = policies();
        p.apply(&docs(LIMIT));
        let first = p.current();
        assert_eq!(first.applied[0].generation, 1);
        assert_eq!(first.applied[0].targets, ["products"]);
        p.apply(&docs(LIMIT));
        let same = p.current();
        assert_eq!(same.applied[0].generation, 1);
        assert!(
            Arc::ptr_eq(&first.limits[0], &same.limits[0]),
            "counters kept"
        );
        p.apply(&docs(&LIMIT.replace("requests: 10", "requests: 20")));
        let changed = p.current();
        assert_eq!(changed.applied[0].generation, 2);
        assert_eq!(changed.limits[0].rule.requests, 20);
    }

    #[test]
    fn an_invalid_version_is_rejected_and_the_previous_one_stays() {
        let p = policies();
        p.apply(&docs(LIMIT));
        p.apply(&docs(&LIMIT.replace("period: 1m", "period: 1m, burst: 50")));
        let set = p.current();
        assert_eq!(set.limits[0].rule.requests, 10, "previous version in force");
        assert_eq!(set.rejected.len(), 1);
        assert!(
            set.rejected[0].reason.contains("burst"),
            "{}",
            set.rejected[0].reason
        );
        assert!(set.rejected[0].previous_kept);
    }

    #[test]
    fn targets_resolve_by_component_or_service_resource_name_and_foreign_shops_are_refused() {
        let p = policies();
        p.apply(&docs(&format!(
            "{}---\n{}---\n{}",
            LIMIT.replace("name: products", "name: local-auth"),
            LIMIT
                .replace("{name: browse}", "{name: all}")
                .replace("kind: Service, name: products", "kind: Shop, name: local"),
            LIMIT
                .replace("{name: browse}", "{name: other}")
                .replace("kind: Service, name: products", "kind: Shop, name: acme"),
        )));
        let set = p.current();
        let applied: Vec<(&str, Vec<String>)> = set
            .applied
            .iter()
            .map(|a| (a.name.as_str(), a.targets.clone()))
            .collect();
        assert_eq!(
            applied,
            [
                ("all", vec!["*".to_owned()]),
                ("browse", vec!["auth".to_owned()])
            ]
        );
        assert_eq!(set.rejected.len(), 1);
        assert!(set.rejected[0].reason.contains("acme"));
    }

    #[test]
    fn a_second_circuit_policy_for_one_service_is_refused() {
        let circuit = "apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: a}
spec: {targetRef: {kind: Service, name: payments}, timeout: 1s}
";
        let p = policies();
        p.apply(&docs(&format!(
            "{circuit}---\n{}",
            circuit.replace("{name: a}", "{name: b}")
        )));
        let set = p.current();
        assert_eq!(set.circuits["payments"].policy, "a");
        assert_eq!(set.rejected[0].name, "b");
    }
}
