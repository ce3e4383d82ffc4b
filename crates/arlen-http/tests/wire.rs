//! The HTTP layer on a real loopback socket, read as raw bytes so header
//! capitalisation is checked as it goes over the wire (CONTRACT §3, §4).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arlen_cluster::MembershipView;
use arlen_config::Config;
use arlen_http::{Runtime, ServerSettings};
use arlen_testkit::{get_async, request_text, send_raw_async, RawResponse};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{oneshot, Notify};

const CLUSTER_HEADERS: [&str; 6] = [
    "X-Arlen-Cluster",
    "X-Arlen-Node",
    "X-Arlen-Worker-Pid",
    "X-Arlen-Cluster-Status",
    "X-Arlen-Cluster-Observed-Nodes",
    "X-Arlen-Cluster-Expected-Nodes",
];

const ALPHA: &[(&str, &str)] = &[
    ("ARLEN_CLUSTER_ENABLED", "1"),
    ("ARLEN_CLUSTER_NAME", "alpha"),
    ("ARLEN_CLUSTER_NODE_ID", "node-a"),
    ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
    ("ARLEN_CLUSTER_OBSERVED_NODES", "2"),
];

struct Node {
    address: SocketAddr,
    runtime: Runtime,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    release: Arc<Notify>,
}

impl Node {
    async fn get(&self, target: &str) -> RawResponse {
        get_async(self.address, target, &[]).await.unwrap()
    }

    async fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        get_async(self.address, target, headers).await.unwrap()
    }

    async fn send(&self, method: &str, target: &str) -> RawResponse {
        send_raw_async(self.address, request_text(method, target, &[]).as_bytes()).await.unwrap()
    }
}

fn config(vars: &[(&str, &str)]) -> Config {
    Config::from_map(Path::new("/nonexistent"), vars).unwrap()
}

fn app(release: Arc<Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/healthz", get(|| async { "shadowed by the application\n" }))
        .route("/boom", get(|| async { panic!("handler failure") as &'static str }))
        .route("/error", get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "app error\n") }))
        .route(
            "/spoof",
            get(|| async {
                ([("x-arlen-cluster", "spoofed"), ("x-arlen-draining", "1"), ("x-app", "kept")], "spoof\n")
            }),
        )
        .route("/echo", post(|body: axum::body::Bytes| async move { format!("{} bytes\n", body.len()) }))
        .route(
            "/slow",
            get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    "finished\n"
                }
            }),
        )
}

/// Starts a node with static membership from `vars`. `started` marks the
/// lifecycle as started.
async fn start(vars: &[(&str, &str)], started: bool) -> Node {
    let config = config(vars);
    let runtime = Runtime::new(&config);
    let listener = arlen_http::bind_address("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
    let address = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = oneshot::channel();
    let server = tokio::spawn(arlen_http::serve(
        listener,
        runtime.wrap(app(release.clone())),
        runtime.clone(),
        ServerSettings::from_config(&config),
        async {
            let _ = stop_rx.await;
        },
    ));
    runtime.publisher().set_membership(arlen_membership::static_view(&config, std::time::SystemTime::now()));
    if started {
        runtime.publisher().mark_started();
    }
    Node { address, runtime, stop: Some(stop_tx), server, release }
}

fn assert_cluster_headers(response: &RawResponse, status: &str, observed: &str) {
    for name in CLUSTER_HEADERS {
        assert!(response.has_exact_header(name), "missing {name} with exact casing in:\n{}", response.head);
        let count = response.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
        assert_eq!(count, 1, "{name} {count} times in:\n{}", response.head);
    }
    assert_eq!(response.header("X-Arlen-Cluster"), Some("alpha"));
    assert_eq!(response.header("X-Arlen-Node"), Some("node-a"));
    assert_eq!(response.header("X-Arlen-Worker-Pid"), Some(std::process::id().to_string().as_str()));
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some(status));
    assert_eq!(response.header("X-Arlen-Cluster-Observed-Nodes"), Some(observed));
    assert_eq!(response.header("X-Arlen-Cluster-Expected-Nodes"), Some("3"));
}

fn assert_no_cluster_headers(response: &RawResponse) {
    for name in CLUSTER_HEADERS {
        assert!(response.header(name).is_none(), "unexpected {name} in:\n{}", response.head);
    }
}

/// The contract's fields have exactly these values; additive fields may follow.
fn assert_contract_fields(actual: &serde_json::Value, expected: serde_json::Value) {
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&actual[key], value, "{key} in {actual}");
    }
}

