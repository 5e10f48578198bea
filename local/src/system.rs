//! A running shop: infrastructure (given or private), provisioning with the operator's own
//! code, and each built component as a supervised process with its environment.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;
use tienda_crds::{Component, service::DatabaseSpec};
use tienda_provision::{
    database::{self, database_name},
    environment::{LOCAL_NAMESPACE, seals_events, var},
    nats_auth, topology,
};

use crate::{
    Options, demo,
    environment::{Placement, environment},
    infra::{self, Nats, Postgres},
    secrets::Secrets,
    shopfile,
    supervisor::{Logs, ProcessSpec, Supervised},
};

/// A process's environment.
type Env = BTreeMap<String, String>;

/// A running shop.
#[derive(Debug)]
pub struct System {
    /// Components that run, with their base URL.
    pub urls: BTreeMap<Component, String>,
    /// Components that run, with their admin listener's base URL (`/metrics`, `/policies`,
    /// dead-letter admin).
    pub admin_urls: BTreeMap<Component, String>,
    /// The first admin's credentials.
    pub admin: (String, String),
    /// Where the first admin's password comes from (`TIENDA_ADMIN_PASSWORD`, or the secrets
    /// file that keeps the generated one).
    pub admin_password_source: String,
    /// What `--demo` did at start; `None` without it.
    pub demo: Option<demo::Report>,
    /// The admin connection to PostgreSQL.
    pub database_url: String,
    /// NATS.
    pub nats_url: String,
    /// The credentials of each component's NATS identity and of `tienda up` itself (which
    /// may do anything: it provisions), when it runs its own nats-server.
    pub nats_creds: Option<NatsCreds>,
    /// Components listed in the Shop whose binaries are not built (yet).
    pub missing: Vec<Component>,
    /// The operations console (`http://127.0.0.1:3110/console`), when auth runs to sign in
    /// with.
    pub console_url: Option<String>,
    console: Option<tokio::task::JoinHandle<()>>,
    /// The console's trace viewer (`--traces`): the components export to it.
    pub trace_store: Option<tienda_kit::console::traces::TraceStore>,
    /// The OTEL_* variables the components get (the viewer's endpoint with `--traces`).
    telemetry: BTreeMap<String, String>,
    processes: Vec<(Component, Supervised)>,
    postgres: Option<Postgres>,
    nats: Option<Nats>,
    /// The Shop's spec as the components run it (a change restarts them).
    shop_spec: Value,
}

fn shop_spec(shop: &shopfile::ShopFile) -> Value {
    shop.documents
        .iter()
        .find(|d| d["kind"] == "Shop")
        .map(|d| d["spec"].clone())
        .unwrap_or_default()
}

/// Where the `.creds` files of the NATS identities are (`<data>/nats-creds`, owner only).
#[derive(Debug, Clone)]
pub struct NatsCreds {
    /// The directory: `<component>.creds` for each component but the gateway, and
    /// `tienda.creds` (everything allowed: provisioning, tests, an operator's `nats` CLI).
    pub dir: PathBuf,
}

impl NatsCreds {
    /// A component's file (None for the gateway, which has no NATS identity).
    pub fn component(&self, component: Component) -> Option<PathBuf> {
        (component != Component::Gateway).then(|| self.dir.join(format!("{component}.creds")))
    }

    /// The all-allowed identity's file.
    pub fn admin(&self) -> PathBuf {
        self.dir.join("tienda.creds")
    }
}

/// Mints and writes every identity's `.creds` (new users each start: the account trusts any
/// user its signing key signed, so older files keep working too).
fn write_nats_creds(
    data_dir: &Path,
    account: &nats_auth::AccountKeys,
) -> anyhow::Result<NatsCreds> {
    let dir = data_dir.join("nats-creds");
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, text: String| {
        crate::secrets::write_private(&dir.join(format!("{name}.creds")), &text)
    };
    write("tienda", account.user_creds("tienda", None)?)?;
    for component in Component::ALL {
        if component != Component::Gateway {
            let permissions = nats_auth::permissions(component);
            write(
                &component.to_string(),
                account.user_creds(&component.to_string(), Some(&permissions))?,
            )?;
        }
    }
    Ok(NatsCreds { dir })
}

