//! The operator at scale: `BENCH_SHOPS` Shops (default 1,000) against the in-memory API server
//! (`tienda_kit::testing::apiserver`, enforcing the chart's RBAC), the real PostgreSQL and a
//! private nats-server with one account per Shop. `tienda run` runs as its own process (a
//! kubeconfig points it at the in-memory server), so its memory is its own.
//!
//!     tests/bench operator
//!
//! It waits for every Shop to be Ready (a task plays the Deployment controller), then stays
//! idle for `BENCH_IDLE_SECONDS` (default 360: longer than the 5-minute resync plus its
//! jitter, so every object is reconciled again inside the window) and reports, for the idle
//! window: API requests/s (by verb and resource), PostgreSQL logins/s (`pg_stat_database`
//! sessions), NATS messages/s from the operator (nats-server's `in_msgs`), and the operator's
//! resident memory (peak and at the end). `BENCH_COMPONENTS` (default `gateway,auth`) is each
//! Shop's component list: every component with a database costs a real database (about 7 MB
//! on disk each), so the default keeps 1,000 Shops to 1,000 databases. The databases and
//! roles are dropped at the end. A benchmark, not a test: nothing here asserts.
//!
//! `BENCH_HEAPTRACK=<file>` runs the operator under `heaptrack -o <file>` to see what its
//! memory is made of (`heaptrack_print <file>.zst`); the memory numbers are then heaptrack's
//! wrapper's, not the operator's.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tienda_kit::testing::{apiserver::ApiServer, rbac::Rules};

const NS: &str = "bench";

