//! `tienda up`: the shop on one machine, no cluster. The same Shop file a cluster takes; the
//! same provisioning code as the operator (databases and roles, streams and consumers); each
//! service binary run as a process with the environment its Deployment would get, supervised.
//! `tienda-e2e` starts the system through this module too, so whole-system tests run the shop
//! the way users do.
//!
//! - [`infra`]: the private PostgreSQL and nats-server (when none is configured)
//! - [`supervisor`]: one process, restarted with backoff, logs prefixed
//! - [`shopfile`]: reading and checking the Shop and policy files

pub mod infra;
pub mod shopfile;
pub mod supervisor;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tienda_crds::{Component, service::DatabaseSpec};
use tienda_provision::{database, topology};

use self::{
    infra::{Nats, Postgres},
    supervisor::{Logs, ProcessSpec, Supervised},
};

/// What `tienda up` runs and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Shop file, or a directory of YAML files holding a Shop and its policies.
    pub path: PathBuf,
    /// Where data, secrets and logs live (`.tienda/`).
    pub data_dir: PathBuf,
    /// An admin connection to an existing PostgreSQL; `None`: the private one.
    pub database_url: Option<String>,
    /// An existing NATS; `None`: the private one.
    pub nats_url: Option<String>,
    /// The first port: the gateway listens on it, the other components on the next ones in
    /// the order gateway, auth, products, orders, payments, notifications (3000-3005).
    pub base_port: u16,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// Where service logs go.
    pub logs: Logs,
    /// The first admin account.
    pub admin_email: String,
    /// Its password; `None`: generated once and kept in the data directory.
    pub admin_password: Option<String>,
}

impl Options {
    /// Defaults for `path` (data in `.tienda/`, ports 3000-3005, binaries next to this one).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            data_dir: PathBuf::from(".tienda"),
            database_url: std::env::var("DATABASE_URL").ok(),
            nats_url: std::env::var("NATS_URL").ok(),
            base_port: 3000,
            bin_dir: default_bin_dir(),
            logs: Logs::Terminal,
            admin_email: std::env::var("TIENDA_ADMIN_EMAIL")
                .unwrap_or_else(|_| "admin@tienda.local".into()),
            admin_password: std::env::var("TIENDA_ADMIN_PASSWORD").ok(),
        }
    }
}

/// Where this executable is (service binaries are built next to it), or, for test binaries
/// under `target/<profile>/deps`, the profile directory.
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The component's port: `base + position` in [`Component::ALL`] order with the gateway first.
pub fn port(base: u16, component: Component) -> u16 {
    let offset = match component {
        Component::Gateway => 0,
        Component::Auth => 1,
        Component::Products => 2,
        Component::Orders => 3,
        Component::Payments => 4,
        Component::Notifications => 5,
    };
    base + offset
}

/// Secrets made on the first run and kept for the next (`<data>/secrets.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Secrets {
    postgres_password: String,
    auth_key_encryption_key: String,
    admin_password: String,
    database_passwords: BTreeMap<String, String>,
}

impl Secrets {
    fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("secrets.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).with_context(|| {
                format!("{} is damaged; remove it to start over", path.display())
            });
        }
        let secrets = Self {
            postgres_password: database::generate_password(),
            auth_key_encryption_key: database::generate_key(),
            admin_password: database::generate_password(),
            database_passwords: BTreeMap::new(),
        };
        secrets.save(dir)?;
        Ok(secrets)
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("secrets.json");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        use std::io::Write;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }
}

/// A process's environment.
type Env = BTreeMap<String, String>;

