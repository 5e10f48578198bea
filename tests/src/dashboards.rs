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

/// The metric names `expr` reads, by Prometheus' grammar (`promql-parser`); Grafana's
/// variables are replaced first ([`concrete`]), and `label_values(selector, label)` reads its
/// selector. Panics naming the expression when it is not PromQL.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    use promql_parser::parser::{Expr, parse};

    fn walk(expr: &Expr, names: &mut BTreeSet<String>) {
        match expr {
            Expr::Aggregate(e) => {
                walk(&e.expr, names);
                if let Some(param) = &e.param {
                    walk(param, names);
                }
            }
            Expr::Unary(e) => walk(&e.expr, names),
            Expr::Binary(e) => {
                walk(&e.lhs, names);
                walk(&e.rhs, names);
            }
            Expr::Paren(e) => walk(&e.expr, names),
            Expr::Subquery(e) => walk(&e.expr, names),
            Expr::VectorSelector(vs) => names.extend(vs.name.clone()),
            Expr::MatrixSelector(ms) => names.extend(ms.vs.name.clone()),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    walk(arg, names);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    let expr = concrete(expr);
    let promql = match expr.trim().strip_prefix("label_values(") {
        Some(rest) => rest
            .trim_end_matches(')')
            .rsplit_once(',')
            .map_or(rest, |(selector, _)| selector)
            .to_owned(),
        None => expr,
    };
    let parsed = parse(&promql).unwrap_or_else(|e| panic!("{promql:?} is not PromQL: {e}"));
    let mut names = BTreeSet::new();
    walk(&parsed, &mut names);
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
