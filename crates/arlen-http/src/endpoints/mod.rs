//! The reserved operability endpoints (CONTRACT §3).
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | `ok` — the process answers |
//! | `/livez` | `live` — the process answers; never depends on cluster state |
//! | `/readyz` | `ready` / `not_ready` (503) — startup, gated quorum, drain |
//! | `/clusterz` | JSON status document, always 200 (408 after a `wait_for_*` timeout) |
//! | `/metrics` | Prometheus text, or JSON on `Accept: application/json` |
//!
//! Each also answers with a trailing `/` or a `.<ext>` suffix. The probes take
//! the Kubernetes grammar: `?verbose`, `?exclude=<check>` (repeatable), and
//! `/readyz/<check>`, `/livez/<check>`, `/healthz/<check>`. `GET` and `HEAD`
//! only; anything else is 405 with `Allow: GET, HEAD`. Every answer is
//! computed from one snapshot, which is returned with it so the caller puts
//! that snapshot's headers on the response.

mod clusterz;
mod events;
mod probes;

use std::sync::Arc;
use std::time::SystemTime;

use arlen_cluster::{Snapshot, SnapshotReader};
use axum::body::Body;
use axum::response::Response;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;

use crate::metrics::Metrics;

pub use clusterz::{WaitCondition, MAX_CONCURRENT_WAITS, MAX_WAIT};
pub(crate) use events::Events;
pub use events::{Event, EventSubscription, HISTORY as EVENT_HISTORY, KEEP_ALIVE as EVENT_KEEP_ALIVE, MAX_SUBSCRIBERS};
pub use probes::{Signal, READY_CHECKS};

/// A reserved endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`, `/livez`, `/readyz`, optionally for one named check.
    Probe {
        signal: Signal,
        check: Option<String>,
    },
    Cluster,
    /// `/clusterz/events`: the event stream.
    Events,
    Metrics,
}

const PROBE_PATHS: [(&str, Signal); 3] =
    [("/healthz", Signal::Health), ("/livez", Signal::Live), ("/readyz", Signal::Ready)];
const CLUSTERZ_PATH: &str = "/clusterz";
const METRICS_PATH: &str = "/metrics";
/// The first segment of every reserved path.
const RESERVED_ROOTS: [&str; 5] = [PROBE_PATHS[0].0, PROBE_PATHS[1].0, PROBE_PATHS[2].0, CLUSTERZ_PATH, METRICS_PATH];

/// The reserved endpoint a path names, if any: `/healthz`, `/healthz/` and
/// `/healthz.<ext>` all name `/healthz`; `/readyz/<check>` names one check.
pub fn match_reserved(path: &str) -> Option<Endpoint> {
    let aliases = |rest: &str| match rest.as_bytes() {
        [] | [b'/'] => true,
        [b'.', ext @ ..] => !ext.is_empty() && ext.iter().all(u8::is_ascii_alphanumeric),
        _ => false,
    };
    for (prefix, signal) in PROBE_PATHS {
        let Some(rest) = path.strip_prefix(prefix) else { continue };
        if aliases(rest) {
            return Some(Endpoint::Probe { signal, check: None });
        }
        if let Some(check) = rest.strip_prefix('/') {
            let check = check.trim_end_matches('/');
            if !check.is_empty() && !check.contains('/') {
                return Some(Endpoint::Probe { signal, check: Some(check.to_owned()) });
            }
        }
    }
    if path.strip_prefix(CLUSTERZ_PATH).is_some_and(aliases) {
        return Some(Endpoint::Cluster);
    }
    if matches!(path, "/clusterz/events" | "/clusterz/events/") {
        return Some(Endpoint::Events);
    }
    if path.strip_prefix(METRICS_PATH).is_some_and(aliases) {
        return Some(Endpoint::Metrics);
    }
    None
}

/// Whether `path`, compared without regard to ASCII case, names a reserved
/// endpoint (the sidecar refuses such spellings rather than hand them to the
/// application). Cheap for the paths that do not start like one.
pub fn names_reserved_in_any_case(path: &str) -> bool {
    let bytes = path.as_bytes();
    RESERVED_ROOTS
        .iter()
        .any(|first| bytes.get(..first.len()).is_some_and(|head| head.eq_ignore_ascii_case(first.as_bytes())))
        && match_reserved(&path.to_ascii_lowercase()).is_some()
}

/// One slot of the request's connection's (and peer's) share of waits or
/// event streams; `Ok(None)` when the request came from no tracked
/// connection (an application serving it itself). Refused with 429
/// `connection_share` when the share is used up.
pub(crate) fn share_of(
    parts: &http::request::Parts,
    slot: crate::connections::Slot,
) -> Result<Option<crate::connections::ShareGuard>, ShareUsedUp> {
    let Some(connection) = parts.extensions.get::<crate::connections::ConnectionHandle>() else {
        return Ok(None);
    };
    connection.take(slot).map(Some).ok_or(ShareUsedUp)
}

/// A connection's (or peer's) share of waits or streams is used up.
pub(crate) struct ShareUsedUp;

