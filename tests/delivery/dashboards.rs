//! The Grafana dashboards (charts/tienda/dashboards): well-formed, every PromQL expression
//! accepted by Prometheus' own parser (`promtool check rules` on them as recording rules), and
//! served by the chart's ConfigMap as they are. That they name metrics the services really
//! export is checked against a running shop (tests/e2e, `operations`).

use std::{collections::BTreeSet, process::Command};

use serde_json::{Value, json};
use tienda_e2e::dashboards;

use crate::tools::{render, tool};

#[test]
fn the_dashboards_are_grafana_dashboards_with_unique_uids_and_a_data_source_variable() {
    let boards = dashboards::all();
    let titles: BTreeSet<&str> = boards
        .iter()
        .map(|(_, b)| b["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Tienda / Event backbone",
            "Tienda / Sagas and payments",
            "Tienda / Services",
            "Tienda / Shop overview",
        ]
        .into(),
        "shop overview, per-service RED, event backbone, sagas and payments"
    );
    let uids: BTreeSet<&str> = boards
        .iter()
        .map(|(_, b)| b["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids.len(), boards.len(), "unique uids");
    for (file, board) in &boards {
        assert!(board["schemaVersion"].as_i64().unwrap() >= 36, "{file}");
        let variables = board["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{file} lets the user pick the Prometheus data source"
        );
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().unwrap() {
            assert!(
                ids.insert(panel["id"].as_i64().unwrap()),
                "{file}: panel ids are unique"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                panel["title"]
            );
            assert!(
                !panel["targets"].as_array().unwrap().is_empty(),
                "{file}: {} has a query",
                panel["title"]
            );
        }
    }
}

#[test]
fn every_dashboard_expression_is_valid_promql() {
    let mut rules = Vec::new();
    for (file, board) in dashboards::all() {
        for (panel, expr) in dashboards::expressions(&board) {
            // Grafana's `label_values(selector, label)` is not PromQL: its selector is.
            let expr = match expr.trim().strip_prefix("label_values(") {
                Some(rest) => rest
                    .trim_end_matches(')')
                    .rsplit_once(',')
                    .map(|(selector, _)| selector.to_owned())
                    .unwrap(),
                None => expr,
            };
            rules.push(json!({
                "record": format!("dashboard:{}:{}", rules.len(), file.replace(['.', '-'], "_")),
                "expr": dashboards::concrete(&expr),
                "labels": {"panel": panel},
            }));
        }
    }
    assert!(rules.len() > 50, "{} expressions", rules.len());
    let dir = std::env::temp_dir().join(format!("tienda-dashboards-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboards.rules.json");
    // A rule file is YAML, and JSON is YAML.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboards", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = Command::new(tool("PROMTOOL", "prometheus/promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool refused a dashboard expression:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_serves_the_dashboards_to_grafanas_sidecar() {
    let rendered = render(&[
        "--set",
        "metrics.dashboards.enabled=true",
        "--set",
        "metrics.dashboards.namespace=monitoring",
    ]);
    let map: Value = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|doc| doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "tienda-dashboards")
        .expect("the dashboards' ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    for (file, board) in dashboards::all() {
        let served: Value = serde_json::from_str(map["data"][&file].as_str().unwrap()).unwrap();
        assert_eq!(served, board, "{file}");
    }
    assert!(
        !render(&[]).contains("tienda-dashboards"),
        "off unless asked for"
    );
}
