//! The request span as an OpenTelemetry span: with a `tracing-opentelemetry`
//! layer, the span the response's `traceparent` names is the span exported,
//! a child of the caller's span, with the application's spans under it.

use std::path::Path;

use arlen_config::Config;
use arlen_http::otel::opentelemetry::trace::{SpanKind, TracerProvider as _};
use arlen_http::Runtime;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::ServiceExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned(), fields[3].to_owned())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

#[tokio::test]
async fn the_span_the_headers_name_is_exported_under_the_callers_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(arlen_http::otel::layer(provider.tracer("test")));
    let _installed = tracing::subscriber::set_default(subscriber);

    let config = Config::from_map(Path::new("/nonexistent"), &[]).unwrap();
    let runtime = Runtime::new(&config);
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                tracing::info_span!("app_work").in_scope(|| tracing::info!("inside the application"));
                "hello\n"
            }),
        )
        .route("/fail", get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "no\n") }));
    let service = runtime.wrap(app);

    // A caller with a sampled trace.
    let request = Request::get("/")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(Body::empty())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    let (trace_id, span_id, flags) = parts(response.headers()["traceparent"].to_str().unwrap());
    assert_eq!(trace_id, CALLER_TRACE);
    assert_eq!(flags, "01");
    assert_eq!(response.headers()["x-trace-id"], CALLER_TRACE);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();

    // A caller with no trace: a root span, whose ids the headers carry.
    let response = service.clone().oneshot(Request::get("/fail").body(Body::empty()).unwrap()).await.unwrap();
    let (root_trace, root_span, _) = parts(response.headers()["traceparent"].to_str().unwrap());

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let requests = named(&spans, "GET");
    assert_eq!(requests.len(), 2, "one span per request: {spans:#?}");

    let continued = requests.iter().find(|s| s.span_context.trace_id().to_string() == CALLER_TRACE).unwrap();
    assert_eq!(continued.span_context.span_id().to_string(), span_id, "the exported span is the one the headers name");
    assert_eq!(continued.parent_span_id.to_string(), CALLER_SPAN, "a child of the caller's span");
    assert!(continued.parent_span_is_remote);
    assert_eq!(continued.span_kind, SpanKind::Server);
    let attribute = |span: &SpanData, key: &str| {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute(continued, "request_id").as_deref(), Some(request_id.as_str()));
    assert_eq!(attribute(continued, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(continued, "span_id").as_deref(), Some(span_id.as_str()), "the log field agrees");

    let app_work = named(&spans, "app_work");
    assert_eq!(app_work.len(), 1);
    assert_eq!(app_work[0].parent_span_id.to_string(), span_id, "the application's span is under the request's");
    assert_eq!(app_work[0].span_context.trace_id().to_string(), CALLER_TRACE);

    let root = requests.iter().find(|s| s.span_context.trace_id().to_string() == root_trace).unwrap();
    assert_eq!(root.span_context.span_id().to_string(), root_span);
    assert_eq!(root.parent_span_id, arlen_http::otel::opentelemetry::trace::SpanId::INVALID, "a root");
    assert_eq!(
        root.status,
        arlen_http::otel::opentelemetry::trace::Status::error("500 Internal Server Error"),
        "a 5xx marks the span as an error"
    );
}

/// A layer the application builds itself (not through `otel::layer`): the
/// span the headers name is still the span exported.
#[tokio::test]
async fn a_hand_built_layer_gets_the_same_ids() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = arlen_http::otel::tracing_opentelemetry::layer().with_tracer(provider.tracer("own"));
    let _installed = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let runtime = Runtime::new(&Config::from_map(Path::new("/nonexistent"), &[]).unwrap());
    let service = runtime.wrap(Router::new().route("/", get(|| async { "hello\n" })));
    let request = Request::get("/")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let (trace_id, span_id, _) = parts(response.headers()["traceparent"].to_str().unwrap());
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let span = spans.iter().find(|s| s.span_context.span_id().to_string() == span_id).expect("the named span exported");
    assert_eq!(span.span_context.trace_id().to_string(), trace_id);
    assert_eq!(span.parent_span_id.to_string(), CALLER_SPAN);
}
