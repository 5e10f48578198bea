//! The policy controllers: a RateLimitPolicy or CircuitPolicy is validated against the cluster
//! (its target exists; no other policy claims the same target and rule) and its status says
//! so: `Accepted` with reason `Accepted`, `TargetNotFound` or `Conflicted`, and the Service
//! resources it resolves to. Policies carry no external state, hence no finalizer.
//!
//! Conflicts are settled the Gateway API way: the oldest policy (creation time, then name)
//! wins; the newer one is not applied and says which policy it conflicts with.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde::{Serialize, de::DeserializeOwned};
use tienda_crds::{
    CircuitPolicy, Component, PolicyStatus, RateLimitPolicy, Service, Shop,
    circuit_policy::CircuitTargetKind, rate_limit_policy::RateLimitTargetKind, status::condition,
};

use super::{
    cache::Cached,
    context::{Ctx, periodic_requeue},
    error::{Error, Result},
};
use crate::{
    conditions::{self, Status},
    shop::labels,
};

/// What the controller needs to know of a policy kind.
pub trait Policy:
    Cached
    + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// `RateLimitPolicy` or `CircuitPolicy`.
    const KIND: &'static str;
    /// The target: `(kind, name)`, kind one of `Service`, `Shop`, `External`.
    fn target(&self) -> (&'static str, String);
    /// What two policies must share to conflict, besides the target: rule names for rate
    /// limits (each rule is its own claim), nothing for circuit policies (one per target).
    fn claims(&self) -> BTreeSet<String>;
    /// The current status.
    fn status(&self) -> Option<&PolicyStatus>;
}

impl Policy for RateLimitPolicy {
    const KIND: &'static str = "RateLimitPolicy";

    fn target(&self) -> (&'static str, String) {
        let kind = match self.spec.target_ref.kind {
            RateLimitTargetKind::Service => "Service",
            RateLimitTargetKind::Shop => "Shop",
        };
        (kind, self.spec.target_ref.name.clone())
    }

    fn claims(&self) -> BTreeSet<String> {
        self.spec.rules.iter().map(|r| r.name.clone()).collect()
    }

    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

impl Policy for CircuitPolicy {
    const KIND: &'static str = "CircuitPolicy";

    fn target(&self) -> (&'static str, String) {
        let kind = match self.spec.target_ref.kind {
            CircuitTargetKind::Service => "Service",
            CircuitTargetKind::External => "External",
        };
        (kind, self.spec.target_ref.name.clone())
    }

