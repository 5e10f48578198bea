//! Upstreams the tests control and a gateway in front of them.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
};
use clap::Parser;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use tienda_gateway::{Application, config::Config};
use tienda_kit::testing::TokenIssuer;

/// What an upstream saw.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// How a controlled upstream answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Status to answer with (0: 200 with the echo).
    pub status: u16,
    /// Delay before answering.
    pub delay_ms: u64,
    /// `/readyz` answers 503 (the endpoint fails its health checks).
    pub unready: bool,
}

/// An upstream HTTP server whose answers the test sets.
#[derive(Clone)]
pub struct Upstream {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// Requests it received.
    pub hits: Arc<AtomicUsize>,
    /// How it answers now.
    pub mode: Arc<Mutex<Mode>>,
    /// What it received.
    pub seen: Seen,
}

impl Upstream {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Sets how it answers.
    pub fn set(&self, status: u16, delay_ms: u64) {
        let mut mode = self.mode.lock().unwrap();
        mode.status = status;
        mode.delay_ms = delay_ms;
    }

    /// Makes `/readyz` fail (or pass again).
    pub fn set_unready(&self, unready: bool) {
        self.mode.lock().unwrap().unready = unready;
    }
}

#[derive(Clone)]
struct UpstreamState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    seen: Seen,
}

async fn echo(
    State(state): State<UpstreamState>,
    uri: axum::http::Uri,
    method: axum::http::Method,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Health checks are not traffic.
    if uri.path() == "/readyz" {
        let unready = state.mode.lock().unwrap().unready;
        return if unready {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
        .into_response();
    }
    // Counted as it streams in, never held: bodies of any size are measured.
    let mut body_len = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => body_len += chunk.len(),
            // The body broke off: the request never arrived whole.
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *state.mode.lock().unwrap();
    if mode.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mode.delay_ms)).await;
    }
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let record = json!({"upstream": state.name, "method": method.as_str(), "uri": uri.to_string(),
                        "headers": headers, "body_len": body_len, "version": format!("{version:?}")});
    state.seen.lock().unwrap().push(record.clone());
    let status = StatusCode::from_u16(mode.status).unwrap_or(StatusCode::OK);
    (status, Json(record)).into_response()
}

