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
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{Controller, WatchStreamExt, reflector::store::Writer, watcher},
};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::de::DeserializeOwned;
use tienda_crds::{CircuitPolicy, RateLimitPolicy};

use crate::{
    controller::{
        Context,
        cache::{Caches, Slim, Writers, slim_event, strip, strip_secret},
        policy, service, shop, traced,
    },
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

/// A watch of every `K` `config` selects, stripped of what no reconcile reads, filling
/// `writer`'s store.
fn cached<K>(
    client: &Client,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(strip::<K>)
        .reflect(writer)
}

/// [`cached`] for a child kind, cached [`Slim`].
fn slimmed<K>(
    client: &Client,
    config: watcher::Config,
    writer: Writer<Slim<K>>,
) -> impl Stream<Item = Result<watcher::Event<Slim<K>>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .map_ok(slim_event)
        .reflect(writer)
}

/// One watch feeding two controllers: `events` (already reflected into the one cached copy)
/// split into the objects applied (the trigger of the kind's own controller) and every object
/// touched, deletions included (the owner's trigger). kube's shared streams would do this but
/// pass no deletions on, and a Shop must hear that one of its Services went. Returns the
/// future that drives the watch (it ends once either controller has stopped) and both
/// triggers.
fn split_watch<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (
    impl Future<Output = ()> + Send + 'static,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + 'static,
{
    let (applied_tx, applied_rx) = tokio::sync::mpsc::channel::<K>(64);
    let (touched_tx, touched_rx) = tokio::sync::mpsc::channel::<K>(64);
    let driver = async move {
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = applied_tx.closed() => break,
                () = touched_tx.closed() => break,
            };
            let sent = match event {
                None => break,
                Some(Err(err)) => {
                    tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying with backoff");
                    true
                }
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                    applied_tx.send(object.clone()).await.is_ok()
                        && touched_tx.send(object).await.is_ok()
                }
                Some(Ok(watcher::Event::Delete(object))) => touched_tx.send(object).await.is_ok(),
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => true,
            };
            if !sent {
                break;
            }
        }
    };
    let receive = |mut rx: tokio::sync::mpsc::Receiver<K>| {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok)
    };
    (driver, receive(applied_rx), receive(touched_rx))
}

/// Runs the controllers until SIGTERM/Ctrl-C.
pub async fn run(metrics_addr: SocketAddr) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration found (in-cluster service account or KUBECONFIG)")?;
    run_with(client, metrics_addr).await
}

/// Runs the controllers against `client`'s API server until SIGTERM/Ctrl-C or the end of
/// leadership.
pub async fn run_with(client: Client, metrics_addr: SocketAddr) -> anyhow::Result<()> {
    let registry = Registry::new();
    let (caches, writers) = Caches::new();
    let ctx = Arc::new(Context::with_caches(
        client.clone(),
        &registry,
        caches.clone(),
    ));
    let probe = Probe {
        ready: Arc::new(AtomicBool::new(false)),
        registry,
    };

    // The metrics listener also serves each Shop's operations console
    // (`/shops/<namespace>/<shop>/console`): the operator may reach every admin port.
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe.clone())
        .merge(crate::console::Consoles::new(ctx.clone()).router());
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding {metrics_addr}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Every watch fills one of the caches reconciles read (`Context::caches`). Children are
    // watched by the operator's label only, so the caches hold Tienda's objects, not the
    // cluster's: the credentials Secrets, not every Secret.
    let all = watcher::Config::default;
    let ours = || watcher::Config::default().labels("app.kubernetes.io/managed-by=tienda-operator");
    let Writers {
        shops: shop_writer,
        services: service_writer,
        rate_limits: rate_limit_writer,
        circuits: circuit_writer,
        secrets,
        deployments,
        kube_services,
        service_accounts,
        pdbs,
        roles,
        role_bindings,
        network_policies,
        ingresses,
    } = writers;
    // One watch and one cached copy of the Services, for both controllers.
    let (services_watch, services_applied, services_touched) =
        split_watch(cached(&client, all(), service_writer));
    let shops = Controller::for_stream(
        cached(&client, all(), shop_writer).applied_objects(),
        caches.shops.clone(),
    )
    .owns_stream(services_touched)
    .owns_stream(slimmed(&client, ours(), ingresses).touched_objects())
    .with_config(bounded())
    .shutdown_on_signal();
    let services = Controller::for_stream(services_applied, caches.services.clone())
        .owns_stream(slimmed(&client, ours(), deployments).touched_objects())
        .owns_stream(slimmed(&client, ours(), kube_services).touched_objects())
        .owns_stream(slimmed(&client, ours(), service_accounts).touched_objects())
        .owns_stream(slimmed(&client, ours(), pdbs).touched_objects())
        .owns_stream(slimmed(&client, ours(), roles).touched_objects())
        .owns_stream(slimmed(&client, ours(), role_bindings).touched_objects())
        .owns_stream(slimmed(&client, ours(), network_policies).touched_objects())
        .owns_stream(
            watcher(Api::<Secret>::all(client.clone()), ours())
                .default_backoff()
                .modify(strip_secret)
                .reflect(secrets)
                .touched_objects(),
        )
        .with_config(bounded())
        .shutdown_on_signal();

    let rate_limits = Controller::for_stream(
        cached(&client, all(), rate_limit_writer).applied_objects(),
        caches.rate_limits.clone(),
    )
    .with_config(bounded())
    .shutdown_on_signal();
    let circuits = Controller::for_stream(
        cached(&client, all(), circuit_writer).applied_objects(),
        caches.circuits.clone(),
    )
    .with_config(bounded())
    .shutdown_on_signal();

    let sweeper = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            sweeper.forget_idle_nats_clients();
        }
    });
    let ready = probe.ready.clone();
    let synced = caches.clone();
    tokio::spawn(async move {
        while !synced.synced() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!(objects = synced.len(), "watch caches synced; ready");
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
        .run(
            |o, c| traced("Shop", o, c, shop::reconcile),
            shop::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let services = services
        .run(
            |o, c| traced("Service", o, c, service::reconcile),
            service::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let rate_limits = rate_limits
        .run(
            |o, c| {
                traced(
                    "RateLimitPolicy",
                    o,
                    c,
                    policy::reconcile::<RateLimitPolicy>,
                )
            },
            policy::error_policy::<RateLimitPolicy>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let circuits = circuits
        .run(
            |o, c| traced("CircuitPolicy", o, c, policy::reconcile::<CircuitPolicy>),
            policy::error_policy::<CircuitPolicy>,
            ctx,
        )
        .for_each(|_| async {});
    let controllers =
        async { tokio::join!(shops, services, rate_limits, circuits, services_watch) };
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
