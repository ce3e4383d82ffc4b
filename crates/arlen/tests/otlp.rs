//! Spans that exist: a client calls a real sidecar (`arlen serve --upstream`)
//! in front of a real Python application, and the sidecar exports its
//! request span over OTLP to a collector in this test (http/protobuf and
//! grpc, decoded with the OTLP protobuf definitions). The span exported is
//! the one the response's `traceparent` names and the application received
//! as its parent; its own parent is the client's span.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arlen_testkit::{free_port, poll_until_explained, ArlenProcess, PythonUpstream};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use support::binary;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// A span as the collector received it, with its resource's service name.
#[derive(Debug, Clone)]
struct Received {
    service: Option<String>,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn keep(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans.resource.as_ref().and_then(|resource| {
            resource.attributes.iter().find(|kv| kv.key == "service.name").map(|kv| text(kv.value.as_ref()))
        });
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Received {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect(),
                });
            }
        }
    }
}

struct Grpc(Spans);

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

/// An OTLP collector on two loopback ports (http/protobuf at `/v1/traces`,
/// grpc), stopped on drop.
struct Collector {
    spans: Spans,
    http: SocketAddr,
    grpc: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let spans = Spans::default();
        let (http, grpc) = runtime.block_on(async {
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addresses = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
            let app = axum::Router::new()
                .route(
                    "/v1/traces",
                    post(|State(spans): State<Spans>, body: Bytes| async move {
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(request) => {
                                keep(&spans, request);
                                (
                                    http::StatusCode::OK,
                                    [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                    ExportTraceServiceResponse::default().encode_to_vec(),
                                )
                            }
                            Err(error) => (
                                http::StatusCode::BAD_REQUEST,
                                [(http::header::CONTENT_TYPE, "text/plain")],
                                error.to_string().into_bytes(),
                            ),
                        }
                    }),
                )
                .with_state(spans.clone());
            tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
            let service = TraceServiceServer::new(Grpc(spans.clone()));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc)),
            );
            addresses
        });
        Self { spans, http, grpc, _runtime: runtime }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn span_of_trace(&self, trace_id: &str) -> Option<Received> {
        self.spans().into_iter().find(|span| span.trace_id == trace_id && span.name == "GET")
    }
}

fn sidecar(upstream: &str, extra: &[(&str, &str)]) -> ArlenProcess {
    let mut vars = vec![("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "0")];
    vars.extend_from_slice(extra);
    support::sidecar(upstream, &vars)
}

fn traceparent_parts(value: &str) -> (String, String) {
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    (fields[1].to_owned(), fields[2].to_owned())
}

#[test]
fn the_sidecars_request_span_reaches_the_collector_with_the_ids_everyone_saw() {
    let collector = Collector::start();
    let app = PythonUpstream::start(&support::upstream_script(), free_port(), "app-1");
    let endpoint = format!("http://{}", collector.http);
    // Logs at warn: the span is exported whatever the log level.
    let node = sidecar(
        &app.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "shop-sidecar"),
            ("ARLEN_LOG_LEVEL", "warn"),
        ],
    );
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let response = arlen_testkit::get(node.address(), "/headers", &[("traceparent", &caller)]).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let answered = response.header("traceparent").expect("a traceparent").to_owned();
    let (trace_id, span_id) = traceparent_parts(&answered);
    assert_eq!(trace_id, CALLER_TRACE, "the caller's trace continues");
    let seen: serde_json::Value = serde_json::from_str(&response.text()).unwrap();
    assert_eq!(seen["traceparent"], answered.as_str(), "the application's parent is the span answered");

    let span = poll_until_explained(
        "the request span at the collector",
        Duration::from_secs(10),
        || collector.span_of_trace(CALLER_TRACE),
        || format!("received: {:#?}\n{}", collector.spans(), node.describe()),
    );
    assert_eq!(span.span_id, span_id, "the span exported is the one the headers name");
    assert_eq!(span.parent_span_id, CALLER_SPAN, "a child of the caller's span");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.service.as_deref(), Some("shop-sidecar"));
    assert_eq!(span.attribute("request_id"), response.header("X-Request-Id"));
    assert_eq!(span.attribute("path"), Some("/headers"));
    assert_eq!(span.attribute("http.response.status_code"), Some("200"));

    // No caller's trace: a root span, under the cluster's name by default.
    let response = arlen_testkit::get(node.address(), "/", &[]).unwrap();
    let (root_trace, root_span) = traceparent_parts(response.header("traceparent").unwrap());
    let root = poll_until_explained(
        "the root span at the collector",
        Duration::from_secs(10),
        || collector.span_of_trace(&root_trace),
        || format!("received: {:#?}", collector.spans()),
    );
    assert_eq!(root.span_id, root_span);
    assert_eq!(root.parent_span_id, "", "a root has no parent");
}

#[test]
fn grpc_export_and_a_stop_flushes_what_is_left() {
    let collector = Collector::start();
    let app = PythonUpstream::start(&support::upstream_script(), free_port(), "app-1");
    let endpoint = format!("http://{}", collector.grpc);
    // A schedule far beyond the test: only the stop can export the span.
    let mut node = sidecar(
        &app.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let response = arlen_testkit::get(node.address(), "/", &[]).unwrap();
    assert_eq!(response.status, 200);
    let (trace_id, span_id) = traceparent_parts(response.header("traceparent").unwrap());
    assert!(collector.span_of_trace(&trace_id).is_none(), "not exported before the stop");
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(20)).success(), "{}", node.stderr());
    let span = collector
        .span_of_trace(&trace_id)
        .unwrap_or_else(|| panic!("the span was not flushed at the stop: {:#?}\n{}", collector.spans(), node.stderr()));
    assert_eq!(span.span_id, span_id);
    assert_eq!(span.service.as_deref(), Some("shop"), "the cluster's name when OTEL_SERVICE_NAME is unset");
}

#[test]
fn an_otel_variable_that_cannot_be_honoured_stops_the_start_and_is_named() {
    let port = free_port();
    let output = std::process::Command::new(binary())
        .args(["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"])
        .env("ARLEN_CLUSTER_ENABLED", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/json"), "{stderr}");
}
