//! The cluster sources against a mocked API server: policies listed and then changed by a
//! watch event are applied, each applied generation is written into the policy's status by
//! server-side apply under this replica's name, and EndpointSlices become the upstream table
//! and the replica count.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_gateway::{
    cluster::{Sources, run},
    upstream::Upstreams,
};
use tienda_kit::{
    policy::{Policies, Scope},
    testing::rbac::{self, Rules},
};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request the API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

/// What the operator grants the gateway of Shop `acme` in namespace `shop`: its Role.
fn gateway_rules() -> &'static Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let mut shop: tienda_crds::Shop = serde_json::from_value(json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "acme", "namespace": "shop", "uid": "acme-uid"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://nats:4222"}}
        }))
        .unwrap();
        shop.metadata.uid = Some("acme-uid".into());
        let mut gateway = tienda_operator::shop::desired_services(&shop)
            .into_iter()
            .find(|s| s.spec.component == tienda_crds::Component::Gateway)
            .unwrap();
        gateway.metadata.uid = Some("gateway-uid".into());
        let role = tienda_operator::workload::component_role(&gateway);
        Rules::namespaced("shop", role.rules.unwrap())
    })
}

/// Requests the gateway's Role does not allow, across this test binary.
static DENIED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The API server's 403 when the operator's Role for the gateway does not allow `parts`.
fn authorize(parts: &axum::http::request::Parts) -> Option<axum::http::Response<Body>> {
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let access = gateway_rules().denies(&parts.method, &parts.uri.to_string(), content_type)?;
    DENIED.lock().unwrap().push(access.to_string());
    Some(
        axum::http::Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(json_body(&rbac::forbidden(
                &access,
                "system:serviceaccount:shop:acme-gateway",
            )))
            .unwrap(),
    )
}

/// Fails when the gateway made a request its Role does not allow.
fn assert_authorized() {
    let denied = DENIED.lock().unwrap().clone();
    assert!(
        denied.is_empty(),
        "the gateway needs permissions the operator's Role for it (workload::component_role) \
         does not grant: {denied:?}"
    );
}

fn json_body(v: &Value) -> Body {
    http_body_util::Full::new(Bytes::from(v.to_string())).boxed_unsync()
}

fn policy(generation: i64, requests: i64) -> Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "browse", "namespace": "shop", "generation": generation,
                     "resourceVersion": format!("{}", 10 + generation), "uid": "p1"},
        "spec": {"targetRef": {"kind": "Service", "name": "acme-products"},
                 "rules": [{"name": "browse", "clientKey": {"type": "ClientIP"},
                            "requests": requests, "period": "1m"}]},
        "status": {"conditions": []}
    })
}

fn slice(service: &str, addresses: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-x"), "namespace": "shop", "resourceVersion": "5",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()
    })
}

fn list(kind: &str, api: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "20"}, "items": items})
}

