//! The equivalent stack: what a team would assemble from maintained crates
//! to get, for an axum application, what Arlen gives it — request and
//! correlation ids (tower-http's request-id layers), W3C trace context
//! propagation (OpenTelemetry's propagator, a span per request), Prometheus
//! request metrics (`metrics` + `metrics-exporter-prometheus`), liveness and
//! readiness handlers returning JSON, a status document, and static cluster
//! headers set by tower layers. Same runtime settings as `arlen serve`. It
//! does less than Arlen (no quorum, no membership, no limits, no drain); the
//! benchmark measures what that costs or saves.
//!
//! usage: equivalent-stack <port>

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Query};
use axum::http::{HeaderName, HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusBuilder;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// A span per request, continuing the caller's `traceparent`, and the
/// response's `traceparent` naming it.
async fn trace_context(request: Request<Body>, next: Next) -> Response {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&HeaderExtractor(request.headers()));
    let span = opentelemetry::global::tracer_provider().tracer("equivalent").start_with_context("request", &parent);
    let cx = parent.with_span(span);
    let mut response = next.run(request).await;
    propagator.inject_context(&cx, &mut HeaderInjector(response.headers_mut()));
    response
}

/// `http_requests_total` and `http_request_duration_seconds` by method, route and status.
async fn record_metrics(request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("path", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

#[derive(serde::Deserialize)]
struct Format {
    format: Option<String>,
}

fn probe(signal: &'static str, ready: Option<bool>) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "signal": signal,
        "status": if ready.is_some() { "ready" } else { "ok" },
        "timestamp_utc": humantime_now(),
        "ready": ready,
        "checks": { "startup": { "ok": true, "started": true } },
    })
}

fn humantime_now() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: equivalent-stack <port>");
    opentelemetry::global::set_tracer_provider(SdkTracerProvider::builder().build());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let prometheus = PrometheusBuilder::new().install_recorder().expect("prometheus recorder");
        let cluster: [(&'static str, &'static str); 6] = [
            ("x-arlen-cluster", "bench"),
            ("x-arlen-node", "node-a"),
            ("x-arlen-worker-pid", "4242"),
            ("x-arlen-cluster-status", "nominal"),
            ("x-arlen-cluster-observed-nodes", "1"),
            ("x-arlen-cluster-expected-nodes", "1"),
        ];
        let mut app = Router::new()
            // The body `arlen serve`'s demo route answers on node-a of cluster bench.
            .route("/", get(|| async { "arlen node node-a (cluster bench)\n" }))
            .route("/livez", get(|| async { Json(probe("live", None)) }))
            .route(
                "/readyz",
                get(|Query(format): Query<Format>| async move {
                    if format.format.as_deref() == Some("json") {
                        Json(probe("ready", Some(true))).into_response()
                    } else {
                        "ready\n".into_response()
                    }
                }),
            )
            .route(
                "/clusterz",
                get(|| async {
                    Json(serde_json::json!({
                        "ok": true,
                        "cluster": { "enabled": true, "name": "bench", "node_id": "node-a", "expected_nodes": 1,
                                     "observed_nodes": 1, "mode": "multi_node",
                                     "quorum": { "status": "nominal", "met": true, "observed_nodes": 1, "expected_nodes": 1 } },
                    }))
                }),
            )
            .route("/metrics", get(move || std::future::ready(prometheus.render())))
            .layer(middleware::from_fn(record_metrics))
            .layer(middleware::from_fn(trace_context));
        for (name, value) in cluster {
            app = app.layer(SetResponseHeaderLayer::overriding(HeaderName::from_static(name), HeaderValue::from_static(value)));
        }
        let x_request_id = HeaderName::from_static("x-request-id");
        let app = app
            .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
            .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}
