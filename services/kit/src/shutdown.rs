//! Graceful shutdown: SIGTERM or Ctrl-C starts it; in-flight work gets a deadline to finish.

use tokio_util::sync::CancellationToken;

/// A shutdown signal shared by the HTTP server and background tasks. Cloning is cheap; all
/// clones observe the same trigger.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal nobody has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown (also what SIGTERM and Ctrl-C do).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Triggers this signal on SIGTERM or Ctrl-C. Call once per process.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing the SIGTERM handler");
                tokio::select! {
                    _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = this.wait() => return,
                }
            }
            #[cfg(not(unix))]
            tokio::select! {
                _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
                _ = this.wait() => return,
            }
            this.trigger();
        });
    }
}