impl System {
    /// A NATS client with everything allowed (as `tienda up` provisions): for tests and tools.
    pub async fn nats_client(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name("tienda-up");
        if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds.admin())
                .await
                .context("reading the NATS credentials tienda up wrote")?;
        }
        options
            .connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))
    }

    /// Brings the shop up: infrastructure, provisioning, then each component in order, each
    /// ready (`/readyz`) before the next starts.
    pub async fn start(mut options: Options) -> anyhow::Result<Self> {
        // `--traces`: the components send their spans to the console's viewer, unless the
        // environment names a trace store already.
        let trace_store = (options.traces
            && tienda_kit::telemetry::TraceExport::from_lookup(|name| {
                options.telemetry.get(name).cloned()
            })
            .ok()
            .flatten()
            .is_none())
        .then(|| {
            let endpoint = format!("http://127.0.0.1:{}", options.console_port());
            for (name, value) in [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                // Spans show up within half a second rather than the default five.
                ("OTEL_BSP_SCHEDULE_DELAY", "500"),
            ] {
                options
                    .telemetry
                    .entry(name.to_owned())
                    .or_insert_with(|| value.to_owned());
            }
            tienda_kit::console::traces::TraceStore::new(500)
        });
        let shop = shopfile::load(&options.path)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        let data_dir = options.data_dir.canonicalize()?;
        let mut secrets = Secrets::load_or_create(&data_dir)?;
        let admin_password = options
            .admin_password
            .clone()
            .unwrap_or_else(|| secrets.admin_password.clone());
        let admin_password_source = match options.admin_password {
            Some(_) => "given in TIENDA_ADMIN_PASSWORD".to_owned(),
            None => format!(
                "kept in {}, key admin_password",
                data_dir.join(crate::secrets::FILE).display()
            ),
        };

        let (postgres, database_url) = match options.database_url.as_deref() {
            Some(url) if reachable_url(url, 5432) => (None, url.to_owned()),
            other => {
                if let Some(url) = other {
                    eprintln!(
                        "tienda: DATABASE_URL {url:?} does not answer; starting a private PostgreSQL"
                    );
                }
                let pg =
                    Postgres::start(&data_dir, infra::free_port()?, &secrets.postgres_password)
                        .await?;
                let url = pg.url.clone();
                (Some(pg), url)
            }
        };
        let (nats, nats_url) = match options.nats_url.as_deref() {
            Some(url) if reachable_url(url, 4222) => (None, url.to_owned()),
            other => {
                if let Some(url) = other {
                    eprintln!(
                        "tienda: NATS_URL {url:?} does not answer; starting a private nats-server"
                    );
                }
                if secrets.nats_account.is_none() {
                    secrets.nats_account = Some(nats_auth::AccountKeys::generate());
                    secrets.save(&data_dir)?;
                }
                let account = secrets.nats_account.clone().expect("made above");
                let n = Nats::start(&data_dir, infra::free_port()?, &account).await?;
                let url = n.url.clone();
                (Some(n), url)
            }
        };
        // Our own nats-server trusts only the users its account mints: one per component,
        // allowed only its subjects, and this process's, which provisions. A NATS given in
        // NATS_URL is used as it is configured.
        let nats_creds = match (&nats, &secrets.nats_account) {
            (Some(_), Some(account)) => Some(write_nats_creds(&data_dir, account)?),
            _ => None,
        };
        let mut system = Self {
            urls: BTreeMap::new(),
            admin_urls: BTreeMap::new(),
            admin: (options.admin_email.clone(), admin_password.clone()),
            admin_password_source,
            demo: None,
            database_url: database_url.clone(),
            nats_url: nats_url.clone(),
            nats_creds,
            missing: Vec::new(),
            console_url: None,
            console: None,
            trace_store,
            telemetry: options.telemetry.clone(),
            processes: Vec::new(),
            postgres,
            nats,
            shop_spec: shop_spec(&shop),
        };
        if let Err(e) = system
            .provision_and_run(&options, &shop, &data_dir, &mut secrets)
            .await
        {
            system.stop().await;
            return Err(e);
        }
        if let Err(e) = system.start_console(&options).await {
            system.stop().await;
            return Err(e);
        }
        if options.demo {
            match system.load_demo(&data_dir).await {
                Ok(report) => system.demo = Some(report),
                Err(e) => {
                    system.stop().await;
                    return Err(e.context(
                        "loading the demo data (--demo / TIENDA_DEMO) failed; the shop itself \
                         started and is stopped again: start without --demo to run it without",
                    ));
                }
            }
        }
        Ok(system)
    }

    /// Loads the demo data through the gateway (or, without one, straight to auth and
    /// products), as the first admin.
    async fn load_demo(&self, data_dir: &Path) -> anyhow::Result<demo::Report> {
        let entry = |component: Component| {
            self.urls
                .get(&Component::Gateway)
                .or_else(|| self.urls.get(&component))
                .cloned()
                .with_context(|| format!("--demo needs {component} running, and it is not"))
        };
        let endpoints = demo::Endpoints {
            auth: entry(Component::Auth)?,
            products: entry(Component::Products)?,
        };
        let admin = demo::Admin {
            email: self.admin.0.clone(),
            password: self.admin.1.clone(),
            source: self.admin_password_source.clone(),
        };
        eprintln!(
            "tienda: loading the demo data through {}",
            endpoints.products
        );
        demo::load(&endpoints, &admin, data_dir).await
    }

    async fn provision_and_run(
        &mut self,
        options: &Options,
        shop: &shopfile::ShopFile,
        data_dir: &Path,
        secrets: &mut Secrets,
    ) -> anyhow::Result<()> {
        // Streams and consumers, as the operator makes them.
        let client = self.nats_client().await?;
        let js = async_nats::jetstream::new(client);
        for item in topology::provision_all(&js).await {
            item.result
                .with_context(|| format!("provisioning {}", item.name))?;
        }

        let admin_options: sqlx::postgres::PgConnectOptions = self
            .database_url
            .parse()
            .context("DATABASE_URL is not a PostgreSQL URL")?;
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_options.clone())
            .await
            .context("connecting to PostgreSQL as admin")?;
        let components: Vec<Component> = Component::ALL
            .into_iter()
            .filter(|c| shop.components.contains(c))
            .collect();
        // In start order (`Component::ALL`: the gateway last, once what it routes to is up).
        let mut credentials_of: Vec<(Component, PathBuf, BTreeMap<&'static str, String>)> =
            Vec::new();
        for component in &components {
            let binary = options.bin_dir.join(format!("tienda-{component}"));
            if !binary.exists() {
                self.missing.push(*component);
                continue;
            }
            let mut credentials = BTreeMap::new();
            if component.has_database() {
                let name = database_name(LOCAL_NAMESPACE, &shop.name, *component);
                let password = secrets
                    .database_passwords
                    .entry(component.to_string())
                    .or_insert_with(database::generate_password)
                    .clone();
                secrets.save(data_dir)?;
                let spec = DatabaseSpec {
                    name: name.clone(),
                    reclaim_policy: Default::default(),
                    extensions: topology::extensions(*component),
                    connection_limit: None,
                };
                database::ensure_database(
                    &admin,
                    &admin_options,
                    &spec,
                    &password,
                    &format!("{LOCAL_NAMESPACE}/{}", shop.name),
                )
                .await
                .with_context(|| format!("provisioning the {component} database"))?;
                let host = admin_options.get_host().to_owned();
                let port = admin_options.get_port();
                credentials.insert(
                    var::DATABASE_URL,
                    format!("postgres://{name}:{password}@{host}:{port}/{name}"),
                );
            }
            if *component == Component::Auth {
                credentials.insert(
                    var::AUTH_KEY_ENCRYPTION_KEY,
                    secrets.auth_key_encryption_key.clone(),
                );
            }
            if seals_events(*component) {
                if secrets.event_sealing_keys.is_none() {
                    secrets.event_sealing_keys = Some(tienda_kit::seal::Sealer::generate_key());
                    secrets.save(data_dir)?;
                }
                credentials.insert(
                    var::EVENT_SEALING_KEYS,
                    secrets.event_sealing_keys.clone().unwrap_or_default(),
                );
            }
            credentials_of.push((*component, binary, credentials));
        }
        admin.close().await;

        for (i, (component, binary, credentials)) in credentials_of.into_iter().enumerate() {
            let placement = Placement {
                options,
                nats_url: &self.nats_url,
                nats_creds: self
                    .nats_creds
                    .as_ref()
                    .and_then(|c| c.component(component)),
                running: &self.urls,
                credentials,
                admin: (&self.admin.0, &self.admin.1),
            };
            let mut env: Env = environment(&shop.shop, component, &placement);
            // `/readyz` echoes it: readiness counts only from the process started here, not
            // from another program that holds the port (ours then cannot bind it).
            let instance = instance_name(component);
            env.insert("TIENDA_INSTANCE".into(), instance.clone());
            for skipped in shop
                .shop
                .spec
                .components
                .iter()
                .filter(|c| c.name == component)
                .flat_map(|c| &c.env)
                .filter(|v| v.value.is_none())
            {
                eprintln!(
                    "tienda: {component}: env {} takes its value from a cluster object \
                     (valueFrom); not set here",
                    skipped.name
                );
            }
            let url = format!("http://127.0.0.1:{}", options.port(component));
            let admin_url = format!("http://127.0.0.1:{}", options.admin_port(component));
            let process = Supervised::start(ProcessSpec {
                name: component.to_string(),
                binary,
                env,
                logs: options.logs.clone(),
                colour: [36, 33, 32, 35, 34, 31][i % 6],
            });
            self.processes.push((component, process));
            wait_ready(component, &url, &admin_url, &instance, options).await?;
            self.urls.insert(component, url);
            self.admin_urls.insert(component, admin_url);
        }
        Ok(())
    }

    /// Reads the Shop file(s) again; when the Shop's spec changed (components added or
    /// removed, their settings), restarts the components with it — PostgreSQL, NATS and every
    /// byte of data stay. Policy files need none of this: the gateway applies them itself.
    /// Returns whether it restarted. An invalid file is an error and changes nothing.
    pub async fn reload(&mut self, options: &Options) -> anyhow::Result<bool> {
        let mut options = options.clone();
        options.telemetry = self.telemetry.clone();
        let options = &options;
        let shop = shopfile::load(&options.path)?;
        let spec = shop_spec(&shop);
        if spec == self.shop_spec {
            return Ok(false);
        }
        while let Some((_, process)) = self.processes.pop() {
            process.stop(Duration::from_secs(15)).await;
        }
        self.urls.clear();
        self.admin_urls.clear();
        self.missing.clear();
        let data_dir = options.data_dir.canonicalize()?;
        let mut secrets = Secrets::load_or_create(&data_dir)?;
        self.shop_spec = spec;
        self.provision_and_run(options, &shop, &data_dir, &mut secrets)
            .await?;
        self.start_console(options).await?;
        Ok(true)
    }

    /// Serves the operations console over what runs now (again after a reload): on loopback,
    /// beside the admin listeners, never through the gateway.
    async fn start_console(&mut self, options: &Options) -> anyhow::Result<()> {
        if let Some(console) = self.console.take() {
            console.abort();
            let _ = console.await;
        }
        self.console_url = None;
        let Some(auth) = self.urls.get(&Component::Auth).cloned() else {
            // No one to sign in with.
            return Ok(());
        };
        let components = self
            .admin_urls
            .iter()
            .map(|(component, url)| tienda_kit::console::Watched {
                name: component.to_string(),
                admin_url: url.clone(),
            })
            .collect();
        let verifier = tienda_kit::TokenConfig {
            jwks_url: format!("{auth}/.well-known/jwks.json"),
            issuer: auth.clone(),
            audience: "tienda".into(),
        }
        .verifier();
        let jetstream = async_nats::jetstream::new(self.nats_client().await?);
        let mut console = tienda_kit::console::Console::new(
            components,
            format!("{auth}/v1/auth/login"),
            Some(jetstream),
            verifier,
        );
        if let Some(store) = &self.trace_store {
            console = console.with_traces(store.clone());
        }
        let port = options.console_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| {
                format!(
                    "binding the operations console to 127.0.0.1:{port}: is another process \
                     using it? (--base-port moves every port)"
                )
            })?;
        let router = console.router();
        self.console = Some(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("tienda: the operations console stopped: {e}");
            }
        }));
        self.console_url = Some(format!("http://127.0.0.1:{port}/console"));
        Ok(())
    }

    /// The supervised process of `component`.
    pub fn process(&self, component: Component) -> Option<&Supervised> {
        self.processes
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, p)| p)
    }

    /// Stops the components in reverse start order, then the private servers.
    pub async fn stop(&mut self) {
        if let Some(console) = self.console.take() {
            console.abort();
        }
        while let Some((_, process)) = self.processes.pop() {
            process.stop(Duration::from_secs(15)).await;
        }
        if let Some(mut nats) = self.nats.take() {
            nats.stop().await;
        }
        if let Some(pg) = self.postgres.take()
            && let Err(e) = pg.stop().await
        {
            eprintln!("tienda: {e:#}");
        }
    }
}

