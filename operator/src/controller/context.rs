//! What every reconcile gets: the Kubernetes client, the event recorder, metrics, connections
//! to the shops' PostgreSQL servers and NATS clusters (cached), and per-object error counts
//! for backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::Secret, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        controller::Action,
        events::{EventType, Reporter},
    },
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};
use tienda_crds::{Shop, shop::SslMode};
use tienda_kit::resilience::Backoff;

use super::{
    cache::Caches,
    error::{Error, Result},
};

/// How many provisioning sessions (database checks, creations, drops) run at once against
/// one PostgreSQL server, whatever the number of Shops on it: each holds up to two
/// connections (the admin pool's and one to the component's database).
pub const DATABASE_CONCURRENCY: usize = 4;

/// Reconcile metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles by kind.
    pub reconciles: IntCounterVec,
    /// Failed reconciles by kind and reason.
    pub failures: IntCounterVec,
    /// Reconcile duration by kind.
    pub duration: HistogramVec,
}

impl Metrics {
    /// Counts a reconcile of `kind`; the timer records its duration when dropped.
    pub fn start(&self, kind: &str) -> prometheus::HistogramTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        self.duration.with_label_values(&[kind]).start_timer()
    }

    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let reconciles = IntCounterVec::new(
            Opts::new("tienda_operator_reconciles_total", "Reconciles run"),
            &["kind"],
        )
        .unwrap();
        let failures = IntCounterVec::new(
            Opts::new(
                "tienda_operator_reconcile_failures_total",
                "Reconciles that failed, by reason",
            ),
            &["kind", "reason"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tienda_operator_reconcile_duration_seconds",
                "Time to reconcile one object",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )
        .unwrap();
        for metric in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
        ] {
            let _ = registry.register(metric);
        }
        Self {
            reconciles,
            failures,
            duration,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Events published in the last [`EVENT_SERIES`]: where each is, and how often it was
    /// seen, so a repeat becomes a series count rather than another Event.
    events: Mutex<HashMap<u64, Published>>,
    /// Who publishes: the operator, and its pod.
    reporter: Reporter,
    /// Reconcile metrics.
    pub metrics: Metrics,
    /// What the watches hold: every read of a reconcile comes from here.
    pub caches: Caches,
    /// Admin pools per PostgreSQL server (host, port, user, database).
    pools: Mutex<HashMap<String, PgPool>>,
    /// Clients per NATS URL and credentials, with when each was last used.
    nats: Mutex<HashMap<String, (async_nats::Client, tokio::time::Instant)>>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Per Service: the fingerprint of what shaped its external state when it was last
    /// verified, and until when that verification stands.
    provisioned: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
    /// Provisioning sessions per PostgreSQL server (`host:port`).
    database_servers: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Per child (a hash of `Kind/namespace/name`): hashes of what this operator's last apply
    /// of it sent and left.
    applied: Mutex<HashMap<u64, (u64, u64)>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The periodic requeue that corrects drift (a database or stream deleted out of band comes
/// back): 5 minutes, ±20 % so objects do not reconcile in lockstep.
pub fn periodic_requeue() -> Action {
    Action::requeue(jitter(Duration::from_secs(300), 0.2))
}

fn jitter(base: Duration, spread: f64) -> Duration {
    let unit = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX); // [0, 1]
    base.mul_f64(1.0 - spread + 2.0 * spread * unit)
}

/// How long a verified database and set of streams stand without a change: 3 h ± 20 %, so a
/// thousand Shops' five databases each cost under one PostgreSQL login a second, and a
/// database or stream deleted by hand still comes back within hours (at once on any change
/// to the Service, its Shop's servers or its credentials, or an operator restart).
pub const RECHECK: Duration = Duration::from_secs(3 * 3600);

/// How long an unused NATS client is kept: streams are verified on a change or every few
/// hours, so a client per Shop account held for good would be a connection and its buffers
/// per Shop for nothing (a thousand Shops on their own accounts: a thousand connections).
pub const NATS_IDLE: Duration = Duration::from_secs(300);

/// The most NATS clients kept at once (the least recently used goes first): a Shop's Services
/// are reconciled together, so a few dozen catch the reuse, and a thousand Shops converging at
/// once do not hold a connection and its buffers (about 27 KiB) each.
pub const NATS_MAX_CLIENTS: usize = 32;

/// The requeue after errors: ceilings from 1 s doubling to 5 min, full jitter, never sooner
/// than 1 s (a failing object must not spin).
const ERROR_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    .with_floor(Duration::from_secs(1));

/// Backoff after `failures` consecutive errors.
pub fn error_backoff(failures: u32) -> Duration {
    ERROR_BACKOFF.delay(failures)
}

impl Context {
    /// A context around `client`, its metrics registered in `registry`, with empty caches
    /// that count as synced (a cluster with nothing in it yet).
    pub fn new(client: Client, registry: &Registry) -> Self {
        let (caches, mut writers) = Caches::new();
        writers.synced();
        Self::with_caches(client, registry, caches)
    }

    /// A context around `client` reading `caches`.
    pub fn with_caches(client: Client, registry: &Registry, caches: Caches) -> Self {
        let reporter = Reporter {
            controller: super::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: Mutex::default(),
            reporter,
            client,
            metrics: Metrics::new(registry),
            caches,
            pools: Mutex::default(),
            nats: Mutex::default(),
            failures: Mutex::default(),
            provisioned: Mutex::default(),
            database_servers: Mutex::default(),
            applied: Mutex::default(),
        }
    }

    /// What this operator's last apply of child `key` (`apiVersion/Kind/namespace/name`) was
    /// and left, if it applied it since it started: the hash of what it sent and the content
    /// hash of what the server stored.
    pub fn applied(&self, key: &str) -> Option<(u64, u64)> {
        let key = tienda_provision::stable_hash::fnv1a(key.bytes());
        self.applied
            .lock()
            .expect("not poisoned")
            .get(&key)
            .copied()
    }

    /// Records what an apply of child `key` sent (`sent`: a hash of the applied-hash
    /// annotation's value) and left (`content`).
    pub fn remember_applied(&self, key: &str, sent: u64, content: u64) {
        let key = tienda_provision::stable_hash::fnv1a(key.bytes());
        self.applied
            .lock()
            .expect("not poisoned")
            .insert(key, (sent, content));
    }

    /// Records `stored` as this operator's last apply of it (as [`super::apply_child`] does).
    pub fn remember<K: Resource<DynamicType = ()> + serde::Serialize>(&self, stored: &K) {
        let meta = stored.meta();
        let key = super::child_key::<K>(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let sent = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::APPLIED_HASH))
            .map_or("", String::as_str);
        let sent = tienda_provision::stable_hash::fnv1a(sent.bytes());
        self.remember_applied(&key, sent, super::cache::content_hash(stored));
    }

    /// Waits for a provisioning slot on the Shop's PostgreSQL server: at most
    /// [`DATABASE_CONCURRENCY`] at once per server, so an operator restart with a thousand
    /// Shops on one server queues their checks instead of opening a thousand sessions.
    pub async fn database_slot(&self, shop: &Shop) -> tokio::sync::OwnedSemaphorePermit {
        let key = format!("{}:{}", shop.spec.postgres.host, shop.spec.postgres.port);
        let semaphore = self
            .database_servers
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(DATABASE_CONCURRENCY)))
            .clone();
        semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count += 1;
        error_backoff(*count)
    }

    /// Whether `key`'s database and streams were verified with inputs `fingerprint` within the
    /// recheck period.
    pub fn recently_provisioned(&self, key: &str, fingerprint: &str) -> bool {
        self.provisioned
            .lock()
            .expect("not poisoned")
            .get(key)
            .is_some_and(|(seen, until)| {
                seen == fingerprint && tokio::time::Instant::now() < *until
            })
    }

    /// Records that `key`'s database and streams were verified with inputs `fingerprint`.
    pub fn provisioned(&self, key: &str, fingerprint: &str) {
        let until = tokio::time::Instant::now() + jitter(RECHECK, 0.2);
        self.provisioned
            .lock()
            .expect("not poisoned")
            .insert(key.to_owned(), (fingerprint.to_owned(), until));
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
    }

    /// Publishes an `events.k8s.io/v1` Event about `object`, as kube's `Recorder` does: the
    /// same type and reason about the same object again within [`EVENT_SERIES`] is a series
    /// (the first Event's `series.count` patched) rather than another Event. Unlike the
    /// `Recorder`, which keeps a copy of every Event it published for that long (about 3 KB
    /// each: 14 of the 117 MiB the 1,000-Shop bench measured), only where each one is and
    /// its count are kept. A failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let regarding = object.object_ref(&());
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = tienda_provision::stable_hash::fnv1a(
            [
                type_,
                reason,
                regarding.uid.as_deref().unwrap_or_default(),
                &namespace,
            ]
            .iter()
            .flat_map(|part| part.bytes().chain([0xff])),
        );
        let now = k8s_openapi::jiff::Timestamp::now();
        let repeat = {
            let mut events = self.events.lock().expect("not poisoned");
            let fresh = tokio::time::Instant::now();
            events.retain(|_, e| fresh.duration_since(e.seen) < EVENT_SERIES);
            events.get_mut(&key).map(|e| {
                e.count += 1;
                e.seen = fresh;
                (e.name.clone(), e.count)
            })
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let result = match repeat {
            Some((name, count)) => api
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(serde_json::json!({
                        "series": {"count": count, "lastObservedTime": MicroTime(now)}
                    })),
                )
                .await
                .map(drop),
            None => {
                let name = format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                );
                let event = K8sEvent {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    action: Some(reason.into()),
                    reason: Some(reason.into()),
                    note: Some(note),
                    type_: Some(type_.into()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding),
                    reporting_controller: Some(self.reporter.controller.clone()),
                    reporting_instance: Some(
                        self.reporter
                            .instance
                            .clone()
                            .unwrap_or_else(|| self.reporter.controller.clone()),
                    ),
                    ..Default::default()
                };
                let created = api.create(&kube::api::PostParams::default(), &event).await;
                if created.is_ok() {
                    self.events.lock().expect("not poisoned").insert(
                        key,
                        Published {
                            name,
                            count: 1,
                            seen: tokio::time::Instant::now(),
                        },
                    );
                }
                created.map(drop)
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, reason, "cannot publish event");
        }
    }

    /// The admin connection options of a Shop's PostgreSQL server, from its admin Secret.
    pub async fn postgres_admin(
        &self,
        shop: &Shop,
        namespace: &str,
    ) -> Result<(PgPool, PgConnectOptions)> {
        let pg = &shop.spec.postgres;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets.get(&pg.admin_secret_ref.name).await?;
        let key = |key: &str| -> Result<String> {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .ok_or_else(|| Error::SecretKey {
                    secret: pg.admin_secret_ref.name.clone(),
                    key: key.into(),
                    hint: "the Shop's admin Secret needs `username` and `password` of a role with CREATEDB and CREATEROLE",
                })
        };
        let (user, password) = (key("username")?, key("password")?);
        let options = PgConnectOptions::new()
            .host(&pg.host)
            .port(pg.port as u16)
            .username(&user)
            .password(&password)
            .database(&pg.admin_database)
            .application_name("tienda-operator")
            .ssl_mode(match pg.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        // The password's hash is part of the key: a rotated admin password gets a new pool
        // instead of reusing connections opened with the old one.
        let key = format!(
            "{user}@{}:{}/{}#{:016x}",
            pg.host,
            pg.port,
            pg.admin_database,
            tienda_provision::stable_hash::fnv1a(password.bytes())
        );
        if let Some(pool) = self.pools.lock().expect("not poisoned").get(&key) {
            return Ok((pool.clone(), options));
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|source| Error::PostgresConnect {
                host: format!("{}:{}", pg.host, pg.port),
                source,
            })?;
        self.pools
            .lock()
            .expect("not poisoned")
            .insert(key, pool.clone());
        Ok((pool, options))
    }

    /// A JetStream context for a Shop's NATS cluster, with the credentials in its Secret.
    ///
    /// Clients are cached by URL *and* credentials (NACK hashes its whole connection config):
    /// two Shops on one NATS with their own accounts get their own clients, and a rotated
    /// Secret gets a new client (the old one is closed when its last user drops it). The cache
    /// lock is never held across a connect: a NATS that does not answer delays only the
    /// reconciles that need it.
    pub async fn jetstream(
        &self,
        shop: &Shop,
        namespace: &str,
    ) -> Result<async_nats::jetstream::Context> {
        let nats = &shop.spec.nats;
        let credentials = match &nats.credentials_secret_ref {
            Some(creds) => {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let secret = secrets.get(&creds.name).await?;
                let data: std::collections::BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                Some((creds.name.clone(), data))
            }
            None => None,
        };
        let key = nats_client_key(&nats.url, credentials.as_ref().map(|(_, d)| d));
        self.forget_idle_nats_clients();
        if let Some((client, used)) = self.nats.lock().expect("not poisoned").get_mut(&key) {
            *used = tokio::time::Instant::now();
            return Ok(async_nats::jetstream::new(client.clone()));
        }
        let connect_error = |message: String| Error::NatsConnect {
            url: nats.url.clone(),
            message,
        };
        let mut options = async_nats::ConnectOptions::new().name("tienda-operator");
        if let Some((secret, data)) = &credentials {
            let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
            options = if let Some(creds_file) = text("nats.creds") {
                async_nats::ConnectOptions::with_credentials(&creds_file)
                    .map_err(|e| connect_error(e.to_string()))?
                    .name("tienda-operator")
            } else if let (Some(user), Some(password)) = (text("username"), text("password")) {
                options.user_and_password(user, password)
            } else if let Some(token) = text("token") {
                options.token(token)
            } else {
                return Err(Error::SecretKey {
                    secret: secret.clone(),
                    key: "nats.creds".into(),
                    hint: "the NATS credentials Secret needs `nats.creds`, `username`+`password` or `token`",
                });
            };
        }
        let client = options
            .connection_timeout(Duration::from_secs(5))
            // JetStream API requests and their answers are small: the default 64 KiB read
            // buffer per connection is most of an idle client's memory.
            .read_buffer_capacity(8 * 1024)
            .connect(nats.url.as_str())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let client = {
            let mut clients = self.nats.lock().expect("not poisoned");
            if clients.len() >= NATS_MAX_CLIENTS && !clients.contains_key(&key) {
                let oldest = clients
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    clients.remove(&oldest);
                }
            }
            // Clients of this URL with other credentials are stale (a rotated Secret) unless
            // another Shop uses them; they are dropped with the last reconcile holding one.
            let entry = clients
                .entry(key)
                .or_insert((client, tokio::time::Instant::now()));
            entry.1 = tokio::time::Instant::now();
            entry.0.clone()
        };
        Ok(async_nats::jetstream::new(client))
    }

    /// How many NATS clients are cached (one per URL and credentials).
    pub fn nats_clients(&self) -> usize {
        self.nats.lock().expect("not poisoned").len()
    }

    /// Drops the NATS clients unused for [`NATS_IDLE`] (each is closed once the last
    /// reconcile holding it is done), among them those of rotated credentials. Called on
    /// every use of the cache and from a timer, so an idle operator holds no connection.
    pub fn forget_idle_nats_clients(&self) {
        let now = tokio::time::Instant::now();
        self.nats
            .lock()
            .expect("not poisoned")
            .retain(|_, (_, used)| now.duration_since(*used) < NATS_IDLE);
    }
}

