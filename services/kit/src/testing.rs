//! Helpers for service tests (feature `testing`): a fresh database per test and the NATS URL,
//! both from the servers `tests/run` starts (`DATABASE_URL` is an admin connection there).

pub mod apiserver;
pub mod otlp;
pub mod rbac;

use std::net::SocketAddr;

use sqlx::{Connection, PgConnection};

use crate::{
    config::{CommonConfig, LogFormat},
    secret::Secret,
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with `tests/run`, which starts PostgreSQL and \
             nats-server (or set DATABASE_URL to an admin connection and NATS_URL yourself)"
        )
    })
}

/// The admin connection URL of the test PostgreSQL server.
pub fn admin_database_url() -> String {
    env("DATABASE_URL")
}

/// The test NATS server.
pub fn nats_url() -> String {
    env("NATS_URL")
}

/// A database created for one test and dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name, `test_<uuid>`.
    pub name: String,
    /// A URL connecting to it with the admin role.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database.
    pub async fn create() -> Self {
        let admin = admin_database_url();
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connecting to the test PostgreSQL");
        Self::collect_garbage(&mut conn).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("creating a test database");
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        Self { name, url }
    }
}

impl TestDatabase {
    /// Drops test databases left behind by earlier runs (older than an hour, judged by the
    /// UUIDv7 timestamp in their names), so a shared server does not fill up.
    async fn collect_garbage(conn: &mut PgConnection) {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
                .fetch_all(&mut *conn)
                .await
                .unwrap_or_default();
        let hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
            .saturating_sub(3_600_000);
        for name in names {
            let created_ms = name
                .strip_prefix("test_")
                .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
                .and_then(|id| id.get_timestamp())
                .map(|ts| {
                    let (secs, nanos) = ts.to_unix();
                    secs * 1000 + u64::from(nanos) / 1_000_000
                });
            if created_ms.is_some_and(|ms| ms < hour_ago) {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut *conn)
                .await;
            }
        }
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a detached thread. Not joined: joining would block the test's
    /// runtime while PostgreSQL terminates that runtime's own connections (seen to stall a
    /// minute). Anything a killed process leaves behind is collected by a later `create`.
    fn drop(&mut self) {
        let admin = admin_database_url();
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        });
    }
}

/// `postgres://u@h:p/admin_db?x` → the same with `database` as the path.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// Configuration for a test instance: port 0 on loopback, the given database, the test NATS,
/// pretty logs, a short drain deadline.
pub fn config(database_url: Option<&str>) -> CommonConfig {
    CommonConfig {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database_url.map(|u| Secret::new(u.to_owned())),
        database_max_connections: 5,
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        nats_creds_file: None,
        instance: None,
        log_format: LogFormat::Pretty,
        log_filter: "warn".into(),
        shutdown_timeout_seconds: 5,
        max_body_bytes: 64 * 1024,
        header_read_timeout_seconds: 10,
        max_header_bytes: 32 * 1024,
        max_headers: 100,
        trusted_proxies: crate::net::DEFAULT_TRUSTED_PROXIES.into(),
    }
}

/// A private nats-server (JetStream on) for tests that stop and restart NATS. The binary is
/// `$NATS_SERVER` (exported by `tests/run`) or `nats-server` on the PATH.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: std::path::PathBuf,
    sync_always: bool,
    child: Option<std::process::Child>,
}