    fn claims(&self) -> BTreeSet<String> {
        BTreeSet::from(["*".to_owned()])
    }

    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

/// The verdict on one policy (pure, from what the cluster holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and attached to these Service resources (empty for an external target).
    Accepted(Vec<String>),
    /// The target does not exist.
    TargetNotFound(String),
    /// An older policy claims the same target and rule.
    Conflicted(String),
}

fn older<P: Policy>(a: &P, b: &P) -> bool {
    tienda_crds::precedence(a.meta()) < tienda_crds::precedence(b.meta())
}

/// Judges `policy` given its resolved targets (`None` when the target does not exist) and the
/// other policies of its kind in the namespace.
pub fn judge<P: Policy>(policy: &P, resolved: Option<Vec<String>>, others: &[P]) -> Verdict {
    let (kind, name) = policy.target();
    let Some(targets) = resolved else {
        return Verdict::TargetNotFound(format!("{kind} {name} does not exist in this namespace"));
    };
    let claims = policy.claims();
    for other in others {
        if other.name_any() == policy.name_any() || other.target() != policy.target() {
            continue;
        }
        let shared: Vec<_> = claims.intersection(&other.claims()).cloned().collect();
        if !shared.is_empty() && older(other, policy) {
            let what = if shared == ["*"] {
                String::new()
            } else {
                format!(" (rules {})", shared.join(", "))
            };
            return Verdict::Conflicted(format!(
                "{} {} already applies to {kind} {name}{what}; it is older, so it wins",
                P::KIND,
                other.name_any()
            ));
        }
    }
    Verdict::Accepted(targets)
}

fn resolve<P: Policy>(policy: &P, ctx: &Ctx, namespace: &str) -> Option<Vec<String>> {
    let (kind, name) = policy.target();
    let names = |services: Vec<Arc<Service>>| {
        let mut names: Vec<_> = services.iter().map(|s| s.name_any()).collect();
        names.sort();
        names
    };
    let caches = &ctx.caches;
    match kind {
        "Service" => match caches.get::<Service>(namespace, &name) {
            Some(s) => Some(vec![s.name_any()]),
            // A component name (`products`) stands for that component of every shop in
            // the namespace, as the examples write it; the gateways read it the same way.
            None if serde_json::from_value::<Component>(serde_json::json!(name)).is_ok() => {
                let names = names(caches.labelled::<Service>(namespace, labels::COMPONENT, &name));
                (!names.is_empty()).then_some(names)
            }
            None => None,
        },
        "Shop" => caches
            .get::<Shop>(namespace, &name)
            .map(|_| names(caches.labelled::<Service>(namespace, labels::SHOP, &name))),
        // External dependencies are named by the components that call them.
        _ => Some(Vec::new()),
    }
}

/// Reconciles one policy.
pub async fn reconcile<P: Policy>(policy: Arc<P>, ctx: Ctx) -> Result<Action> {
    let _timer = ctx.metrics.start(P::KIND);
    ctx.caches.ensure_synced()?;
    let namespace = policy.namespace().unwrap_or_default();
    let resolved = resolve(&*policy, &ctx, &namespace);
    let others: Vec<P> = ctx
        .caches
        .in_namespace::<P>(&namespace)
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let verdict = judge(&*policy, resolved, &others);

    let generation = policy.meta().generation;
    let old = policy.status().cloned().unwrap_or_default();
    let mut status = PolicyStatus {
        observed_generation: generation,
        ..old.clone()
    };
    let (accepted, reason, message) = match &verdict {
        Verdict::Accepted(targets) => {
            status.targets = targets.clone();
            (
                Status::True,
                "Accepted",
                "the policy is valid and attached to its target".to_owned(),
            )
        }
        Verdict::TargetNotFound(message) => {
            status.targets.clear();
            (Status::False, "TargetNotFound", message.clone())
        }
        Verdict::Conflicted(message) => {
            status.targets.clear();
            (Status::False, "Conflicted", message.clone())
        }
    };
    conditions::set(
        &mut status.conditions,
        condition::ACCEPTED,
        accepted,
        reason,
        message.clone(),
        generation,
        Timestamp::now(),
    );
    if status != old || policy.status().is_none() {
        let was = old
            .conditions
            .iter()
            .find(|c| c.type_ == condition::ACCEPTED)
            .map(|c| c.reason.clone());
        if was.as_deref() != Some(reason) {
            let type_ = if accepted == Status::True {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.event(&*policy, type_, reason, message).await;
        }
        // The operator owns the verdict; each enforcing replica owns its `applied` entry.
        let ours = PolicyStatus {
            applied: Vec::new(),
            ..status
        };
        let api: Api<P> = Api::namespaced(ctx.client.clone(), &namespace);
        super::apply_status(
            &api,
            &policy.name_any(),
            serde_json::to_value(&ours).expect("status serializes"),
        )
        .await?;
    }
    // A missing target may appear; a conflict may clear: look again soon.
    Ok(match verdict {
        Verdict::Accepted(_) => periodic_requeue(),
        _ => Action::requeue(Duration::from_secs(30)),
    })
}

/// Error policy: per-object exponential backoff with jitter.
pub fn error_policy<P: Policy>(policy: Arc<P>, error: &Error, ctx: Ctx) -> Action {
    super::backoff_on_error(P::KIND, &*policy, error, &ctx)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn rate(name: &str, created: &str, rules: &[&str]) -> RateLimitPolicy {
        let rules: Vec<_> = rules
            .iter()
            .map(|r| json!({"name": r, "clientKey": {"type": "ClientIP"}, "requests": 10, "period": "1s"}))
            .collect();
        let mut p: RateLimitPolicy = serde_json::from_value(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "RateLimitPolicy",
            "metadata": {"name": name, "namespace": "shops"},
            "spec": {"targetRef": {"kind": "Service", "name": "demo-products"}, "rules": rules}
        }))
        .unwrap();
        p.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        p
    }

    #[test]
    fn a_policy_without_its_target_is_not_found() {
        let p = rate("a", "2026-01-01T00:00:00Z", &["browse"]);
        assert!(
            matches!(judge(&p, None, &[]), Verdict::TargetNotFound(m) if m.contains("Service demo-products"))
        );
    }

    #[test]
    fn the_older_of_two_policies_claiming_one_rule_wins() {
        let old = rate("old", "2026-01-01T00:00:00Z", &["browse", "search"]);
        let new = rate("new", "2026-02-01T00:00:00Z", &["browse"]);
        let all = [old.clone(), new.clone()];
        let targets = Some(vec!["demo-products".to_owned()]);
        assert_eq!(
            judge(&old, targets.clone(), &all),
            Verdict::Accepted(vec!["demo-products".into()])
        );
        assert!(
            matches!(judge(&new, targets, &all), Verdict::Conflicted(m) if m.contains("old") && m.contains("browse"))
        );
    }

    #[test]
    fn policies_on_different_rules_of_one_target_do_not_conflict() {
        let a = rate("a", "2026-01-01T00:00:00Z", &["browse"]);
        let b = rate("b", "2026-02-01T00:00:00Z", &["checkout"]);
        let all = [a, b.clone()];
        assert!(matches!(
            judge(&b, Some(vec![]), &all),
            Verdict::Accepted(_)
        ));
    }
}
