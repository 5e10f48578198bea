//! The outbound HTTP client: every call a service makes to another service or to an external
//! provider (a payment provider, an SMS or push API, a shop's webhook) goes through
//! [`Outbound::call`], so the CircuitPolicy whose target matches applies — `{kind: Service,
//! name: <component>}` for the shop's services, `{kind: External, name: <name>}` for
//! providers — live: the policy in force when the call starts is the one it keeps, and an
//! edited policy applies to the next call without a restart.
//!
//! What a call gets from its policy (and without one: a default deadline, one attempt):
//! - one deadline for the whole call, retries and backoff pauses included, and a per-attempt
//!   timeout;
//! - a bulkhead slot, waited for no longer than the deadline;
//! - the breaker: an open circuit refuses at once ([`CallError::CircuitOpen`]), without
//!   touching the destination;
//! - retries only where a repeat is safe — an idempotent method or an `Idempotency-Key`
//!   header — for the failures `retryOn` names, paced by [`Backoff`], within the retry budget;
//! - the caller's W3C `traceparent`, continued as a child span.
//!
//! Metrics per target and outcome: `outbound_requests_total`, `outbound_retries_total`,
//! `outbound_request_duration_seconds`, `outbound_circuit_state`. Targets are chosen by code,
//! never by clients, so their label values stay bounded.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http::HeaderValue;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{
    policy::{Policies, PolicyConfig, Scope},
    resilience::{Admission, Breaker, Circuit, Deadline, Failure, may_retry},
    trace_context::{self, Kind, Span},
};

/// Where a call goes: the policy target it is governed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A service of the shop, by component (`payments`).
    Service(&'a str),
    /// An external dependency, by the name CircuitPolicies use (`stripe`, `smtp`).
    External(&'a str),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(name) => write!(f, "service:{name}"),
            Target::External(name) => write!(f, "external:{name}"),
        }
    }
}

/// Why a call produced no answer. A destination that answered — even with a 5xx once retries
/// are spent — is `Ok(response)`: the caller reads the status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The destination's breaker is open; nothing was sent.
    #[error("the circuit to {target} is open; retry after {retry_after:?}")]
    CircuitOpen {
        /// The destination.
        target: String,
        /// When the breaker may let calls through.
        retry_after: Duration,
    },
    /// The destination's bulkhead and its queue are full; nothing was sent.
    #[error(
        "too many calls to {target} in flight (bulkhead full); retry later, or raise the \
         CircuitPolicy's bulkhead.maxConcurrent / maxQueued"
    )]
    BulkheadFull {
        /// The destination.
        target: String,
    },
    /// The call's deadline passed.
    #[error("no answer from {target} within {timeout:?}")]
    Timeout {
        /// The destination.
        target: String,
        /// The deadline the call had.
        timeout: Duration,
    },
    /// Connecting failed or the connection broke.
    #[error("calling {target}: {source}")]
    Transport {
        /// The destination.
        target: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
}

impl CallError {
    /// How long the caller should wait before trying again, when the refusal says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether nothing reached the destination (the call may safely be made again later).
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            CallError::CircuitOpen { .. } | CallError::BulkheadFull { .. }
        )
    }
}

/// Metrics of outbound calls.
#[derive(Clone)]
struct OutboundMetrics {
    requests: IntCounterVec,
    retries: IntCounterVec,
    duration: HistogramVec,
    circuit: IntGaugeVec,
}

impl OutboundMetrics {
    fn new(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "outbound_requests_total",
                "Outbound calls by target and outcome (success, client_error, 5xx, 429, timeout, connect, reset, circuit_open, bulkhead_full)",
            ),
            &["target", "outcome"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "outbound_retries_total",
                "Outbound attempts after the first",
            ),
            &["target"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "outbound_request_duration_seconds",
                "Time of outbound calls, retries included",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["target"],
        )
        .expect("valid metric");
        let circuit = IntGaugeVec::new(
            Opts::new(
                "outbound_circuit_state",
                "Breaker of each target: 0 closed, 1 open, 2 half-open",
            ),
            &["target"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(retries.clone()),
            Box::new(duration.clone()),
            Box::new(circuit.clone()),
        ] {
            if let Err(error) = registry.register(metric) {
                tracing::warn!(%error, "outbound metrics not registered");
            }
        }
        Self {
            requests,
            retries,
            duration,
            circuit,
        }
    }
}

/// The client. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policies: Arc<Policies>,
    default_timeout: Duration,
    metrics: OutboundMetrics,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("default_timeout", &self.default_timeout)
            .finish_non_exhaustive()
    }
}

/// The default client's settings: redirects are never followed (a destination that
/// redirects to an internal address — an admin port, a cloud metadata endpoint — must not
/// turn a call into server-side request forgery); the caller sees the 3xx.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
}

/// A half-open probe given back if its call never finishes (the caller went away), so the
/// breaker does not wait forever for a verdict.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    admission: Admission,
}

