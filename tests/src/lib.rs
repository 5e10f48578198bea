//! Whole-system tests' harness: the shop started with `tienda up`'s own code — private
//! PostgreSQL and nats-server in a scratch data directory, every built service binary as a
//! supervised process on free ports — and an HTTP client for the journeys.
//!
//! The service binaries must be built (`cargo build --workspace --bins`; `tests/run` does).

pub mod dashboards;
pub mod load;
pub mod timeline;
pub mod webdriver;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tienda_crds::Component;
use tienda_local::{Options, System, supervisor::Logs};

/// A running shop for one test, and its scratch directory.
pub struct Shop {
    /// The system.
    pub system: System,
    /// Options it was started with (to start it again on the same data).
    pub options: Options,
    /// HTTP.
    pub http: reqwest::Client,
    dir: PathBuf,
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// A base port whose six public and six admin ports are all free on loopback.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let mut options = Options::new(PathBuf::new());
        // Below the kernel's ephemeral range (32768-60999 here), which every port-0 bind of
        // the tests running beside this one draws from: a base port in it collided with them.
        options.base_port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let all_free = options
            .ports()
            .into_iter()
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return options.base_port;
        }
    }
    panic!("no base port with all twelve ports free found");
}

impl Shop {
    /// Starts the shop of `examples/local` with its own PostgreSQL and NATS.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts it with `edit` applied to the options (as `tienda up`'s flags would, e.g.
    /// `--demo`).
    pub async fn start_with(edit: impl FnOnce(&mut Options)) -> Self {
        Self::start_prepared(|_| {}, edit).await
    }

