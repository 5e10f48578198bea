//! The console's own trace viewer: an OTLP/HTTP receiver (`POST /v1/traces`, protobuf or
//! JSON) keeping the most recent traces in memory, and what the page reads of them. `tienda up
//! --traces` points every component at it, for a laptop with no Jaeger or collector at hand;
//! anything bigger belongs in a real trace store (OTEL_EXPORTER_OTLP_ENDPOINT).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
};
use prost::Message as _;
use serde::Serialize;

/// A span as kept.
#[derive(Debug, Clone, Serialize)]
pub struct KeptSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// Its name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Hex.
    pub span_id: String,
    /// Hex; `None` for a root.
    pub parent_span_id: Option<String>,
    /// Start, nanoseconds since the epoch.
    pub start: u64,
    /// End.
    pub end: u64,
    /// Its status is an error.
    pub failed: bool,
    /// Its status message.
    pub status: String,
    /// Its attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

/// A trace's summary for the list.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// Hex.
    pub trace_id: String,
    /// The root span's name (or the earliest span's, while the root has not arrived).
    pub name: String,
    /// The services it went through.
    pub services: Vec<String>,
    /// Spans received.
    pub spans: usize,
    /// First start to last end, in milliseconds.
    pub duration_ms: f64,
    /// When it started, nanoseconds since the epoch.
    pub start: u64,
    /// Any span failed.
    pub failed: bool,
}

/// The most recent traces, at most [`TraceStore::capacity`] of them (the oldest go first).
#[derive(Debug, Clone)]
pub struct TraceStore {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<String, Vec<KeptSpan>>,
    order: VecDeque<String>,
}

/// Spans one trace keeps (a runaway trace cannot take the memory).
const SPANS_PER_TRACE: usize = 2_000;

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kind(value: i32) -> &'static str {
    match value {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The spans of an OTLP export, each with its trace id (hex), as kept.
pub fn spans_of(request: ExportTraceServiceRequest) -> Vec<(String, KeptSpan)> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let status = span.status.unwrap_or_default();
                let kept = KeptSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: kind(span.kind),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    // STATUS_CODE_ERROR
                    failed: status.code == 2,
                    status: status.message,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| {
                            (
                                a.key.clone(),
                                text(a.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                };
                out.push((hex::encode(&span.trace_id), kept));
            }
        }
    }
    out
}

impl TraceStore {
    /// A store keeping the last `capacity` traces.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Keeps the spans of an export.
    pub fn keep(&self, request: ExportTraceServiceRequest) {
        let mut inner = self.inner.lock().expect("not poisoned");
        for (trace_id, kept) in spans_of(request) {
            if !inner.traces.contains_key(&trace_id) {
                inner.order.push_back(trace_id.clone());
                while inner.order.len() > self.capacity {
                    if let Some(oldest) = inner.order.pop_front() {
                        inner.traces.remove(&oldest);
                    }
                }
            }
            let spans = inner.traces.entry(trace_id).or_default();
            if spans.len() < SPANS_PER_TRACE {
                spans.push(kept);
            }
        }
    }

    /// The most recent traces first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<TraceSummary> {
        let inner = self.inner.lock().expect("not poisoned");
        let mut out: Vec<TraceSummary> = inner
            .traces
            .iter()
            .map(|(trace_id, spans)| {
                let root = spans
                    .iter()
                    .find(|s| s.parent_span_id.is_none())
                    .or_else(|| spans.iter().min_by_key(|s| s.start));
                let start = spans.iter().map(|s| s.start).min().unwrap_or_default();
                let end = spans.iter().map(|s| s.end).max().unwrap_or_default();
                let mut services: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
                services.sort();
                services.dedup();
                TraceSummary {
                    trace_id: trace_id.clone(),
                    name: root
                        .map(|r| format!("{} {}", r.service, r.name))
                        .unwrap_or_default(),
                    services,
                    spans: spans.len(),
                    duration_ms: end.saturating_sub(start) as f64 / 1e6,
                    start,
                    failed: spans.iter().any(|s| s.failed),
                }
            })
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.start));
        out.truncate(limit);
        out
    }

    /// The spans of one trace, by start.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<KeptSpan>> {
        let inner = self.inner.lock().expect("not poisoned");
        let mut spans = inner.traces.get(trace_id)?.clone();
        spans.sort_by_key(|s| s.start);
        Some(spans)
    }
}

/// An OTLP/HTTP export's body decoded (protobuf, or JSON when `Content-Type` says so), and
/// whether it was JSON (the answer is in the same encoding).
pub fn decode(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(ExportTraceServiceRequest, bool), String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    decoded
        .map(|request| (request, json))
        .map_err(|error| format!("not an OTLP trace export: {error}"))
}

/// The answer to an export: success, in the encoding it came in.
pub fn accepted(json: bool) -> Response {
    if json {
        ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response()
    }
}

/// `POST /v1/traces`: OTLP over HTTP, protobuf or JSON, as the exporters send it.
pub async fn ingest(store: TraceStore, headers: HeaderMap, body: Bytes) -> Response {
    match decode(&headers, body) {
        Ok((request, json)) => {
            store.keep(request);
            accepted(json)
        }
        Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue as Any, KeyValue},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    fn export(trace: u8, spans: &[(u8, Option<u8>, &str)]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(Any {
                            value: Some(AnyValue::StringValue("orders".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: spans
                        .iter()
                        .map(|(id, parent, name)| Span {
                            trace_id: vec![trace; 16],
                            span_id: vec![*id; 8],
                            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                            name: (*name).into(),
                            kind: 2,
                            start_time_unix_nano: u64::from(*id) * 1_000_000,
                            end_time_unix_nano: u64::from(*id) * 1_000_000 + 5_000_000,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_newest_traces_are_kept_and_summarised_by_their_root() {
        let store = TraceStore::new(2);
        store.keep(export(
            1,
            &[(1, None, "POST /v1/checkout"), (2, Some(1), "place order")],
        ));
        store.keep(export(2, &[(3, None, "GET /v1/cart")]));
        store.keep(export(3, &[(5, None, "GET /v1/orders")]));
        let recent = store.recent(10);
        assert_eq!(recent.len(), 2, "the oldest trace went");
        assert_eq!(recent[0].name, "orders GET /v1/orders");
        assert!(store.trace(&hex::encode([1u8; 16])).is_none());
        let spans = store.trace(&hex::encode([2u8; 16])).unwrap();
        assert_eq!(spans[0].name, "GET /v1/cart");
        assert_eq!(spans[0].kind, "server");
    }
}