fn reachable_url(url: &str, default_port: u16) -> bool {
    infra::host_port(url, default_port).is_some_and(|(h, p)| infra::reachable(&h, p))
}

/// A name no other process answering on a component's port has: the component, this
/// process's id and the time.
fn instance_name(component: Component) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{component}-{}-{nanos:x}", std::process::id())
}

/// Waits until the process started as `instance` answers `/readyz` at `url`. A ready answer
/// from another process (another `tienda up`'s component, any other server on the port, on
/// the public or the admin port) is an error at once: ours cannot bind the port, and its
/// traffic would go to a stranger.
async fn wait_ready(
    component: Component,
    url: &str,
    admin_url: &str,
    instance: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    // Who answers `/readyz` at `base` (`None`: nobody) and whether it is ready.
    let probe = async |base: &str| {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        let answered_by = r
            .headers()
            .get(tienda_kit::health::INSTANCE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Some((answered_by, r.status().is_success()))
    };
    let stranger = |base: &str, port: u16| {
        anyhow::anyhow!(
            "{base} answers, but not from the {component} this `tienda up` started \
             (Address already in use): another program holds port {port}. Stop it (an \
             earlier `tienda up`? Ctrl-C stops it), or start on other ports with --base-port"
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match probe(url).await {
            Some((by, ready)) if by.as_deref() == Some(instance) => {
                if ready {
                    return Ok(());
                }
            }
            Some(_) => return Err(stranger(url, options.port(component))),
            // Nobody yet; but when a stranger holds the admin port, ours never starts.
            None => {
                if let Some((by, _)) = probe(admin_url).await
                    && by.as_deref() != Some(instance)
                {
                    return Err(stranger(admin_url, options.admin_port(component)));
                }
            }
        }
        if std::time::Instant::now() > deadline {
            let hint = match &options.logs {
                Logs::Files(dir) => format!(" (see {}/{component}.log)", dir.display()),
                Logs::Terminal => String::new(),
            };
            bail!("{component} did not become ready at {url}/readyz within 90 s{hint}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, http::StatusCode, routing::get};

    use super::*;

    /// A server on a free loopback port whose `/readyz` answers 200 when `ready()` says so
    /// and 503 otherwise, naming `instance` when given; returns its URL.
    async fn readyz_server(
        ready: impl Fn() -> bool + Clone + Send + Sync + 'static,
        instance: Option<&'static str>,
    ) -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route(
            "/readyz",
            get(move || async move {
                let status = if ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut response = axum::response::IntoResponse::into_response(status);
                if let Some(name) = instance {
                    response
                        .headers_mut()
                        .insert(tienda_kit::health::INSTANCE, name.parse().unwrap());
                }
                response
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// A loopback URL nothing listens on.
    async fn nobody() -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_stranger_on_the_admin_port_is_reported_at_once() {
        tienda_kit::install_crypto_provider();
        let options = Options::new(PathBuf::from("shop"));
        let admin = readyz_server(|| true, Some("auth-2-b")).await;
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            wait_ready(
                Component::Auth,
                &nobody().await,
                &admin,
                "auth-1-a",
                &options,
            ),
        )
        .await
        .expect("reported at once, not after 90 s")
        .expect_err("ours cannot start beside it");
        let message = format!("{error:#}");
        assert!(message.contains("Address already in use"), "{message}");
        assert!(message.contains(&admin), "{message}");
    }

    #[tokio::test]
    async fn readiness_counts_only_from_the_process_started_here() {
        tienda_kit::install_crypto_provider();
        let options = Options::new(PathBuf::from("shop"));
        let ours = readyz_server(|| true, Some("auth-1-a")).await;
        wait_ready(
            Component::Auth,
            &ours,
            &nobody().await,
            "auth-1-a",
            &options,
        )
        .await
        .expect("our own process is ready");

        // Another shop's auth, or any server, on the port: ours could not bind it.
        for stranger in [
            readyz_server(|| true, Some("auth-2-b")).await,
            readyz_server(|| true, None).await,
            readyz_server(|| false, None).await,
        ] {
            let error = tokio::time::timeout(
                Duration::from_secs(10),
                wait_ready(
                    Component::Auth,
                    &stranger,
                    &nobody().await,
                    "auth-1-a",
                    &options,
                ),
            )
            .await
            .expect("a stranger is reported at once, not after 90 s")
            .expect_err("a stranger's readiness is not ours");
            let message = format!("{error:#}");
            assert!(message.contains("Address already in use"), "{message}");
            assert!(message.contains("--base-port"), "{message}");
        }
    }

    #[tokio::test]
    async fn our_process_not_ready_yet_is_waited_for() {
        tienda_kit::install_crypto_provider();
        let options = Options::new(PathBuf::from("shop"));
        // Not ready for its first three probes (its database still starting), then ready.
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = calls.clone();
        let url = readyz_server(
            move || counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 3,
            Some("orders-1-c"),
        )
        .await;
        wait_ready(
            Component::Orders,
            &url,
            &nobody().await,
            "orders-1-c",
            &options,
        )
        .await
        .expect("ready once its checks pass");
        assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    }

    #[test]
    fn instance_names_differ_between_starts() {
        let first = instance_name(Component::Auth);
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(first, instance_name(Component::Auth));
        assert!(first.starts_with("auth-"), "{first}");
    }
}
