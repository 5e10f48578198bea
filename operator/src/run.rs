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
    core::v1::{Secret, Service as KubeService, ServiceAccount},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    runtime::{Controller, watcher},
};
use prometheus::{Encoder, Registry, TextEncoder};
use tienda_crds::{CircuitPolicy, RateLimitPolicy, Service, Shop};

use crate::controller::{Context, policy, service, shop};

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

/// Runs both controllers until SIGTERM/Ctrl-C.
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
        .shutdown_on_signal();
    let services = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<KubeService>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal();

    let rate_limits = Controller::new(
        Api::<RateLimitPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal();
    let circuits = Controller::new(
        Api::<CircuitPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
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

    tracing::info!(%metrics_addr, "tienda operator starting");
    let shops = shops
        .run(shop::reconcile, shop::error_policy, ctx.clone())
        .for_each(|_| async {});
    let services = services
        .run(service::reconcile, service::error_policy, ctx)
        .for_each(|_| async {});
    tokio::join!(shops, services);
    tracing::info!("tienda operator stopped");
    Ok(())
}
