//! The chart's Grafana dashboards (charts/tienda/dashboards) and the metric names their
//! PromQL expressions read: what the delivery test checks for syntax and the whole-system
//! test checks against what a running shop exports.

use std::collections::BTreeSet;

use serde_json::Value;

/// Every dashboard: its file name and JSON.
pub fn all() -> Vec<(String, Value)> {
    let dir = crate::repo_root().join("charts/tienda/dashboards");
    let mut boards: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            )
        })
        .collect();
    boards.sort_by(|a, b| a.0.cmp(&b.0));
    boards
}

/// Every PromQL expression of a dashboard (panel targets and template variables), with the
/// panel's title.
pub fn expressions(board: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in board["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    panel["title"].as_str().unwrap_or("").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["query"]["query"].as_str() {
            out.push((
                format!("${}", variable["name"].as_str().unwrap_or("")),
                query.to_owned(),
            ));
        }
    }
    out
}

/// `expr` with Grafana's variables replaced by values Prometheus accepts.
pub fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
        .replace("$service", ".*")
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
];

/// Aggregation operators, which may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names `expr` reads (Grafana's `label_values(metric, label)` included).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A string: skip to its end.
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' || c == '[' {
            // Matchers and ranges.
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                // `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and
                // `group_*(...)` hold labels: skip the list.
                let holds_labels = matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if holds_labels && call {
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
            } else if !call && !AGGREGATIONS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (5m, 1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    // `label_values(metric, label)`: the label is not a metric.
    if let Some(rest) = expr.trim().strip_prefix("label_values(")
        && let Some((_, label)) = rest.trim_end_matches(')').rsplit_once(',')
    {
        names.remove(label.trim());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_are_found_and_functions_labels_strings_and_durations_are_not() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (namespace, le) (rate(x_seconds_bucket{route!~".*/timeline|a b", ns=~"$namespace"}[$__rate_interval])))"#
            ),
            ["x_seconds_bucket"]
        );
        assert_eq!(
            names("sum(rate(a_total[5m])) / sum without (pod) (rate(b_total[1h])) > 0.02"),
            ["a_total", "b_total"]
        );
        assert_eq!(names("max by (step) (saga_in_flight)"), ["saga_in_flight"]);
        assert_eq!(
            names("label_values(http_requests_total{namespace=~\"$namespace\"}, service)"),
            ["http_requests_total"]
        );
        assert_eq!(
            names("a_total and on (service) b_total unless c_total offset 5m"),
            ["a_total", "b_total", "c_total"]
        );
    }
}