impl ProbeGuard<'_> {
    /// Reports the call's outcome; the guard then has nothing to give back.
    fn record(mut self, ok: bool) {
        self.breaker.record(self.admission, ok, Instant::now());
        self.admission = Admission::Call;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.breaker.abandon(self.admission);
    }
}

impl Outbound {
    /// The outbound client of `platform`'s component: the CircuitPolicies of the services and
    /// providers it calls, from `config`'s source (files polled every 250 ms, or the
    /// cluster), kept live in the background; calls no policy bounds get 10 s.
    pub async fn start(platform: &crate::Platform, config: &PolicyConfig) -> anyhow::Result<Self> {
        let client = client_builder()
            .build()
            .context("building the outbound HTTP client (install_crypto_provider first)")?;
        Self::start_with_client(platform, config, client).await
    }

    /// Like [`Outbound::start`], over a client built by the caller (no redirects, its own
    /// TLS roots).
    pub async fn start_with_client(
        platform: &crate::Platform,
        config: &PolicyConfig,
        client: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let scope = Scope::component(&config.shop, platform.name);
        let policies =
            crate::policy::start(platform, config, scope, Duration::from_millis(250)).await?;
        Ok(Self::with_client(
            client,
            policies,
            Duration::from_secs(10),
            &platform.metrics.registry,
        ))
    }

    /// A client applying `policies`, with `default_timeout` for calls no policy bounds.
    /// Metrics are registered in `registry`.
    pub fn new(policies: Arc<Policies>, default_timeout: Duration, registry: &Registry) -> Self {
        let client = client_builder()
            .build()
            .expect("a client with the ring TLS provider installed (install_crypto_provider)");
        Self::with_client(client, policies, default_timeout, registry)
    }

    /// The same over a client built by the caller (its own TLS roots, proxy, user agent).
    pub fn with_client(
        client: reqwest::Client,
        policies: Arc<Policies>,
        default_timeout: Duration,
        registry: &Registry,
    ) -> Self {
        Self {
            client,
            policies,
            default_timeout,
            metrics: OutboundMetrics::new(registry),
        }
    }

    /// The underlying client, to build requests with (`client().post(url).json(&body)
    /// .build()`); send them with [`Outbound::call`], never directly.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The policies this client applies.
    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// Sends `request` to `target` under the target's CircuitPolicy.
    pub async fn call(
        &self,
        target: Target<'_>,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, CallError> {
        self.call_until(target, request, None).await
    }