fn keys(value: &serde_json::Value) -> Vec<&str> {
    value.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn cluster_headers_on_every_kind_of_response() {
    let node = start(&[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")]].concat(), true).await;
    let cases: Vec<(RawResponse, u16)> = vec![
        (node.get("/").await, 200),
        (node.get("/healthz").await, 200),
        (node.get("/no-such-route").await, 404),
        (node.send("DELETE", "/readyz").await, 405),
        (node.get("/boom").await, 500),
        (node.get("/error").await, 500),
        (node.get("/readyz").await, 503),
        (node.get("/clusterz").await, 200),
        (node.get("/metrics").await, 200),
        (node.get("/spoof").await, 200),
    ];
    for (response, status) in &cases {
        assert_eq!(response.status, *status, "{}", response.head);
        assert_cluster_headers(response, "degraded", "2");
    }
}

#[tokio::test]
async fn the_runtime_owns_the_cluster_headers_an_application_sets() {
    let node = start(ALPHA, true).await;
    let response = node.get("/spoof").await;
    assert_cluster_headers(&response, "degraded", "2");
    assert_eq!(response.header("X-Arlen-Draining"), None, "{}", response.head);
    assert_eq!(response.header("X-App"), Some("kept"));
}

/// Under a server other than `arlen_http::serve` (here: called in-process, no
/// server at all) the cluster headers are ordinary `HeaderMap` entries.
#[tokio::test]
async fn without_arlen_s_server_the_headers_are_in_the_header_map() {
    use tower::ServiceExt as _;
    let config = config(ALPHA);
    let runtime = Runtime::new(&config);
    runtime.publisher().set_membership(arlen_membership::static_view(&config, std::time::SystemTime::now()));
    runtime.publisher().mark_draining();
    let request = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
    let response = runtime.wrap(app(Arc::new(Notify::new()))).oneshot(request).await.unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-arlen-cluster"], "alpha");
    assert_eq!(headers["x-arlen-cluster-status"], "degraded");
    assert_eq!(headers["x-arlen-cluster-observed-nodes"], "2");
    assert_eq!(headers["x-arlen-draining"], "1");
}

/// Pipelined requests on one connection: each response carries the lines
/// once, including one the application answers with an error.
#[tokio::test]
async fn pipelined_responses_each_carry_the_cluster_headers_once() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let node = start(ALPHA, true).await;
    let mut stream = tokio::net::TcpStream::connect(node.address).await.unwrap();
    let one = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let requests = format!(
        "{one}GET /error HTTP/1.1\r\nHost: x\r\n\r\n{one}GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes)).await.unwrap().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let heads: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 4, "{text}");
    for (head, status) in heads.iter().zip(["200", "500", "200", "200"]) {
        assert!(head.starts_with(status), "{head}");
        assert_eq!(head.matches("\r\nX-Arlen-Cluster-Status: degraded\r\n").count(), 1, "{head}");
        assert_eq!(head.matches("X-Arlen-Cluster:").count(), 1, "{head}");
    }
}

#[tokio::test]
async fn headers_off_when_emit_headers_is_off_even_with_cluster_enabled() {
    let node = start(&[ALPHA, &[("ARLEN_CLUSTER_EMIT_HEADERS", "0")]].concat(), true).await;
    for target in ["/", "/healthz", "/nope", "/boom"] {
        assert_no_cluster_headers(&node.get(target).await);
    }
    assert_eq!(node.get("/clusterz").await.json()["cluster"]["enabled"], true);
}

#[tokio::test]
async fn headers_off_when_cluster_is_disabled() {
    let node = start(&[("ARLEN_CLUSTER_EMIT_HEADERS", "1")], true).await;
    assert_no_cluster_headers(&node.get("/").await);
    assert_no_cluster_headers(&node.get("/readyz").await);
}

#[tokio::test]
async fn reserved_endpoints_cannot_be_shadowed_and_have_aliases() {
    let node = start(ALPHA, true).await;
    for target in ["/healthz", "/healthz/", "/healthz.json", "/healthz?x=1"] {
        let response = node.get(target).await;
        assert_eq!((response.status, response.text().as_str()), (200, "ok\n"), "{target}");
        assert_eq!(response.header("Content-Type"), Some("text/plain; charset=utf-8"));
    }
    assert_eq!(node.get("/livez/").await.text(), "live\n");
    assert_eq!(node.get("/readyz.txt").await.text(), "ready\n");
    assert_eq!(node.get("/clusterz/").await.json()["ok"], true);
}

#[tokio::test]
async fn head_matches_get_without_body_and_other_methods_get_405() {
    let node = start(ALPHA, true).await;
    for endpoint in ["/healthz", "/livez", "/readyz", "/clusterz", "/metrics"] {
        let get = node.get(endpoint).await;
        let head = node.send("HEAD", endpoint).await;
        assert_eq!(head.status, get.status, "{endpoint}");
        assert!(head.body.is_empty(), "{endpoint}: HEAD has no body");
        assert_eq!(head.header("Content-Type"), get.header("Content-Type"));
        assert_cluster_headers(&head, "degraded", "2");
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let response = node.send(method, endpoint).await;
            assert_eq!(response.status, 405, "{method} {endpoint}");
            assert_eq!(response.header("Allow"), Some("GET, HEAD"));
            assert!(response.has_exact_header("Allow"));
        }
    }
}

#[tokio::test]
async fn probe_json_field_order_and_values() {
    let node = start(&[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")]].concat(), true).await;
    let ready = node.get("/readyz?format=json").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.header("Content-Type"), Some("application/json; charset=utf-8"));
    let body = ready.json();
    assert_eq!(
        keys(&body),
        ["ok", "signal", "status", "timestamp_utc", "uptime_seconds", "ready", "checks", "details"]
    );
    assert_eq!(
        keys(&body["checks"])[..5],
        ["request_dispatch", "metrics_registry", "active_requests", "startup", "cluster_quorum"],
        "the contract's five checks come first; more may follow"
    );
    assert_eq!(
        (body["ok"].clone(), body["signal"].clone(), body["status"].clone()),
        (false.into(), "ready".into(), "not_ready".into())
    );
    assert_eq!(body["ready"], false);
    assert_eq!(
        keys(&body["checks"]["cluster_quorum"])[..5],
        ["ok", "required_for_readyz", "status", "observed_nodes", "expected_nodes"]
    );
    assert_contract_fields(
        &body["checks"]["cluster_quorum"],
        serde_json::json!({"ok": false, "required_for_readyz": true, "status": "degraded", "observed_nodes": 2, "expected_nodes": 3}),
    );
    assert_eq!(body["checks"]["draining"], serde_json::json!({"ok": true, "draining": false}));
    assert_eq!(body["checks"]["request_dispatch"], serde_json::json!({"ok": true, "mode": "in_process"}));
    assert_eq!(body["checks"]["metrics_registry"]["enabled"], true);
    assert_eq!(body["checks"]["active_requests"]["value"], 1.0);
    assert_eq!(
        body["checks"]["startup"],
        serde_json::json!({"ok": true, "started": true, "required_for_readyz": false})
    );
    let timestamp = body["timestamp_utc"].as_str().unwrap();
    assert_eq!(timestamp.len(), 24, "{timestamp}");
    assert!(timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.', "{timestamp}");
    assert!(body["uptime_seconds"].as_u64().is_some());

    for (target, signal) in [("/healthz", "health"), ("/livez", "live")] {
        let response = node.get_with(target, &[("Accept", "application/json")]).await;
        assert_eq!(response.status, 200, "liveness never depends on cluster state");
        let body = response.json();
        assert_eq!(
            keys(&body),
            ["ok", "signal", "status", "timestamp_utc", "uptime_seconds", "checks", "details"],
            "{target}"
        );
        assert_eq!(
            (body["ok"].clone(), body["signal"].clone(), body["status"].clone()),
            (true.into(), signal.into(), "ok".into())
        );
    }
}

#[tokio::test]
async fn representation_rules() {
    let node = start(ALPHA, true).await;
    let is_json = |r: &RawResponse| r.header("Content-Type") == Some("application/json; charset=utf-8");
    assert!(is_json(&node.get_with("/readyz", &[("Accept", "text/json")]).await));
    assert!(is_json(&node.get_with("/readyz", &[("Accept", "text/html, application/json;q=0.9")]).await));
    assert!(is_json(&node.get("/readyz?format=JSON").await));
    assert!(!is_json(&node.get("/readyz?format=json&format=text").await), "the last format wins");
    assert!(is_json(&node.get("/readyz?format=text&format=json").await));
    assert!(!is_json(&node.get("/readyz.json").await), "the suffix does not choose the representation");
    let text = node.get("/readyz").await;
    assert_eq!((text.text().as_str(), text.header("Content-Type")), ("ready\n", Some("text/plain; charset=utf-8")));

    let no_details = start(&[ALPHA, &[("ARLEN_HEALTH_DETAILS_ENABLED", "NO")]].concat(), true).await;
    let response = no_details.get_with("/readyz?format=json", &[("Accept", "application/json")]).await;
    assert_eq!(response.text(), "ready\n");
}

#[tokio::test]
async fn readiness_waits_for_startup_when_required() {
    let node = start(&[ALPHA, &[("ARLEN_READINESS_REQUIRES_STARTUP", "1")]].concat(), false).await;
    let before = node.get("/readyz?format=json").await;
    assert_eq!(before.status, 503);
    assert_eq!(
        before.json()["checks"]["startup"],
        serde_json::json!({"ok": false, "started": false, "required_for_readyz": true})
    );
    assert_eq!(node.get("/livez").await.status, 200);
    node.runtime.publisher().mark_started();
    let after = node.get("/readyz").await;
    assert_eq!((after.status, after.text().as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn quorum_gate_only_when_required_and_enabled() {
    let not_required = start(ALPHA, true).await;
    assert_eq!(not_required.get("/readyz").await.status, 200);
    let disabled =
        start(&[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"), ("ARLEN_CLUSTER_OBSERVED_NODES", "0")], true).await;
    let body = disabled.get("/readyz?format=json").await.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["cluster_quorum"]["required_for_readyz"], false);
    assert_eq!(body["checks"]["cluster_quorum"]["status"], "single_node");
    let nominal = start(
        &[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"), ("ARLEN_CLUSTER_OBSERVED_NODES", "4")]].concat(),
        true,
    )
    .await;
    let response = nominal.get("/readyz").await;
    assert_eq!(response.status, 200);
    assert_cluster_headers(&response, "nominal", "4");
    let partitioned = start(
        &[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"), ("ARLEN_CLUSTER_OBSERVED_NODES", "0")]].concat(),
        true,
    )
    .await;
    let response = partitioned.get("/readyz").await;
    assert_eq!((response.status, response.text().as_str()), (503, "not_ready\n"));
    assert_cluster_headers(&response, "partitioned", "0");
}

#[tokio::test]
async fn clusterz_document() {
    let node =
        start(&[ALPHA, &[("ARLEN_SESSION_ENABLED", "1"), ("ARLEN_SESSION_SECRET", "s3cret")]].concat(), true).await;
    let response = node.get("/clusterz?format=text").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json; charset=utf-8"));
    assert!(!response.text().contains("s3cret"));
    let body = response.json();
    assert_eq!(keys(&body), ["ok", "cluster", "contracts", "coordination", "details"]);
    let cluster = &body["cluster"];
    assert_eq!(
        &keys(cluster)[..8],
        ["enabled", "name", "node_id", "expected_nodes", "observed_nodes", "worker_pid", "mode", "quorum"]
    );
    assert_eq!(cluster["name"], "alpha");
    assert_eq!(cluster["node_id"], "node-a");
    assert_eq!(cluster["worker_pid"], std::process::id());
    assert_eq!(cluster["mode"], "multi_node");
    assert_eq!(keys(&cluster["quorum"])[..4], ["status", "met", "observed_nodes", "expected_nodes"]);
    assert_contract_fields(
        &cluster["quorum"],
        serde_json::json!({"status": "degraded", "met": false, "observed_nodes": 2, "expected_nodes": 3}),
    );
    assert_contract_fields(
        &cluster["quorum"],
        serde_json::json!({"policy": "all", "required_nodes": 3, "failure_tolerance": 0}),
    );
    assert_eq!(
        body["contracts"]["session"],
        serde_json::json!({"enabled": true, "mode": "cookie_signed", "shared_secret_required": true, "shared_secret_configured": true})
    );
    assert_eq!(
        body["contracts"]["realtime"],
        serde_json::json!({"mode": "node_local_pubsub", "cluster_broadcast": "external_broker_required"})
    );
    let coordination = &body["coordination"];
    assert_eq!(&keys(coordination)[..3], ["membership_source", "state", "capability_matrix"]);
    assert_eq!(coordination["membership_source"], "static_config");
    assert_eq!(coordination["state"], "degraded");
    assert_eq!(
        coordination["capability_matrix"],
        serde_json::json!({
            "cross_node_request_routing": "external_load_balancer_required",
            "cross_node_realtime_fanout": "external_broker_required",
            "cross_node_jobs_deduplication": "external_queue_required",
            "cross_node_cache_coherence": "external_cache_required"
        })
    );

    let single = start(&[("ARLEN_CLUSTER_EXPECTED_NODES", "0"), ("ARLEN_CLUSTER_OBSERVED_NODES", "5")], true).await;
    let body = single.get("/clusterz").await.json();
    assert_eq!(body["cluster"]["mode"], "single_node");
    assert_eq!(body["cluster"]["enabled"], false);
    assert_eq!(body["cluster"]["expected_nodes"], 1, "expected is clamped");
    assert_eq!(body["cluster"]["observed_nodes"], 5, "observed is raw");
    assert_eq!(body["coordination"]["state"], "single_node");
}

#[tokio::test]
async fn metrics_text_json_and_disabled() {
    let node = start(ALPHA, true).await;
    node.get("/").await;
    node.get("/missing").await;
    let response = node.get("/metrics").await;
    assert_eq!(response.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = response.text();
    let value = |series: &str| {
        arlen_http::metrics::sample_value(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    assert!(value("arlen_http_requests_total") >= 3.0);
    assert_eq!(value("arlen_http_requests_active"), 1.0);
    assert!(value("arlen_http_responses_total{status=\"200\"}") >= 1.0);
    assert_eq!(value("arlen_http_responses_total{status=\"404\"}"), 1.0);
    assert!(value("arlen_http_request_duration_seconds_count") >= 2.0);
    assert_eq!(value("arlen_cluster_observed_nodes"), 2.0);
    assert_eq!(value("arlen_cluster_expected_nodes"), 3.0);
    assert_eq!(value("arlen_cluster_quorum_met"), 0.0);
    assert_eq!(value("arlen_cluster_status{status=\"degraded\"}"), 1.0);
    assert_eq!(value("arlen_cluster_status{status=\"nominal\"}"), 0.0);

    let json = node.get_with("/metrics", &[("Accept", "application/json")]).await;
    assert_eq!(json.header("Content-Type"), Some("application/json; charset=utf-8"));
    let body = json.json();
    let family =
        body["metrics"].as_array().unwrap().iter().find(|f| f["name"] == "arlen_cluster_observed_nodes").unwrap();
    assert_eq!(family["type"], "gauge");
    assert_eq!(family["samples"][0]["value"], 2.0);

    let off = start(&[ALPHA, &[("ARLEN_METRICS_ENABLED", "off")]].concat(), true).await;
    let response = off.get("/metrics").await;
    assert_eq!((response.status, response.body.len()), (200, 0));
    assert_cluster_headers(&response, "degraded", "2");
}

#[tokio::test]
async fn identity_and_trace_headers() {
    let node = start(ALPHA, true).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = node.get_with("/", &[("traceparent", incoming)]).await;
    let request_id = response.header("X-Request-Id").unwrap();
    assert_eq!(request_id.len(), 32);
    assert!(response.has_exact_header("X-Correlation-Id"));
    assert!(response.has_exact_header("X-Trace-Id"));
    assert_eq!(response.header("X-Trace-Id"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(response.header("traceparent").unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_ne!(node.get("/").await.header("X-Request-Id"), Some(request_id), "fresh per request");

    let off = start(
        &[ALPHA, &[("ARLEN_RESPONSE_IDENTITY_HEADERS_ENABLED", "0"), ("ARLEN_TRACE_PROPAGATION_ENABLED", "0")]]
            .concat(),
        true,
    )
    .await;
    let response = off.get("/").await;
    for name in ["X-Request-Id", "X-Correlation-Id", "X-Trace-Id", "traceparent"] {
        assert!(response.header(name).is_none(), "{name}");
    }
    assert_cluster_headers(&response, "degraded", "2");
}

#[tokio::test]
async fn request_limits_answer_with_cluster_headers() {
    let node = start(
        &[
            ALPHA,
            &[
                ("ARLEN_MAX_REQUEST_LINE_BYTES", "64"),
                ("ARLEN_MAX_HEADER_BYTES", "300"),
                ("ARLEN_MAX_BODY_BYTES", "10"),
            ],
        ]
        .concat(),
        true,
    )
    .await;
    let long_target = format!("/{}", "a".repeat(80));
    let response = node.get(&long_target).await;
    assert_eq!(response.status, 414);
    assert_cluster_headers(&response, "degraded", "2");

    let big_header = "b".repeat(400);
    let response = node.get_with("/", &[("X-Big", &big_header)]).await;
    assert_eq!(response.status, 431);
    assert_cluster_headers(&response, "degraded", "2");

    let post = |body: &str| {
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let response = send_raw_async(node.address, post("0123456789abc").as_bytes()).await.unwrap();
    assert_eq!(response.status, 413);
    assert_cluster_headers(&response, "degraded", "2");
    let response = send_raw_async(node.address, post("0123456789").as_bytes()).await.unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "10 bytes\n"));
    let chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n";
    let response = send_raw_async(node.address, chunked.as_bytes()).await.unwrap();
    assert_eq!(response.status, 413, "a chunked body over the limit is refused too");
}

#[tokio::test]
async fn session_limit_answers_503_with_retry_after() {
    let node = start(&[ALPHA, &[("ARLEN_MAX_HTTP_SESSIONS", "1")]].concat(), true).await;
    // Hold the only session with a slow request. Connecting first puts this
    // connection ahead of every later one in the accept queue.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(node.address).await.unwrap();
    stream.write_all(request_text("GET", "/slow", &[]).as_bytes()).await.unwrap();
    let held = tokio::spawn(async move {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        RawResponse::parse(&bytes).unwrap()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let response = node.get("/").await;
        if response.status == 503 {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw the session limit: {} {:?}",
            response.status,
            held.is_finished()
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(busy.header("Retry-After"), Some("1"));
    assert!(busy.has_exact_header("X-Arlen-Backpressure-Reason"));
    assert_eq!(busy.header("X-Arlen-Backpressure-Reason"), Some("http_session_limit"));
    assert_cluster_headers(&busy, "degraded", "2");
    node.release.notify_one();
    assert_eq!(held.await.unwrap().text(), "finished\n");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_connection_timeout() {
    use tokio::io::AsyncReadExt as _;
    let node = start(&[ALPHA, &[("ARLEN_CONNECTION_TIMEOUT_SECONDS", "1")]].concat(), true).await;
    let mut stream = tokio::net::TcpStream::connect(node.address).await.unwrap();
    let mut buffer = [0u8; 64];
    // The server closes the silent connection: read returns EOF (0) well before 10 s.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "connection stayed open: {read:?}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let mut node = start(ALPHA, true).await;
    let in_flight = tokio::spawn({
        let address = node.address;
        async move { get_async(address, "/slow", &[]).await }
    });
    stop_once_the_slow_request_is_in_flight(&mut node).await;
    assert!(!node.server.is_finished(), "server waits for the in-flight request");
    node.release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "finished\n"));
    tokio::time::timeout(Duration::from_secs(10), &mut node.server).await.unwrap().unwrap().unwrap();
}

/// Waits until `/slow` is being handled, asks the server to stop, and waits
/// until the listener refuses new connections.
async fn stop_once_the_slow_request_is_in_flight(node: &mut Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while active(node).await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request never arrived");
        tokio::task::yield_now().await;
    }
    node.stop.take().unwrap().send(()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(node.address).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "listener still accepting after shutdown");
        tokio::task::yield_now().await;
    }
}

async fn active(node: &Node) -> f64 {
    let text = node.get("/metrics").await.text();
    arlen_http::metrics::sample_value(&text, "arlen_http_requests_active").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_feeds_headers_and_body_while_membership_changes() {
    let node = start(ALPHA, true).await;
    let publisher = node.runtime.publisher();
    let flipping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flipper = tokio::spawn({
        let flipping = flipping.clone();
        async move {
            let mut observed = 0u32;
            while flipping.load(std::sync::atomic::Ordering::Relaxed) {
                observed = (observed + 1) % 5;
                publisher.set_membership(static_view(observed));
                tokio::task::yield_now().await;
            }
        }
    });
    let mut generations = std::collections::HashSet::new();
    for _ in 0..200 {
        let response = node.get("/clusterz").await;
        let body = response.json();
        let observed = body["cluster"]["observed_nodes"].to_string();
        assert_eq!(response.header("X-Arlen-Cluster-Observed-Nodes"), Some(observed.as_str()));
        assert_eq!(response.header("X-Arlen-Cluster-Status"), body["cluster"]["quorum"]["status"].as_str());
        generations.insert(body["cluster"]["generation"].as_u64().unwrap());
    }
    flipping.store(false, std::sync::atomic::Ordering::Relaxed);
    flipper.await.unwrap();
    assert!(generations.len() > 1, "membership changed during the run");
}

fn static_view(observed: u32) -> MembershipView {
    MembershipView::counted("static_config", observed)
}

#[tokio::test]
async fn majority_policy_keeps_two_of_three_ready_and_not_one() {
    let node = start(
        &[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"), ("ARLEN_CLUSTER_QUORUM_POLICY", "majority")]]
            .concat(),
        true,
    )
    .await;
    let response = node.get("/readyz?format=json").await;
    assert_eq!(response.status, 200, "2 of 3 is a majority");
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("degraded"), "status keeps its meaning");
    let quorum = node.get("/clusterz").await.json()["cluster"]["quorum"].clone();
    assert_contract_fields(
        &quorum,
        serde_json::json!({"status": "degraded", "met": true, "policy": "majority", "required_nodes": 2, "failure_tolerance": 0}),
    );
    node.runtime.publisher().set_membership(static_view(1));
    assert_eq!(node.get("/readyz").await.status, 503, "a lone node is not a majority");
    node.runtime.publisher().set_membership(static_view(3));
    assert_eq!(node.get("/clusterz").await.json()["cluster"]["quorum"]["failure_tolerance"], 1);
}

#[tokio::test]
async fn kubernetes_probe_grammar() {
    let node = start(&[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")]].concat(), true).await;
    let verbose = node.get("/readyz?verbose").await;
    assert_eq!(verbose.status, 503);
    assert_eq!(
        verbose.text(),
        "[+]request_dispatch ok\n[+]metrics_registry ok\n[+]active_requests ok\n[+]startup ok\n\
         [-]cluster_quorum failed: quorum not met: degraded, 2 of 3 expected observed, 3 required (policy all)\n\
         [+]draining ok\nreadyz check failed\n"
    );
    let excluded = node.get("/readyz?verbose&exclude=cluster_quorum&exclude=nonsense").await;
    assert_eq!(excluded.status, 200);
    let text = excluded.text();
    assert!(text.contains("[+]cluster_quorum excluded: failed: quorum not met"), "{text}");
    assert!(text.contains("warn: some health checks cannot be excluded: no matches for \"nonsense\"\n"), "{text}");
    assert!(text.ends_with("readyz check passed\n"), "{text}");
    let plain = node.get("/readyz?exclude=cluster_quorum").await;
    assert_eq!((plain.status, plain.text().as_str()), (200, "ready\n"));

    let check = node.get("/readyz/cluster_quorum").await;
    assert_eq!(check.status, 503);
    assert!(check.text().starts_with("[-]cluster_quorum failed: quorum not met"), "{}", check.text());
    assert_cluster_headers(&check, "degraded", "2");
    let ok = node.get("/readyz/startup").await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));
    let missing = node.get("/readyz/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("checks: request_dispatch, metrics_registry"), "{}", missing.text());
    assert_eq!(node.get("/livez/cluster_quorum").await.status, 404, "liveness has no cluster check");

    let live = node.get("/livez?verbose").await;
    assert_eq!(
        (live.status, live.text().as_str()),
        (200, "[+]request_dispatch ok\n[+]metrics_registry ok\n[+]active_requests ok\nlivez check passed\n")
    );
    let json = node.get("/readyz?format=json&exclude=cluster_quorum").await.json();
    assert_eq!((json["ready"].clone(), json["excluded"].clone()), (true.into(), serde_json::json!(["cluster_quorum"])));
}

#[tokio::test]
async fn clusterz_waits_for_a_state_and_wakes_on_change() {
    let node = start(ALPHA, true).await;
    let immediate = node.get("/clusterz?wait_for_status=degraded&wait_for_nodes=%3E%3D2&timeout=5s").await;
    assert_eq!(immediate.status, 200);

    let waiting = tokio::spawn({
        let address = node.address;
        async move { get_async(address, "/clusterz?wait_for_status=nominal&wait_for_nodes=%3E%3D3&timeout=20s", &[]).await }
    });
    // Once the waiting request is in flight, make the condition true.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.runtime.metrics().active_requests() < 1 {
        assert!(tokio::time::Instant::now() < deadline, "waiting request never arrived");
        tokio::task::yield_now().await;
    }
    node.runtime.publisher().set_membership(static_view(3));
    let response = waiting.await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["cluster"]["quorum"]["status"], "nominal");
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("nominal"), "headers from the snapshot that answered");

    let timed_out = node.get("/clusterz?wait_for_status=partitioned&timeout=200ms").await;
    assert_eq!(timed_out.status, 408);
    assert_eq!(timed_out.json()["cluster"]["quorum"]["status"], "nominal");

    let bad = node.get("/clusterz?wait_for_nodes=many").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().starts_with("bad request parameter wait_for_nodes:"), "{}", bad.text());
}

#[tokio::test]
async fn hysteresis_holds_readiness_through_the_grace_then_flips_by_itself() {
    let node = start(
        &[
            ALPHA,
            &[
                ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
                ("ARLEN_CLUSTER_OBSERVED_NODES", "3"),
                ("ARLEN_CLUSTER_QUORUM_LOSS_GRACE_MS", "400"),
                ("ARLEN_CLUSTER_QUORUM_RECOVERY_STABLE_MS", "300"),
            ],
        ]
        .concat(),
        true,
    )
    .await;
    // Recovery from the initial nothing-observed state must hold for 300 ms first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.get("/readyz").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost_at = tokio::time::Instant::now();
    node.runtime.publisher().set_membership(static_view(2));
    let during = node.get("/readyz?format=json").await;
    if lost_at.elapsed() < Duration::from_millis(350) {
        assert_eq!(during.status, 200, "inside the grace");
        let quorum = &during.json()["checks"]["cluster_quorum"];
        assert_eq!(
            (quorum["status"].as_str(), quorum["met"].as_bool(), quorum["met_now"].as_bool()),
            (Some("degraded"), Some(true), Some(false))
        );
        assert_eq!(quorum["pending"]["met"], false);
        assert!(quorum["pending"]["effective_at_utc"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(during.header("X-Arlen-Cluster-Status"), Some("degraded"), "raw status shows the present");
    // No further publish: the gate flips by itself once the grace has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.get("/readyz").await.status != 503 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lost_at.elapsed() >= Duration::from_millis(400), "flipped before the grace: {:?}", lost_at.elapsed());
}

#[tokio::test]
async fn draining_takes_the_node_out_of_rotation_and_says_so() {
    let node = start(ALPHA, true).await;
    assert!(node.get("/").await.header("X-Arlen-Draining").is_none());
    node.runtime.publisher().mark_draining();
    let ready = node.get("/readyz?format=json").await;
    assert_eq!(ready.status, 503);
    let draining = &ready.json()["checks"]["draining"];
    assert_eq!((draining["ok"].as_bool(), draining["draining"].as_bool()), (Some(false), Some(true)));
    assert!(ready.has_exact_header("X-Arlen-Draining"));
    assert_eq!(node.get("/livez").await.status, 200);
    assert_eq!(node.get("/healthz").await.status, 200);
    let app = node.get("/").await;
    assert_eq!((app.status, app.header("X-Arlen-Draining")), (200, Some("1")));
    assert!(app.has_exact_header("X-Arlen-Draining"), "{}", app.head);
    assert_cluster_headers(&app, "degraded", "2");
    assert_eq!(node.get("/clusterz").await.json()["cluster"]["lifecycle"]["draining"], true);
    assert_eq!(node.get("/readyz/draining").await.status, 503);
}

/// A real HTTP/2 client speaking h2c with prior knowledge.
fn h2_client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

#[tokio::test]
async fn http2_with_prior_knowledge_gets_the_same_endpoints_and_headers_on_the_same_port() {
    let node = start(&[ALPHA, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")]].concat(), true).await;
    let client = h2_client();
    for (target, status) in
        [("/", 200), ("/healthz", 200), ("/readyz", 503), ("/clusterz", 200), ("/nope", 404), ("/boom", 500)]
    {
        let response = client.get(format!("http://{}{target}", node.address)).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{target}");
        assert_eq!(response.status().as_u16(), status, "{target}");
        let headers = response.headers();
        assert_eq!(headers["x-arlen-cluster"], "alpha", "{target}");
        assert_eq!(headers["x-arlen-cluster-status"], "degraded", "{target}");
        assert_eq!(headers["x-arlen-cluster-observed-nodes"], "2");
        assert_eq!(headers["x-arlen-worker-pid"], std::process::id().to_string().as_str());
        assert_eq!(headers["x-request-id"].len(), 32);
        assert!(headers.contains_key("traceparent"));
        assert!(!headers.contains_key("connection"), "no connection-specific headers on HTTP/2");
    }
    let spoofed = client.get(format!("http://{}/spoof", node.address)).send().await.unwrap();
    assert_eq!(spoofed.headers()["x-arlen-cluster"], "alpha", "the runtime owns the cluster headers on HTTP/2 too");
    assert!(!spoofed.headers().contains_key("x-arlen-draining"));
    // HTTP/1.1 on the same port, same answers.
    let h1 = node.get("/readyz").await;
    assert_eq!(h1.status, 503);
    assert!(h1.has_exact_header("X-Arlen-Cluster-Status"));
}

#[tokio::test]
async fn http2_requests_meet_the_same_limits() {
    let node =
        start(&[ALPHA, &[("ARLEN_MAX_REQUEST_LINE_BYTES", "200"), ("ARLEN_MAX_BODY_BYTES", "10")]].concat(), true)
            .await;
    let client = h2_client();
    let long = format!("http://{}/{}", node.address, "a".repeat(300));
    let response = client.get(long).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 414);
    assert_eq!(response.headers()["x-arlen-cluster"], "alpha");
    let response = client.post(format!("http://{}/echo", node.address)).body("x".repeat(100)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let response = client.post(format!("http://{}/echo", node.address)).body("tiny").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "4 bytes\n");
}

#[tokio::test]
async fn an_http2_connection_is_one_session_and_yields_it_when_idle() {
    let node = start(&[ALPHA, &[("ARLEN_MAX_HTTP_SESSIONS", "1")]].concat(), true).await;
    let client = h2_client();
    // The HTTP/2 connection holds the only session (and can multiplex on it)
    // while a stream of it is in flight.
    let first = client.get(format!("http://{}/", node.address)).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let slow = tokio::spawn({
        let url = format!("http://{}/slow", node.address);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while active(&node).await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request never arrived");
        tokio::task::yield_now().await;
    }
    let again = client.get(format!("http://{}/healthz", node.address)).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200, "the HTTP/2 connection multiplexes on its session");
    let busy = node.get("/").await;
    assert_eq!(busy.status, 503, "{}", busy.head);
    assert_eq!(busy.header("X-Arlen-Backpressure-Reason"), Some("http_session_limit"));
    node.release.notify_one();
    assert_eq!(slow.await.unwrap(), "finished\n");
    // Idle now (for a moment: one just accepted has its request on
    // the way): a newcomer gets the session, the idle connection is closed for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let newcomer = node.get("/").await;
        if newcomer.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "an idle connection kept the only session: {}", newcomer.head);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = node.get("/metrics").await.text();
    assert!(arlen_http::metrics::sample_value(&metrics, "arlen_http_connections_evicted_total").unwrap() >= 1.0);
}

#[tokio::test]
async fn http2_drain_sends_goaway_and_lets_streams_in_flight_finish() {
    let mut node = start(ALPHA, true).await;
    let client = h2_client();
    let url = format!("http://{}/slow", node.address);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    });
    stop_once_the_slow_request_is_in_flight(&mut node).await;
    assert!(!node.server.is_finished(), "the server waits for the stream in flight");
    // As on HTTP/1.1, a stream arriving in the first moment is still answered;
    // then GOAWAY: the connection takes no new stream, while /slow goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(format!("http://{}/healthz", node.address)).send().await {
            Ok(response) => assert_eq!(response.status().as_u16(), 200),
            Err(_) => break,
        }
        assert!(tokio::time::Instant::now() < deadline, "new streams still accepted 10 s into the drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!in_flight.is_finished() && !node.server.is_finished(), "the stream in flight outlives the GOAWAY");
    node.release.notify_one();
    assert_eq!(in_flight.await.unwrap(), "finished\n");
    tokio::time::timeout(Duration::from_secs(10), &mut node.server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn title_case_can_be_turned_off_on_http1() {
    let node = start(&[ALPHA, &[("ARLEN_HTTP_TITLE_CASE_HEADERS", "0")]].concat(), true).await;
    let response = node.get("/").await;
    assert!(response.has_exact_header("x-arlen-cluster-status"), "{}", response.head);
    assert!(!response.has_exact_header("X-Arlen-Cluster-Status"));
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("degraded"), "names are case-insensitive");
}

#[tokio::test]
async fn an_http2_connection_over_the_session_limit_gets_one_answer_then_goaway() {
    let node = start(&[ALPHA, &[("ARLEN_MAX_HTTP_SESSIONS", "1")]].concat(), true).await;
    // The only session, held by an HTTP/2 client with a stream in flight
    // (an idle one would be closed to make room).
    let holder = h2_client();
    assert_eq!(holder.get(format!("http://{}/", node.address)).send().await.unwrap().status().as_u16(), 200);
    let _held = tokio::spawn({
        let url = format!("http://{}/slow", node.address);
        async move { holder.get(url).send().await.map(|r| r.status()) }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while active(&node).await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request never arrived");
        tokio::task::yield_now().await;
    }
    // Over the limit: one stream is answered (a probe, by its own rules) ...
    let stream = tokio::net::TcpStream::connect(node.address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let request = || {
        http::Request::get(format!("http://{}/livez", node.address))
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap()
    };
    let first = sender.send_request(request()).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    // ... and the connection takes no second one: GOAWAY, then it closes.
    let second = tokio::time::timeout(Duration::from_secs(5), async {
        match sender.ready().await {
            Ok(()) => sender.send_request(request()).await.map(|r| r.status().as_u16()),
            Err(error) => Err(error),
        }
    })
    .await
    .expect("the over-limit connection answers or ends at once");
    assert!(second.is_err(), "a second stream on an over-limit connection was served: {second:?}");
    tokio::time::timeout(Duration::from_secs(5), driver).await.expect("the connection ended").unwrap().ok();
}
