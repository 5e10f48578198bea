//! Providers of a channel behind one trait, and failover between them.
//!
//! Every provider call goes through the kit's outbound client under the provider's name as an
//! External CircuitPolicy target (`twilio`, `vonage`, `fcm`, `webpush`). [`Failover`] tries the
//! providers in the configured order and moves on only when one cannot be tried at all — its
//! circuit is open or its bulkhead full — so a provider that answered (even with an error) is
//! never bypassed to send the same message twice. A provider failing transiently fails the
//! attempt: the delivery is retried with backoff, and once failures open that provider's
//! circuit (a CircuitPolicy on it), the next attempt goes to the next provider. With every
//! circuit open the delivery waits for the first to close, without using an attempt.

use std::{future::Future, pin::Pin, time::Duration};

use tienda_kit::outbound::{CallError, Outbound};

use super::SendError;

/// What a provider did with a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The provider's reference (a message id).
    pub reference: String,
}

/// Why a provider did not take a message.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was tried: the provider's circuit is open or its bulkhead full (or, for push,
    /// the person has no device on this provider). The next provider is tried.
    Unavailable {
        /// When this provider may be tried again.
        retry_after: Option<Duration>,
        /// What was refused.
        detail: String,
    },
    /// The provider was tried: the attempt's outcome, whatever the next provider would do.
    Send(SendError),
    /// This provider has nowhere to send it (push: no device of the person's on it); the next
    /// provider is tried.
    NoAddress(String),
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Self {
        Failure::Send(error)
    }
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        if error.not_sent() {
            Failure::Unavailable {
                retry_after: error.retry_after(),
                detail: error.to_string(),
            }
        } else {
            Failure::Send(SendError::Transient(error.to_string()))
        }
    }
}

/// One provider's attempt.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<Sent, Failure>> + Send + 'a>>;

/// A provider of messages `M`.
pub trait Provider<M>: Send + Sync {
    /// Its name: the CircuitPolicy target (`{kind: External, name: <name>}`) and the prefix of
    /// its references.
    fn name(&self) -> &'static str;

    /// Hands `message` over through `outbound`.
    fn send<'a>(&'a self, outbound: &'a Outbound, message: &'a M) -> Sending<'a>;
}

/// Providers of one channel in the order they are tried.
pub struct Failover<M> {
    providers: Vec<Box<dyn Provider<M>>>,
    outbound: Outbound,
}

impl<M> std::fmt::Debug for Failover<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.name()))
            .finish()
    }
}

/// How long a delivery waits when no provider could be tried and none said for how long.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(30);

impl<M: Sync> Failover<M> {
    /// The providers, tried in this order.
    pub fn new(providers: Vec<Box<dyn Provider<M>>>, outbound: Outbound) -> Self {
        Self {
            providers,
            outbound,
        }
    }

    /// Whether there is no provider.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Sends `message` by the first provider that can be tried; the reference is prefixed
    /// with the provider's name (`twilio:SM…`).
    pub async fn send(&self, message: &M) -> Result<Sent, SendError> {
        let mut refused = Vec::new();
        let mut nowhere = Vec::new();
        let mut wait: Option<Duration> = None;
        for provider in &self.providers {
            match provider.send(&self.outbound, message).await {
                Ok(sent) => {
                    return Ok(Sent {
                        reference: format!("{}:{}", provider.name(), sent.reference),
                    });
                }
                Err(Failure::Unavailable {
                    retry_after,
                    detail,
                }) => {
                    tracing::info!(provider = provider.name(), %detail, "provider unavailable; trying the next");
                    if let Some(after) = retry_after {
                        wait = Some(wait.map_or(after, |w| w.min(after)));
                    }
                    refused.push(format!("{}: {detail}", provider.name()));
                }
                Err(Failure::NoAddress(detail)) => nowhere.push(detail),
                Err(Failure::Send(error)) => {
                    return Err(match error {
                        SendError::Transient(m) => {
                            SendError::Transient(format!("{}: {m}", provider.name()))
                        }
                        SendError::Permanent(m) => {
                            SendError::Permanent(format!("{}: {m}", provider.name()))
                        }
                        SendError::Throttled(d, m) => {
                            SendError::Throttled(d, format!("{}: {m}", provider.name()))
                        }
                    });
                }
            }
        }
        if refused.is_empty() {
            return Err(SendError::Permanent(if nowhere.is_empty() {
                "no provider is configured".into()
            } else {
                format!("nowhere to send it: {}", nowhere.join("; "))
            }));
        }
        Err(SendError::Throttled(
            wait.unwrap_or(UNAVAILABLE_WAIT).max(Duration::from_secs(1)),
            format!("no provider could be tried: {}", refused.join("; ")),
        ))
    }
}

