//! The envelope every message travels in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// NATS header names set on every published message.
pub mod header {
    /// JetStream de-duplication id: the envelope id (the outbox row id), so a re-published row
    /// is dropped by the stream within its duplicate window.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The event id a consumer's inbox keys on when it differs from `Nats-Msg-Id` (a replayed
    /// dead letter needs a fresh `Nats-Msg-Id` to pass the stream's de-duplication).
    pub const EVENT_ID: &str = "Tienda-Event-Id";
    /// The envelope's `type`, so consumers and tools can route without decoding the body.
    pub const TYPE: &str = "Tienda-Type";
    /// The envelope's `version`.
    pub const VERSION: &str = "Tienda-Version";
    /// The publishing service.
    pub const SOURCE: &str = "Tienda-Source";
    /// The correlation id (one per user action, carried through the saga).
    pub const CORRELATION_ID: &str = "Tienda-Correlation-Id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
}

/// Whether a message reports a fact or asks for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something happened; any number of consumers may react. Subject `tienda.<domain>.<name>`.
    Event,
    /// Something is asked of one domain (the saga's steps). Subject `tienda.<domain>.cmd.<name>`.
    Command,
}

/// A contract: a payload type with a fixed name, version and subject.
pub trait Message: Serialize + DeserializeOwned {
    /// The domain that owns the subject, e.g. `inventory`.
    const DOMAIN: &'static str;
    /// The message's name within its domain, e.g. `reserved` or `reserve`.
    const NAME: &'static str;
    /// The contract version (see the crate docs on evolving a contract).
    const VERSION: u16;
    /// Event or command.
    const KIND: Kind;

    /// The envelope `type`: `<domain>.<name>` for events, `<domain>.cmd.<name>` for commands.
    fn message_type() -> String {
        match Self::KIND {
            Kind::Event => format!("{}.{}", Self::DOMAIN, Self::NAME),
            Kind::Command => format!("{}.cmd.{}", Self::DOMAIN, Self::NAME),
        }
    }

    /// The NATS subject: `tienda.` + the type.
    fn subject() -> String {
        format!("tienda.{}", Self::message_type())
    }

    /// The aggregate the message is about (an order, a reservation, a user): messages of one
    /// aggregate are published in the order they were written.
    fn aggregate_id(&self) -> String;
}

/// The envelope: who said what, when, and in answer to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Unique id (UUIDv7, so ids sort by time); also the JetStream `Nats-Msg-Id`.
    pub id: Uuid,
    /// `<domain>.<name>` or `<domain>.cmd.<name>`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// Contract version of `data`.
    pub version: u16,
    /// The service that produced it, e.g. `auth`.
    pub source: String,
    /// When it was produced (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    /// Shared by every message that stems from one user action; the first message's id.
    pub correlation_id: Uuid,
    /// The message this one answers or was caused by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The aggregate it is about (see [`Message::aggregate_id`]).
    pub aggregate_id: String,
    /// The payload.
    pub data: T,
}

impl<T: Message> Envelope<T> {
    /// A new message starting a chain: its correlation id is its own id.
    pub fn new(source: impl Into<String>, data: T) -> Self {
        let id = Uuid::now_v7();
        Self {
            id,
            message_type: T::message_type(),
            version: T::VERSION,
            source: source.into(),
            time: Utc::now(),
            correlation_id: id,
            causation_id: None,
            aggregate_id: data.aggregate_id(),
            data,
        }
    }

    /// A message caused by `cause`: same correlation id, causation id = the cause's id.
    pub fn caused_by<C>(source: impl Into<String>, data: T, cause: &Envelope<C>) -> Self {
        Self {
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.id),
            ..Self::new(source, data)
        }
    }

    /// The subject this envelope is published on.
    pub fn subject(&self) -> String {
        T::subject()
    }
}

impl<T> Envelope<T> {
    /// The same envelope around another payload.
    fn with_data<U>(self, data: U) -> Envelope<U> {
        Envelope {
            id: self.id,
            message_type: self.message_type,
            version: self.version,
            source: self.source,
            time: self.time,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            aggregate_id: self.aggregate_id,
            data,
        }
    }
}

impl<T: Serialize> Envelope<T> {
    /// The envelope with its payload as plain JSON, the form the outbox stores.
    pub fn into_json(self) -> Envelope<serde_json::Value> {
        let data = serde_json::to_value(&self.data).expect("contracts serialize to JSON");
        self.with_data(data)
    }
}

/// Why a JSON envelope is not the expected contract.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The envelope names another type or version.
    #[error("expected {expected_type} v{expected_version}, got {actual_type} v{actual_version}")]
    WrongType {
        /// The contract asked for.
        expected_type: String,
        /// Its version.
        expected_version: u16,
        /// What the envelope says.
        actual_type: String,
        /// Its version.
        actual_version: u16,
    },
    /// The bytes are not a valid envelope of that contract.
    #[error("invalid {message_type} payload: {source}")]
    Invalid {
        /// The contract asked for.
        message_type: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

impl Envelope<serde_json::Value> {
    /// Decodes the payload as contract `T`, checking type and version first.
    pub fn decode<T: Message>(mut self) -> Result<Envelope<T>, DecodeError> {
        if self.message_type != T::message_type() || self.version != T::VERSION {
            return Err(DecodeError::WrongType {
                expected_type: T::message_type(),
                expected_version: T::VERSION,
                actual_type: self.message_type,
                actual_version: self.version,
            });
        }
        let raw = std::mem::take(&mut self.data);
        let data = serde_json::from_value(raw).map_err(|source| DecodeError::Invalid {
            message_type: T::message_type(),
            source,
        })?;
        Ok(self.with_data(data))
    }
}

/// Declares a contract: `contract!(Event, UserRegistered, "user", "registered", 1, |m| m.user_id)`.
#[macro_export]
macro_rules! contract {
    ($kind:ident, $ty:ty, $domain:literal, $name:literal, $version:literal, |$m:ident| $aggregate:expr) => {
        impl $crate::envelope::Message for $ty {
            const DOMAIN: &'static str = $domain;
            const NAME: &'static str = $name;
            const VERSION: u16 = $version;
            const KIND: $crate::envelope::Kind = $crate::envelope::Kind::$kind;

            fn aggregate_id(&self) -> String {
                let $m = self;
                $aggregate.to_string()
            }
        }
    };
}
