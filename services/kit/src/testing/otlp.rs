//! An OTLP trace receiver inside a test: it listens on loopback for OTLP over HTTP (protobuf
//! and JSON, `POST /v1/traces`) and gRPC, as a collector, Jaeger or Tempo would, and keeps the
//! spans it is sent so the test can check the tree they form.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

/// A span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// Its name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Hex.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Hex; `None` for a root.
    pub parent_span_id: Option<String>,
    /// Its attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// Whether its status is an error.
    pub failed: bool,
    /// Its status message.
    pub status_message: String,
    /// Start and end, in nanoseconds since the epoch.
    pub start: u64,
    /// End.
    pub end: u64,
}

impl ReceivedSpan {
    /// An attribute, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver; it stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    http: SocketAddr,
    grpc: SocketAddr,
    spans: Store,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn keep(store: &Store, request: ExportTraceServiceRequest) {
    let kept = crate::console::traces::spans_of(request)
        .into_iter()
        .map(|(trace_id, span)| ReceivedSpan {
            service: span.service,
            name: span.name,
            kind: span.kind,
            trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            attributes: span.attributes,
            failed: span.failed,
            status_message: span.status,
            start: span.start,
            end: span.end,
        });
    store.lock().expect("not poisoned").extend(kept);
}

async fn http_export(
    axum::extract::State(store): axum::extract::State<Store>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    match crate::console::traces::decode(&headers, body) {
        Ok((request, json)) => {
            keep(&store, request);
            crate::console::traces::accepted(json)
        }
        Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
    }
}

struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Listens on two free loopback ports: OTLP/HTTP and OTLP/gRPC.
    pub async fn start() -> Self {
        let spans = Store::default();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .with_state(spans.clone());
        let serve_http = tokio::spawn(async move {
            axum::serve(http, app).await.ok();
        });
        let service = TraceServiceServer::new(Grpc(spans.clone()));
        let serve_grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc))
                .await
                .ok();
        });
        Self {
            http: http_addr,
            grpc: grpc_addr,
            spans,
            tasks: vec![serve_http, serve_grpc],
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/HTTP (`http/protobuf` or `http/json`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// The spans of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits until the spans of `trace_id` satisfy `done`; panics after `timeout` showing the
    /// tree that did arrive.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.trace(trace_id);
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the trace {trace_id} did not arrive whole within {timeout:?}; received:\n{}",
                    tree(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The spans as an indented tree (service, kind, name), for failure messages and eyes.
pub fn tree(spans: &[ReceivedSpan]) -> String {
    fn walk(out: &mut String, spans: &[ReceivedSpan], parent: Option<&str>, depth: usize) {
        let mut children: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == parent)
            .collect();
        children.sort_by_key(|s| s.start);
        for span in children {
            let _ = writeln!(
                out,
                "{}{} {} {:?}{}",
                "  ".repeat(depth),
                span.service,
                span.kind,
                span.name,
                if span.failed { " (failed)" } else { "" }
            );
            walk(out, spans, Some(&span.span_id), depth + 1);
        }
    }
    let mut out = String::new();
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    // Roots, and spans whose parent was not received (shown at the top level, marked).
    walk(&mut out, spans, None, 0);
    for orphan in spans.iter().filter(|s| {
        s.parent_span_id
            .as_deref()
            .is_some_and(|p| !ids.contains(p))
    }) {
        let _ = writeln!(
            out,
            "(parent {} not received) {} {} {:?}",
            orphan.parent_span_id.as_deref().unwrap_or_default(),
            orphan.service,
            orphan.kind,
            orphan.name
        );
        walk(&mut out, spans, Some(&orphan.span_id), 1);
    }
    out
}

/// The parent of `span` among `spans`.
pub fn parent_of<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    let parent = span.parent_span_id.as_deref()?;
    spans.iter().find(|s| s.span_id == parent)
}
