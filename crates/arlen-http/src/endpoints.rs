//! The reserved operability endpoints (CONTRACT §3).
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | `ok` — the process answers |
//! | `/livez` | `live` — the process answers; never depends on cluster state |
//! | `/readyz` | `ready` / `not_ready` (503) — startup and quorum gates |
//! | `/clusterz` | JSON status document, always 200 |
//! | `/metrics` | Prometheus text, or JSON on `Accept: application/json` |
//!
//! Each also answers with a trailing `/` or a `.<ext>` suffix. `GET` and
//! `HEAD` only; anything else is 405 with `Allow: GET, HEAD`. Every answer is
//! computed from the one snapshot the caller passes in.

use std::time::SystemTime;

use arlen_cluster::Snapshot;
use axum::body::Body;
use axum::response::Response;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;

use crate::metrics::{Metrics, REGISTRY_SOURCE};

/// A reserved endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Live,
    Ready,
    Cluster,
    Metrics,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::Health, Endpoint::Live, Endpoint::Ready, Endpoint::Cluster, Endpoint::Metrics];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Health => "/healthz",
            Endpoint::Live => "/livez",
            Endpoint::Ready => "/readyz",
            Endpoint::Cluster => "/clusterz",
            Endpoint::Metrics => "/metrics",
        }
    }
}

/// The reserved endpoint a path names, if any: `/healthz`, `/healthz/` and
/// `/healthz.<ext>` all name `/healthz`.
pub fn match_reserved(path: &str) -> Option<Endpoint> {
    Endpoint::ALL.into_iter().find(|endpoint| {
        let Some(rest) = path.strip_prefix(endpoint.path()) else { return false };
        match rest.as_bytes() {
            [] | [b'/'] => true,
            [b'.', ext @ ..] => !ext.is_empty() && ext.iter().all(u8::is_ascii_alphanumeric),
            _ => false,
        }
    })
}

/// What an endpoint needs besides the snapshot.
pub struct Context<'a> {
    pub metrics: &'a Metrics,
    pub uptime_seconds: u64,
    pub now: SystemTime,
}

pub const TEXT_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const PROMETHEUS_TEXT: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// Answers a reserved endpoint.
pub fn answer(endpoint: Endpoint, parts: &http::request::Parts, snapshot: &Snapshot, cx: &Context<'_>) -> Response {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match endpoint {
        Endpoint::Health => probe(Signal::Health, parts, snapshot, cx),
        Endpoint::Live => probe(Signal::Live, parts, snapshot, cx),
        Endpoint::Ready => probe(Signal::Ready, parts, snapshot, cx),
        Endpoint::Cluster => json_response(StatusCode::OK, &cluster_document(snapshot, cx.now)),
        Endpoint::Metrics => metrics(parts, snapshot, cx),
    }
}

pub fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_UTF8);
    response
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("response documents always serialise");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON_UTF8);
    response
}

fn accepts_json(parts: &http::request::Parts) -> bool {
    parts.headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        let accept = accept.to_ascii_lowercase();
        accept.contains("application/json") || accept.contains("text/json")
    })
}

/// The last `format` query parameter, lower-cased.
fn format_parameter(parts: &http::request::Parts) -> Option<String> {
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "format")
        .last()
        .map(|(_, v)| v.to_ascii_lowercase())
}

