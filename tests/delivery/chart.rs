//! The Helm chart and its rendering in `manifests/`.

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::tools::{documents, helm, kubernetes_validate, render, root};

/// Every optional block switched on.
const ALL_ON: &[&str] = &[
    "--set",
    "devInfra.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboards.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/x",
];

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_chart_passes_helm_lint_strict_with_default_and_all_optional_values() {
    let (ok, out, err) = helm(&["lint", "--strict", "charts/tienda"]);
    assert!(ok, "helm lint --strict:\n{out}{err}");
    let mut args = vec!["lint", "--strict", "charts/tienda"];
    args.extend_from_slice(ALL_ON);
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm lint --strict with every block on:\n{out}{err}");
}

#[test]
fn manifests_equal_the_chart_rendered_with_default_values() {
    let rendered = render(&[]);
    let committed = std::fs::read_to_string(root().join("manifests/install.yaml")).unwrap();
    assert!(
        rendered == committed,
        "manifests/install.yaml is stale: run tests/generate"
    );
}

#[test]
fn every_rendered_object_passes_kubernetes_validate_strict() {
    let default = render(&[]);
    assert_eq!(kubernetes_validate(&default), Vec::<String>::new());
    assert_eq!(
        kinds(&documents(&default)),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
    );

    let all = render(ALL_ON);
    // prometheus-operator's kinds are not Kubernetes'; they are checked below instead.
    let unknown: BTreeSet<String> = kubernetes_validate(&all).into_iter().collect();
    assert_eq!(
        unknown,
        ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
            .map(String::from)
            .into()
    );
    let docs = documents(&all);
    for kind in [
        "ConfigMap",
        "NetworkPolicy",
        "Secret",
        "StatefulSet",
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ] {
        assert!(kinds(&docs).contains(kind), "{kind} is rendered");
    }
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let metrics_service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "tienda-metrics")
        .unwrap();
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        metrics_service["spec"]["ports"][0]["name"]
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &metrics_service["metadata"]["labels"][k], v,
            "the monitor selects the metrics Service"
        );
    }
    let components = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap();
    assert_eq!(components["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(components["spec"]["namespaceSelector"]["any"], true);
    let rules = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    for rule in rules["spec"]["groups"][0]["rules"].as_array().unwrap() {
        assert!(
            rule["alert"].is_string()
                && rule["expr"].is_string()
                && rule["annotations"]["summary"].is_string(),
            "{rule}"
        );
    }
}

#[test]
fn the_values_schema_rejects_wrong_values() {
    for (set, field) in [
        ("operator.replicas=0", "replicas"),
        ("operator.replicas=two", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("devInfra.nats.storage=lots", "storage"),
        ("devInfra.postgres.image=postgres:latest@sha1", "image"),
        ("operatr.replicas=2", "operatr"),
        ("metrics.serviceMonitor.interval=often", "interval"),
    ] {
        let (ok, _, err) = helm(&["template", "tienda", "charts/tienda", "--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "--set {set}: {err}"
        );
        assert!(
            err.contains(field),
            "--set {set}: the error names {field}: {err}"
        );
    }
    render(&["--set", "operator.replicas=3", "--set", "image.tag=0.2.0"]);
}

#[test]
fn the_chart_ships_the_generated_crds_upgradable_and_kept_on_uninstall() {
    let dir = root().join("charts/tienda/files/crds");
    for entry in std::fs::read_dir(root().join("crds/yaml")).unwrap() {
        let path = entry.unwrap().path();
        let shipped =
            std::fs::read_to_string(dir.join(path.file_name().unwrap())).unwrap_or_else(|_| {
                panic!("{} is not in the chart: run tests/generate", path.display())
            });
        assert!(
            shipped == std::fs::read_to_string(&path).unwrap(),
            "charts/tienda/files/crds differs from crds/yaml: run tests/generate"
        );
    }
    let docs = documents(&render(&[]));
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 4);
    for crd in crds {
        let annotations = &crd["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/resource-policy"], "keep");
        assert_eq!(
            annotations["argocd.argoproj.io/sync-wave"], "-1",
            "CRDs before everything"
        );
    }
    let off = documents(&render(&["--set", "crds.install=false"]));
    assert!(off.iter().all(|d| d["kind"] != "CustomResourceDefinition"));
}

fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    set.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    set
}