impl NatsServer {
    /// Starts a server on a free loopback port with a fresh store directory.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`Self::start`]; `sync_always` fsyncs every write, as the chart configures NATS
    /// in production (benchmarks measure both).
    pub fn start_with(sync_always: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("tienda-nats-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("creating the NATS store directory");
        let mut server = Self {
            port,
            dir,
            sync_always,
            child: None,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data stays for [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it accepts.
    pub fn restart(&mut self) {
        self.stop();
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let config = self.dir.join("nats.conf");
        let sync = if self.sync_always {
            "sync_interval: always"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  {sync}\n}}\n",
                self.port,
                self.dir.join("data")
            ),
        )
        .expect("writing nats.conf");
        let child = std::process::Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {binary}: {e} (run the tests with tests/run, which installs it)")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stand-in for auth in tests of other components: a real Ed25519 key, its JWKS served over
/// real HTTP, and tokens signed with it (the access-token profile auth issues).
pub struct TokenIssuer {
    /// Where the JWKS is served.
    pub jwks_url: String,
    /// The `kid` of the signing key.
    pub kid: String,
    pkcs8: Vec<u8>,
    /// Public keys served (tests add rotated keys).
    pub jwks: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
    /// How many times the JWKS was fetched.
    pub fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

/// The issuer test tokens carry.
pub const ISSUER: &str = "https://auth.tienda.test";
/// The audience test tokens carry.
pub const AUDIENCE: &str = "tienda";

impl TokenIssuer {
    /// A new key and a JWKS endpoint on a loopback port.
    pub async fn start() -> Self {
        use base64::Engine as _;
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("key generation")
            .as_ref()
            .to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).expect("a valid key");
        let kid = format!("test-{}", uuid::Uuid::now_v7().simple());
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
        ]})));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (jwks.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(served.lock().expect("not poisoned").clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let jwks_url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("bound")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            jwks_url,
            kid,
            pkcs8,
            jwks,
            fetches,
        }
    }

    /// A verifier pointed at this issuer's JWKS.
    pub fn verifier(&self) -> crate::jwt::Verifier {
        crate::jwt::Verifier::new(crate::jwt::VerifierConfig {
            jwks_url: self.jwks_url.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            min_refresh_interval: std::time::Duration::from_secs(30),
            leeway_seconds: 0,
        })
    }

    /// Signs `claims` (a JSON object) with this issuer's key and the given header fields.
    pub fn sign(&self, claims: &serde_json::Value, kid: Option<&str>, typ: Option<&str>) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        header.typ = typ.map(str::to_owned);
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8);
        jsonwebtoken::encode(&header, claims, &key).expect("signing")
    }

    /// Claims of a valid access token for `sub` with `roles`, valid for 15 minutes.
    pub fn claims(&self, sub: &str, roles: &[&str]) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 900, "nbf": now - 5, "iat": now - 5,
            "jti": uuid::Uuid::now_v7().to_string(), "roles": roles, "scope": ""
        })
    }

    /// A valid access token.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.sign(&self.claims(sub, roles), Some(&self.kid), Some("at+jwt"))
    }
}

/// Checks what a client or fuzzer of `/openapi.json` relies on and returns the document's
/// operations as `"METHOD /path"`: every `$ref` resolves, every security requirement names a
/// defined scheme, every path parameter is declared, and every operation answers something.
pub fn check_openapi(doc: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document"
    );
    let mut found = Vec::new();
    refs(doc, &mut found);
    for r in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: only local references"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    let schemes = &doc["components"]["securitySchemes"];
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            operations.push(format!("{} {path}", method.to_uppercase()));
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().expect("requirement").keys() {
                    assert!(
                        schemes.get(name).is_some(),
                        "{method} {path}: security scheme {name:?} is not defined"
                    );
                }
            }
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == name);
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} is not declared"
                );
            }
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
        }
    }
    operations.sort();
    operations
}

