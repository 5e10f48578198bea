//! Traces: W3C trace context (`traceparent`) carried from an HTTP request into the outbox row,
//! onto the NATS message and into the consumer that handles it, and the spans along the way,
//! exported over OTLP when [`crate::telemetry`] turns export on.
//!
//! The current context lives in a task-local for the duration of a request, a message handler
//! or a [`Span::run_fallible`]; [`crate::outbox::enqueue`], the outbound client and the gateway read it,
//! and every log line written under it carries its `trace_id` and `span_id`.
//!
//! Spans are OpenTelemetry SDK spans started with an explicit parent — this task-local context
//! — rather than `tracing` spans bridged by `tracing-opentelemetry`: the bridge builds span
//! data for every `tracing` span, sampled or not, and follows `tracing`'s span tree, while
//! here the parent is whatever came in on the wire (an HTTP header, a JetStream message
//! header, an outbox row), and a span the sampler drops costs two ids. With export off, a span
//! is a new span id under the same trace id, so logs and headers carry ids all the same.

use std::borrow::Cow;

use axum::{extract::Request, middleware::Next, response::Response};
use opentelemetry::trace::Span as _;
use opentelemetry::{
    KeyValue,
    trace::{
        SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        Tracer as _,
    },
};

/// The `traceparent` header name.
pub const HEADER: &str = "traceparent";

/// A position in a trace: the trace and the current span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes shared by every span of the trace.
    pub trace_id: [u8; 16],
    /// 8 bytes identifying this span.
    pub span_id: [u8; 8],
    /// The sampled flag.
    pub sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Ids need to be unique and unguessable enough to not collide, not secret: a thread-local
/// generator (seeded from the OS once) instead of a getrandom call per id, which cost a
/// syscall per request at the gateway.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fastrand::fill(&mut out);
    if out.iter().all(|b| *b == 0) {
        // All-zero ids are invalid (W3C trace context).
        out[N - 1] = 1;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// A new trace (sampled unless export is on and its sampler says otherwise; use
    /// [`Span::start`] to have the sampler decide).
    pub fn new_root() -> Self {
        Self {
            trace_id: random_bytes(),
            span_id: random_bytes(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_bytes(),
            ..*self
        }
    }

    /// Parses a version-00 `traceparent`; `None` for anything invalid (then a new trace starts).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?;
        let span_id: [u8; 8] = unhex(span)?;
        let flags: [u8; 1] = unhex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` header value.
    pub fn to_header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    /// The trace id in hex, as logged.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in hex, as logged.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// As OpenTelemetry's parent context (a remote span: it came in on the wire).
    fn as_parent(&self) -> opentelemetry::Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// The context of the request or handler running now, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `future` with `self` as the current context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }
}

/// What a span does, as OpenTelemetry classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answers a request (an HTTP route).
    Server,
    /// Makes a request (the gateway to a service, a service to a provider, SMTP).
    Client,
    /// Sends a message (the outbox relay publishing a row).
    Producer,
    /// Handles a message (a consumer applying it).
    Consumer,
    /// Work inside a process (a saga step, a transaction).
    Internal,
}

impl From<Kind> for opentelemetry::trace::SpanKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Server => Self::Server,
            Kind::Client => Self::Client,
            Kind::Producer => Self::Producer,
            Kind::Consumer => Self::Consumer,
            Kind::Internal => Self::Internal,
        }
    }
}

/// A span: its context (always), and the exported span when export is on and the sampler kept
/// it. Ends — and is exported — when dropped or [`Span::end`]ed.
#[derive(Debug)]
pub struct Span {
    context: TraceContext,
    recording: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// Starts a span under `parent` (`None`: a new trace).
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        parent: Option<TraceContext>,
    ) -> Self {
        let Some(tracer) = crate::telemetry::tracer() else {
            return Self {
                context: parent.map_or_else(TraceContext::new_root, |p| p.child()),
                recording: None,
            };
        };
        let parent_cx = parent.map_or_else(opentelemetry::Context::new, |p| p.as_parent());
        let span = tracer
            .span_builder(name)
            .with_kind(kind.into())
            .start_with_context(tracer, &parent_cx);
        let sc = span.span_context();
        let context = TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        };
        Self {
            context,
            recording: span.is_recording().then_some(span),
        }
    }

    /// Starts a span under the current context (a new trace when there is none).
    pub fn child(name: impl Into<Cow<'static, str>>, kind: Kind) -> Self {
        Self::start(name, kind, TraceContext::current())
    }

    /// Its context: what goes into `traceparent` for the work it causes.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Whether it will be exported (attributes on a span that is not are not worth building).
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute (semantic-convention names where one exists: `http.route`,
    /// `messaging.destination.name`, …).
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(span) = &mut self.recording {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Renames it (a server span learns its route template after routing).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.recording {
            span.update_name(name);
        }
    }

    /// Marks it failed, saying why.
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.recording {
            span.set_status(Status::error(description));
        }
    }

    /// Records a point in time within it (a retry, a state change).
    pub fn event(&mut self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        if let Some(span) = &mut self.recording {
            span.add_event(name, attributes);
        }
    }

    /// Ends it now.
    pub fn end(self) {}

    /// Runs `future` with this span current (its children and log lines are under it), marks
    /// the span failed when `future` returns an error, then ends it.
    pub async fn run_fallible<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        mut self,
        future: F,
    ) -> Result<T, E> {
        let output = self.context.scope(future).await;
        if let Err(error) = &output {
            self.fail(error.to_string());
        }
        output
    }
}

/// The route template a request matched, left in the response's extensions by the metrics
/// layer (which runs inside the router) for the server span (which runs outside it).
#[derive(Debug, Clone)]
pub struct MatchedRoute(pub String);

/// Middleware: continues the caller's trace (or starts one) in a server span, makes it
/// current for the handler.
pub async fn layer(request: Request, next: Next) -> Response {
    let parent = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let method = crate::metrics::method_label(request.method());
    let mut span = Span::start(method, Kind::Server, parent);
    if span.is_recording() {
        span.set("http.request.method", method);
        span.set("url.path", request.uri().path().to_owned());
    }
    let context = span.context();
    let response = context.scope(next.run(request)).await;
    if span.is_recording() {
        let status = response.status();
        span.set("http.response.status_code", i64::from(status.as_u16()));
        if let Some(MatchedRoute(route)) = response.extensions().get::<MatchedRoute>() {
            span.rename(format!("{method} {route}"));
            span.set("http.route", route.clone());
        }
        if status.is_server_error() {
            span.fail(status.to_string());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(header).unwrap();
        assert_eq!(ctx.to_header(), header);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_current_context_is_scoped_to_the_task() {
        assert_eq!(TraceContext::current(), None);
        let ctx = TraceContext::new_root();
        let seen = ctx.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(ctx));
    }
}