#[test]
fn the_operator_holds_every_permission_it_grants_gateways_and_only_leases_in_its_namespace() {
    let docs = documents(&render(&[]));
    let cluster = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let held = grants(cluster);
    // RBAC refuses to let the operator grant what it does not hold itself.
    let shop: tienda_crds::Shop = serde_json::from_value(serde_json::json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "demo", "namespace": "shop", "uid": "u"},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "a"}},
                 "nats": {"url": "nats://n:4222"}}
    }))
    .unwrap();
    let mut gateway = tienda_operator::shop::desired_services(&shop)
        .into_iter()
        .find(|s| s.spec.component == tienda_crds::Component::Gateway)
        .unwrap();
    gateway.metadata.uid = Some("g".into());
    let role = serde_json::to_value(tienda_operator::workload::component_role(&gateway)).unwrap();
    let missing: Vec<_> = grants(&role).difference(&held).cloned().collect();
    assert!(
        missing.is_empty(),
        "the ClusterRole lacks what gateways get: {missing:?}"
    );
    for (group, resource, _) in &held {
        assert_ne!(resource, "*", "no wildcard resources");
        assert_ne!(group, "*", "no wildcard groups");
    }
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "tienda-system");
    assert_eq!(
        grants(role),
        ["get", "create", "update"]
            .map(|v| (
                "coordination.k8s.io".to_owned(),
                "leases".to_owned(),
                v.to_owned()
            ))
            .into()
    );
}

#[test]
fn the_operator_runs_two_non_root_replicas_with_probes() {
    let docs = documents(&render(&[]));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/tienda-dev/tienda-operator:0.1.0"
    );
    assert_eq!(container["args"], serde_json::json!(["run"]));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "leader election identity: {env:?}"
    );
}

#[test]
fn dev_infrastructure_keeps_every_acknowledged_write_and_its_generated_password() {
    let docs = documents(&render(&["--set", "devInfra.enabled=true"]));
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert!(
        config["data"]["nats.conf"]
            .as_str()
            .unwrap()
            .contains("sync_interval: always")
    );
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["metadata"]["name"], "tienda-postgres-admin");
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(
        secret["data"]["password"]
            .as_str()
            .is_some_and(|p| p.len() >= 40)
    );
}

#[test]
fn the_components_monitor_scrapes_the_admin_port_of_the_pods_the_operator_makes() {
    let docs = documents(&render(ALL_ON));
    let monitor = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap();
    let shop: tienda_crds::Shop = serde_json::from_value(serde_json::json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": "demo", "namespace": "shops", "uid": "u"},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "a"}},
                 "nats": {"url": "nats://nats:4222"}}
    }))
    .unwrap();
    for mut service in tienda_operator::shop::desired_services(&shop) {
        service.metadata.uid = Some("s".into());
        let deployment =
            serde_json::to_value(tienda_operator::workload::deployment(&service, &shop, "h"))
                .unwrap();
        let pod = &deployment["spec"]["template"];
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&pod["metadata"]["labels"][k], v, "{k}");
        }
        let port = &monitor["spec"]["podMetricsEndpoints"][0]["port"];
        let ports = pod["spec"]["containers"][0]["ports"].as_array().unwrap();
        assert!(
            ports.iter().any(|p| &p["name"] == port),
            "the pods name the port {port}"
        );
        for label in monitor["spec"]["podTargetLabels"].as_array().unwrap() {
            assert!(pod["metadata"]["labels"][label.as_str().unwrap()].is_string());
        }
    }
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "admin");
}
