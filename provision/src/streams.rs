//! JetStream streams and durable pull consumers, from a `Service` spec.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, pull},
    stream,
};
use tienda_crds::service::{self as spec, ConsumerSpec, ServiceSpec, StreamSpec};
use tienda_events::dead_letter;

/// How long a dead letter is kept before JetStream drops it.
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Stream metadata naming the Shop (`<namespace>/<name>`) a stream belongs to. Two Shops on
/// one NATS account would otherwise share (and, with `reclaimPolicy: Delete`, delete) each
/// other's streams: a stream owned by one Shop is refused to another, and only the owner
/// deletes it.
pub const OWNER: &str = "tienda.dev/shop";

fn owner_of(config: &stream::Config) -> Option<&str> {
    config.metadata.get(OWNER).map(String::as_str)
}

/// `config` marked as `owner`'s, when there is an owner.
fn owned(mut config: stream::Config, owner: Option<&str>) -> stream::Config {
    if let Some(owner) = owner {
        config.metadata.insert(OWNER.into(), owner.into());
    }
    config
}

/// What provisioning did to one stream or consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed with other settings and was updated; the changed fields are listed.
    Updated(Vec<String>),
    /// It existed with the desired settings.
    Unchanged,
}

/// Why a stream or consumer could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The spec changes a setting NATS cannot change in place.
    #[error(
        "{kind} {name}: {field} cannot change from {current} to {desired}; delete and recreate it to change it"
    )]
    Immutable {
        /// `stream` or `consumer`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The field.
        field: &'static str,
        /// The server's value.
        current: String,
        /// The spec's value.
        desired: String,
    },
    /// A consumer names a stream that does not exist (yet).
    #[error(
        "consumer {consumer}: stream {stream} does not exist; the Service that owns it must be provisioned first"
    )]
    MissingStream {
        /// The consumer.
        consumer: String,
        /// The stream it reads.
        stream: String,
    },
    /// The stream belongs to another Shop on the same NATS account.
    #[error(
        "stream {stream} belongs to Shop {owner} on this NATS account; give each Shop its own \
         NATS account (spec.nats.credentialsSecretRef) or its own NATS server"
    )]
    Owned {
        /// The stream.
        stream: String,
        /// The Shop that owns it.
        owner: String,
    },
    /// NATS refused or did not answer.
    #[error("{what}: {source}")]
    Nats {
        /// What was being done.
        what: String,
        /// NATS' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ProvisionError {
    /// A short reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProvisionError::Immutable { .. } => "ImmutableFieldChanged",
            ProvisionError::MissingStream { .. } => "StreamMissing",
            ProvisionError::Owned { .. } => "StreamOwnedByAnotherShop",
            ProvisionError::Nats { .. } => "NatsError",
        }
    }

    fn nats(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ProvisionError::Nats {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// The desired stream configuration for a spec (pure).
pub fn stream_config(spec: &StreamSpec, default_replicas: i32) -> stream::Config {
    stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: match spec.retention {
            spec::Retention::Limits => stream::RetentionPolicy::Limits,
            spec::Retention::Interest => stream::RetentionPolicy::Interest,
            spec::Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
        },
        storage: match spec.storage {
            spec::Storage::File => stream::StorageType::File,
            spec::Storage::Memory => stream::StorageType::Memory,
        },
        discard: match spec.discard {
            spec::Discard::Old => stream::DiscardPolicy::Old,
            spec::Discard::New => stream::DiscardPolicy::New,
        },
        max_age: spec.max_age.as_ref().map(|d| d.get()).unwrap_or_default(),
        max_bytes: spec.max_bytes.unwrap_or(-1),
        max_messages: spec.max_msgs.unwrap_or(-1),
        num_replicas: spec.replicas.unwrap_or(default_replicas).max(1) as usize,
        duplicate_window: spec.duplicate_window.get(),
        allow_direct: true,
        // Outbox relays publish atomic batches: one disk sync per batch, not per message,
        // when NATS syncs every write (NATS ≥ 2.12).
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// The dead-letter stream's configuration (pure): file storage, kept 14 days.
pub fn dead_letter_stream_config(component: &str, replicas: i32) -> stream::Config {
    stream::Config {
        name: dead_letter::stream(component),
        subjects: vec![dead_letter::all_subjects(component)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: DEAD_LETTER_MAX_AGE,
        max_bytes: -1,
        max_messages: -1,
        num_replicas: replicas.max(1) as usize,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

/// The desired durable pull consumer configuration for a spec (pure).
pub fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.name.clone()),
        deliver_policy: match spec.deliver_policy {
            spec::DeliverPolicy::All => consumer::DeliverPolicy::All,
            spec::DeliverPolicy::New => consumer::DeliverPolicy::New,
            spec::DeliverPolicy::Last => consumer::DeliverPolicy::Last,
            spec::DeliverPolicy::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait.get(),
        max_deliver: i64::from(spec.max_deliver),
        filter_subjects: spec.filter_subjects.clone(),
        max_ack_pending: i64::from(spec.max_ack_pending),
        backoff: spec.backoff.iter().map(|d| d.get()).collect(),
        ..Default::default()
    }
}

fn changed<T: PartialEq + std::fmt::Debug>(
    out: &mut Vec<(&'static str, String, String)>,
    field: &'static str,
    current: &T,
    desired: &T,
) {
    if current != desired {
        out.push((field, format!("{current:?}"), format!("{desired:?}")));
    }
}

/// Differences between the server's stream config and the desired one, split into fields
/// NATS cannot change in place and fields it can (pure).
pub fn stream_diff(current: &stream::Config, desired: &stream::Config) -> Diff {
    let mut immutable = Vec::new();
    changed(
        &mut immutable,
        "storage",
        &current.storage,
        &desired.storage,
    );
    changed(
        &mut immutable,
        "retention",
        &current.retention,
        &desired.retention,
    );
    let mut mutable = Vec::new();
    let mut subjects = (current.subjects.clone(), desired.subjects.clone());
    subjects.0.sort();
    subjects.1.sort();
    changed(&mut mutable, "subjects", &subjects.0, &subjects.1);
    changed(&mut mutable, "discard", &current.discard, &desired.discard);
    changed(&mut mutable, "maxAge", &current.max_age, &desired.max_age);
    changed(
        &mut mutable,
        "maxBytes",
        &current.max_bytes,
        &desired.max_bytes,
    );
    changed(
        &mut mutable,
        "maxMsgs",
        &current.max_messages,
        &desired.max_messages,
    );
    changed(
        &mut mutable,
        "replicas",
        &current.num_replicas,
        &desired.num_replicas,
    );
    changed(
        &mut mutable,
        "duplicateWindow",
        &current.duplicate_window,
        &desired.duplicate_window,
    );
    changed(
        &mut mutable,
        "allowDirect",
        &current.allow_direct,
        &desired.allow_direct,
    );
    changed(
        &mut mutable,
        "allowAtomic",
        &current.allow_atomic_publish,
        &desired.allow_atomic_publish,
    );
    // An unowned stream (made before owners were recorded) is adopted by its first owner.
    if owner_of(desired).is_some() {
        changed(
            &mut mutable,
            "owner",
            &owner_of(current),
            &owner_of(desired),
        );
    }
    Diff { immutable, mutable }
}

/// Differences between the server's consumer config and the desired one (pure).
pub fn consumer_diff(current: &consumer::Config, desired: &pull::Config) -> Diff {
    let mut immutable = Vec::new();
    changed(
        &mut immutable,
        "deliverPolicy",
        &current.deliver_policy,
        &desired.deliver_policy,
    );
    changed(
        &mut immutable,
        "ackPolicy",
        &current.ack_policy,
        &desired.ack_policy,
    );
    let mut mutable = Vec::new();
    changed(
        &mut mutable,
        "ackWait",
        &current.ack_wait,
        &desired.ack_wait,
    );
    changed(
        &mut mutable,
        "maxDeliver",
        &current.max_deliver,
        &desired.max_deliver,
    );
    let mut filters = (
        current.filter_subjects.clone(),
        desired.filter_subjects.clone(),
    );
    if !current.filter_subject.is_empty() {
        filters.0.push(current.filter_subject.clone());
    }
    filters.0.sort();
    filters.1.sort();
    changed(&mut mutable, "filterSubjects", &filters.0, &filters.1);
    changed(
        &mut mutable,
        "maxAckPending",
        &current.max_ack_pending,
        &desired.max_ack_pending,
    );
    changed(&mut mutable, "backoff", &current.backoff, &desired.backoff);
    Diff { immutable, mutable }
}

/// Fields that differ: `(field, current, desired)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Fields NATS refuses to change in place.
    pub immutable: Vec<(&'static str, String, String)>,
    /// Fields an update changes.
    pub mutable: Vec<(&'static str, String, String)>,
}

fn stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn consumer_not_found(err: &jetstream::context::ConsumerInfoError) -> bool {
    use jetstream::context::ConsumerInfoErrorKind as Kind;
    match err.kind() {
        Kind::NotFound => true,
        Kind::JetStream(e) => e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

/// Creates the stream, or updates it to the desired config. Two provisioners racing (two
/// operator replicas during a handover, parallel tests) both succeed.
pub async fn ensure_stream(
    js: &jetstream::Context,
    desired: stream::Config,
) -> Result<Outcome, ProvisionError> {
    match ensure_stream_once(js, desired.clone()).await {
        Err(ProvisionError::Nats { source, .. })
            if source.to_string().contains("already in use") =>
        {
            ensure_stream_once(js, desired).await
        }
        other => other,
    }
}

async fn ensure_stream_once(
    js: &jetstream::Context,
    desired: stream::Config,
) -> Result<Outcome, ProvisionError> {
    let name = desired.name.clone();
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let current = existing
                .info()
                .await
                .map_err(|e| ProvisionError::nats(format!("reading stream {name}"), e))?
                .config
                .clone();
            if let (Some(want), Some(have)) = (owner_of(&desired), owner_of(&current))
                && want != have
            {
                return Err(ProvisionError::Owned {
                    stream: name,
                    owner: have.to_owned(),
                });
            }
            let diff = stream_diff(&current, &desired);
            if let Some((field, current, desired)) = diff.immutable.into_iter().next() {
                return Err(ProvisionError::Immutable {
                    kind: "stream",
                    name,
                    field,
                    current,
                    desired,
                });
            }
            if diff.mutable.is_empty() {
                return Ok(Outcome::Unchanged);
            }
            // Metadata the server keeps (`_nats.*`) stays as it is.
            let mut desired = desired;
            for (key, value) in &current.metadata {
                desired
                    .metadata
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
            js.update_stream(&desired)
                .await
                .map_err(|e| ProvisionError::nats(format!("updating stream {name}"), e))?;
            let fields = diff
                .mutable
                .into_iter()
                .map(|(f, _, _)| f.to_owned())
                .collect();
            tracing::info!(stream = %name, ?fields, "stream updated");
            Ok(Outcome::Updated(fields))
        }
        Err(err) if stream_not_found(&err) => {
            js.create_stream(desired)
                .await
                .map_err(|e| ProvisionError::nats(format!("creating stream {name}"), e))?;
            tracing::info!(stream = %name, "stream created");
            Ok(Outcome::Created)
        }
        Err(err) => Err(ProvisionError::nats(
            format!("looking up stream {name}"),
            err,
        )),
    }
}

/// Creates the durable consumer on `stream`, or updates it to the desired config.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    desired: pull::Config,
) -> Result<Outcome, ProvisionError> {
    let name = desired.durable_name.clone().unwrap_or_default();
    let stream = match js.get_stream(stream_name).await {
        Ok(stream) => stream,
        Err(err) if stream_not_found(&err) => {
            return Err(ProvisionError::MissingStream {
                consumer: name,
                stream: stream_name.to_owned(),
            });
        }
        Err(err) => {
            return Err(ProvisionError::nats(
                format!("looking up stream {stream_name}"),
                err,
            ));
        }
    };
    match stream.consumer_info(&name).await {
        Ok(info) => {
            let diff = consumer_diff(&info.config, &desired);
            if let Some((field, current, desired)) = diff.immutable.into_iter().next() {
                return Err(ProvisionError::Immutable {
                    kind: "consumer",
                    name,
                    field,
                    current,
                    desired,
                });
            }
            if diff.mutable.is_empty() {
                return Ok(Outcome::Unchanged);
            }
            stream.update_consumer(desired).await.map_err(|e| {
                ProvisionError::nats(format!("updating consumer {stream_name}/{name}"), e)
            })?;
            let fields = diff
                .mutable
                .into_iter()
                .map(|(f, _, _)| f.to_owned())
                .collect();
            tracing::info!(stream = %stream_name, consumer = %name, ?fields, "consumer updated");
            Ok(Outcome::Updated(fields))
        }
        Err(err) if consumer_not_found(&err) => {
            stream.create_consumer(desired).await.map_err(|e| {
                ProvisionError::nats(format!("creating consumer {stream_name}/{name}"), e)
            })?;
            tracing::info!(stream = %stream_name, consumer = %name, "consumer created");
            Ok(Outcome::Created)
        }
        Err(err) => Err(ProvisionError::nats(
            format!("looking up consumer {stream_name}/{name}"),
            err,
        )),
    }
}

/// The result for one stream or consumer of a Service.
#[derive(Debug)]
pub struct ItemReport {
    /// The stream name, or `<stream>/<consumer>`.
    pub name: String,
    /// What happened.
    pub result: Result<Outcome, ProvisionError>,
}

/// Provisions everything a Service declares: its streams, its dead-letter stream (when it
/// has consumers), then its consumers. Every item is attempted; one failure does not hide
/// the state of the others. With an `owner` (the Shop, `<namespace>/<name>`), streams are
/// marked as that Shop's, and streams or consumers on streams another Shop owns are refused.
pub async fn provision_service(
    js: &jetstream::Context,
    service: &ServiceSpec,
    default_replicas: i32,
    owner: Option<&str>,
) -> Vec<ItemReport> {
    let mut report = Vec::new();
    for stream in &service.streams {
        let result = ensure_stream(js, owned(stream_config(stream, default_replicas), owner)).await;
        report.push(ItemReport {
            name: stream.name.clone(),
            result,
        });
    }
    if !service.consumers.is_empty() {
        let component = service.component.as_str();
        let result = ensure_stream(
            js,
            owned(
                dead_letter_stream_config(component, default_replicas),
                owner,
            ),
        )
        .await;
        report.push(ItemReport {
            name: dead_letter::stream(component),
            result,
        });
    }
    for consumer in &service.consumers {
        let result = match check_owner(js, &consumer.stream, owner).await {
            Ok(()) => ensure_consumer(js, &consumer.stream, consumer_config(consumer)).await,
            Err(err) => Err(err),
        };
        report.push(ItemReport {
            name: format!("{}/{}", consumer.stream, consumer.name),
            result,
        });
    }
    report
}

/// The stream, if it exists, with the owner it records (read from the info the lookup already
/// brought back, so one request).
async fn stream_owner(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<(jetstream::stream::Stream, Option<String>)>, ProvisionError> {
    match js.get_stream(stream).await {
        Ok(found) => {
            let owner = owner_of(&found.cached_info().config).map(str::to_owned);
            Ok(Some((found, owner)))
        }
        Err(err) if stream_not_found(&err) => Ok(None),
        Err(err) => Err(ProvisionError::nats(
            format!("looking up stream {stream}"),
            err,
        )),
    }
}

/// Refuses a stream another Shop owns.
async fn check_owner(
    js: &jetstream::Context,
    stream: &str,
    owner: Option<&str>,
) -> Result<(), ProvisionError> {
    let Some(owner) = owner else {
        return Ok(());
    };
    match stream_owner(js, stream).await? {
        Some((_, Some(have))) if have != owner => Err(ProvisionError::Owned {
            stream: stream.to_owned(),
            owner: have,
        }),
        _ => Ok(()),
    }
}

/// Deletes what a Service provisioned, as far as `owner` owns it: its streams, its durable
/// consumers, and its dead-letter stream. A stream another Shop owns, or one that records no
/// owner, is kept, and so are consumers on it. Returns what was deleted.
pub async fn delete_service(
    js: &jetstream::Context,
    service: &ServiceSpec,
    owner: &str,
) -> Result<Vec<String>, ProvisionError> {
    let mut deleted = Vec::new();
    for consumer in &service.consumers {
        let Some((stream, Some(have))) = stream_owner(js, &consumer.stream).await? else {
            continue;
        };
        if have != owner {
            continue;
        }
        match stream.delete_consumer(&consumer.name).await {
            Ok(_) => deleted.push(format!("{}/{}", consumer.stream, consumer.name)),
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                return Err(ProvisionError::nats(
                    format!("deleting consumer {}/{}", consumer.stream, consumer.name),
                    e,
                ));
            }
        }
    }
    let mut streams: Vec<String> = service.streams.iter().map(|s| s.name.clone()).collect();
    if !service.consumers.is_empty() {
        streams.push(dead_letter::stream(service.component.as_str()));
    }
    for stream in streams {
        let Some((_, Some(have))) = stream_owner(js, &stream).await? else {
            continue;
        };
        if have != owner {
            continue;
        }
        match js.delete_stream(&stream).await {
            Ok(_) => deleted.push(stream),
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => {
                return Err(ProvisionError::nats(format!("deleting stream {stream}"), e));
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_spec(yaml: serde_json::Value) -> StreamSpec {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn a_stream_spec_maps_to_its_nats_config_with_defaults() {
        let config = stream_config(
            &stream_spec(serde_json::json!({"name": "ORDERS", "subjects": ["tienda.orders.>"]})),
            3,
        );
        assert_eq!(config.name, "ORDERS");
        assert_eq!(config.storage, stream::StorageType::File);
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.duplicate_window, Duration::from_secs(120));
        assert_eq!(config.max_bytes, -1);
        assert_eq!(config.max_age, Duration::ZERO);
    }

    #[test]
    fn a_storage_change_is_immutable_and_a_max_age_change_is_not() {
        let base = stream_config(
            &stream_spec(serde_json::json!({"name": "S", "subjects": ["a.>"]})),
            1,
        );
        let memory = stream_config(
            &stream_spec(
                serde_json::json!({"name": "S", "subjects": ["a.>"], "storage": "Memory", "maxAge": "1h"}),
            ),
            1,
        );
        let diff = stream_diff(&base, &memory);
        assert_eq!(diff.immutable[0].0, "storage");
        assert_eq!(diff.mutable[0].0, "maxAge");
        assert_eq!(stream_diff(&base, &base), Diff::default());
    }

    #[test]
    fn a_consumer_spec_maps_to_an_explicit_ack_durable_pull_consumer() {
        let spec: ConsumerSpec = serde_json::from_value(serde_json::json!({
            "name": "orders-payments", "stream": "PAYMENTS", "maxDeliver": 4, "backoff": ["1s", "5s"],
            "filterSubjects": ["tienda.payments.authorized"]
        }))
        .unwrap();
        let config = consumer_config(&spec);
        assert_eq!(config.durable_name.as_deref(), Some("orders-payments"));
        assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(config.max_deliver, 4);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(
            config.backoff,
            vec![Duration::from_secs(1), Duration::from_secs(5)]
        );
    }

    #[test]
    fn the_dead_letter_stream_captures_every_consumer_of_the_component() {
        let config = dead_letter_stream_config("orders", 1);
        assert_eq!(config.name, "DLQ_ORDERS");
        assert_eq!(
            dead_letter_stream_config("orders", 1).subjects,
            vec!["tienda.dlq.orders.>"]
        );
    }
}