impl ShareUsedUp {
    pub(crate) fn response(self) -> Response {
        let mut response = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "this connection (or its address) holds its share of waits and event streams already\n",
        );
        response.headers_mut().insert(crate::X_ARLEN_BACKPRESSURE_REASON, HeaderValue::from_static("connection_share"));
        response
    }
}

/// What an endpoint needs besides the snapshot.
pub struct Context<'a> {
    pub metrics: &'a Metrics,
    pub uptime_seconds: u64,
    pub now: SystemTime,
    /// The snapshot cell's clock reading, for the gated quorum verdict.
    pub monotonic_now: std::time::Duration,
    /// Permits for `/clusterz` waits: at most this many wait at once.
    pub waits: &'a std::sync::Arc<tokio::sync::Semaphore>,
    /// The requester may see member details (`observability.detailsAccess`).
    pub full_details: bool,
    pub(crate) events: &'a Events,
}

/// A response and the snapshot it was computed from.
pub struct Answered {
    pub response: Response,
    pub snapshot: Arc<Snapshot>,
}

pub const TEXT_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const PROMETHEUS_TEXT: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// Answers a reserved endpoint from `snapshot` (a `/clusterz` wait may answer
/// from a later one, read from `reader`).
pub async fn answer(
    endpoint: Endpoint,
    parts: &http::request::Parts,
    snapshot: Arc<Snapshot>,
    reader: &SnapshotReader,
    cx: &Context<'_>,
) -> Answered {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Answered { response, snapshot };
    }
    match endpoint {
        Endpoint::Probe { signal, check } => {
            let response = probes::probe(signal, check.as_deref(), parts, &snapshot, cx);
            Answered { response, snapshot }
        }
        Endpoint::Cluster => clusterz::clusterz(parts, snapshot, reader, cx).await,
        Endpoint::Events => {
            let response = match share_of(parts, crate::connections::Slot::Stream) {
                Ok(share) => cx.events.subscribe(parts, &snapshot, reader, cx.monotonic_now, share),
                Err(used_up) => used_up.response(),
            };
            Answered { response, snapshot }
        }
        Endpoint::Metrics => {
            let response = metrics(parts, &snapshot, cx);
            Answered { response, snapshot }
        }
    }
}

pub fn plain(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
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

/// 400 naming the request parameter that is wrong.
pub fn bad_parameter(parameter: &str, message: &str) -> Response {
    plain(StatusCode::BAD_REQUEST, format!("bad request parameter {parameter}: {message}\n"))
}

fn accepts_json(parts: &http::request::Parts) -> bool {
    parts.headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        let accept = accept.to_ascii_lowercase();
        accept.contains("application/json") || accept.contains("text/json")
    })
}

/// Query parameters, decoded, in order.
fn query_pairs(parts: &http::request::Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// JSON when asked for (Accept, or the last `format` parameter) and details are on.
fn wants_json(parts: &http::request::Parts, snapshot: &Snapshot) -> bool {
    if !snapshot.settings.health_details_enabled {
        return false;
    }
    let format = query_pairs(parts).into_iter().rev().find(|(k, _)| k == "format").map(|(_, v)| v.to_ascii_lowercase());
    match format {
        Some(format) if format == "json" => true,
        _ => accepts_json(parts),
    }
}

/// UTC with milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn timestamp_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn metrics(parts: &http::request::Parts, snapshot: &Snapshot, cx: &Context<'_>) -> Response {
    if !snapshot.settings.metrics_enabled {
        let mut response = Response::new(Body::empty());
        response.headers_mut().insert(CONTENT_TYPE, PROMETHEUS_TEXT);
        return response;
    }
    if accepts_json(parts) {
        return json_response(StatusCode::OK, &cx.metrics.render_json(snapshot, cx.monotonic_now));
    }
    let accept = parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Exposition::negotiate(accept);
    let legacy = snapshot.settings.legacy_metric_names;
    let mut response = Response::new(Body::from(cx.metrics.render(format, legacy, snapshot, cx.monotonic_now)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(signal: Signal) -> Option<Endpoint> {
        Some(Endpoint::Probe { signal, check: None })
    }

    #[test]
    fn reserved_paths_and_their_aliases() {
        assert_eq!(match_reserved("/healthz"), probe(Signal::Health));
        assert_eq!(match_reserved("/healthz/"), probe(Signal::Health));
        assert_eq!(match_reserved("/healthz.json"), probe(Signal::Health));
        assert_eq!(match_reserved("/readyz.txt"), probe(Signal::Ready));
        assert_eq!(match_reserved("/clusterz"), Some(Endpoint::Cluster));
        assert_eq!(match_reserved("/clusterz/"), Some(Endpoint::Cluster));
        assert_eq!(match_reserved("/metrics/"), Some(Endpoint::Metrics));
        assert_eq!(match_reserved("/clusterz/events"), Some(Endpoint::Events));
        assert_eq!(match_reserved("/livez"), probe(Signal::Live));
        assert_eq!(
            match_reserved("/readyz/cluster_quorum"),
            Some(Endpoint::Probe { signal: Signal::Ready, check: Some("cluster_quorum".into()) })
        );
        for other in
            ["/", "/healthzz", "/healthz.", "/readyz/a/b", "/api/healthz", "/healthz.j-s", "/metricsx", "/clusterz/x"]
        {
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