/// An upstream that answers with what it received, as `mode` says.
pub async fn upstream(name: &'static str, seen: Seen) -> Upstream {
    let state = UpstreamState {
        name,
        hits: Arc::default(),
        mode: Arc::default(),
        seen,
    };
    let app = Router::new().fallback(any(echo)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream {
        url: format!("http://{addr}"),
        hits: state.hits,
        mode: state.mode,
        seen: state.seen,
    }
}

/// A running gateway.
pub struct Gateway {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The admin listener, `http://127.0.0.1:port`.
    pub admin: String,
    /// A client.
    pub http: reqwest::Client,
    /// Issues tokens the gateway accepts.
    pub issuer: TokenIssuer,
    /// The policy directory it watches.
    pub policy_dir: PathBuf,
}

impl Gateway {
    /// Starts a gateway over `upstreams` (the `GATEWAY_UPSTREAMS` table) with `policies`
    /// (YAML) in a watched directory, and `extra` flags.
    pub async fn start(upstreams: &str, policies: &str, extra: &[&str]) -> Self {
        tienda_kit::install_crypto_provider();
        let issuer = TokenIssuer::start().await;
        let policy_dir = std::env::temp_dir().join(format!("tienda-gw-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&policy_dir).unwrap();
        let mut gateway = Self {
            base: String::new(),
            admin: String::new(),
            http: reqwest::Client::new(),
            issuer,
            policy_dir,
        };
        gateway.write_policies(policies);
        let mut args = vec![
            "tienda-gateway".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            "--log-format=pretty".into(),
            "--log-filter=warn".into(),
            format!("--upstreams={upstreams}"),
            format!("--auth-jwks-url={}", gateway.issuer.jwks_url),
            format!("--auth-issuer={}", tienda_kit::testing::ISSUER),
            format!("--auth-audience={}", tienda_kit::testing::AUDIENCE),
            format!("--policy-path={}", gateway.policy_dir.display()),
            "--policy-poll-ms=50".into(),
            "--shop=local".into(),
        ];
        // A flag in `extra` replaces the default one.
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        args.retain(|a| {
            !extra
                .iter()
                .any(|e| e.starts_with("--") && flag(e) == flag(a))
        });
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let app = Application::build(Config::parse_from(args))
            .await
            .expect("gateway builds");
        gateway.base = format!("http://127.0.0.1:{}", app.port());
        gateway.admin = format!("http://127.0.0.1:{}", app.admin_port());
        tokio::spawn(app.run_until_stopped());
        gateway
    }

    /// Replaces the policy file the way editors do: write aside, then rename over.
    pub fn write_policies(&self, yaml: &str) {
        let tmp = self.policy_dir.join(".policies.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.policy_dir.join("policies.yaml")).unwrap();
    }

    /// `GET path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    /// `POST path` with `headers` and a body of `len` bytes sent in 64 KiB chunks with no
    /// declared length (`Transfer-Encoding: chunked`): the status and the answer's body, or
    /// status 0 and the error when the exchange broke.
    pub async fn post_streamed(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        len: usize,
    ) -> (u16, String) {
        const CHUNK: usize = 64 * 1024;
        let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
            let n = CHUNK.min(len - i * CHUNK);
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; n])))
        });
        let body = StreamBody::new(futures::stream::iter(chunks));
        let mut request = hyper::Request::post(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        match client.request(request.body(body).unwrap()).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.into_body().collect().await;
                let text = body.map_or_else(
                    |e| e.to_string(),
                    |b| String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                );
                (status, text)
            }
            Err(e) => (0, format!("{e:?}")),
        }
    }

    /// The status of `GET path`.
    pub async fn status(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        self.get(path, headers).await.status().as_u16()
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }

    /// `GET /policies` (admin listener).
    pub async fn policies(&self) -> Value {
        self.admin_get("/policies").await.json().await.unwrap()
    }

    /// The generation of a policy in force, if it is.
    pub async fn generation(&self, name: &str) -> Option<i64> {
        self.policies().await["applied"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
            .and_then(|a| a["generation"].as_i64())
    }

    /// `/metrics` text (admin listener).
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text().await.unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.policy_dir);
    }
}

/// A RateLimitPolicy with one rule on `/v1/products` (flow-style YAML for `rule`).
pub fn rate_limit(name: &str, rule: &str) -> String {
    format!(
        "apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {{kind: Service, name: products}}
  rules:
    - {rule}
---
"
    )
}

/// A CircuitPolicy for `service` with `spec` fields (YAML lines indented by two).
pub fn circuit(name: &str, service: &str, spec: &str) -> String {
    format!(
        "apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {{name: {name}}}
spec:
  targetRef: {{kind: Service, name: {service}}}
{spec}
---
"
    )
}

/// The routing suite's setup: auth, two products endpoints, payments down.
pub struct Setup {
    pub base: String,
    pub http: reqwest::Client,
    pub seen: Seen,
    pub gateway: Gateway,
}

/// Starts auth, products ×2 and a payments address nothing listens on, behind a gateway.
pub async fn setup() -> Setup {
    let seen = Seen::default();
    let auth = upstream("auth", seen.clone()).await;
    let p1 = upstream("products-1", seen.clone()).await;
    let p2 = upstream("products-2", seen.clone()).await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = Gateway::start(
        &format!(
            "auth={},products={}|{},payments=http://{down}",
            auth.url, p1.url, p2.url
        ),
        "",
        &[],
    )
    .await;
    Setup {
        base: gateway.base.clone(),
        http: gateway.http.clone(),
        seen,
        gateway,
    }
}
