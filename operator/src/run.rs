//! `tienda run`: the controllers in a cluster, with `/livez`, `/readyz` (ready once the
//! watch caches are synced) and `/metrics` on the metrics address.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Service as KubeService, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    runtime::{Controller, watcher},
};
use prometheus::{Encoder, Registry, TextEncoder};
use tienda_crds::{CircuitPolicy, RateLimitPolicy, Service, Shop};

use crate::{
    controller::{Context, policy, service, shop},
    leader::LeaseLock,
};

/// The Lease the replicas compete for.
pub const LEASE_NAME: &str = "tienda-operator";
/// How long a leader's Lease lasts without renewal.
pub const LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(15);
/// How long the leader keeps trying to renew before it stops reconciling (client-go's default;
/// shorter than the lease, so it has stopped before a follower may take over).
pub const RENEW_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// How many objects of one kind reconcile at once: bounded, so a thousand Shops changing together
/// (an operator upgrade, a relist) neither floods the API server, PostgreSQL and NATS nor
/// holds a thousand connections; the rest wait in kube's queue.
pub const CONCURRENCY: u16 = 16;
/// How often the leader renews and followers retry.
pub const RETRY_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct Probe {
    ready: Arc<AtomicBool>,
    registry: Registry,
}

async fn livez() -> &'static str {
    "alive"
}

async fn readyz(State(probe): State<Probe>) -> impl IntoResponse {
    if probe.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch caches not synced yet",
        )
    }
}

async fn metrics(State(probe): State<Probe>) -> impl IntoResponse {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&probe.registry.gather(), &mut buffer)
        .expect("text encoding");
    ([("content-type", "text/plain; version=0.0.4")], buffer)
}

/// Every controller's settings: bounded concurrency, and a short debounce so a burst of watch
/// events for one object (a rollout's status updates) is one reconcile.
fn bounded() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .concurrency(CONCURRENCY)
        .debounce(std::time::Duration::from_millis(500))
}

/// Runs the controllers until SIGTERM/Ctrl-C.
pub async fn run(metrics_addr: SocketAddr) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration found (in-cluster service account or KUBECONFIG)")?;
    let registry = Registry::new();
    let ctx = Arc::new(Context::new(client.clone(), &registry));
    let probe = Probe {
        ready: Arc::new(AtomicBool::new(false)),
        registry,
    };

    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe.clone());
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding {metrics_addr}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let shops = Controller::new(Api::<Shop>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .with_config(bounded())
        .shutdown_on_signal();
    // Children are watched by the operator's label only, so the caches hold Tienda's objects,
    // not the cluster's. Secrets are not watched at all: the credentials Secret is created once
    // and read on each reconcile (the periodic requeue notices a hand edit).
    let ours = || watcher::Config::default().labels("app.kubernetes.io/managed-by=tienda-operator");
    let services = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), ours())
    .owns(Api::<KubeService>::all(client.clone()), ours())
    .owns(Api::<ServiceAccount>::all(client.clone()), ours())
    .owns(Api::<PodDisruptionBudget>::all(client.clone()), ours())
    .with_config(bounded())
    .shutdown_on_signal();

    let rate_limits = Controller::new(
        Api::<RateLimitPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(bounded())
    .shutdown_on_signal();
    let circuits = Controller::new(
        Api::<CircuitPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(bounded())
    .shutdown_on_signal();

    let (shop_store, service_store) = (shops.store(), services.store());
    let ready = probe.ready.clone();
    tokio::spawn(async move {
        if shop_store.wait_until_ready().await.is_ok()
            && service_store.wait_until_ready().await.is_ok()
        {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("watch caches synced; ready");
        }
    });

    // Leader election: controllers run in one replica at a time.
    let namespace =
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_owned());
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("tienda-operator-{}", uuid::Uuid::new_v4().simple()));
    let lock = LeaseLock::new(
        Api::namespaced(client.clone(), &namespace),
        LEASE_NAME,
        &identity,
        LEASE_DURATION,
        RENEW_DEADLINE,
    );
    let leader_gauge =
        prometheus::IntGauge::new("tienda_operator_leader", "1 while this replica leads").unwrap();
    let _ = probe.registry.register(Box::new(leader_gauge.clone()));
    tracing::info!(%identity, lease = LEASE_NAME, %namespace, "waiting for leadership");
    // A standby replica is ready (it must not block rollouts); the leader is ready once its
    // watch caches are synced.
    probe.ready.store(true, Ordering::Relaxed);
    lock.acquire(RETRY_PERIOD).await;
    probe.ready.store(false, Ordering::Relaxed);
    leader_gauge.set(1);
    tracing::info!(%identity, "leading");

    tracing::info!(%metrics_addr, "tienda operator starting");
    let shops = shops
        .run(shop::reconcile, shop::error_policy, ctx.clone())
        .for_each(|_| async {});
    let services = services
        .run(service::reconcile, service::error_policy, ctx.clone())
        .for_each(|_| async {});
    let rate_limits = rate_limits
        .run(
            policy::reconcile::<RateLimitPolicy>,
            policy::error_policy::<RateLimitPolicy>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let circuits = circuits
        .run(
            policy::reconcile::<CircuitPolicy>,
            policy::error_policy::<CircuitPolicy>,
            ctx,
        )
        .for_each(|_| async {});
    let controllers = async { tokio::join!(shops, services, rate_limits, circuits) };
    tokio::select! {
        _ = controllers => {
            tracing::info!("controllers stopped; releasing the lease");
            if let Err(err) = lock.release().await {
                tracing::warn!(error = %err, "cannot release the lease; a successor waits for it to expire");
            }
            leader_gauge.set(0);
            Ok(())
        }
        why = lock.hold(RETRY_PERIOD) => {
            // The controllers future is dropped here: no reconcile runs past this point.
            leader_gauge.set(0);
            anyhow::bail!("leadership over ({why:?}): exiting so a fresh replica can wait its turn")
        }
    }
}
