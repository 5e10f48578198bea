//! Kubernetes RBAC as the API server applies it, for mocked API servers: what a request needs
//! (its verb, group, resource, subresource, namespace and name, the way the API server's
//! `RequestInfoFactory` derives them), whether a set of rules grants it, and the 403 the real
//! server answers when they do not. A mocked API server that checks this fails a test when
//! the chart's or the operator's RBAC lacks a permission the code uses.
//!
//! Server-side apply is authorized as `patch` and, when it creates the object, as `create`:
//! both are required here, because the code cannot know which one a given cluster will need.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{Value, json};

/// The attributes the authorizer checks for one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, with its subresource when there is one (`deployments`, `shops/status`).
    pub resource: String,
    /// The namespace, if the request is namespaced.
    pub namespace: Option<String>,
    /// The object's name, if the request names one.
    pub name: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns}")?;
        }
        Ok(())
    }
}

/// What a request needs: one access, or two for a server-side apply (`patch` and `create`).
/// `None` for paths that are not resource requests (discovery, `/version`).
pub fn accesses(
    method: &http::Method,
    uri: &str,
    content_type: Option<&str>,
) -> Option<Vec<Access>> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`.
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        // `/api/v1/namespaces/<name>` is the namespace object itself.
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some((*name).to_owned()), None),
        [resource, name, sub] => (*resource, Some((*name).to_owned()), Some(*sub)),
        _ => return None,
    };
    let watching = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method.as_str(), &name) {
        ("GET", _) if watching => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    let access = |verb: &str| Access {
        verb: verb.into(),
        group: group.into(),
        resource: resource.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let apply = content_type.is_some_and(|c| c.starts_with("application/apply-patch"));
    Some(if apply && subresource.is_none() {
        vec![access("patch"), access("create")]
    } else {
        vec![access(verb)]
    })
}

/// Rules bound to a subject: cluster-wide ones (a ClusterRole through a ClusterRoleBinding)
/// and namespaced ones (a Role through a RoleBinding in its namespace).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    cluster: Vec<PolicyRule>,
    namespaced: Vec<(String, PolicyRule)>,
}

fn matches(list: Option<&Vec<String>>, value: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|x| x == "*" || x == value))
}

fn grants(rule: &PolicyRule, access: &Access) -> bool {
    let resource_ok = match access.resource.split_once('/') {
        // `*/status` style rules are rare; a rule must name the subresource or use `*`.
        Some((_, sub)) => {
            matches(rule.resources.as_ref(), &access.resource)
                || matches(rule.resources.as_ref(), &format!("*/{sub}"))
        }
        None => matches(rule.resources.as_ref(), &access.resource),
    };
    let name_ok = match (&rule.resource_names, &access.name) {
        (None, _) => true,
        (Some(names), _) if names.is_empty() => true,
        (Some(names), Some(name)) => names.contains(name),
        (Some(_), None) => false,
    };
    rule.verbs.iter().any(|v| v == "*" || *v == access.verb)
        && matches(rule.api_groups.as_ref(), &access.group)
        && resource_ok
        && name_ok
}

impl Rules {
    /// Cluster-wide rules.
    pub fn cluster(rules: Vec<PolicyRule>) -> Self {
        Self {
            cluster: rules,
            namespaced: Vec::new(),
        }
    }

    /// Rules that hold in `namespace` only.
    pub fn namespaced(namespace: &str, rules: Vec<PolicyRule>) -> Self {
        Self {
            cluster: Vec::new(),
            namespaced: rules
                .into_iter()
                .map(|r| (namespace.to_owned(), r))
                .collect(),
        }
    }

    /// These rules and `other`'s.
    #[must_use]
    pub fn and(mut self, other: Rules) -> Self {
        self.cluster.extend(other.cluster);
        self.namespaced.extend(other.namespaced);
        self
    }

    /// The ClusterRoles and Roles named one of `names` in rendered manifests (several YAML
    /// documents): the rules a release grants its service account.
    pub fn from_manifests(yaml: &str, names: &[&str]) -> Self {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(yaml).expect("the manifests are YAML");
        let mut rules = Rules::default();
        for doc in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            if !names.contains(&name) || !matches!(kind, "ClusterRole" | "Role") {
                continue;
            }
            let parsed: Vec<PolicyRule> =
                serde_json::from_value(doc["rules"].clone()).expect("RBAC rules");
            match kind {
                "ClusterRole" => rules.cluster.extend(parsed),
                "Role" => {
                    let ns = doc["metadata"]["namespace"]
                        .as_str()
                        .expect("a Role in rendered manifests names its namespace");
                    rules
                        .namespaced
                        .extend(parsed.into_iter().map(|r| (ns.to_owned(), r)));
                }
                _ => {}
            }
        }
        rules
    }

    /// Whether these rules grant `access`.
    pub fn allows(&self, access: &Access) -> bool {
        self.cluster.iter().any(|r| grants(r, access))
            || access.namespace.as_ref().is_some_and(|ns| {
                self.namespaced
                    .iter()
                    .any(|(n, r)| n == ns && grants(r, access))
            })
    }

    /// The first access a request needs that these rules do not grant.
    pub fn denies(
        &self,
        method: &http::Method,
        uri: &str,
        content_type: Option<&str>,
    ) -> Option<Access> {
        accesses(method, uri, content_type)?
            .into_iter()
            .find(|a| !self.allows(a))
    }

    /// Every (verb, group, resource) that `rules` grant and these rules do not, in `namespace`
    /// — what a subject holding these rules could not grant to another (the API server refuses
    /// a Role that escalates beyond its creator's own permissions).
    pub fn missing_to_grant(&self, namespace: &str, rules: &[PolicyRule]) -> BTreeSet<String> {
        let mut missing = BTreeSet::new();
        for rule in rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        let access = Access {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            namespace: Some(namespace.to_owned()),
                            name: None,
                        };
                        if !self.allows(&access) {
                            missing.insert(access.to_string());
                        }
                    }
                }
            }
        }
        missing
    }
}

/// The body of the 403 the API server answers for a request `user` may not make.
pub fn forbidden(access: &Access, user: &str) -> Value {
    let group = &access.group;
    let resource: &str = &access.resource;
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let mut message = format!(
        "{resource}{} is forbidden: User \"{user}\" cannot {} resource \"{resource}\"",
        access
            .name
            .as_ref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default(),
        access.verb
    );
    if !sub.is_empty() {
        message.push_str(&format!("/{sub}"));
    }
    message.push_str(&format!(" in API group \"{group}\""));
    match &access.namespace {
        Some(ns) => message.push_str(&format!(" in the namespace \"{ns}\"")),
        None => message.push_str(" at the cluster scope"),
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden",
        "details": {"name": access.name.clone().unwrap_or_default(), "group": group, "kind": resource},
        "code": 403
    })
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(groups.iter().map(|s| (*s).into()).collect()),
            resources: Some(resources.iter().map(|s| (*s).into()).collect()),
            verbs: verbs.iter().map(|s| (*s).into()).collect(),
            ..PolicyRule::default()
        }
    }

    #[test]
    fn requests_map_to_the_verbs_the_api_server_checks() {
        let one = |m: Method, uri: &str, ct: Option<&str>| {
            accesses(&m, uri, ct)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            one(Method::GET, "/api/v1/namespaces/ns/secrets/pg", None),
            ["get core/secrets pg in namespace ns"]
        );
        assert_eq!(
            one(
                Method::GET,
                "/apis/apps/v1/deployments?labelSelector=a%3Db&watch=true&resourceVersion=1",
                None
            ),
            ["watch apps/deployments"]
        );
        assert_eq!(
            one(
                Method::GET,
                "/apis/tienda.dev/v1alpha1/namespaces/ns/shops",
                None
            ),
            ["list tienda.dev/shops in namespace ns"]
        );
        assert_eq!(
            one(
                Method::PATCH,
                "/apis/apps/v1/namespaces/ns/deployments/d?fieldManager=x&force=true",
                Some("application/apply-patch+yaml")
            ),
            [
                "patch apps/deployments d in namespace ns",
                "create apps/deployments d in namespace ns"
            ]
        );
        assert_eq!(
            one(
                Method::PATCH,
                "/apis/tienda.dev/v1alpha1/namespaces/ns/shops/s/status?fieldManager=x",
                Some("application/apply-patch+yaml")
            ),
            ["patch tienda.dev/shops/status s in namespace ns"]
        );
        assert_eq!(
            one(Method::DELETE, "/api/v1/namespaces/ns/pods", None),
            ["deletecollection core/pods in namespace ns"]
        );
        assert!(accesses(&Method::GET, "/version", None).is_none());
    }

    #[test]
    fn a_rule_grants_only_its_groups_resources_verbs_and_names() {
        let rules = Rules::cluster(vec![rule(&["apps"], &["deployments"], &["get", "patch"])]).and(
            Rules::namespaced(
                "ops",
                vec![rule(&["coordination.k8s.io"], &["leases"], &["*"])],
            ),
        );
        let apply = Some("application/apply-patch+yaml");
        let uri = "/apis/apps/v1/namespaces/ns/deployments/d";
        assert!(rules.denies(&Method::GET, uri, None).is_none());
        assert_eq!(
            rules.denies(&Method::PATCH, uri, apply).unwrap().verb,
            "create",
            "apply needs create too"
        );
        assert!(
            rules
                .denies(
                    &Method::GET,
                    "/apis/apps/v1/namespaces/ns/deployments/d/scale",
                    None
                )
                .is_some()
        );
        assert!(
            rules
                .denies(
                    &Method::GET,
                    "/apis/coordination.k8s.io/v1/namespaces/ops/leases/l",
                    None
                )
                .is_none()
        );
        assert!(
            rules
                .denies(
                    &Method::GET,
                    "/apis/coordination.k8s.io/v1/namespaces/other/leases/l",
                    None
                )
                .is_some(),
            "a Role holds in its namespace only"
        );
        let named = Rules::cluster(vec![PolicyRule {
            resource_names: Some(vec!["mine".into()]),
            ..rule(&[""], &["secrets"], &["get"])
        }]);
        assert!(
            named
                .denies(&Method::GET, "/api/v1/namespaces/n/secrets/mine", None)
                .is_none()
        );
        assert!(
            named
                .denies(&Method::GET, "/api/v1/namespaces/n/secrets/other", None)
                .is_some()
        );
        assert!(
            named
                .denies(&Method::GET, "/api/v1/namespaces/n/secrets", None)
                .is_some()
        );
    }

    #[test]
    fn rules_come_from_rendered_manifests_and_grants_beyond_them_are_named() {
        let yaml = r"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: rel-tienda}
rules:
  - apiGroups: [tienda.dev]
    resources: [ratelimitpolicies]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rel-tienda-leader, namespace: ops}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: rel-tienda}
";
        let rules = Rules::from_manifests(yaml, &["rel-tienda", "rel-tienda-leader"]);
        assert!(
            rules
                .denies(
                    &Method::GET,
                    "/apis/coordination.k8s.io/v1/namespaces/ops/leases/x",
                    None
                )
                .is_none()
        );
        let missing = rules.missing_to_grant(
            "shop",
            &[rule(
                &["tienda.dev"],
                &["ratelimitpolicies"],
                &["list", "watch"],
            )],
        );
        assert_eq!(
            missing.into_iter().collect::<Vec<_>>(),
            ["watch tienda.dev/ratelimitpolicies in namespace shop"]
        );
        let body = forbidden(
            &accesses(
                &Method::POST,
                "/apis/apps/v1/namespaces/ns/deployments",
                None,
            )
            .unwrap()[0],
            "system:serviceaccount:tienda-system:tienda",
        );
        assert_eq!(body["code"], 403);
        assert_eq!(body["reason"], "Forbidden");
        assert!(body["message"].as_str().unwrap().contains(
            "cannot create resource \"deployments\" in API group \"apps\" in the namespace \"ns\""
        ));
    }
}
