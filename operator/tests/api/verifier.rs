//! A scripted Kubernetes API server: the test lists the requests it expects, in order, with the
//! answer to each; the verifier checks method, path and query, records bodies, and fails on any
//! request beyond the script.

use std::{collections::BTreeSet, sync::Arc};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use prometheus::Registry;
use serde_json::{Value, json};
use tienda_kit::testing::{
    apiserver::duplicate_key,
    rbac::{self, Rules},
};
use tienda_operator::controller::{
    Context,
    cache::{Caches, Writers},
};
use tower_test::mock::{self, Handle};

/// One expected request and its answer.
pub struct Exchange {
    pub method: Method,
    /// Path and query, e.g. `/api/v1/namespaces/ns/secrets/x` or
    /// `/apis/apps/v1/namespaces/ns/deployments/d?fieldManager=tienda-operator&force=true`.
    /// Query parameters are compared as a set.
    pub uri: String,
    pub status: StatusCode,
    /// The answer; `Echo` answers with the request's own body (what the server would store).
    pub answer: Answer,
}

pub enum Answer {
    Json(Value),
    Echo,
    /// Echo the body merged into this object (e.g. a status patch onto the stored object).
    MergeInto(Value),
}

pub fn get(uri: &str, answer: Value) -> Exchange {
    Exchange {
        method: Method::GET,
        uri: uri.into(),
        status: StatusCode::OK,
        answer: Answer::Json(answer),
    }
}

pub fn get_missing(uri: &str) -> Exchange {
    let name = uri.rsplit('/').next().unwrap_or_default();
    Exchange {
        method: Method::GET,
        uri: uri.into(),
        status: StatusCode::NOT_FOUND,
        answer: Answer::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("\"{name}\" not found"), "reason": "NotFound", "code": 404
        })),
    }
}

pub fn apply(uri: &str) -> Exchange {
    Exchange {
        method: Method::PATCH,
        uri: format!("{uri}?fieldManager=tienda-operator&force=true"),
        status: StatusCode::OK,
        answer: Answer::Echo,
    }
}

/// A server-side apply of a status subresource (`uri` ends in `/status`), answered with
/// `answer`.
pub fn apply_status(uri: &str, answer: Answer) -> Exchange {
    Exchange {
        method: Method::PATCH,
        uri: format!("{uri}?fieldManager=tienda-operator&force=true"),
        status: StatusCode::OK,
        answer,
    }
}

pub fn post(uri: &str) -> Exchange {
    Exchange {
        method: Method::POST,
        uri: uri.into(),
        status: StatusCode::CREATED,
        answer: Answer::Echo,
    }
}

pub fn event(namespace: &str) -> Exchange {
    post(&format!(
        "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    ))
}

pub fn patch(uri: &str, answer: Answer) -> Exchange {
    Exchange {
        method: Method::PATCH,
        uri: uri.into(),
        status: StatusCode::OK,
        answer,
    }
}

/// A request the verifier saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: String,
    /// The `Content-Type` (`application/apply-patch+yaml` for a server-side apply).
    pub content_type: Option<String>,
    pub body: Value,
}

fn split(uri: &str) -> (String, BTreeSet<String>) {
    match uri.split_once('?') {
        Some((path, query)) => (
            path.to_owned(),
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => (uri.to_owned(), BTreeSet::new()),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The operator's service account, as the API server names it.
pub const OPERATOR_USER: &str = "system:serviceaccount:tienda-system:tienda";

/// What the chart grants the operator: its ClusterRole and the leader-election Role, read from
/// the chart rendered with default values (`manifests/install.yaml`, drift-checked against the
/// chart by the delivery tests).
pub fn operator_rules() -> &'static Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        Rules::from_manifests(
            include_str!("../../../manifests/install.yaml"),
            &["tienda", "tienda-leader"],
        )
    })
}

/// A context around a mocked client, and the handle that plays the API server. Its caches are
/// synced and empty: a cluster with nothing the test did not script.
pub fn context() -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
    let (ctx, handle, _) = cached_context();
    (ctx, handle)
}

