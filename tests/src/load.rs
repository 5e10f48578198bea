//! Open-loop load: requests at a fixed rate whatever the answers do, each timed from when it
//! was due (so a stall counts against every request it delays — no coordinated omission);
//! closed-loop load: a fixed number of connections each sending its next request as soon as
//! the last is answered (the maximum throughput); and what each process spent: CPU seconds from
//! `/proc/<pid>/stat`, peak RSS from `/proc/<pid>/status`.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: reqwest::Method,
    /// URL.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// JSON body.
    pub body: Option<serde_json::Value>,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The scenario.
    pub name: String,
    /// Requests per second asked for (0 for closed-loop load: as fast as answered).
    pub target_rps: u64,
    /// Requests per second answered.
    pub achieved_rps: f64,
    /// Requests sent.
    pub requests: usize,
    /// Answers that were not 2xx, or no answer.
    pub errors: usize,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 95th.
    pub p95_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// CPU milliseconds per request of each process, by component.
    pub cpu_ms_per_request: BTreeMap<String, f64>,
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

/// CPU seconds used by every live process whose command name is `comm` (`postgres`, whose
/// backends are one process per connection; `nats-server`). A process that exited meanwhile
/// takes its share with it.
pub fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_seconds)
        .sum()
}

/// The machine's busy and total CPU time so far, in clock ticks (`/proc/stat`); the busy
/// share between two readings is how loaded every core was.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resident memory now, in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Sends `requests` (cycled) at `rate` per second for `length`; `pids` are the processes whose
/// CPU is attributed to the scenario.
pub async fn open_loop(
    name: &str,
    http: &reqwest::Client,
    requests: &[Request],
    rate: u64,
    length: Duration,
    pids: &[(String, u32)],
) -> Outcome {
    let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = (length.as_secs_f64() * rate as f64) as usize;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let request = requests[i % requests.len()].clone();
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let ok = send(&http, &request).await;
            (due.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (latency, ok) = task.await.expect("request task");
        latencies.push(latency);
        errors += usize::from(!ok);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let cpu_ms_per_request = cpu_ms_per_request(pids, &cpu_before, total);
    Outcome {
        name: name.to_owned(),
        target_rps: rate,
        achieved_rps: total as f64 / elapsed,
        requests: total,
        errors,
        p50_ms: percentile(&latencies, 0.5),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        cpu_ms_per_request,
    }
}

/// Keeps `connections` requests in flight for `length`: each connection sends its next request
/// (cycling through `requests`) as soon as its last one is answered, so the rate is what the
/// server sustains. Latency is timed from each send; `pids` as in [`open_loop`].
pub async fn closed_loop(
    name: &str,
    http: &reqwest::Client,
    requests: &[Request],
    connections: usize,
    length: Duration,
    pids: &[(String, u32)],
) -> Outcome {
    let cpu_before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let connections = connections.max(1);
    let requests: Arc<[Request]> = requests.into();
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let http = http.clone();
        let requests = Arc::clone(&requests);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = connection;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = send(&http, &requests[i % requests.len()]).await;
                latencies.push(sent.elapsed());
                errors += usize::from(!ok);
                i += connections;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut own, own_errors) = task.await.expect("connection task");
        latencies.append(&mut own);
        errors += own_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = latencies.len();
    latencies.sort();
    let cpu_ms_per_request = cpu_ms_per_request(pids, &cpu_before, total);
    Outcome {
        name: name.to_owned(),
        target_rps: 0,
        achieved_rps: total as f64 / elapsed,
        requests: total,
        errors,
        p50_ms: percentile(&latencies, 0.5),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        cpu_ms_per_request,
    }
}

/// Sends one request and reads its body to the end; true if it was answered 2xx.
async fn send(http: &reqwest::Client, request: &Request) -> bool {
    let mut builder = http.request(request.method.clone(), &request.url);
    if let Some(token) = &request.token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    match builder.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// CPU milliseconds per request each of `pids` used since `before` (their CPU seconds then).
pub fn cpu_ms_per_request(
    pids: &[(String, u32)],
    before: &[f64],
    requests: usize,
) -> BTreeMap<String, f64> {
    pids.iter()
        .zip(before)
        .map(|((component, pid), before)| {
            let used = cpu_seconds(*pid) - before;
            (component.clone(), used * 1000.0 / requests.max(1) as f64)
        })
        .collect()
}

/// The value after `--name` on the command line, or `default` (the benches' flags).
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// The CPU's model name and the cores this process may use (for the reports' first line).
pub fn machine() -> (String, usize) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    (model, cores)
}
