//! `/livez` and `/readyz` with pluggable checks.
//!
//! Liveness says the process can serve at all (Kubernetes restarts it otherwise) and depends on
//! nothing outside it. Readiness runs the checks: a failing *critical* check (the database)
//! takes the pod out of load balancing; an *informational* one (NATS, which the outbox absorbs)
//! is reported but does not. Once shutdown starts, readiness fails so traffic drains away.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::shutdown::Shutdown;

type CheckFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The header in which `/readyz` names the process (`TIENDA_INSTANCE`), so a supervisor
/// knows the answer came from the process it started.
pub const INSTANCE: &str = "tienda-instance";

/// How long one check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Check {
    name: String,
    critical: bool,
    run: CheckFn,
}

/// The health checks of a process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<Check>,
    shutdown: Shutdown,
    instance: Option<HeaderValue>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| &c.name).collect();
        f.debug_struct("Health").field("checks", &names).finish()
    }
}

/// The `/readyz` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ReadinessReport)]
pub struct Report {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each check by name.
    pub checks: BTreeMap<String, CheckReport>,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckReport {
    /// `ok` or `failing`.
    pub status: String,
    /// Whether failing makes the process unready.
    pub critical: bool,
    /// What the check saw.
    pub detail: String,
}

impl Health {
    /// No checks yet; readiness follows `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            checks: Vec::new(),
            shutdown,
            instance: None,
        }
    }

    /// Has `/readyz` answer with `Tienda-Instance: <instance>` (see
    /// [`CommonConfig::instance`](crate::config::CommonConfig::instance)). A value that is not
    /// a valid header value is refused.
    pub fn set_instance(&mut self, instance: &str) -> anyhow::Result<()> {
        let value = HeaderValue::from_str(instance)
            .map_err(|_| anyhow::anyhow!("TIENDA_INSTANCE {instance:?} is not a valid header value; use letters, digits and dashes"))?;
        self.instance = Some(value);
        Ok(())
    }

    /// Adds a check; `critical` ones decide readiness. The closure returns what it saw.
    pub fn add<F, Fut>(&mut self, name: &str, critical: bool, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let run: CheckFn = Arc::new(move || Box::pin(check()));
        self.checks.push(Check {
            name: name.to_owned(),
            critical,
            run,
        });
    }

    /// Runs every check concurrently.
    pub async fn report(&self) -> (bool, Report) {
        let results = futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.run)()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (check, outcome)
        }))
        .await;
        let mut ready = !self.shutdown.is_triggered();
        let mut checks = BTreeMap::new();
        if self.shutdown.is_triggered() {
            checks.insert(
                "shutdown".to_owned(),
                CheckReport {
                    status: "failing".into(),
                    critical: true,
                    detail: "shutting down; draining in-flight work".into(),
                },
            );
        }
        for (check, outcome) in results {
            let (status, detail) = match outcome {
                Ok(detail) => ("ok", detail),
                Err(detail) => {
                    if check.critical {
                        ready = false;
                    }
                    ("failing", detail)
                }
            };
            checks.insert(
                check.name.clone(),
                CheckReport {
                    status: status.into(),
                    critical: check.critical,
                    detail,
                },
            );
        }
        let status = if ready { "ready" } else { "not_ready" }.to_owned();
        (ready, Report { status, checks })
    }
}

/// `GET /livez`: the process is up and serving.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "The process is alive")))]
pub async fn livez() -> impl IntoResponse {
    Json(serde_json::json!({"status": "alive"}))
}

/// `GET /readyz`: every critical dependency answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Report,
            headers(("Tienda-Instance" = String, description = "The process's `TIENDA_INSTANCE`, when set"))),
        (status = 503, description = "Not ready; the failing checks say why", body = Report,
            headers(("Tienda-Instance" = String, description = "The process's `TIENDA_INSTANCE`, when set")))))]
pub async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let (ready, report) = health.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(report)).into_response();
    if let Some(instance) = health.instance {
        response.headers_mut().insert(INSTANCE, instance);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_is_not_ready_still_says_who_it_is() {
        let mut health = Health::new(Shutdown::new());
        health.add("database", true, || async {
            Err("connection refused".into())
        });
        health.set_instance("orders-7-ff").unwrap();
        let response = readyz(State(health)).await.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[INSTANCE], "orders-7-ff");
        assert!(Health::default().set_instance("two\nlines").is_err());
    }
}