#[tokio::test]
async fn policies_from_the_api_are_applied_live_and_their_generations_reported() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (events, receiver) = mpsc::unbounded_channel::<Bytes>();
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let recorded = seen.clone();
    let api = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
        let (recorded, receiver) = (recorded.clone(), receiver.clone());
        async move {
            let (parts, body) = request.into_parts();
            if let Some(refused) = authorize(&parts) {
                return Ok(refused);
            }
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let uri = parts.uri.to_string();
            recorded.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: uri.clone(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            let path = parts.uri.path();
            let watching = uri.contains("watch=true");
            let body: Body = if watching {
                // The first policy watch carries the test's events; every other stays open.
                let stream = if path.ends_with("/ratelimitpolicies")
                    && let Some(rx) = receiver.lock().unwrap().take()
                {
                    tokio_stream_of(rx).boxed()
                } else {
                    futures::stream::pending().boxed()
                };
                BodyExt::boxed_unsync(StreamBody::new(
                    stream.map(|b| Ok::<_, Infallible>(Frame::data(b))),
                ))
            } else if parts.method == axum::http::Method::PATCH {
                json_body(&policy(7, 5))
            } else if path.ends_with("/ratelimitpolicies") {
                json_body(&list(
                    "RateLimitPolicy",
                    "tienda.dev/v1alpha1",
                    vec![policy(7, 5)],
                ))
            } else if path.ends_with("/circuitpolicies") {
                json_body(&list("CircuitPolicy", "tienda.dev/v1alpha1", vec![]))
            } else if path.ends_with("/endpointslices") {
                json_body(&list(
                    "EndpointSlice",
                    "discovery.k8s.io/v1",
                    vec![
                        slice("acme-products", &["10.0.0.1", "10.0.0.2"]),
                        slice("acme-gateway", &["10.0.1.1", "10.0.1.2"]),
                    ],
                ))
            } else {
                return Ok::<_, Infallible>(
                    axum::http::Response::builder()
                        .status(404)
                        .body(json_body(&json!({})))
                        .unwrap(),
                );
            };
            Ok(axum::http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap())
        }
    });
    let client = kube::Client::new(api, "shop");
    let policies = Arc::new(Policies::new(
        Scope::gateway("acme", 1),
        &prometheus::Registry::new(),
    ));
    let upstreams = Arc::new(Upstreams::default());
    let shutdown = tienda_kit::shutdown::Shutdown::new();
    let task = tokio::spawn(run(
        Sources {
            client,
            namespace: "shop".into(),
            shop: "acme".into(),
            replica: "gw-0".into(),
        },
        policies.clone(),
        upstreams.clone(),
        shutdown.clone(),
    ));

    let until = |check: Box<dyn Fn() -> bool>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let p = policies.clone();
    until(Box::new(move || {
        p.current()
            .applied
            .iter()
            .any(|a| a.name == "browse" && a.generation == 7)
    }))
    .await;
    assert_eq!(policies.current().applied[0].targets, ["products"]);
    let pool = upstreams.pool("products").expect("products endpoints");
    let bases: Vec<&str> = pool.endpoints.iter().map(|e| e.base.as_str()).collect();
    assert_eq!(bases, ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
    assert_eq!(
        policies.replicas(),
        2,
        "two ready gateways share each limit"
    );
    assert_eq!(policies.current().limits[0].replicas, 2);

    let s = seen.clone();
    until(Box::new(move || {
        s.lock().unwrap().iter().any(|r| r.method == "PATCH")
    }))
    .await;
    let patch = seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.method == "PATCH")
        .cloned()
        .unwrap();
    assert!(
        patch.uri.starts_with(
            "/apis/tienda.dev/v1alpha1/namespaces/shop/ratelimitpolicies/browse/status?"
        ),
        "{}",
        patch.uri
    );
    assert!(
        patch.uri.contains("fieldManager=tienda-gateway-gw-0") && patch.uri.contains("force=true"),
        "{}",
        patch.uri
    );
    assert_eq!(
        patch.body["status"],
        json!({"applied": [{"replica": "gw-0", "generation": 7}]})
    );

    // The user edits the policy: a MODIFIED event arrives on the watch.
    let event = json!({"type": "MODIFIED", "object": policy(8, 50)});
    events.send(Bytes::from(format!("{event}\n"))).unwrap();
    let p = policies.clone();
    until(Box::new(move || {
        p.current().applied.iter().any(|a| a.generation == 8)
    }))
    .await;
    assert_eq!(policies.current().limits[0].rule.requests, 50);
    let s = seen.clone();
    until(Box::new(move || {
        s.lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count()
            == 2
    }))
    .await;
    let last = seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.method == "PATCH")
        .cloned()
        .unwrap();
    assert_eq!(last.body["status"]["applied"][0]["generation"], 8);

    // An invalid edit (burst above requests) is refused; generation 8 stays in force.
    let mut bad = policy(9, 50);
    bad["spec"]["rules"][0]["burst"] = json!(500);
    events
        .send(Bytes::from(format!(
            "{}\n",
            json!({"type": "MODIFIED", "object": bad})
        )))
        .unwrap();
    let p = policies.clone();
    until(Box::new(move || !p.current().rejected.is_empty())).await;
    assert_eq!(policies.current().applied[0].generation, 8);
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count(),
        2,
        "nothing new to report"
    );

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
    assert_authorized();
}