/// [`context`], and the writers of its caches: what the test puts there is what the operator's
/// watches would have seen in the cluster.
pub fn cached_context() -> (Arc<Context>, Handle<Request<Body>, Response<Body>>, Writers) {
    tienda_kit::install_crypto_provider();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (caches, mut writers) = Caches::new();
    writers.synced();
    (
        Arc::new(Context::with_caches(client, &Registry::new(), caches)),
        handle,
        writers,
    )
}

/// Plays the script; returns what was sent. After the script, any further request fails the
/// test (the test drops the context first, which ends the stream of requests).
pub fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<Exchange>,
) -> tokio::task::JoinHandle<Vec<Recorded>> {
    tokio::spawn(async move {
        let seen = play(&mut handle, script).await;
        if let Some((request, _)) = handle.next_request().await {
            panic!(
                "unexpected request beyond the script: {} {}",
                request.method(),
                request.uri()
            );
        }
        seen
    })
}

/// A mocked API server played in turns, for tests that reconcile one context several times
/// (the context's caches matter): each turn plays a script and hands the server back.
pub type ApiServer = Handle<Request<Body>, Response<Body>>;

/// Plays `script` as one turn; the task returns the server for the next turn.
pub fn turn(
    mut handle: ApiServer,
    script: Vec<Exchange>,
) -> tokio::task::JoinHandle<(ApiServer, Vec<Recorded>)> {
    tokio::spawn(async move {
        let seen = play(&mut handle, script).await;
        (handle, seen)
    })
}

/// After the last turn (and once the context is dropped): fails on any request beyond it.
pub async fn no_more(mut handle: ApiServer) {
    if let Some((request, _)) = handle.next_request().await {
        panic!(
            "unexpected request beyond the script: {} {}",
            request.method(),
            request.uri()
        );
    }
}

async fn play(handle: &mut ApiServer, script: Vec<Exchange>) -> Vec<Recorded> {
    {
        let mut seen = Vec::new();
        for (i, expected) in script.into_iter().enumerate() {
            let (request, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "request #{i} ({} {}) was never sent; sent so far: {seen:#?}",
                    expected.method, expected.uri
                )
            });
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // The API server authorizes before anything else: a request the chart's RBAC does
            // not allow is answered 403, as a cluster would, and fails the test.
            if let Some(access) = operator_rules().denies(&method, &uri, content_type.as_deref()) {
                send.send_response(
                    Response::builder()
                        .status(StatusCode::FORBIDDEN)
                        .header("content-type", "application/json")
                        .body(Body::from(
                            serde_json::to_vec(&rbac::forbidden(&access, OPERATOR_USER)).unwrap(),
                        ))
                        .unwrap(),
                );
                panic!(
                    "request #{i} ({method} {uri}) needs `{access}`, which manifests/install.yaml \
                     does not grant the operator: add it to charts/tienda/templates/rbac.yaml \
                     (and docs/operator.md), then run tests/generate"
                );
            }
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).unwrap()
            };
            assert_eq!(
                (&method, split(&uri)),
                (&expected.method, split(&expected.uri)),
                "request #{i}: expected {} {}, got {method} {uri}\nbody: {body}",
                expected.method,
                expected.uri
            );
            let answer = match expected.answer {
                Answer::Json(v) => v,
                Answer::Echo => body.clone(),
                Answer::MergeInto(mut stored) => {
                    merge(&mut stored, &body);
                    stored
                }
            };
            // Lists keyed by name (containers, env, ports, volumes, ...) may not repeat a key:
            // the API server refuses the whole write with 422.
            if matches!(method, Method::PATCH | Method::POST | Method::PUT)
                && let Some(duplicate) = duplicate_key(&body, "")
            {
                send.send_response(
                    Response::builder()
                        .status(StatusCode::UNPROCESSABLE_ENTITY)
                        .header("content-type", "application/json")
                        .body(Body::from(
                            serde_json::to_vec(&json!({
                                "kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Invalid", "code": 422,
                                "message": duplicate,
                            }))
                            .unwrap(),
                        ))
                        .unwrap(),
                );
                panic!("request #{i} ({method} {uri}) is invalid: {duplicate}");
            }
            seen.push(Recorded {
                method,
                uri,
                content_type,
                body,
            });
            send.send_response(
                Response::builder()
                    .status(expected.status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        seen
    }
}