fn wants_json(parts: &http::request::Parts, snapshot: &Snapshot) -> bool {
    if !snapshot.settings.health_details_enabled {
        return false;
    }
    match format_parameter(parts) {
        Some(format) if format == "json" => true,
        _ => accepts_json(parts),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Health,
    Live,
    Ready,
}

#[derive(Serialize)]
struct ProbeDocument {
    ok: bool,
    signal: &'static str,
    status: &'static str,
    timestamp_utc: String,
    uptime_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<bool>,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    request_dispatch: RequestDispatch,
    metrics_registry: MetricsRegistry,
    active_requests: ActiveRequests,
    startup: Startup,
    cluster_quorum: ClusterQuorum,
}

#[derive(Serialize)]
struct RequestDispatch {
    ok: bool,
    mode: &'static str,
}

#[derive(Serialize)]
struct MetricsRegistry {
    ok: bool,
    source: &'static str,
    enabled: bool,
}

#[derive(Serialize)]
struct ActiveRequests {
    ok: bool,
    value: f64,
}

#[derive(Serialize)]
struct Startup {
    ok: bool,
    started: bool,
    required_for_readyz: bool,
}

#[derive(Serialize)]
struct ClusterQuorum {
    ok: bool,
    required_for_readyz: bool,
    status: &'static str,
    observed_nodes: u32,
    expected_nodes: u32,
}

/// UTC with milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn timestamp_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn probe(signal: Signal, parts: &http::request::Parts, snapshot: &Snapshot, cx: &Context<'_>) -> Response {
    let readiness = snapshot.readiness();
    let ok = signal != Signal::Ready || readiness.ready;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !wants_json(parts, snapshot) {
        let body = match signal {
            Signal::Health => "ok\n",
            Signal::Live => "live\n",
            Signal::Ready if ok => "ready\n",
            Signal::Ready => "not_ready\n",
        };
        return plain(status, body);
    }
    let settings = &snapshot.settings;
    let quorum = &snapshot.quorum;
    let document = ProbeDocument {
        ok,
        signal: match signal {
            Signal::Health => "health",
            Signal::Live => "live",
            Signal::Ready => "ready",
        },
        status: match (signal, ok) {
            (Signal::Ready, true) => "ready",
            (Signal::Ready, false) => "not_ready",
            _ => "ok",
        },
        timestamp_utc: timestamp_utc(cx.now),
        uptime_seconds: cx.uptime_seconds,
        ready: (signal == Signal::Ready).then_some(ok),
        checks: Checks {
            request_dispatch: RequestDispatch { ok: true, mode: "in_process" },
            metrics_registry: MetricsRegistry { ok: true, source: REGISTRY_SOURCE, enabled: settings.metrics_enabled },
            active_requests: ActiveRequests { ok: true, value: cx.metrics.active_requests() as f64 },
            startup: Startup {
                ok: readiness.startup_ok,
                started: snapshot.lifecycle.started,
                required_for_readyz: settings.readiness_requires_startup,
            },
            cluster_quorum: ClusterQuorum {
                ok: readiness.quorum_ok,
                required_for_readyz: readiness.quorum_required,
                status: quorum.status.as_str(),
                observed_nodes: quorum.observed_nodes,
                expected_nodes: quorum.expected_nodes,
            },
        },
    };
    json_response(status, &document)
}

#[derive(Serialize)]
struct ClusterDocument {
    ok: bool,
    cluster: ClusterSection,
    contracts: Contracts,
    coordination: Coordination,
}

#[derive(Serialize)]
struct ClusterSection {
    enabled: bool,
    name: String,
    node_id: String,
    expected_nodes: u32,
    observed_nodes: u32,
    worker_pid: u32,
    mode: &'static str,
    quorum: QuorumSection,
    generation: u64,
    members: Vec<MemberEntry>,
}

#[derive(Serialize)]
struct QuorumSection {
    status: &'static str,
    met: bool,
    observed_nodes: u32,
    expected_nodes: u32,
}

#[derive(Serialize)]
struct MemberEntry {
    node_id: String,
    generation: u64,
    http_url: Option<String>,
    gossip_address: Option<String>,
    state: &'static str,
    #[serde(rename = "self")]
    is_self: bool,
    last_heard_ms: Option<u64>,
}

#[derive(Serialize)]
struct Contracts {
    session: SessionContract,
    realtime: RealtimeContract,
}

#[derive(Serialize)]
struct SessionContract {
    enabled: bool,
    mode: &'static str,
    shared_secret_required: bool,
    shared_secret_configured: bool,
}

#[derive(Serialize)]
struct RealtimeContract {
    mode: &'static str,
    cluster_broadcast: &'static str,
}

#[derive(Serialize)]
struct Coordination {
    membership_source: &'static str,
    state: &'static str,
    capability_matrix: CapabilityMatrix,
    source_health: SourceHealthSection,
    duplicate_node_ids: Vec<String>,
}

#[derive(Serialize)]
struct CapabilityMatrix {
    cross_node_request_routing: &'static str,
    cross_node_realtime_fanout: &'static str,
    cross_node_jobs_deduplication: &'static str,
    cross_node_cache_coherence: &'static str,
}

#[derive(Serialize)]
struct SourceHealthSection {
    ok: bool,
    detail: String,
    last_membership_change_utc: Option<String>,
}

