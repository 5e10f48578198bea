//! The proxy bench (issue 7): one product read answered straight by an upstream, through the
//! gateway with a RateLimitPolicy and a CircuitPolicy active (limits far above the load, so
//! they are evaluated on every request but never reject), and through nginx (the Debian
//! package) as a plain reverse proxy — side by side in one run, and interleaved, so machine
//! noise hits all three alike.
//!
//!     tests/bench proxy [--seconds 10] [--rate 1000] [--connections 32] [--out target/bench/proxy]
//!
//! Per target, each after a 1 s warm-up: the maximum throughput of `--connections` closed-loop
//! connections, and open-loop latency at `--rate` requests per second (timed from each
//! request's scheduled start); p50/p95/p99/max, achieved rate, errors, and CPU milliseconds per
//! request of the proxy, the upstream and this load generator. Then the overhead as ratios:
//! gateway/direct and nginx/direct throughput, the p99 the gateway adds at the fixed rate, and
//! gateway/nginx. Writes `<out>.json` and `<out>.md` and prints the Markdown.
//!
//! The upstream is this binary run again with `--upstream PORT`: axum on a one-worker tokio
//! runtime answering a fixed ~400-byte product document, in its own process so it shares no
//! runtime with the load. The gateway is `tienda-gateway` next to this binary (release build);
//! nginx runs `worker_processes auto`, one worker per core, as the gateway's runtime has one
//! worker thread per core. Load generator, proxy and upstream share the machine's cores, so
//! the ratios, not the absolute numbers, are the result. Logs: `proxy-gateway.log`,
//! `proxy-upstream.log` and `proxy-nginx/` beside `<out>`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{http::header, response::IntoResponse, routing::get};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use tienda_e2e::load::{self, Outcome, Request};

/// Where the Debian package puts nginx.
const NGINX: &str = "/usr/sbin/nginx";

/// CPU of nginx's worker processes is reported under this prefix, then added to the master's.
const NGINX_WORKER: &str = "nginx worker ";

/// The product the upstream answers with, whatever the id.
const PRODUCT: &str = r#"{"id":"0190f7c2-8a4e-7d3b-9c1a-5e6f7a8b9c0d","sku":"SKU-000042","name":"Leather Boots 42","description":"A sturdy pair of leather boots for every day, resoled by hand and waxed against the rain.","price":{"amount":12900,"currency":"EUR"},"status":"active","attributes":{"color":"brown","size":"42"},"categories":["footwear","outdoor"],"created_at":"2025-01-15T10:00:00Z","updated_at":"2025-03-02T08:30:00Z","version":3}"#;

/// The path every target is asked for.
const PRODUCT_PATH: &str = "/v1/products/0190f7c2-8a4e-7d3b-9c1a-5e6f7a8b9c0d";

/// The gateway's policies: active on the benched route, with limits it never reaches.
const POLICIES: &str = "\
apiVersion: tienda.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: bench-browse}
spec:
  targetRef: {kind: Service, name: products}
  rules:
    - name: browse
      match: {pathPrefix: /v1/products, methods: [GET]}
      clientKey: {type: ClientIP}
      algorithm: TokenBucket
      requests: 1000000
      period: 1s
      burst: 1000000
---
apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: bench-products}
spec:
  targetRef: {kind: Service, name: products}
  timeout: 2s
  retry: {attempts: 2, backoff: {base: 25ms, max: 250ms}, budgetPercent: 20}
  circuitBreaker: {consecutiveFailures: 50, window: 10s, openFor: 5s}
  bulkhead: {maxConcurrent: 1000, maxQueued: 100}
";

/// What the command line asked for.
struct Options {
    /// Length of each measured run, in seconds (default 10).
    seconds: u64,
    /// Requests per second of the open-loop runs (default 1000).
    rate: u64,
    /// Connections of the closed-loop runs (default 32).
    connections: usize,
    /// Results go to `<out>.json` and `<out>.md` (default `target/bench/proxy`).
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let upstream_port = load::arg("--upstream", "");
    if !upstream_port.is_empty() {
        let port: u16 = upstream_port.parse().context("--upstream takes a port")?;
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(upstream(port));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = Options {
        seconds: load::arg("--seconds", "10").parse().context("--seconds")?,
        rate: load::arg("--rate", "1000").parse().context("--rate")?,
        connections: load::arg("--connections", "32")
            .parse()
            .context("--connections")?,
        out: std::path::absolute(load::arg("--out", "target/bench/proxy")).context("--out")?,
    };
    // Declared before the runtime, dropped after it: the children die however `run` ends.
    let mut children = Children::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&options, &mut children))
}

