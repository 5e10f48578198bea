//! The alerts (charts/tienda/rules): `promtool check rules` and `promtool test rules` pass,
//! every alert says what is wrong, what to do and where its runbook is — a section of
//! docs/runbooks.md that exists — and the chart's PrometheusRule serves exactly these rules.

use std::process::Command;

use serde_json::Value;

use crate::tools::{render, root, tool};

fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("PROMTOOL", "prometheus/promtool"))
        .args(args)
        .current_dir(root().join("charts/tienda/rules"))
        .output()
        .expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{report}");
    report
}

fn rules() -> Value {
    let text = std::fs::read_to_string(root().join("charts/tienda/rules/tienda.rules.yaml"))
        .expect("the rule file");
    serde_saphyr::from_str(&text).expect("the rule file is YAML")
}

#[test]
fn the_rules_pass_promtools_check_and_unit_tests() {
    let checked = promtool(&["check", "rules", "tienda.rules.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "tienda.rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has its unit test.
    let tests =
        std::fs::read_to_string(root().join("charts/tienda/rules/tienda.rules.test.yaml")).unwrap();
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {alert}\n")),
                "{alert} has no test in tienda.rules.test.yaml"
            );
        }
    }
}

#[test]
fn every_alert_says_what_to_do_and_links_a_runbook_section_that_exists() {
    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    let anchors: Vec<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|heading| heading.trim().to_lowercase())
        .collect();
    let mut alerts = 0;
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().expect("only alerting rules");
            alerts += 1;
            let annotations = &rule["annotations"];
            for key in ["summary", "description"] {
                assert!(
                    annotations[key].as_str().is_some_and(|s| s.len() > 20),
                    "{alert} has no {key}"
                );
            }
            assert!(
                ["critical", "warning"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{alert} has no severity"
            );
            let url = annotations["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
            let anchor = url
                .strip_prefix("https://github.com/tienda-dev/tienda/blob/main/docs/runbooks.md#")
                .unwrap_or_else(|| panic!("{alert}: {url} is not a section of docs/runbooks.md"));
            assert_eq!(
                anchor,
                alert.to_lowercase(),
                "{alert}'s runbook is its own section"
            );
            assert!(
                anchors.iter().any(|a| a == anchor),
                "docs/runbooks.md has no section `## {alert}`"
            );
        }
    }
    // The seed's KPIs and the backbone's: latency, errors, queue latency, failed jobs,
    // breaker trips, backlog, lag, dead letters.
    assert!(alerts >= 20, "{alerts} alerts");
}

#[test]
fn the_charts_prometheus_rule_serves_the_rule_file() {
    let rendered = render(&["--set", "metrics.prometheusRule.enabled=true"]);
    let rule = rendered
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .find(|doc| doc["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["spec"]["groups"], rules()["groups"]);
}