fn cluster_document(snapshot: &Snapshot, now: SystemTime) -> ClusterDocument {
    let identity = &snapshot.identity;
    let quorum = &snapshot.quorum;
    let membership = &snapshot.membership;
    let settings = &snapshot.settings;
    ClusterDocument {
        ok: true,
        cluster: ClusterSection {
            enabled: identity.cluster_enabled,
            name: identity.cluster_name.clone(),
            node_id: identity.node_id.clone(),
            expected_nodes: quorum.expected_nodes,
            observed_nodes: quorum.observed_nodes,
            worker_pid: identity.worker_pid,
            mode: if identity.cluster_enabled { "multi_node" } else { "single_node" },
            quorum: QuorumSection {
                status: quorum.status.as_str(),
                met: quorum.met,
                observed_nodes: quorum.observed_nodes,
                expected_nodes: quorum.expected_nodes,
            },
            generation: snapshot.generation,
            members: membership
                .members
                .iter()
                .map(|m| MemberEntry {
                    node_id: m.node_id.clone(),
                    generation: m.generation,
                    http_url: m.http_url.clone(),
                    gossip_address: m.gossip_address.clone(),
                    state: m.state.as_str(),
                    is_self: m.is_self,
                    last_heard_ms: membership
                        .heard
                        .as_ref()
                        .and_then(|clock| clock.last_heard(&m.node_id, m.generation))
                        .map(|t| {
                            u64::try_from(now.duration_since(t).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
                        }),
                })
                .collect(),
        },
        contracts: Contracts {
            session: SessionContract {
                enabled: settings.session_enabled,
                mode: "cookie_signed",
                shared_secret_required: settings.session_enabled && identity.cluster_enabled,
                shared_secret_configured: settings.session_secret_configured,
            },
            realtime: RealtimeContract { mode: "node_local_pubsub", cluster_broadcast: "external_broker_required" },
        },
        coordination: Coordination {
            membership_source: membership.source,
            state: quorum.status.as_str(),
            capability_matrix: CapabilityMatrix {
                cross_node_request_routing: "external_load_balancer_required",
                cross_node_realtime_fanout: "external_broker_required",
                cross_node_jobs_deduplication: "external_queue_required",
                cross_node_cache_coherence: "external_cache_required",
            },
            source_health: SourceHealthSection {
                ok: membership.health.ok,
                detail: membership.health.detail.clone(),
                last_membership_change_utc: membership.health.last_membership_change.map(timestamp_utc),
            },
            duplicate_node_ids: membership.duplicate_node_ids.clone(),
        },
    }
}

fn metrics(parts: &http::request::Parts, snapshot: &Snapshot, cx: &Context<'_>) -> Response {
    if !snapshot.settings.metrics_enabled {
        let mut response = Response::new(Body::empty());
        response.headers_mut().insert(CONTENT_TYPE, PROMETHEUS_TEXT);
        return response;
    }
    if accepts_json(parts) {
        return json_response(StatusCode::OK, &cx.metrics.render_json(snapshot));
    }
    let mut response = Response::new(Body::from(cx.metrics.render_text(snapshot)));
    response.headers_mut().insert(CONTENT_TYPE, PROMETHEUS_TEXT);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_and_their_aliases() {
        assert_eq!(match_reserved("/healthz"), Some(Endpoint::Health));
        assert_eq!(match_reserved("/healthz/"), Some(Endpoint::Health));
        assert_eq!(match_reserved("/healthz.json"), Some(Endpoint::Health));
        assert_eq!(match_reserved("/readyz.txt"), Some(Endpoint::Ready));
        assert_eq!(match_reserved("/clusterz"), Some(Endpoint::Cluster));
        assert_eq!(match_reserved("/metrics/"), Some(Endpoint::Metrics));
        assert_eq!(match_reserved("/livez"), Some(Endpoint::Live));
        for other in ["/", "/healthzz", "/healthz.", "/healthz/x", "/api/healthz", "/healthz.j-s", "/metricsx"] {
            assert_eq!(match_reserved(other), None, "{other}");
        }
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_771_840_800_123);
        assert_eq!(timestamp_utc(t), "2026-02-23T10:00:00.123Z");
        assert_eq!(timestamp_utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
