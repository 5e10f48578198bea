//! The policies the gateway enforces, swapped whole and lock-free ([`ArcSwap`]) when their
//! source changes, so a reload never blocks or drops a request in flight: a request keeps
//! the set it started with.
//!
//! Each document is checked the way the API server checks it (schema and CEL rules) and
//! resolved against this gateway's shop. One that fails is rejected with a log line and its
//! previous valid version stays in force. Counters and breaker state carry over for every
//! rule and circuit whose spec did not change.
//!
//! Sources: files (`tienda up`, or a mounted ConfigMap), polled for changes — polling the
//! contents rather than inotify, because editors replace files by rename and Kubernetes swaps
//! ConfigMap volumes through symlinks, both of which inotify watchers miss; and, in a cluster,
//! the RateLimitPolicy and CircuitPolicy resources themselves ([`crate::cluster`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use serde_json::Value;
use tienda_crds::{
    CircuitPolicy, CircuitPolicySpec, RateLimitPolicy, RateLimitPolicySpec,
    circuit_policy::CircuitTargetKind, rate_limit_policy::RateLimitTargetKind,
};

use crate::{circuit::Circuit, rate_limit::Limit, upstream::SERVICES};

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
    /// The circuit of each service that has one.
    pub circuits: BTreeMap<String, Arc<Circuit>>,
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

/// The live policies of a gateway.
#[derive(Debug)]
pub struct Policies {
    current: ArcSwap<PolicySet>,
    /// The shop this gateway serves (Shop targets and `<shop>-<component>` Service names).
    shop: String,
    /// Gateway replicas sharing each limit.
    replicas: std::sync::atomic::AtomicU32,
    known: Mutex<BTreeMap<(String, String), Known>>,
    generation: IntGaugeVec,
    rejected: IntCounterVec,
}

