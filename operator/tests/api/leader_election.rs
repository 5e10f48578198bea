use std::time::Duration;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::Api;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use std::sync::Arc;

use tienda_operator::{
    controller::Context,
    leader::{Holder, LeaseLock, SteppedDown},
};
use tokio::task::JoinHandle;

use crate::verifier::{Answer, Exchange, Recorded, context, get, get_missing, serve};

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

const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// The lock `tienda-operator` held as `pod-a` through `ctx`'s client.
fn pod_a(ctx: &Context) -> LeaseLock {
    LeaseLock::new(
        Api::<Lease>::namespaced(ctx.client.clone(), "tienda-system"),
        "tienda-operator",
        "pod-a",
        LEASE_DURATION,
        RENEW_DEADLINE,
    )
}

/// A lock held as `pod-a` against the mocked API server playing `script`.
fn lock(script: Vec<Exchange>) -> (LeaseLock, Arc<Context>, JoinHandle<Vec<Recorded>>) {
    let (ctx, handle) = context();
    let server = serve(handle, script);
    (pod_a(&ctx), ctx, server)
}

async fn attempt(script: Vec<Exchange>, now: &str) -> (Holder, Vec<Recorded>) {
    let (lock, ctx, server) = lock(script);
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

#[tokio::test(start_paused = true)]
async fn a_follower_waits_while_the_lease_changes_however_old_its_renew_time_reads() {
    // The leader's clock is an hour behind this replica's: its renew times look long expired
    // here. They keep changing, so it is alive, and this replica must not take over.
    let now = "2026-11-29T10:00:00Z".parse::<Timestamp>().unwrap();
    let (lock, ctx, server) = lock(vec![
        get(LEASE, lease("pod-b", "2026-11-29T09:00:00.000000Z", 1)),
        get(LEASE, lease("pod-b", "2026-11-29T09:00:10.000000Z", 1)),
        get(LEASE, lease("pod-b", "2026-11-29T09:00:20.000000Z", 1)),
    ]);
    for _ in 0..3 {
        assert_eq!(
            lock.try_acquire_or_renew(now).await.unwrap(),
            Holder::Other("pod-b".into())
        );
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    drop((lock, ctx));
    assert_eq!(
        server.await.unwrap().len(),
        3,
        "no write while another replica leads"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_a_lease_unchanged_for_a_lease_duration_on_its_own_clock() {
    // The dead leader's clock ran an hour ahead: its last renew time is in this replica's
    // future. What counts is that the record has not changed for 15 s here.
    let now = "2026-11-29T10:00:00Z".parse::<Timestamp>().unwrap();
    let stale = lease("pod-b", "2026-11-29T11:00:00.000000Z", 1);
    let (lock, ctx, server) = lock(vec![
        get(LEASE, stale.clone()),
        get(LEASE, stale.clone()),
        get(LEASE, stale),
        put(Answer::Echo, http::StatusCode::OK),
    ]);
    assert_eq!(
        lock.try_acquire_or_renew(now).await.unwrap(),
        Holder::Other("pod-b".into()),
        "first sight: the lease is fresh until it has been seen unchanged for 15 s"
    );
    tokio::time::advance(Duration::from_secs(14)).await;
    assert_eq!(
        lock.try_acquire_or_renew(now).await.unwrap(),
        Holder::Other("pod-b".into())
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(lock.try_acquire_or_renew(now).await.unwrap(), Holder::Me);
    drop((lock, ctx));
    let seen = server.await.unwrap();
    let spec = &seen[3].body["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseTransitions"], 2);
    assert_eq!(spec["acquireTime"], "2026-11-29T10:00:00.000000Z");
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let mut released = lease("pod-b", "2026-11-29T09:59:59.000000Z", 1);
    released["spec"]["holderIdentity"] = Value::Null;
    let (holder, seen) = attempt(
        vec![
            get(LEASE, released),
            put(Answer::Echo, http::StatusCode::OK),
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert_eq!(holder, Holder::Me);
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "pod-a");
}

#[tokio::test]
async fn of_two_replicas_racing_for_a_free_lease_the_one_that_loses_the_write_follows() {
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    let mut released = lease("pod-b", "2026-11-29T09:59:59.000000Z", 1);
    released["spec"]["holderIdentity"] = Value::Null;
    let (holder, _) = attempt(
        vec![
            get(LEASE, released),
            put(Answer::Json(conflict), http::StatusCode::CONFLICT),
        ],
        "2026-11-29T10:00:00Z",
    )
    .await;
    assert!(matches!(holder, Holder::Other(_)), "{holder:?}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_api_server_stalls_stops_before_a_follower_may_start() {
    // The lease is created; then the API server accepts requests and never answers them.
    let (ctx, mut handle) = context();
    let lock = pod_a(&ctx);
    let server = tokio::spawn(async move {
        let mut unanswered = Vec::new();
        let mut answered = 0;
        while let Some((request, send)) = handle.next_request().await {
            let (status, body) = match (request.method().as_str(), answered) {
                ("GET", 0) => (
                    404u16,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                ("POST", 1) => (201u16, lease("pod-a", "2026-11-29T10:00:00.000000Z", 0)),
                _ => {
                    unanswered.push(send);
                    continue;
                }
            };
            answered += 1;
            send.send_response(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
        unanswered.len()
    });
    let sent = tokio::time::Instant::now();
    lock.acquire(Duration::from_secs(2)).await;
    let why = lock.hold(Duration::from_secs(2)).await;
    let stopped = sent.elapsed();
    assert_eq!(why, SteppedDown::RenewDeadline);
    assert!(
        stopped <= RENEW_DEADLINE && stopped < LEASE_DURATION,
        "the leader stopped {stopped:?} after its last renewal was sent: a follower may start \
         {LEASE_DURATION:?} after it saw that renewal, which it cannot have seen before it was sent"
    );
    drop((lock, ctx));
    assert!(
        server.await.unwrap() >= 1,
        "a renewal was sent and never answered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_steps_down_at_the_renew_deadline() {
    let failure = || Exchange {
        method: http::Method::GET,
        uri: LEASE.into(),
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        answer: Answer::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd"})),
    };
    let mut script = vec![
        get(LEASE, lease("pod-a", "2026-11-29T09:59:58.000000Z", 3)),
        put(Answer::Echo, http::StatusCode::OK),
    ];
    // Renewals every 2 s within the 10 s deadline: 4 of them fail (at 2, 4, 6, 8 s).
    script.extend((0..4).map(|_| failure()));
    let (lock, ctx, server) = lock(script);
    let sent = tokio::time::Instant::now();
    assert_eq!(
        lock.try_acquire_or_renew(Timestamp::now()).await.unwrap(),
        Holder::Me
    );
    let why = lock.hold(Duration::from_secs(2)).await;
    assert_eq!(why, SteppedDown::RenewDeadline);
    assert!(sent.elapsed() <= RENEW_DEADLINE, "{:?}", sent.elapsed());
    drop((lock, ctx));
    assert_eq!(server.await.unwrap().len(), 6);
}