/// Provisions the whole shop's topology (every stream and durable consumer, as `tienda up`
/// does) on `jetstream`; panics naming what could not be provisioned.
pub async fn provision_topology(jetstream: &async_nats::jetstream::Context) {
    for item in tienda_provision::topology::provision_all(jetstream).await {
        item.result
            .unwrap_or_else(|e| panic!("provisioning {}: {e}", item.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_pointed_at_another_database() {
        assert_eq!(
            with_database("postgres://a@h:1/postgres", "x"),
            "postgres://a@h:1/x"
        );
        assert_eq!(with_database("postgres://a@h:1", "x"), "postgres://a@h:1/x");
        assert_eq!(
            with_database("postgres://a:b@h/postgres?sslmode=disable", "x"),
            "postgres://a:b@h/x?sslmode=disable"
        );
    }
}

/// The API key the emulator is called with (it takes any `sk_…`).
pub const STRIPE_TEST_KEY: &str = "sk_test_tienda";
/// The secret the emulator signs webhooks with after [`LocalStripe::send_webhooks_to`].
pub const STRIPE_TEST_WEBHOOK_SECRET: &str = "whsec_tienda_test";
/// A card Stripe's test mode (and the emulator) asks to authenticate with 3-D Secure.
pub const STRIPE_THREE_DS_CARD: &str = "4000002500003155";

/// localstripe (PyPI; `LOCALSTRIPE_PYTHON` from tests/tools/install), a stateful Stripe
/// emulator, on a loopback port with an empty store; killed on drop.
#[derive(Debug)]
pub struct LocalStripe {
    child: Option<std::process::Child>,
    port: u16,
    http: reqwest::Client,
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LocalStripe {
    /// Starts one on a free port.
    pub fn start() -> Self {
        crate::install_crypto_provider();
        let mut emulator = Self {
            child: None,
            port: free_loopback_port(),
            http: reqwest::Client::new(),
        };
        emulator.restart();
        emulator
    }

    /// Starts the emulator (again) on its port, with an empty store.
    pub fn restart(&mut self) {
        let python = std::env::var("LOCALSTRIPE_PYTHON").expect(
            "LOCALSTRIPE_PYTHON is not set: run the tests through tests/run, or \
             `eval \"$(tests/tools/install)\"; export LOCALSTRIPE_PYTHON`",
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/testing/localstripe_server.py");
        let child = std::process::Command::new(python)
            .arg(script)
            .arg(self.port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("localstripe starts");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "localstripe did not listen on port {} within 10 s",
            self.port
        );
    }

    /// Kills the emulator (a provider outage); [`LocalStripe::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its base URL (`STRIPE_API_BASE`).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// POSTs a form to the emulator; its JSON answer (panics unless 2xx).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> serde_json::Value {
        let mut body = String::new();
        for (i, (k, v)) in form.iter().enumerate() {
            if i > 0 {
                body.push('&');
            }
            body.push_str(&format!("{k}={}", v.replace('&', "%26")));
        }
        let response = self
            .http
            .post(format!("{}{path}", self.base()))
            .basic_auth(STRIPE_TEST_KEY, Some(""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// A PaymentIntent as the emulator has it.
    pub async fn intent(&self, id: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/v1/payment_intents/{id}", self.base()))
            .bearer_auth(STRIPE_TEST_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A card PaymentMethod with `number`; its id.
    pub async fn payment_method(&self, number: &str) -> String {
        let pm = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2030"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        pm["id"].as_str().unwrap().to_owned()
    }

    /// Sends signed webhooks for every event to `url`.
    pub async fn send_webhooks_to(&self, url: &str) {
        let response = self
            .http
            .post(format!("{}/_config/webhooks/tienda", self.base()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("url={url}&secret={STRIPE_TEST_WEBHOOK_SECRET}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// The customer's side of 3-D Secure, as Stripe.js does it.
    pub async fn authenticate(&self, intent: &str, client_secret: &str, success: bool) {
        self.post(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[
                ("client_secret", client_secret),
                ("success", if success { "true" } else { "false" }),
            ],
        )
        .await;
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        self.stop();
    }
}

/// aiosmtpd (PyPI; `AIOSMTPD_PYTHON` from tests/tools/install), a real SMTP server, on a free
/// loopback port, storing every message it accepts in a Maildir the test reads back; killed
/// on drop.
#[derive(Debug)]
pub struct MailServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl MailServer {
    /// Starts it and waits until it listens.
    pub fn start() -> Self {
        use std::{
            net::{Ipv4Addr, TcpListener, TcpStream},
            process::{Command, Stdio},
            time::Duration,
        };
        let python = std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| {
            panic!(
                "AIOSMTPD_PYTHON is not set: run the tests with tests/run, or run \
                 tests/tools/install and export the AIOSMTPD_PYTHON it prints"
            )
        });
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("a free port")
            .local_addr()
            .expect("a bound address")
            .port();
        let dir = std::env::temp_dir().join(format!("tienda-smtp-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let log = std::fs::File::create(dir.join("aiosmtpd.log")).expect("a log file");
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("maildir"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} -m aiosmtpd: {e}"));
        let mut server = Self { child, port, dir };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait().expect("aiosmtpd's status") {
                panic!("aiosmtpd exited with {status}:\n{}", server.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not listen on {address}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// What aiosmtpd printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("aiosmtpd.log")).unwrap_or_default()
    }

    /// `smtp://127.0.0.1:<port>` (plain: a local catcher).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The raw messages received so far (Maildir `new/`: each file is renamed there whole),
    /// with CRLF line endings as they went over the wire (Python's mailbox writes `\n`).
    pub fn messages(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.join("maildir/new")) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .map(|raw| raw.replace("\r\n", "\n").replace('\n', "\r\n"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A top-level header's value of raw message `raw` (unfolded), if it has one.
pub fn mail_header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The decoded body of raw message `raw`'s part with `content_type` (`text/plain`,
/// `text/html`): base64, quoted-printable or as is.
pub fn mail_part(raw: &str, content_type: &str) -> String {
    use base64::Engine;
    let start = raw
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in\n{raw}"));
    let part = &raw[start..];
    let (head, rest) = part.split_once("\r\n\r\n").expect("a part's head and body");
    let body = &rest[..rest.find("\r\n--").unwrap_or(rest.len())];
    let encoding = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
        .unwrap_or("7bit");
    match encoding {
        "base64" => {
            let joined: String = body.split("\r\n").collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(joined)
                    .expect("base64"),
            )
            .expect("UTF-8")
        }
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let bytes = joined.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' && i + 2 < bytes.len() + 1 {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("UTF-8").replace("\r\n", "\n")
        }
        _ => body.replace("\r\n", "\n"),
    }
}