impl Policies {
    /// No policies yet; metrics registered in `registry`.
    pub fn new(shop: &str, replicas: u32, registry: &Registry) -> Self {
        let generation = IntGaugeVec::new(
            Opts::new(
                "gateway_policy_applied_generation",
                "The generation of each policy this replica enforces",
            ),
            &["kind", "name"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "gateway_policy_rejected_total",
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
            shop: shop.to_owned(),
            replicas: std::sync::atomic::AtomicU32::new(replicas.max(1)),
            known: Mutex::new(BTreeMap::new()),
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

    /// Changes the replica count; limits are rebuilt with the new share at the next apply.
    pub fn set_replicas(&self, replicas: u32) {
        self.replicas
            .store(replicas.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The component a Service target names: the component itself, or `<shop>-<component>`
    /// (the operator's Service resource name).
    fn component(&self, name: &str) -> Option<&'static str> {
        SERVICES.iter().copied().find(|c| {
            name == *c
                || name
                    .strip_prefix(self.shop.as_str())
                    .and_then(|r| r.strip_prefix('-'))
                    == Some(*c)
        })
    }

    /// Replaces the policies with those in `docs` (every document of the source; other
    /// kinds are ignored).
    pub fn apply(&self, docs: &[Value]) {
        let previous = self.current();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let mut next_known = BTreeMap::new();
        let mut rejected = Vec::new();

        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "RateLimitPolicy" && kind != "CircuitPolicy" {
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
                        .map(|p| Spec::RateLimit(p.spec))
                        .map_err(|e| e.to_string()),
                    _ => serde_json::from_value::<CircuitPolicy>(doc.clone())
                        .map(|p| Spec::Circuit(p.spec))
                        .map_err(|e| e.to_string()),
                });
            match check {
                Ok(spec) => {
                    let generation = doc["metadata"]["generation"].as_i64().unwrap_or_else(|| {
                        match known.get(&key) {
                            Some(k) if k.spec == spec => k.generation,
                            Some(k) => k.generation + 1,
                            None => 1,
                        }
                    });
                    next_known.insert(key, Known { spec, generation });
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
        for ((kind, name), k) in &next_known {
            let targets = match &k.spec {
                Spec::RateLimit(spec) => {
                    let services = match spec.target_ref.kind {
                        RateLimitTargetKind::Shop if spec.target_ref.name == self.shop => None,
                        RateLimitTargetKind::Shop => {
                            set.rejected.push(not_ours(
                                kind,
                                name,
                                &format!(
                                    "targets Shop {}; this gateway serves shop {}",
                                    spec.target_ref.name, self.shop
                                ),
                            ));
                            continue;
                        }
                        RateLimitTargetKind::Service => {
                            match self.component(&spec.target_ref.name) {
                                Some(c) => Some(vec![c.to_owned()]),
                                None => {
                                    set.rejected.push(not_ours(kind, name, &format!(
                                        "targets Service {}, which is no component of shop {} behind the gateway",
                                        spec.target_ref.name, self.shop
                                    )));
                                    continue;
                                }
                            }
                        }
                    };
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
                        // Called by the components, not by the gateway.
                        continue;
                    }
                    let Some(service) = self.component(&spec.target_ref.name) else {
                        set.rejected.push(not_ours(kind, name, &format!(
                            "targets Service {}, which is no component of shop {} behind the gateway",
                            spec.target_ref.name, self.shop
                        )));
                        continue;
                    };
                    if let Some(other) = set.circuits.get(service) {
                        set.rejected.push(not_ours(kind, name, &format!(
                            "CircuitPolicy {} already applies to {service}; one policy per target (the first by name wins)",
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
        *known = next_known;
        self.current.store(Arc::new(set));
    }
}

fn not_ours(kind: &str, name: &str, reason: &str) -> Rejected {
    tracing::warn!(kind, name, reason, "policy not applied by this gateway");
    Rejected {
        kind: kind.to_owned(),
        name: name.to_owned(),
        reason: reason.to_owned(),
        previous_kept: false,
    }
}

/// The YAML files of a policy path: the file itself, or the `.yaml`/`.yml` files of a
/// directory, sorted. `None` while the path is missing or unreadable (an editor saving by
/// rename-away-then-write): that is no reason to drop every policy.
fn yaml_files(path: &Path) -> Option<Vec<PathBuf>> {
    if path.is_file() {
        return Some(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Some(files)
}

/// Reads policy files, keeping the last good documents of a file that stops parsing.
#[derive(Debug, Default)]
pub struct FileSource {
    path: PathBuf,
    texts: BTreeMap<PathBuf, String>,
    docs: BTreeMap<PathBuf, Vec<Value>>,
}

impl FileSource {
    /// Files under `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ..Self::default()
        }
    }

    /// Reads the files; `Some(documents)` when anything changed since the last call.
    pub fn poll(&mut self) -> Option<Vec<Value>> {
        let files = yaml_files(&self.path)?;
        let mut texts = BTreeMap::new();
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    texts.insert(file.clone(), text);
                }
                // Mid-rename or unreadable: try again at the next poll.
                Err(_) => return None,
            }
        }
        if texts == self.texts {
            return None;
        }
        let mut docs = BTreeMap::new();
        for (file, text) in &texts {
            if self.texts.get(file) == Some(text)
                && let Some(old) = self.docs.get(file)
            {
                docs.insert(file.clone(), old.clone());
                continue;
            }
            match serde_saphyr::from_multiple::<Value>(text) {
                Ok(parsed) => {
                    docs.insert(
                        file.clone(),
                        parsed.into_iter().filter(|d| !d.is_null()).collect(),
                    );
                }
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "policy file is not YAML; its previous contents stay in force");
                    if let Some(old) = self.docs.get(file) {
                        docs.insert(file.clone(), old.clone());
                    }
                }
            }
        }
        self.texts = texts;
        self.docs = docs;
        Some(self.docs.values().flatten().cloned().collect())
    }
}

/// Applies the files under `path` now and whenever they change (checked every `interval`).
pub async fn watch_files(
    mut source: FileSource,
    policies: Arc<Policies>,
    interval: Duration,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        if let Some(docs) = source.poll() {
            policies.apply(&docs);
        }
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
        Policies::new("local", 1, &Registry::new())
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