/// The receiver as a stream.
fn tokio_stream_of(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The EndpointSlice watch as a real API server drives it: a slice DELETED, then the watch
/// expiring (`410 Gone`, which makes the client list again) onto a state it never saw as events.
#[tokio::test]
async fn endpoint_slices_deleted_or_relisted_after_410_gone_leave_the_table() {
    let current: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![
        slice("acme-products", &["10.0.0.1", "10.0.0.2"]),
        slice("acme-orders", &["10.0.2.1"]),
        slice("acme-payments", &["10.0.3.1"]),
        slice("acme-gateway", &["10.0.1.1", "10.0.1.2"]),
    ]));
    let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (events, receiver) = mpsc::unbounded_channel::<Bytes>();
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let (listed, counted) = (current.clone(), lists.clone());
    let api = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
        let (listed, counted, receiver) = (listed.clone(), counted.clone(), receiver.clone());
        async move {
            let (parts, _) = request.into_parts();
            if let Some(refused) = authorize(&parts) {
                return Ok(refused);
            }
            let uri = parts.uri.to_string();
            let path = parts.uri.path().to_owned();
            let body: Body = if uri.contains("watch=true") {
                // The first EndpointSlice watch carries the test's events; every other stays
                // open and quiet.
                let stream = if path.ends_with("/endpointslices")
                    && let Some(rx) = receiver.lock().unwrap().take()
                {
                    tokio_stream_of(rx).boxed()
                } else {
                    futures::stream::pending().boxed()
                };
                BodyExt::boxed_unsync(StreamBody::new(
                    stream.map(|b| Ok::<_, Infallible>(Frame::data(b))),
                ))
            } else if path.ends_with("/endpointslices") {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let items = listed.lock().unwrap().clone();
                json_body(&list("EndpointSlice", "discovery.k8s.io/v1", items))
            } else if path.ends_with("/ratelimitpolicies") {
                json_body(&list("RateLimitPolicy", "tienda.dev/v1alpha1", vec![]))
            } else if path.ends_with("/circuitpolicies") {
                json_body(&list("CircuitPolicy", "tienda.dev/v1alpha1", vec![]))
            } else {
                return Ok::<_, Infallible>(
                    axum::http::Response::builder()
                        .status(404)
                        .body(json_body(&json!({})))
                        .unwrap(),
                );
            };
            Ok(axum::http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap())
        }
    });
    let policies = Arc::new(Policies::new(
        Scope::gateway("acme", 1),
        &prometheus::Registry::new(),
    ));
    let upstreams = Arc::new(Upstreams::default());
    let shutdown = tienda_kit::shutdown::Shutdown::new();
    let task = tokio::spawn(run(
        Sources {
            client: kube::Client::new(api, "shop"),
            namespace: "shop".into(),
            shop: "acme".into(),
            replica: "gw-0".into(),
        },
        policies.clone(),
        upstreams.clone(),
        shutdown.clone(),
    ));
    let endpoints = |service: &str| -> Vec<String> {
        upstreams
            .pool(service)
            .map(|p| p.endpoints.iter().map(|e| e.base.clone()).collect())
            .unwrap_or_default()
    };
    async fn poll(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    poll("the listed slices make the table", || {
        endpoints("products").len() == 2
            && endpoints("orders").len() == 1
            && endpoints("payments").len() == 1
    })
    .await;
    assert_eq!(policies.replicas(), 2);

    // The orders slice is deleted: its endpoints leave the table, the others stay.
    let deleted = json!({"type": "DELETED", "object": slice("acme-orders", &["10.0.2.1"])});
    events.send(Bytes::from(format!("{deleted}\n"))).unwrap();
    poll("the deleted slice leaves the table", || {
        endpoints("orders").is_empty()
    })
    .await;
    assert_eq!(
        endpoints("products"),
        ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    );

    // While the watch was down the cluster changed: products moved to a new pod, the payments
    // slice was deleted and a third gateway started. The server says the watch's resource version is too old (410 Gone);
    // the client must list again and take the listed state whole — including what was removed
    // without an event.
    *current.lock().unwrap() = vec![
        slice("acme-products", &["10.0.0.3"]),
        slice("acme-gateway", &["10.0.1.1", "10.0.1.2", "10.0.1.3"]),
    ];
    let lists_before = lists.load(std::sync::atomic::Ordering::SeqCst);
    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version: 20 (30)"}});
    events.send(Bytes::from(format!("{gone}\n"))).unwrap();
    poll("the table is rebuilt from a fresh list", || {
        endpoints("products") == ["http://10.0.0.3:8080"]
    })
    .await;
    assert!(lists.load(std::sync::atomic::Ordering::SeqCst) > lists_before);
    assert!(endpoints("orders").is_empty());
    poll(
        "a slice deleted while the watch was down leaves the table",
        || endpoints("payments").is_empty(),
    )
    .await;
    poll("the gateway count follows the list", || {
        policies.replicas() == 3
    })
    .await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
    assert_authorized();
}

#[test]
fn the_proxies_the_operator_trusts_behind_an_ingress_parse_and_cover_pod_addresses() {
    let proxies =
        tienda_gateway::access::TrustedProxies::parse(tienda_operator::workload::PRIVATE_RANGES)
            .expect("the operator's GATEWAY_TRUSTED_PROXIES is valid for the gateway");
    for pod in ["10.244.1.7", "172.20.0.3", "192.168.5.9", "fd00::12"] {
        assert!(proxies.trusts(pod.parse().unwrap()), "{pod}");
    }
    assert!(
        !proxies.trusts("203.0.113.9".parse().unwrap()),
        "a public client"
    );
}
