use std::time::Duration;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::Api;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_operator::leader::{Holder, LeaseLock};

use crate::verifier::{Answer, Exchange, context, get, get_missing, serve};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/tienda-system/leases/tienda-operator";

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tienda-operator", "namespace": "tienda-system", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": "2026-11-29T09:00:00.000000Z",
                 "renewTime": renewed, "leaseTransitions": transitions}
    })
}

fn put(answer: Answer, status: http::StatusCode) -> Exchange {
    Exchange {
        method: http::Method::PUT,
        uri: format!("{LEASE}?"),
        status,
        answer,
    }
}

async fn attempt(script: Vec<Exchange>, now: &str) -> (Holder, Vec<crate::verifier::Recorded>) {
    let (ctx, handle) = context();
    let server = serve(handle, script);
    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(ctx.client.clone(), "tienda-system"),
        "tienda-operator",
        "pod-a",
        Duration::from_secs(15),
    );
    let holder = lock
        .try_acquire_or_renew(now.parse::<Timestamp>().unwrap())
        .await
        .unwrap();
    drop(lock);
    drop(ctx);
    (holder, server.await.unwrap())
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (holder, seen) = attempt(
        vec![
            get_missing(LEASE),
            Exchange {
                method: http::Method::POST,
                uri: "/apis/coordination.k8s.io/v1/namespaces/tienda-system/leases?".into(),
                status: http::StatusCode::CREATED,
                answer: Answer::Echo,
            },
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert_eq!(holder, Holder::Me);
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], 0);
}

#[tokio::test]
async fn the_leader_renews_its_lease_with_the_resource_version() {
    let (holder, seen) = attempt(
        vec![
            get(LEASE, lease("pod-a", "2026-11-29T09:59:58.000000Z", 3)),
            put(Answer::Echo, http::StatusCode::OK),
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert_eq!(holder, Holder::Me);
    let spec = &seen[1].body["spec"];
    assert_eq!(spec["renewTime"], "2026-11-29T10:00:00.000000Z");
    assert_eq!(
        spec["acquireTime"], "2026-11-29T09:00:00.000000Z",
        "the acquire time stays"
    );
    assert_eq!(spec["leaseTransitions"], 3);
    assert_eq!(
        seen[1].body["metadata"]["resourceVersion"], "41",
        "optimistic concurrency"
    );
}

#[tokio::test]
async fn a_follower_waits_while_the_leaders_lease_is_fresh() {
    let (holder, seen) = attempt(
        vec![get(LEASE, lease("pod-b", "2026-11-29T09:59:55.000000Z", 1))],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert_eq!(holder, Holder::Other("pod-b".into()));
    assert_eq!(seen.len(), 1, "no write while another replica leads");
}

#[tokio::test]
async fn a_follower_takes_over_an_expired_lease() {
    let (holder, seen) = attempt(
        vec![
            get(LEASE, lease("pod-b", "2026-11-29T09:59:40.000000Z", 1)),
            put(Answer::Echo, http::StatusCode::OK),
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert_eq!(holder, Holder::Me);
    let spec = &seen[1].body["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseTransitions"], 2);
    assert_eq!(spec["acquireTime"], "2026-11-29T10:00:00.000000Z");
}

#[tokio::test]
async fn of_two_replicas_racing_for_an_expired_lease_the_one_that_loses_the_write_follows() {
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    let (holder, _) = attempt(
        vec![
            get(LEASE, lease("pod-b", "2026-11-29T09:59:40.000000Z", 1)),
            put(Answer::Json(conflict), http::StatusCode::CONFLICT),
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert!(matches!(holder, Holder::Other(_)), "{holder:?}");
}
