//! Logs and traces.
//!
//! Logs: JSON lines (or pretty for a terminal) with span fields, filtered by `RUST_LOG`. Every
//! line written while a request or a message is being handled carries the `trace_id` and
//! `span_id` of its span (see [`crate::trace_context`]), so a log search by trace id finds a
//! whole checkout across services.
//!
//! Traces: exported over OTLP when OpenTelemetry's own variables ask for it —
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, and neither
//! `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default; `http/json`; `grpc`), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default: follow the caller, else sample everything),
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_BSP_*` mean what the specification says. With none
//! of them set, nothing is exported and spans cost an id and a task-local.

use std::{fmt, sync::OnceLock};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::{config::LogFormat, trace_context::TraceContext};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The tracer spans are exported through, when tracing is on.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn tracing_enabled() -> bool {
    TRACER.get().is_some()
}

/// Installs the global log subscriber and, when OpenTelemetry's variables ask for it, the
/// trace exporter, naming this process `service` (unless `OTEL_SERVICE_NAME` names it). Safe
/// to call more than once (tests): later calls keep what the first installed. Call it inside
/// the Tokio runtime (the gRPC exporter's connection runs on it).
pub fn init(service: &str, format: LogFormat, filter: &str) {
    let export = TraceExport::from_env();
    init_with_traces(service, format, filter, export);
}

/// [`init`] with the trace export given rather than read from the environment (tests).
pub fn init_with_traces(
    service: &str,
    format: LogFormat,
    filter: &str,
    export: anyhow::Result<Option<TraceExport>>,
) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid log filter {filter:?} ({err}); using `info`");
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer().event_format(WithTraceIds(
                    tracing_subscriber::fmt::format()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_target(true),
                )),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().event_format(WithTraceIds(
                tracing_subscriber::fmt::format().with_target(false),
            )))
            .try_init(),
    };
    if installed.is_ok() {
        match export {
            Ok(Some(export)) => {
                if let Err(error) = start_exporter(service, &export) {
                    tracing::error!(%error, endpoint = export.endpoint, "traces will not be exported");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "traces will not be exported"),
        }
    }
}

/// Exports the spans ended so far (before a process exits; in tests, before reading what a
/// receiver got). It blocks until the export is done: call it off the runtime's workers
/// (`spawn_blocking`).
pub fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::warn!(%error, "exporting the last spans");
    }
}

/// Where and how spans go, read from OpenTelemetry's environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// Where spans are sent: for HTTP the full URL (`OTEL_EXPORTER_OTLP_ENDPOINT` plus
    /// `/v1/traces`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as written), for gRPC the server.
    pub endpoint: String,
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: String,
    /// The share of new traces sampled, 0 to 1 (a span with a caller follows the caller's
    /// decision); `None`: as `OTEL_TRACES_SAMPLER` says (by default, every trace).
    pub sample_ratio: Option<f64>,
}

impl TraceExport {
    /// `None` when traces are off; an error names a variable with a value it cannot use.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`TraceExport::from_env`] over any variable source (tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => anyhow::bail!(
                "OTEL_TRACES_EXPORTER={other} is not supported: set it to `otlp` or `none`"
            ),
        }
        let signal_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        if signal_endpoint.is_none() && base_endpoint.is_none() {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".into())
            .trim()
            .to_ascii_lowercase();
        if !["grpc", "http/protobuf", "http/json"].contains(&protocol.as_str()) {
            anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not one of grpc, http/protobuf, http/json"
            );
        }
        // The specification: the signal's own endpoint is used as written; the base one gets
        // the signal's path appended for HTTP.
        let endpoint = match (signal_endpoint, base_endpoint) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Some(base)) if protocol != "grpc" => {
                format!("{}/v1/traces", base.trim().trim_end_matches('/'))
            }
            (None, Some(base)) => base.trim().to_owned(),
            (None, None) => unreachable!("checked above"),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!(
                "the OTLP endpoint {endpoint:?} is not an http:// or https:// URL \
                 (OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318, say)"
            );
        }
        Ok(Some(Self {
            endpoint,
            protocol,
            sample_ratio: None,
        }))
    }
}

fn start_exporter(service: &str, export: &TraceExport) -> anyhow::Result<()> {
    // The exporters read headers, timeout and compression from the environment themselves.
    let endpoint = export.endpoint.clone();
    let exporter = match export.protocol.as_str() {
        "grpc" => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?,
        "http/json" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(Protocol::HttpJson)
            .build()?,
        _ => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(Protocol::HttpBinary)
            .build()?,
    };
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER (the SDK reads it): by default a span follows
    // its caller's decision, and a new trace is sampled.
    let mut provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    if let Some(ratio) = export.sample_ratio {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider.build();
    let tracer = provider.tracer("tienda");
    if TRACER.set(tracer).is_ok() {
        let _ = PROVIDER.set(provider);
    }
    tracing::info!(
        endpoint = export.endpoint,
        protocol = export.protocol,
        "exporting traces over OTLP"
    );
    Ok(())
}

/// An event format with the current trace's `trace_id` and `span_id` added to each line: as
/// fields of a JSON line (tracing-subscriber's JSON format cannot add fields of its own), at
/// the end of a pretty one.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(context) = TraceContext::current() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                context.trace_id(),
                context.span_id()
            ),
            None => writeln!(
                writer,
                "{} trace_id={} span_id={}",
                line.trim_end_matches('\n'),
                context.trace_id(),
                context.span_id()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn log_lines_carry_the_trace_and_span_ids_of_the_current_context() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(WithTraceIds(
                    tracing_subscriber::fmt::format()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true),
                ))
                .with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let context = TraceContext::new_root();
        context
            .scope(async { tracing::info!(answer = 42, "inside") })
            .await;
        tracing::info!("outside");
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["trace_id"], context.trace_id());
        assert_eq!(lines[0]["span_id"], context.span_id());
        assert_eq!(lines[0]["answer"], 42);
        assert_eq!(lines[0]["message"], "inside");
        assert!(lines[1].get("trace_id").is_none(), "{text}");
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert_eq!(TraceExport::from_lookup(vars(&[])).unwrap(), None);
        let on = TraceExport::from_lookup(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(on.protocol, "http/protobuf");
        assert_eq!(on.endpoint, "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn the_specifications_switches_turn_traces_off_and_pick_the_protocol() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                TraceExport::from_lookup(vars(&[endpoint, off])).unwrap(),
                None
            );
        }
        let grpc =
            TraceExport::from_lookup(vars(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]))
                .unwrap()
                .unwrap();
        assert_eq!(grpc.protocol, "grpc");
        assert_eq!(grpc.endpoint, "http://collector:4317");
        // The signal-specific variables win.
        let traces = TraceExport::from_lookup(vars(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:4318/v1/traces",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(traces.protocol, "http/json");
        assert_eq!(traces.endpoint, "http://other:4318/v1/traces");
        let error =
            TraceExport::from_lookup(vars(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]))
                .unwrap_err();
        assert!(error.to_string().contains("grpc, http/protobuf, http/json"));
        let error = TraceExport::from_lookup(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "jaeger")]))
            .unwrap_err();
        assert!(error.to_string().contains("`otlp` or `none`"));
        let error =
            TraceExport::from_lookup(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]))
                .unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
    }
}