/// The wait a `Retry-After` header asks for (seconds; at most an hour, default a minute).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(60)
        .min(3_600);
    Duration::from_secs(seconds)
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        body.append_pair(name, value);
    }
    body.finish()
}

/// A response's body for an error message: at most 300 characters.
pub async fn excerpt(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Scripted {
        name: &'static str,
        answer: Answer,
        calls: Calls,
    }

    impl Provider<()> for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }
        fn send<'a>(&'a self, _: &'a Outbound, _: &'a ()) -> Sending<'a> {
            self.calls.lock().unwrap().push(self.name);
            let answer = (self.answer)();
            Box::pin(async move { answer })
        }
    }

    type Answer = fn() -> Result<Sent, Failure>;
    type Calls = Arc<Mutex<Vec<&'static str>>>;

    fn failover(answers: &[(&'static str, Answer)]) -> (Failover<()>, Calls) {
        let calls = Calls::default();
        let providers = answers
            .iter()
            .map(|(name, answer)| {
                Box::new(Scripted {
                    name,
                    answer: *answer,
                    calls: calls.clone(),
                }) as Box<dyn Provider<()>>
            })
            .collect();
        let registry = prometheus::Registry::new();
        let policies = tienda_kit::policy::Policies::new(
            tienda_kit::policy::Scope::component("test", "notifications"),
            &registry,
        );
        let outbound = Outbound::new(Arc::new(policies), Duration::from_secs(1), &registry);
        (Failover::new(providers, outbound), calls)
    }

    fn open() -> Result<Sent, Failure> {
        Err(Failure::Unavailable {
            retry_after: Some(Duration::from_secs(7)),
            detail: "circuit open".into(),
        })
    }
    fn ok() -> Result<Sent, Failure> {
        Ok(Sent {
            reference: "m1".into(),
        })
    }
    fn down() -> Result<Sent, Failure> {
        Err(Failure::Send(SendError::Transient("HTTP 503".into())))
    }

    #[tokio::test]
    async fn an_open_circuit_moves_to_the_next_provider() {
        tienda_kit::install_crypto_provider();
        let (failover, calls) = failover(&[("first", open), ("second", ok)]);
        let sent = failover.send(&()).await.unwrap();
        assert_eq!(sent.reference, "second:m1");
        assert_eq!(*calls.lock().unwrap(), ["first", "second"]);
    }

    #[tokio::test]
    async fn a_provider_that_was_tried_is_not_bypassed() {
        tienda_kit::install_crypto_provider();
        let (failover, calls) = failover(&[("first", down), ("second", ok)]);
        let error = failover.send(&()).await.unwrap_err();
        assert!(
            matches!(&error, SendError::Transient(m) if m == "first: HTTP 503"),
            "{error:?}"
        );
        assert_eq!(*calls.lock().unwrap(), ["first"]);
    }

    #[tokio::test]
    async fn with_every_circuit_open_the_delivery_waits_without_an_attempt() {
        tienda_kit::install_crypto_provider();
        let (failover, _) = failover(&[("first", open), ("second", open)]);
        match failover.send(&()).await {
            Err(SendError::Throttled(wait, message)) => {
                assert_eq!(wait, Duration::from_secs(7));
                assert!(message.contains("first: circuit open") && message.contains("second"));
            }
            other => panic!("{other:?}"),
        }
    }
}