/// `tienda <args>`, under heaptrack when `BENCH_HEAPTRACK` names its output.
fn operator_command(args: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_tienda");
    match std::env::var("BENCH_HEAPTRACK") {
        Ok(output) if !output.is_empty() => {
            let mut command = Command::new("heaptrack");
            command.args(["-o", &output, binary]).args(args);
            command
        }
        _ => {
            let mut command = Command::new(binary);
            command.args(args);
            command
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // A process group of its own (the operator, under heaptrack a wrapper and the
        // operator) is asked to stop first, so heaptrack writes its whole trace.
        let group = format!("-{}", self.0.id());
        if Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            for _ in 0..100 {
                if self.0.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server with JetStream, one account per Shop (`s<i>`/`p<i>`) and monitoring.
fn nats_with_accounts(shops: usize, dir: &std::path::Path) -> (Process, String, String) {
    let binary = tienda_local::tools::find_nats_server()
        .expect("nats-server ≥ 2.10 ($NATS_SERVER, set by tests/bench)");
    let port = tienda_local::infra::free_port().unwrap();
    let monitor = tienda_local::infra::free_port().unwrap();
    let accounts: String = (0..shops)
        .map(|i| {
            format!("  S{i}: {{ jetstream: enabled, users: [{{user: \"s{i}\", password: \"p{i}\"}}] }}\n")
        })
        .collect();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
         jetstream {{ store_dir: \"{}\" }}\naccounts {{\n{accounts}}}\n",
        dir.join("js").display()
    );
    let file = dir.join("nats.conf");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (
        Process(child),
        format!("nats://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{monitor}"),
    )
}

/// Resident memory of `pid` in KiB: (now, peak).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn sessions(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let total: Option<i64> =
        sqlx::query_scalar("SELECT sum(sessions)::bigint FROM pg_stat_database")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    total.unwrap_or(0)
}

async fn nats_in_msgs(monitor: &str) -> u64 {
    let varz: serde_json::Value = reqwest::get(format!("{monitor}/varz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    varz["in_msgs"].as_u64().unwrap_or(0)
}

fn ready_shops(server: &ApiServer) -> usize {
    server
        .list("tienda.dev/v1alpha1", "Shop")
        .iter()
        .filter(|s| {
            s["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

async fn drop_bench_databases(url: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for name in &names {
        // Names read from the catalog, quoted as identifiers.
        let sql = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "\"\"")
        );
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bench\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for role in &roles {
        let sql = format!("DROP ROLE IF EXISTS \"{}\"", role.replace('"', "\"\""));
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
    println!(
        "dropped {} databases and {} roles",
        names.len(),
        roles.len()
    );
}

#[tokio::main]
async fn main() {
    tienda_kit::install_crypto_provider();
    let shops: usize = env_or("BENCH_SHOPS", 1000);
    let idle = Duration::from_secs(env_or("BENCH_IDLE_SECONDS", 360));
    let components: Vec<String> = env_or("BENCH_COMPONENTS", "gateway,auth".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (tests/bench sets it)");
    drop_bench_databases(&url).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let userinfo = url.split("://").nth(1).unwrap().split_once('@').unwrap().0;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));

    let dir = std::env::temp_dir().join(format!("tienda-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_nats, nats_url, monitor) = nats_with_accounts(shops, &dir);
    let rules = Rules::from_manifests(
        include_str!("../../manifests/install.yaml"),
        &["tienda", "tienda-leader"],
    );
    let server =
        Arc::new(ApiServer::with_rules(rules, "system:serviceaccount:tienda-system:tienda").await);
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    server.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pg-admin", "namespace": NS},
        "data": {"username": b64(user), "password": b64(password)}}));
    let list: Vec<serde_json::Value> = components.iter().map(|c| json!({"name": c})).collect();
    for i in 0..shops {
        server.create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("nats-{i}"), "namespace": NS},
            "data": {"username": b64(&format!("s{i}")), "password": b64(&format!("p{i}"))}}));
        server.create(json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": format!("shop{i:04}"), "namespace": NS},
            "spec": {"version": "0.1.0",
                     "postgres": {"host": options.get_host(), "port": options.get_port(),
                                  "adminSecretRef": {"name": "pg-admin"}, "sslMode": "Disable"},
                     "nats": {"url": nats_url, "credentialsSecretRef": {"name": format!("nats-{i}")}},
                     "components": list}}));
    }
    let rollouts = server.roll_out_deployments(Duration::from_millis(500));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig("tienda-system")).unwrap();
    let metrics_port = tienda_local::infra::free_port().unwrap();
    let started = Instant::now();
    let operator = Process(
        operator_command(&[
            "run",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "tienda-system")
        .env("POD_NAME", "tienda-operator-bench")
        .env("RUST_LOG", "warn,kube=error")
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("tienda (built by cargo bench)"),
    );
    let pid = operator.0.id();
    println!(
        "{shops} Shops of [{}] created; operator pid {pid} converging",
        components.join(", ")
    );
    let mut last = 0;
    loop {
        let ready = ready_shops(&server);
        if ready == shops {
            break;
        }
        if ready != last {
            println!(
                "  {ready}/{shops} Shops ready after {:.0?}",
                started.elapsed()
            );
            last = ready;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "not converged within an hour: {ready}/{shops} Shops ready"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let converged = started.elapsed();
    let converge_requests = server.total_requests();
    let services = server.list("tienda.dev/v1alpha1", "Service").len();
    println!("converged in {converged:.0?}: {services} Services, {converge_requests} API requests");

    // Idle.
    let (api_before, logins_before, nats_before) = (
        server.requests(),
        sessions(&url).await,
        nats_in_msgs(&monitor).await,
    );
    let idle_start = Instant::now();
    let mut peak_idle = 0;
    while idle_start.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak_idle = peak_idle.max(memory(pid).0);
    }
    let seconds = idle_start.elapsed().as_secs_f64();
    let api_after = server.requests();
    let logins = sessions(&url).await - logins_before - 1; // our own connection
    let nats = nats_in_msgs(&monitor).await - nats_before;
    let (rss, hwm) = memory(pid);
    let by_kind: BTreeMap<String, u64> = api_after
        .iter()
        .filter_map(|(k, v)| {
            let delta = v - api_before.get(k).copied().unwrap_or(0);
            (delta > 0).then(|| (k.clone(), delta))
        })
        .collect();
    let api: u64 = by_kind.values().sum();
    rollouts.abort();
    drop(operator);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "| Measure ({shops} Shops, {services} Services, idle {seconds:.0} s) | Value | Budget |"
    );
    println!("|---|---|---|");
    println!("| API requests/s | {:.2} | ≤ 5 |", api as f64 / seconds);
    println!(
        "| PostgreSQL logins/s | {:.3} | ≤ 1 |",
        logins as f64 / seconds
    );
    println!(
        "| NATS messages/s from the operator | {:.2} | — |",
        nats as f64 / seconds
    );
    println!(
        "| operator memory, idle peak (RSS) | {:.0} MiB | ≤ 128 MiB |",
        mib(peak_idle)
    );
    println!(
        "| operator memory, peak over the run (VmHWM) | {:.0} MiB | — |",
        mib(hwm)
    );
    println!("| time to converge | {converged:.0?} | — |");
    println!();
    println!("idle API requests by verb and resource: {by_kind:?}");
    println!(
        "{}",
        json!({"bench": "operator-scale", "shops": shops, "services": services,
               "components": components, "idle_seconds": seconds,
               "api_requests_per_s": api as f64 / seconds, "api_requests": by_kind,
               "pg_logins_per_s": logins as f64 / seconds, "nats_msgs_per_s": nats as f64 / seconds,
               "rss_idle_peak_mib": mib(peak_idle), "rss_end_mib": mib(rss), "rss_hwm_mib": mib(hwm),
               "converge_s": converged.as_secs_f64(), "converge_requests": converge_requests})
    );
    drop_bench_databases(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
}