/// `--upstream PORT`: the upstream server, until the bench that started it is gone.
async fn upstream(port: u16) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/v1/products/{id}", get(product))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    // A bench killed with SIGKILL cannot stop its children: leave when re-parented.
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
    axum::serve(listener, app).await.context("serving")
}

async fn product() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], PRODUCT)
}

/// One process the bench started.
struct Process {
    /// For messages.
    name: &'static str,
    child: Child,
    /// Where its output goes, named when it fails.
    log: PathBuf,
    /// SIGTERM before SIGKILL: nginx's master stops its workers on SIGTERM, while a SIGKILLed
    /// master leaves them running.
    graceful: bool,
    /// nginx's worker processes, killed too if the master had to be.
    workers: Vec<u32>,
}

/// Every process the bench started; dropping it kills them, last started first.
#[derive(Default)]
struct Children(Vec<Process>);

impl Children {
    /// Starts `command` with its stdout and stderr in `log`; returns its pid.
    fn spawn(
        &mut self,
        name: &'static str,
        mut command: Command,
        log: &Path,
        graceful: bool,
    ) -> anyhow::Result<u32> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let pid = child.id();
        self.0.push(Process {
            name,
            child,
            log: log.to_path_buf(),
            graceful,
            workers: Vec::new(),
        });
        Ok(pid)
    }

    /// Records the worker processes of the process `pid`.
    fn set_workers(&mut self, pid: u32, workers: Vec<u32>) {
        if let Some(p) = self.0.iter_mut().find(|p| p.child.id() == pid) {
            p.workers = workers;
        }
    }

    /// Fails if any process has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        for p in &mut self.0 {
            if let Some(status) = p.child.try_wait().context("checking a child process")? {
                anyhow::bail!("{} exited ({status}); its log: {}", p.name, p.log.display());
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in self.0.iter_mut().rev() {
            if p.graceful && stop_gracefully(&mut p.child) {
                continue;
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
            for worker in &p.workers {
                signal(*worker, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// SIGTERM, then up to 3 s for the process to exit; true if it did.
fn stop_gracefully(child: &mut Child) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Free loopback ports, held together while found so that no two are the same.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Polls `url` every 50 ms until it answers 2xx; fails after 30 s or when a child exits,
/// naming `log`.
async fn wait_until_ok(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
    log: &Path,
) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = http
            .get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if answered {
            return Ok(());
        }
        children.check()?;
        anyhow::ensure!(
            Instant::now() < until,
            "GET {url} did not answer 200 within 30 s; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` (through the gateway) until the answer carries the bench rule's
/// `RateLimit-Policy` header: policy files are read after the gateway is live, and measuring a
/// gateway without its policies would measure the wrong thing.
async fn wait_for_policies(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
    log: &Path,
) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let limited = http.get(url).send().await.is_ok_and(|r| {
            r.headers()
                .get("ratelimit-policy")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("\"browse\""))
        });
        if limited {
            return Ok(());
        }
        children.check()?;
        anyhow::ensure!(
            Instant::now() < until,
            "the gateway's answers to GET {url} carry no RateLimit-Policy for the bench's rule \
             after 30 s: its policies (TIENDA_POLICY_PATH) are not active; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The processes whose parent is `parent` (nginx's workers).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // After the command name (which may hold spaces): state, then the parent's pid.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
}

/// nginx as a plain reverse proxy to the upstream, everything it writes under `scratch`.
fn nginx_conf(scratch: &Path, upstream_port: u16, port: u16, as_root: bool) -> String {
    let s = scratch.display();
    // Run as root, the master would hand its workers to `nobody`; keep them as the bench's
    // user (the directive only applies when the master runs as root).
    let user = if as_root { "user root;\n" } else { "" };
    format!(
        "# Written by tienda-proxy-bench: nginx as a plain reverse proxy to the bench upstream.
{user}master_process on;
worker_processes auto;
error_log {s}/error.log warn;
pid {s}/nginx.pid;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {s}/client_body;
    proxy_temp_path {s}/proxy;
    fastcgi_temp_path {s}/fastcgi;
    uwsgi_temp_path {s}/uwsgi;
    scgi_temp_path {s}/scgi;

    upstream up {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"
    )
}

/// One way to the upstream.
struct Target {
    /// `direct`, `gateway` or `nginx`.
    name: &'static str,
    /// The product's URL through it.
    url: String,
    /// Processes whose CPU is measured, by component.
    pids: Vec<(String, u32)>,
}

/// The two measurements per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Closed loop: as many requests as `--connections` connections get answered.
    MaxThroughput,
    /// Open loop at `--rate`.
    FixedRate,
}

impl Scenario {
    fn key(self) -> &'static str {
        match self {
            Self::MaxThroughput => "max_throughput",
            Self::FixedRate => "fixed_rate",
        }
    }

    fn label(self, options: &Options) -> String {
        match self {
            Self::MaxThroughput => format!("max throughput, {} connections", options.connections),
            Self::FixedRate => format!("open loop at {} rps", options.rate),
        }
    }
}

/// One measured run.
#[derive(Debug, Serialize)]
struct Run {
    /// `direct`, `gateway` or `nginx`.
    target: &'static str,
    /// `max_throughput` or `fixed_rate`.
    scenario: &'static str,
    #[serde(flatten)]
    outcome: Outcome,
}

/// The overhead, as the docs quote it.
#[derive(Debug, Serialize)]
struct Ratios {
    /// Maximum throughput through the gateway over straight to the upstream.
    gateway_direct_throughput: f64,
    /// Maximum throughput through nginx over straight to the upstream.
    nginx_direct_throughput: f64,
    /// Maximum throughput through the gateway over through nginx.
    gateway_nginx_throughput: f64,
    /// p99 at the fixed rate through the gateway minus straight, in ms.
    gateway_added_p99_ms: f64,
    /// p99 at the fixed rate through nginx minus straight, in ms.
    nginx_added_p99_ms: f64,
    /// p99 at the fixed rate through the gateway over through nginx.
    gateway_nginx_p99: f64,
    /// The proxy's CPU per request at the fixed rate, gateway over nginx.
    gateway_nginx_cpu: f64,
}

/// Adds the CPU of nginx's workers to the master's entry.
fn fold_workers(outcome: &mut Outcome) {
    let workers: f64 = outcome
        .cpu_ms_per_request
        .iter()
        .filter(|(k, _)| k.starts_with(NGINX_WORKER))
        .map(|(_, v)| *v)
        .sum();
    outcome
        .cpu_ms_per_request
        .retain(|k, _| !k.starts_with(NGINX_WORKER));
    if let Some(nginx) = outcome.cpu_ms_per_request.get_mut("nginx") {
        *nginx += workers;
    }
}

fn find_run<'a>(runs: &'a [Run], target: &str, scenario: Scenario) -> anyhow::Result<&'a Outcome> {
    runs.iter()
        .find(|r| r.target == target && r.scenario == scenario.key())
        .map(|r| &r.outcome)
        .with_context(|| format!("no {} run of {target}", scenario.key()))
}

fn cpu(outcome: &Outcome, component: &str) -> f64 {
    outcome
        .cpu_ms_per_request
        .get(component)
        .copied()
        .unwrap_or(0.0)
}

async fn run(options: &Options, children: &mut Children) -> anyhow::Result<()> {
    let dir = options
        .out
        .parent()
        .context("--out names no directory")?
        .to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    let [upstream_port, gateway_port, nginx_port] = free_ports::<3>()?;
    let exe = std::env::current_exe().context("locating this binary")?;

    // The upstream.
    let upstream_log = dir.join("proxy-upstream.log");
    let mut command = Command::new(&exe);
    command.arg("--upstream").arg(upstream_port.to_string());
    let upstream_pid = children.spawn("upstream", command, &upstream_log, false)?;
    let direct = format!("http://127.0.0.1:{upstream_port}");
    wait_until_ok(&http, &format!("{direct}/readyz"), children, &upstream_log).await?;

    // The gateway, with its policies from a directory of its own.
    let gateway_bin = exe
        .parent()
        .context("this binary has no directory")?
        .join("tienda-gateway");
    anyhow::ensure!(
        gateway_bin.exists(),
        "{} is missing: tests/bench proxy builds it (cargo build --release -p tienda-gateway)",
        gateway_bin.display()
    );
    let policies = dir.join("proxy-policies");
    let _ = std::fs::remove_dir_all(&policies);
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("creating {}", policies.display()))?;
    std::fs::write(policies.join("bench.yaml"), POLICIES).context("writing the policies")?;
    let gateway_log = dir.join("proxy-gateway.log");
    let mut command = Command::new(gateway_bin);
    command
        .env("LISTEN_ADDR", format!("127.0.0.1:{gateway_port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("GATEWAY_UPSTREAMS", format!("products={direct}"))
        .env("TIENDA_POLICY_SOURCE", "file")
        .env("TIENDA_POLICY_PATH", policies)
        // No tokens are sent; nothing answers there.
        .env("AUTH_JWKS_URL", "http://127.0.0.1:1/.well-known/jwks.json");
    let gateway_pid = children.spawn("gateway", command, &gateway_log, false)?;
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    wait_until_ok(&http, &format!("{gateway}/livez"), children, &gateway_log).await?;
    wait_for_policies(
        &http,
        &format!("{gateway}{PRODUCT_PATH}"),
        children,
        &gateway_log,
    )
    .await?;

    // nginx.
    anyhow::ensure!(
        Path::new(NGINX).exists(),
        "nginx is not installed: tests/bench proxy installs it (apt-get install nginx-light)"
    );
    let nginx_version = Command::new(NGINX)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_default();
    let scratch = dir.join("proxy-nginx");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let conf = scratch.join("nginx.conf");
    let as_root = nix::unistd::geteuid().is_root();
    std::fs::write(
        &conf,
        nginx_conf(&scratch, upstream_port, nginx_port, as_root),
    )
    .context("writing nginx.conf")?;
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(&scratch)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(scratch.join("error.log"))
        .arg("-g")
        .arg("daemon off;");
    let nginx_log = scratch.join("stderr.log");
    let nginx_pid = children.spawn("nginx", command, &nginx_log, true)?;
    let nginx = format!("http://127.0.0.1:{nginx_port}");
    wait_until_ok(
        &http,
        &format!("{nginx}/readyz"),
        children,
        &scratch.join("error.log"),
    )
    .await?;
    let workers = children_of(nginx_pid);
    anyhow::ensure!(
        !workers.is_empty(),
        "nginx runs no worker processes; see {}",
        scratch.join("error.log").display()
    );
    children.set_workers(nginx_pid, workers.clone());

    let client = ("client".to_owned(), std::process::id());
    let upstream = ("upstream".to_owned(), upstream_pid);
    let mut nginx_pids = vec![("nginx".to_owned(), nginx_pid)];
    nginx_pids.extend(
        workers
            .iter()
            .map(|pid| (format!("{NGINX_WORKER}{pid}"), *pid)),
    );
    nginx_pids.extend([upstream.clone(), client.clone()]);
    let targets = [
        Target {
            name: "direct",
            url: format!("{direct}{PRODUCT_PATH}"),
            pids: vec![upstream.clone(), client.clone()],
        },
        Target {
            name: "gateway",
            url: format!("{gateway}{PRODUCT_PATH}"),
            pids: vec![("gateway".to_owned(), gateway_pid), upstream, client],
        },
        Target {
            name: "nginx",
            url: format!("{nginx}{PRODUCT_PATH}"),
            pids: nginx_pids,
        },
    ];
    // Every way answers the upstream's document unchanged before anything is measured.
    for target in &targets {
        let answer = http
            .get(&target.url)
            .send()
            .await
            .with_context(|| format!("{}: GET {}", target.name, target.url))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success() && body == PRODUCT,
            "{}: GET {} answered {status}: {body}",
            target.name,
            target.url
        );
    }

    // Scenario by scenario, all three targets in turn.
    let warm_up = Duration::from_secs(1);
    let length = Duration::from_secs(options.seconds);
    let mut runs = Vec::new();
    for scenario in [Scenario::MaxThroughput, Scenario::FixedRate] {
        for target in &targets {
            children.check()?;
            let name = format!("{} {}", target.name, scenario.label(options));
            let requests = [Request {
                method: Method::GET,
                url: target.url.clone(),
                token: None,
                body: None,
            }];
            let mut outcome = match scenario {
                Scenario::MaxThroughput => {
                    let c = options.connections;
                    load::closed_loop(&name, &http, &requests, c, warm_up, &target.pids).await;
                    load::closed_loop(&name, &http, &requests, c, length, &target.pids).await
                }
                Scenario::FixedRate => {
                    let r = options.rate;
                    load::open_loop(&name, &http, &requests, r, warm_up, &target.pids).await;
                    load::open_loop(&name, &http, &requests, r, length, &target.pids).await
                }
            };
            fold_workers(&mut outcome);
            eprintln!(
                "{name}: {:.0} rps, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                outcome.achieved_rps, outcome.p50_ms, outcome.p99_ms, outcome.errors
            );
            runs.push(Run {
                target: target.name,
                scenario: scenario.key(),
                outcome,
            });
        }
    }
    children.check()?;

    let (direct_max, gateway_max, nginx_max) = (
        find_run(&runs, "direct", Scenario::MaxThroughput)?,
        find_run(&runs, "gateway", Scenario::MaxThroughput)?,
        find_run(&runs, "nginx", Scenario::MaxThroughput)?,
    );
    let (direct_rate, gateway_rate, nginx_rate) = (
        find_run(&runs, "direct", Scenario::FixedRate)?,
        find_run(&runs, "gateway", Scenario::FixedRate)?,
        find_run(&runs, "nginx", Scenario::FixedRate)?,
    );
    let ratios = Ratios {
        gateway_direct_throughput: gateway_max.achieved_rps / direct_max.achieved_rps,
        nginx_direct_throughput: nginx_max.achieved_rps / direct_max.achieved_rps,
        gateway_nginx_throughput: gateway_max.achieved_rps / nginx_max.achieved_rps,
        gateway_added_p99_ms: gateway_rate.p99_ms - direct_rate.p99_ms,
        nginx_added_p99_ms: nginx_rate.p99_ms - direct_rate.p99_ms,
        gateway_nginx_p99: gateway_rate.p99_ms / nginx_rate.p99_ms,
        gateway_nginx_cpu: cpu(gateway_rate, "gateway") / cpu(nginx_rate, "nginx"),
    };

    let (machine, cores) = load::machine();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}, {cores} cores. {} s per run after a 1 s warm-up, targets interleaved; \
         `GET /v1/products/{{id}}` answered by a one-thread axum upstream with a {}-byte document. \
         Gateway: a RateLimitPolicy and a CircuitPolicy active on the route. nginx {nginx_version}: \
         plain reverse proxy, keepalive to the upstream, {} workers (`worker_processes auto`).\n",
        options.seconds,
        PRODUCT.len(),
        workers.len()
    );
    let _ = writeln!(
        md,
        "| target | scenario | target rps | achieved rps | p50 ms | p95 ms | p99 ms | max ms | errors | CPU ms/req |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &runs {
        let o = &r.outcome;
        let cpus: Vec<String> = o
            .cpu_ms_per_request
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        let (scenario, target_rps) = match r.scenario {
            "max_throughput" => (
                format!("closed loop, {} connections", options.connections),
                "—".to_owned(),
            ),
            _ => ("open loop".to_owned(), o.target_rps.to_string()),
        };
        let _ = writeln!(
            md,
            "| {} | {scenario} | {target_rps} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.target,
            o.achieved_rps,
            o.p50_ms,
            o.p95_ms,
            o.p99_ms,
            o.max_ms,
            o.errors,
            cpus.join(", ")
        );
    }
    let _ = writeln!(md, "\nOverhead:\n");
    let _ = writeln!(
        md,
        "- Max throughput ({} connections): gateway/direct **{:.2}**, nginx/direct **{:.2}**; \
         gateway/nginx **{:.2}**.",
        options.connections,
        ratios.gateway_direct_throughput,
        ratios.nginx_direct_throughput,
        ratios.gateway_nginx_throughput
    );
    let _ = writeln!(
        md,
        "- At {} rps: the gateway adds **{:.2} ms** p99 ({:.2} ms against {:.2} ms direct), nginx \
         adds {:.2} ms ({:.2} ms); gateway/nginx p99 **{:.2}**.",
        options.rate,
        ratios.gateway_added_p99_ms,
        gateway_rate.p99_ms,
        direct_rate.p99_ms,
        ratios.nginx_added_p99_ms,
        nginx_rate.p99_ms,
        ratios.gateway_nginx_p99
    );
    let _ = writeln!(
        md,
        "- Proxy CPU per request at {} rps: gateway {:.3} ms, nginx {:.3} ms (gateway/nginx {:.2}).",
        options.rate,
        cpu(gateway_rate, "gateway"),
        cpu(nginx_rate, "nginx"),
        ratios.gateway_nginx_cpu
    );

    let result = json!({
        "machine": {"cpu": machine, "cores": cores},
        "seconds": options.seconds,
        "rate": options.rate,
        "connections": options.connections,
        "product_bytes": PRODUCT.len(),
        "nginx": {"version": nginx_version, "workers": workers.len()},
        "runs": runs,
        "ratios": ratios,
    });
    let json_path = options.out.with_extension("json");
    let md_path = options.out.with_extension("md");
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}