    /// Like [`Outbound::call`], finished by `deadline` when that is sooner than the policy's
    /// (a saga step passes its command's deadline).
    pub async fn call_until(
        &self,
        target: Target<'_>,
        mut request: reqwest::Request,
        deadline: Option<Deadline>,
    ) -> Result<reqwest::Response, CallError> {
        let set = self.policies.current();
        let circuit: Option<&Arc<Circuit>> = match target {
            Target::Service(name) => set.circuits.get(name),
            Target::External(name) => set.externals.get(name),
        };
        let label = target.to_string();
        self.report_circuit(&label, circuit.and_then(|c| c.breaker.as_deref()));
        // The target's retry series exists from its first call, at 0.
        self.metrics.retries.with_label_values(&[&label]);
        let started = Instant::now();
        let timeout = circuit
            .and_then(|c| c.timeout)
            .unwrap_or(self.default_timeout);
        let deadline = match deadline {
            Some(d) if d.instant() < started + timeout => d,
            _ => Deadline::at(started + timeout),
        };
        let timed_out = || CallError::Timeout {
            target: label.clone(),
            timeout: deadline.instant().saturating_duration_since(started),
        };
        // One client span for the call, retries included (each retry is an event on it).
        let method = crate::metrics::method_label(request.method());
        let (Target::Service(name) | Target::External(name)) = target;
        let mut span = Span::child(format!("{method} {name}"), Kind::Client);
        if span.is_recording() {
            let url = request.url();
            span.set("http.request.method", method);
            span.set(
                "server.address",
                url.host_str().unwrap_or_default().to_owned(),
            );
            span.set(
                "url.full",
                format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
            );
            span.set("tienda.target", label.clone());
        }
        if !request.headers().contains_key(trace_context::HEADER)
            && let Ok(value) = HeaderValue::from_str(&span.context().to_header())
        {
            request.headers_mut().insert(trace_context::HEADER, value);
        }

        let outcome = async {
            let _slot = match circuit.and_then(|c| c.bulkhead.as_ref()) {
                Some(bulkhead) => match bulkhead.enter_before(deadline.instant()).await {
                    Some(slot) => Some(slot),
                    None if deadline.expired() => return Err(timed_out()),
                    None => {
                        return Err(CallError::BulkheadFull {
                            target: label.clone(),
                        });
                    }
                },
                None => None,
            };
            let _counted = circuit.map(|c| c.start());
            let retry = circuit
                .and_then(|c| c.retry.as_ref())
                .filter(|r| r.attempts > 1 && may_retry(request.method(), request.headers()));
            let attempts = retry.map_or(1, |r| r.attempts);
            let breaker = circuit.and_then(|c| c.breaker.as_deref());
            let mut _retry_slot = None;
            // What the attempt before this one got: the answer if the breaker opens before a
            // retry (the caller must not hear "nothing was sent" when something was).
            let mut previous: Option<Result<reqwest::Response, CallError>> = None;
            let mut attempt = 1;
            loop {
                let admission = match breaker.map(|b| b.admit(Instant::now())) {
                    Some(Admission::Refused(retry_after)) => {
                        self.report_circuit(&label, breaker);
                        return previous.unwrap_or_else(|| {
                            Err(CallError::CircuitOpen {
                                target: label.clone(),
                                retry_after,
                            })
                        });
                    }
                    other => other,
                };
                let probe = breaker
                    .zip(admission)
                    .map(|(breaker, admission)| ProbeGuard { breaker, admission });
                let again = (attempt < attempts).then(|| request.try_clone()).flatten();
                let per_try = deadline.attempt(retry.and_then(|r| r.per_try_timeout));
                // reqwest's own timeout also covers reading the body after `call` returns.
                *request.timeout_mut() = Some(per_try);
                let sent = tokio::time::timeout(per_try, self.client.execute(request)).await;
                let failure = match &sent {
                    Ok(Ok(response)) => Failure::from_status(response.status()),
                    Ok(Err(error)) if error.is_connect() => Some(Failure::Connect),
                    Ok(Err(error)) if error.is_timeout() => Some(Failure::Timeout),
                    Ok(Err(_)) => Some(Failure::Reset),
                    Err(_) => Some(Failure::Timeout),
                };
                if let Some(probe) = probe {
                    probe.record(!failure.is_some_and(Failure::counts_against));
                    self.report_circuit(&label, breaker);
                }
                // The retry that just failed is no longer in flight.
                _retry_slot = None;
                if let (Some(f), Some(r), Some(next)) = (failure, retry, again)
                    && f.retryable(&r.retry_on)
                    && let Some(slot) = circuit.and_then(|c| c.take_retry())
                {
                    let pause = r.backoff.delay(attempt);
                    if deadline.allows(pause) {
                        tracing::debug!(target = %label, attempt, failure = f.label(), pause_ms = pause.as_millis() as u64, "retrying");
                        span.event(
                            "retry",
                            vec![
                                opentelemetry::KeyValue::new("tienda.attempt", i64::from(attempt)),
                                opentelemetry::KeyValue::new("tienda.failure", f.label()),
                            ],
                        );
                        self.metrics.retries.with_label_values(&[&label]).inc();
                        previous = Some(self.settle(&label, sent, &timed_out));
                        tokio::time::sleep(pause).await;
                        _retry_slot = Some(slot);
                        request = next;
                        attempt += 1;
                        continue;
                    }
                }
                return self.settle(&label, sent, &timed_out);
            }
        };
        let result = match deadline.run(outcome).await {
            Ok(result) => result,
            Err(_) => Err(timed_out()),
        };
        let outcome = match &result {
            Ok(response) => match Failure::from_status(response.status()) {
                Some(f) => f.label(),
                None if response.status().is_client_error() => "client_error",
                None => "success",
            },
            Err(CallError::CircuitOpen { .. }) => "circuit_open",
            Err(CallError::BulkheadFull { .. }) => "bulkhead_full",
            Err(CallError::Timeout { .. }) => "timeout",
            Err(CallError::Transport { source, .. }) if source.is_connect() => "connect",
            Err(CallError::Transport { .. }) => "reset",
        };
        self.metrics
            .requests
            .with_label_values(&[&label, outcome])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[&label])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::warn!(target = %label, %error, "outbound call failed");
        }
        span.set("tienda.outcome", outcome);
        match &result {
            Ok(response) => {
                span.set(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                );
                if response.status().is_server_error() {
                    span.fail(response.status().to_string());
                }
            }
            Err(error) => span.fail(error.to_string()),
        }
        result
    }

    /// An attempt's outcome as the caller sees it.
    fn settle(
        &self,
        label: &str,
        sent: Result<Result<reqwest::Response, reqwest::Error>, tokio::time::error::Elapsed>,
        timed_out: &dyn Fn() -> CallError,
    ) -> Result<reqwest::Response, CallError> {
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) if source.is_timeout() => Err(timed_out()),
            Ok(Err(source)) => Err(CallError::Transport {
                target: label.to_owned(),
                source,
            }),
            Err(_) => Err(timed_out()),
        }
    }

    /// The target's breaker state (0, closed, for a target without a breaker: calls always go).
    fn report_circuit(&self, label: &str, breaker: Option<&Breaker>) {
        let phase = breaker.map_or(0, |b| b.phase(Instant::now()) as i64);
        self.metrics.circuit.with_label_values(&[label]).set(phase);
    }
}