/// A running shop.
#[derive(Debug)]
pub struct System {
    /// Components that run, in start order, with their base URL.
    pub urls: BTreeMap<Component, String>,
    /// The first admin's credentials.
    pub admin: (String, String),
    /// The admin connection to PostgreSQL.
    pub database_url: String,
    /// NATS.
    pub nats_url: String,
    /// Components listed in the Shop whose binaries are not built (yet).
    pub missing: Vec<Component>,
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

impl System {
    /// Brings the shop up: infrastructure, provisioning, then each component in order, each
    /// ready (`/readyz`) before the next starts.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let shop = shopfile::load(&options.path)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        let data_dir = options.data_dir.canonicalize()?;
        let mut secrets = Secrets::load_or_create(&data_dir)?;
        let admin_password = options
            .admin_password
            .clone()
            .unwrap_or_else(|| secrets.admin_password.clone());

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
                let n = Nats::start(&data_dir, infra::free_port()?).await?;
                let url = n.url.clone();
                (Some(n), url)
            }
        };
        let mut system = Self {
            urls: BTreeMap::new(),
            admin: (options.admin_email.clone(), admin_password.clone()),
            database_url: database_url.clone(),
            nats_url: nats_url.clone(),
            missing: Vec::new(),
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
        Ok(system)
    }

    async fn provision_and_run(
        &mut self,
        options: &Options,
        shop: &shopfile::ShopFile,
        data_dir: &Path,
        secrets: &mut Secrets,
    ) -> anyhow::Result<()> {
        // Streams and consumers, as the operator makes them.
        let client = async_nats::connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))?;
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
        let mut env_of: Vec<(Component, (PathBuf, Env))> = Vec::new();
        for component in &components {
            let binary = options.bin_dir.join(format!("tienda-{component}"));
            if !binary.exists() {
                self.missing.push(*component);
                continue;
            }
            let mut env = self.base_env(options, shop, *component, data_dir);
            if component.has_database() {
                let name = format!("tienda_{}_{component}", shop.name.replace('-', "_"));
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
                database::ensure_database(&admin, &admin_options, &spec, &password)
                    .await
                    .with_context(|| format!("provisioning the {component} database"))?;
                let host = admin_options.get_host().to_owned();
                let port = admin_options.get_port();
                env.insert(
                    "DATABASE_URL".into(),
                    format!("postgres://{name}:{password}@{host}:{port}/{name}"),
                );
            }
            if *component == Component::Auth {
                env.insert(
                    "AUTH_KEY_ENCRYPTION_KEY".into(),
                    secrets.auth_key_encryption_key.clone(),
                );
                env.insert("TIENDA_ADMIN_EMAIL".into(), self.admin.0.clone());
                env.insert("TIENDA_ADMIN_PASSWORD".into(), self.admin.1.clone());
            }
            env_of.push((*component, (binary, env)));
        }
        admin.close().await;

        for (i, (component, (binary, mut env))) in env_of.into_iter().enumerate() {
            if component == Component::Gateway {
                let table: Vec<String> = self
                    .urls
                    .iter()
                    .map(|(c, url)| format!("{c}={url}"))
                    .collect();
                env.insert("GATEWAY_UPSTREAMS".into(), table.join(","));
            }
            let url = format!("http://127.0.0.1:{}", port(options.base_port, component));
            let process = Supervised::start(ProcessSpec {
                name: component.to_string(),
                binary,
                env,
                logs: options.logs.clone(),
                colour: [36, 33, 32, 35, 34, 31][i % 6],
            });
            self.processes.push((component, process));
            wait_ready(component, &url, options).await?;
            self.urls.insert(component, url);
        }
        Ok(())
    }

    fn base_env(
        &self,
        options: &Options,
        shop: &shopfile::ShopFile,
        component: Component,
        data_dir: &Path,
    ) -> BTreeMap<String, String> {
        let auth = format!(
            "http://127.0.0.1:{}",
            port(options.base_port, Component::Auth)
        );
        [
            (
                "LISTEN_ADDR",
                format!("127.0.0.1:{}", port(options.base_port, component)),
            ),
            ("NATS_URL", self.nats_url.clone()),
            ("LOG_FORMAT", "pretty".into()),
            ("RUST_LOG", "info".into()),
            ("TIENDA_SHOP", shop.name.clone()),
            ("TIENDA_COMPONENT", component.to_string()),
            ("TIENDA_POLICY_SOURCE", "file".into()),
            ("TIENDA_POLICY_PATH", shop.path.display().to_string()),
            ("OTEL_SERVICE_NAME", format!("tienda-{component}")),
            ("AUTH_ISSUER", auth.clone()),
            ("AUTH_AUDIENCE", "tienda".into()),
            ("AUTH_JWKS_URL", format!("{auth}/.well-known/jwks.json")),
            ("TIENDA_DATA_DIR", data_dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Reads the Shop file(s) again; when the Shop's spec changed (components added or
    /// removed, their settings), restarts the components with it — PostgreSQL, NATS and every
    /// byte of data stay. Policy files need none of this: the gateway applies them itself.
    /// Returns whether it restarted. An invalid file is an error and changes nothing.
    pub async fn reload(&mut self, options: &Options) -> anyhow::Result<bool> {
        let shop = shopfile::load(&options.path)?;
        let spec = shop_spec(&shop);
        if spec == self.shop_spec {
            return Ok(false);
        }
        while let Some((_, process)) = self.processes.pop() {
            process.stop(Duration::from_secs(15)).await;
        }
        self.urls.clear();
        self.missing.clear();
        let data_dir = options.data_dir.canonicalize()?;
        let mut secrets = Secrets::load_or_create(&data_dir)?;
        self.shop_spec = spec;
        self.provision_and_run(options, &shop, &data_dir, &mut secrets)
            .await?;
        Ok(true)
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

async fn wait_ready(component: Component, url: &str, options: &Options) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
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
