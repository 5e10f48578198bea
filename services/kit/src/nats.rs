//! NATS: the connection and its JetStream context.
//!
//! The client is created even when NATS is down (it keeps reconnecting in the background):
//! services accept requests regardless, because the transactional outbox holds events until
//! NATS is back. Connection changes are logged.

use anyhow::Context;
use async_nats::{ConnectOptions, Event, connection::State, jetstream};

use crate::config::CommonConfig;

/// A NATS client and its JetStream context. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Nats {
    /// The core client (request/reply, subscriptions).
    pub client: async_nats::Client,
    /// JetStream (publish with acks, consumers). Streams and consumers are provisioned by the
    /// operator or `tienda up`, never created here.
    pub jetstream: jetstream::Context,
}

impl Nats {
    /// Connects as `name` (shown by `nats server report connections`).
    pub async fn connect(config: &CommonConfig, name: &str) -> anyhow::Result<Self> {
        let mut options = ConnectOptions::new()
            .name(name)
            // Replies (JetStream acks, pulled messages) arrive under the component's own
            // prefix, which its NATS identity alone may subscribe to (provision::nats_auth).
            .custom_inbox_prefix(format!("_INBOX_{name}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    Event::Connected => tracing::info!("NATS connected"),
                    Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                    Event::LameDuckMode => tracing::warn!("NATS server entering lame duck mode"),
                    Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer"),
                    other => tracing::info!(event = %other, "NATS event"),
                }
            });
        if let Some(path) = &config.nats_creds_file {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials from {}", path.display()))?;
        }
        let client = options
            .connect(config.nats_url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
        let jetstream = jetstream::new(client.clone());
        Ok(Self { client, jetstream })
    }

    /// The readiness report: informational, never makes the service unready.
    pub fn check(&self) -> Result<String, String> {
        match self.client.connection_state() {
            State::Connected => Ok("connected".into()),
            State::Pending => Err("connecting".into()),
            State::Disconnected => Err("disconnected; events wait in the outbox".into()),
        }
    }
}
