//! The controllers' error, with a short reason for metrics, events and conditions.

use tienda_provision::{ProvisionError, database::DatabaseError};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or did not answer.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Secret lacks a key the operator needs.
    #[error("Secret {secret} has no key {key:?}: {hint}")]
    SecretKey {
        /// The Secret.
        secret: String,
        /// The missing key.
        key: String,
        /// What to do.
        hint: &'static str,
    },
    /// PostgreSQL could not be reached with the admin Secret.
    #[error("PostgreSQL at {host}: {source}")]
    PostgresConnect {
        /// Where.
        host: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// Database provisioning failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// NATS could not be reached.
    #[error("NATS at {url}: {message}")]
    NatsConnect {
        /// Where.
        url: String,
        /// Why.
        message: String,
    },
    /// Stream or consumer provisioning failed.
    #[error(transparent)]
    Streams(#[from] ProvisionError),
    /// Deletion is waiting for something else to finish first (kube's finalizer helper keeps
    /// the finalizer only when cleanup fails, so waiting is an error that retries soon).
    #[error("waiting: {0}")]
    Waiting(String),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short CamelCase reason for metrics labels, events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::SecretKey { .. } => "SecretKeyMissing",
            Error::PostgresConnect { .. } => "PostgresUnreachable",
            Error::Database(e) => e.reason(),
            Error::NatsConnect { .. } => "NatsUnreachable",
            Error::Streams(e) => e.reason(),
            Error::Waiting(_) => "Waiting",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.reason(),
                _ => "FinalizerError",
            },
        }
    }
}

impl Error {
    /// Whether this is a wait rather than a failure (retried after a short fixed delay).
    pub fn is_waiting(&self) -> bool {
        match self {
            Error::Waiting(_) => true,
            Error::Finalizer(e) => matches!(
                e.as_ref(),
                kube::runtime::finalizer::Error::CleanupFailed(inner) | kube::runtime::finalizer::Error::ApplyFailed(inner)
                    if inner.is_waiting()
            ),
            _ => false,
        }
    }
}

/// `Result` with the controllers' error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