/// The cache key of a NATS client: the URL and a hash of the credentials' content.
fn nats_client_key(
    url: &str,
    credentials: Option<&std::collections::BTreeMap<String, Vec<u8>>>,
) -> String {
    let hash = credentials.map(|data| {
        tienda_provision::stable_hash::fnv1a(data.iter().flat_map(|(k, v)| {
            k.bytes()
                .chain([0xff])
                .chain(v.iter().copied())
                .chain([0xff])
        }))
    });
    match hash {
        Some(hash) => format!("{url}#{hash:016x}"),
        None => url.to_owned(),
    }
}

/// How long a published Event collects repeats as a series (kube's `Recorder`: 6 minutes).
pub const EVENT_SERIES: Duration = Duration::from_secs(360);

/// Where a published Event is and how often it was seen.
#[derive(Debug)]
struct Published {
    name: String,
    count: i32,
    seen: tokio::time::Instant,
}

/// Cheap access for reconcilers.
pub type Ctx = Arc<Context>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_with_jitter_up_to_five_minutes() {
        for failures in 1..20 {
            let d = error_backoff(failures);
            let ceiling =
                Duration::from_secs(1 << (failures - 1).min(9)).min(Duration::from_secs(300));
            assert!(
                d >= Duration::from_secs(1) && d <= ceiling,
                "{failures}: {d:?}"
            );
        }
        assert_eq!(ERROR_BACKOFF.ceiling(12), Duration::from_secs(300));
    }

    #[test]
    fn periodic_requeues_are_spread() {
        let a: Vec<_> = (0..20)
            .map(|_| format!("{:?}", periodic_requeue()))
            .collect();
        assert!(a.iter().any(|x| x != &a[0]), "jittered");
    }
}