    /// Starts it with `prepare` run first on the shop's directory (a copy of examples/local:
    /// a test writes its own Shop file or policies there), then `edit` on the options.
    pub async fn start_prepared(
        prepare: impl FnOnce(&std::path::Path),
        edit: impl FnOnce(&mut Options),
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir =
            std::env::temp_dir().join(format!("tienda-e2e-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        // A copy of examples/local, so a test may edit its policies as a user would.
        let shop_dir = dir.join("shop");
        std::fs::create_dir_all(&shop_dir).unwrap();
        for entry in std::fs::read_dir(repo_root().join("examples/local")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, shop_dir.join(path.file_name().unwrap())).unwrap();
        }
        prepare(&shop_dir);
        let mut options = Options::new(shop_dir);
        options.data_dir = dir.join("data");
        options.database_url = None;
        options.nats_url = None;
        options.base_port = free_base_port();
        options.logs = Logs::Files(dir.join("logs"));
        options.admin_email = "admin@e2e.test".into();
        options.admin_password = Some("an e2e admin passphrase 42".into());
        edit(&mut options);
        for component in [Component::Gateway, Component::Auth, Component::Products] {
            let binary = options.bin_dir.join(format!("tienda-{component}"));
            assert!(
                binary.exists(),
                "{} is missing: run `cargo build --workspace --bins` first (tests/run does)",
                binary.display()
            );
        }
        // Free ports are chosen before they are bound: a shop of another test may take one
        // in between. Then this shop starts again on other ports.
        let mut attempts = 0;
        let system = loop {
            attempts += 1;
            match System::start(options.clone()).await {
                Ok(system) => break system,
                Err(e) if attempts < 3 && format!("{e:#}").contains("Address already in use") => {
                    options.base_port = free_base_port();
                }
                Err(e) => panic!(
                    "the shop did not start: {e:#}\nlogs in {}",
                    dir.join("logs").display()
                ),
            }
        };
        Self {
            system,
            options,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops everything and starts it again on the same data (a second `tienda up`).
    pub async fn restart(&mut self) {
        self.system.stop().await;
        self.system = System::start(self.options.clone())
            .await
            .expect("starts again");
    }

    /// Where a request for `component` goes: through the gateway, as users' requests do.
    pub fn url(&self, component: Component, path: &str) -> String {
        let entry = self
            .system
            .urls
            .get(&Component::Gateway)
            .unwrap_or_else(|| &self.system.urls[&component]);
        format!("{entry}{path}")
    }

    /// A component's own address, bypassing the gateway.
    pub fn direct(&self, component: Component, path: &str) -> String {
        format!("{}{path}", self.system.urls[&component])
    }

    /// A component's admin listener (`/metrics`, `/policies`, dead-letter admin), which the
    /// public listener does not serve.
    pub fn admin(&self, component: Component, path: &str) -> String {
        format!("{}{path}", self.system.admin_urls[&component])
    }

    /// An active product with one variant `sku` at `cents` EUR and `on_hand` in stock, made
    /// by the admin through the gateway; returns its id.
    pub async fn stocked_product(&self, name: &str, sku: &str, cents: i64, on_hand: i64) -> String {
        let admin = self.admin_token().await;
        let (status, product) = self
            .post(
                self.url(Component::Products, "/v1/products"),
                Some(&admin),
                json!({"name": name, "status": "active", "variants": [
                    {"sku": sku, "price": {"amount": cents, "currency": "EUR"}}]}),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        let stocked = self
            .http
            .put(self.url(Component::Products, &format!("/v1/inventory/{sku}")))
            .bearer_auth(&admin)
            .json(&json!({"on_hand": on_hand, "reason": "delivery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stocked.status(), 200);
        product["id"].as_str().unwrap().to_owned()
    }

    /// Writes `yaml` to `file` in the shop's directory the way editors save (write aside,
    /// rename over); the gateway applies policy changes live.
    pub fn write_file(&self, file: &str, yaml: &str) {
        let tmp = self.options.path.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.options.path.join(file)).unwrap();
    }

    /// The policies the gateway enforces (`GET /policies` on the gateway's admin listener).
    pub async fn gateway_policies(&self) -> Value {
        let (_, body) = self
            .get(self.admin(Component::Gateway, "/policies"), None)
            .await;
        body
    }

    /// Waits until the gateway enforces generation `generation` of the policy `name`.
    pub async fn wait_for_policy(&self, name: &str, generation: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let policies = self.gateway_policies().await;
            let applied = policies["applied"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|p| p["name"] == name && p["generation"] == generation)
            });
            if applied {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway never applied {name} generation {generation}: {policies}\n{}",
                self.log(Component::Gateway)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A component's log so far (for failure messages).
    pub fn log(&self, component: Component) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{component}.log")))
            .unwrap_or_default()
    }

    /// POSTs JSON, with a bearer token if given; returns status and body.
    pub async fn post(&self, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs JSON.
    pub async fn get(&self, url: String, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a customer with `email` and signs them in; returns the access token. Straight
    /// to auth, not through the gateway: customers are a test's setup, and the sign-up and
    /// sign-in limits examples/local ships (the `auth` RateLimitPolicy, per client address)
    /// would ration a test that needs dozens from one address.
    pub async fn customer(&self, email: &str) -> String {
        let password = "correct horse battery staple 42";
        let (status, body) = self
            .post(
                self.direct(Component::Auth, "/v1/auth/register"),
                None,
                json!({"email": email, "password": password, "name": "Ada"}),
            )
            .await;
        assert_eq!(status, 202, "register {email}: {body}");
        let (status, pair) = self
            .post(
                self.direct(Component::Auth, "/v1/auth/login"),
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login {email}: {pair}");
        pair["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs the first admin in; returns the access token.
    pub async fn admin_token(&self) -> String {
        let (status, body) = self
            .post(
                self.url(Component::Auth, "/v1/auth/login"),
                None,
                json!({"email": self.system.admin.0, "password": self.system.admin.1}),
            )
            .await;
        assert_eq!(status, 200, "admin login: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The permission violations the shop's nats-server logged so far: a component refused a
    /// subject (its NATS identity lacks something it uses), or a test's probe.
    pub fn nats_violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("data").join("nats.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }

    /// Stops the shop and removes its scratch directory. Fails the test when a component's
    /// NATS identity was refused anything (connections other than the components', such as
    /// a test's probe named `probe`, do not count).
    pub async fn stop(mut self) {
        let refused: Vec<String> = self
            .nats_violations()
            .into_iter()
            .filter(|l| !l.contains(":probe\""))
            .collect();
        self.system.stop().await;
        assert!(
            refused.is_empty(),
            "a component's NATS identity was refused what it uses (add it to \
             provision::nats_auth::permissions):\n{}",
            refused.join("\n")
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
