//! Runs one service binary as a child process and keeps it running: restarts it with backoff
//! when it exits, prefixes its log lines, and stops it with SIGTERM (SIGKILL after a grace
//! period) — what a Deployment's kubelet does, on one machine.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tienda_kit::resilience::Backoff;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::Notify,
};

/// Where children's log lines go.
#[derive(Debug, Clone)]
pub enum Logs {
    /// To our stdout, each line prefixed with the component's name (coloured on a terminal).
    Terminal,
    /// Appended to `<dir>/<component>.log` (tests: the output stays readable).
    Files(PathBuf),
}

/// How to run one component.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The component's name (log prefix).
    pub name: String,
    /// The binary.
    pub binary: PathBuf,
    /// Its environment (added to a clean one holding only PATH and HOME).
    pub env: BTreeMap<String, String>,
    /// Where its logs go.
    pub logs: Logs,
    /// The ANSI colour of its prefix.
    pub colour: u8,
}

/// A supervised process.
#[derive(Debug, Clone)]
pub struct Supervised {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: ProcessSpec,
    pid: AtomicU32,
    restarts: AtomicU64,
    stopping: AtomicBool,
    stopped: Notify,
    exited: Notify,
}

impl Supervised {
    /// Starts the process and its supervision loop.
    pub fn start(spec: ProcessSpec) -> Self {
        let supervised = Self {
            inner: Arc::new(Inner {
                spec,
                pid: AtomicU32::new(0),
                restarts: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                stopped: Notify::new(),
                exited: Notify::new(),
            }),
        };
        tokio::spawn(supervise(supervised.inner.clone()));
        supervised
    }

    /// The current process id (0 between runs).
    pub fn pid(&self) -> u32 {
        self.inner.pid.load(Ordering::SeqCst)
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::SeqCst)
    }

    /// Kills the current process at once (SIGKILL), as a crash would; the supervisor
    /// restarts it.
    pub fn kill(&self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGKILL);
    }

    /// Stops it for good: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let exited = self.inner.stopped.notified();
        let pid = self.pid();
        if pid == 0 {
            // Between runs: the loop sees `stopping` and ends.
            self.inner.exited.notify_waiters();
            let _ = tokio::time::timeout(grace, exited).await;
            return;
        }
        signal(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, exited).await.is_err() {
            eprintln!(
                "tienda: {} did not stop within {grace:?}; killing it",
                self.inner.spec.name
            );
            signal(self.pid(), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if pid != 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

/// Restarts after quick exits: ceilings from 1 s doubling to 30 s, full jitter, at least
/// 250 ms (a binary that dies at once must not spin).
const RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    .with_floor(Duration::from_millis(250));

/// The restart delay after `failures` quick exits in a row.
pub fn restart_delay(failures: u32) -> Duration {
    RESTART.delay(failures + 1)
}

async fn supervise(inner: Arc<Inner>) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let mut command = Command::new(&inner.spec.binary);
        command
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| matches!(k.as_str(), "PATH" | "HOME" | "TZ")))
            .envs(&inner.spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "tienda: cannot start {} ({}): {e}",
                    inner.spec.name,
                    inner.spec.binary.display()
                );
                inner.stopped.notify_waiters();
                return;
            }
        };
        inner.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let out = tokio::spawn(forward(
            child.stdout.take().expect("piped"),
            inner.spec.clone(),
        ));
        let err = tokio::spawn(forward(
            child.stderr.take().expect("piped"),
            inner.spec.clone(),
        ));
        let status = child.wait().await;
        inner.pid.store(0, Ordering::SeqCst);
        let _ = out.await;
        let _ = err.await;
        if inner.stopping.load(Ordering::SeqCst) {
            inner.stopped.notify_waiters();
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        let delay = restart_delay(failures);
        failures += 1;
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        eprintln!(
            "tienda: {} exited ({status}); restarting in {:.1} s",
            inner.spec.name,
            delay.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.exited.notified() => {}
        }
        if inner.stopping.load(Ordering::SeqCst) {
            inner.stopped.notify_waiters();
            return;
        }
        inner.restarts.fetch_add(1, Ordering::SeqCst);
    }
}

async fn forward(stream: impl AsyncRead + Unpin, spec: ProcessSpec) {
    let mut lines = BufReader::new(stream).lines();
    let mut file = match &spec.logs {
        Logs::Files(dir) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", spec.name)))
            .ok(),
        Logs::Terminal => None,
    };
    let colour = std::env::var_os("NO_COLOR").is_none();
    while let Ok(Some(line)) = lines.next_line().await {
        match &mut file {
            Some(file) => {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
            }
            None if colour => println!("\x1b[{}m{:<13}│\x1b[0m {line}", spec.colour, spec.name),
            None => println!("{:<13}│ {line}", spec.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_to_thirty_seconds() {
        let ceilings: Vec<u64> = (1..=8).map(|n| RESTART.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
        for failures in 0..10 {
            let d = restart_delay(failures);
            assert!(
                d >= Duration::from_millis(250) && d <= RESTART.ceiling(failures + 1),
                "{failures}: {d:?}"
            );
        }
    }
}
