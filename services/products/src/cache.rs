//! The read cache of `GET /v1/products/{id}`: serialized bodies with their ETag, bounded in size
//! and age. A replica drops an entry when it changes the product itself, and every replica
//! drops it when the `product.*` event arrives from JetStream — an ordered consumer per
//! replica, so each sees every event. If that feed breaks, the whole cache is dropped before it
//! resumes (an event may have been missed), and the TTL bounds staleness should all else fail.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use moka::future::Cache;
use tienda_kit::{Shutdown, resilience::Backoff};
use uuid::Uuid;

/// A cached product response.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The JSON body.
    pub body: Bytes,
    /// Its ETag (quoted).
    pub etag: String,
    /// A draft: shown to admins only.
    pub draft: bool,
}

/// The cache.
#[derive(Clone)]
pub struct ProductCache {
    entries: Cache<Uuid, Arc<Entry>>,
    /// Facet counts of searches; any product change may change them all.
    pub facets: crate::search::FacetCache,
}

impl std::fmt::Debug for ProductCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl ProductCache {
    /// At most `capacity` products, each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            facets: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.min(Duration::from_secs(60)))
                .build(),
        }
    }

    /// The cached response for `id`.
    pub async fn get(&self, id: Uuid) -> Option<Arc<Entry>> {
        self.entries.get(&id).await
    }

    /// Caches a response.
    pub async fn put(&self, id: Uuid, entry: Entry) {
        self.entries.insert(id, Arc::new(entry)).await;
    }

    /// Drops `id`.
    pub async fn invalidate(&self, id: Uuid) {
        self.entries.invalidate(&id).await;
        self.facets.invalidate_all();
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.facets.invalidate_all();
    }

    /// Follows `product.*` events on the PRODUCT stream until shutdown, dropping the entries
    /// they name.
    pub async fn follow(self, jetstream: jetstream::Context, shutdown: Shutdown) {
        let mut attempt = 0u32;
        while !shutdown.is_triggered() {
            let result = tokio::select! {
                r = self.follow_once(&jetstream) => r,
                () = shutdown.wait() => return,
            };
            // Whatever broke, events may have been missed: start clean.
            self.clear();
            attempt += 1;
            let delay =
                Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).delay(attempt);
            match result {
                Ok(()) => tracing::warn!("product event feed ended; cache cleared, resubscribing"),
                Err(err) => tracing::warn!(
                    error = %format!("{err:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "product event feed failed; cache cleared"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    async fn follow_once(&self, jetstream: &jetstream::Context) -> anyhow::Result<()> {
        let stream = jetstream.get_stream("PRODUCT").await.map_err(|e| {
            anyhow::anyhow!("stream PRODUCT: {e} (is the products service provisioned?)")
        })?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: "tienda.product.>".into(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        // Entries cached before the feed began may predate a change it will never show.
        self.clear();
        tracing::debug!("following product events");
        while let Some(message) = messages.next().await {
            let message = message?;
            let envelope: Result<tienda_events::Envelope<serde_json::Value>, _> =
                serde_json::from_slice(&message.payload);
            match envelope
                .ok()
                .and_then(|e| e.aggregate_id.parse::<Uuid>().ok())
            {
                Some(id) => self.invalidate(id).await,
                None => self.clear(),
            }
        }
        Ok(())
    }
}
