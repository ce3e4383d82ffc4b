//! `/healthz`, `/livez`, `/readyz`: the contract's text and JSON answers, and
//! the Kubernetes grammar (`?verbose`, `?exclude=`, `/<signal>/<check>`).

use arlen_cluster::{CheckKind, Snapshot, Timestamp};
use axum::response::Response;
use http::StatusCode;

use crate::documents::{
    ActiveRequests, Checks, ClusterQuorum, Draining, MetricsRegistry, PendingSection, ProbeDocument, RequestDispatch,
    Startup, UpstreamCheck, FULL, RESTRICTED,
};

use super::{json_response, plain, query_pairs, timestamp_utc, wants_json, Context};
use crate::metrics::REGISTRY_SOURCE;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Health,
    Live,
    Ready,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Health => "health",
            Signal::Live => "live",
            Signal::Ready => "ready",
        }
    }

    fn path_name(self) -> &'static str {
        match self {
            Signal::Health => "healthz",
            Signal::Live => "livez",
            Signal::Ready => "readyz",
        }
    }

    /// The runtime's checks this probe's verdict is made of (liveness never
    /// looks at the cluster, nor at the upstream); `upstream` only for a
    /// sidecar. The application's own checks of the probe's kind follow.
    fn runtime_checks(self, upstream: bool) -> &'static [&'static str] {
        match (self, upstream) {
            (Signal::Ready, true) => &READY_CHECKS,
            (Signal::Ready, false) => &READY_CHECKS[..6],
            (Signal::Health | Signal::Live, _) => &READY_CHECKS[..3],
        }
    }

    /// The kind of application check this probe is made of.
    fn app_kind(self) -> CheckKind {
        match self {
            Signal::Ready => CheckKind::Readiness,
            Signal::Health | Signal::Live => CheckKind::Liveness,
        }
    }

    /// Every check of this probe, in report order.
    fn checks(self, snapshot: &Snapshot) -> Vec<String> {
        let runtime = self.runtime_checks(snapshot.upstream.is_some()).iter().map(|s| (*s).to_owned());
        runtime.chain(snapshot.checks.of_kind(self.app_kind()).map(|c| c.name.clone())).collect()
    }
}

/// Every readiness check of the runtime, in report order (`upstream` only with an upstream).
pub const READY_CHECKS: [&str; 7] =
    ["request_dispatch", "metrics_registry", "active_requests", "startup", "cluster_quorum", "draining", "upstream"];

/// One check's outcome.
struct Outcome {
    name: String,
    ok: bool,
    reason: String,
}

fn outcomes(snapshot: &Snapshot, cx: &Context<'_>) -> Vec<Outcome> {
    let readiness = snapshot.readiness_at(cx.monotonic_now);
    let quorum = &snapshot.quorum;
    let quorum_reason = match readiness.stale_view {
        Some(age) => format!(
            "the membership view is {} ms old, more than its source allows: this node was paused or its membership task stalled",
            age.as_millis()
        ),
        None => format!(
            "quorum not met: {}, {} of {} expected observed, {} required (policy {})",
            quorum.status,
            quorum.observed_nodes,
            quorum.expected_nodes,
            quorum.required_nodes,
            quorum.policy.name()
        ),
    };
    let runtime = |name: &str, ok: bool, reason: String| Outcome { name: name.to_owned(), ok, reason };
    let mut all = vec![
        runtime("request_dispatch", true, String::new()),
        runtime("metrics_registry", true, String::new()),
        runtime("active_requests", true, String::new()),
        runtime("startup", readiness.startup_ok, "the node has not finished starting".to_owned()),
        runtime("cluster_quorum", readiness.quorum_ok, quorum_reason),
        runtime("draining", !readiness.draining, "the node is draining for shutdown".to_owned()),
        runtime(
            "upstream",
            readiness.upstream_ok,
            snapshot
                .upstream
                .as_ref()
                .map(|u| {
                    if cx.full_details {
                        format!("upstream {} does not answer its health check: {}", u.target, u.detail)
                    } else {
                        "the upstream does not answer its health check".to_owned()
                    }
                })
                .unwrap_or_default(),
        ),
    ];
    all.extend(snapshot.checks.0.iter().map(|check| {
        let ok = check.healthy_at(cx.monotonic_now);
        let reason = match (check.checked, cx.full_details) {
            (false, _) => "not checked yet".to_owned(),
            (true, true) => check.detail.clone(),
            (true, false) => "the check fails (details restricted)".to_owned(),
        };
        Outcome { name: check.name.clone(), ok, reason }
    }));
    all
}

/// `exclude` parameters (repeatable, or comma-separated).
fn excluded(parts: &http::request::Parts) -> Vec<String> {
    query_pairs(parts)
        .into_iter()
        .filter(|(k, _)| k == "exclude")
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn verbose(parts: &http::request::Parts) -> bool {
    query_pairs(parts)
        .iter()
        .any(|(k, v)| k == "verbose" && !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"))
}

pub(super) fn probe(
    signal: Signal,
    check: Option<&str>,
    parts: &http::request::Parts,
    snapshot: &Snapshot,
    cx: &Context<'_>,
) -> Response {
    let checks = signal.checks(snapshot);
    let all = outcomes(snapshot, cx);
    let mine: Vec<&Outcome> = all.iter().filter(|o| checks.contains(&o.name)).collect();
    if let Some(name) = check {
        return single_check(signal, &checks, name, &mine);
    }
    let excluded = excluded(parts);
    let unknown: Vec<&String> = excluded.iter().filter(|e| !checks.contains(e)).collect();
    // Every probe is the conjunction of its checks (the runtime's liveness
    // checks always pass; the application's may not).
    let ok = mine.iter().filter(|o| !excluded.contains(&o.name)).all(|o| o.ok);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let warning = (!unknown.is_empty()).then(|| {
        let names: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
        format!("warn: some health checks cannot be excluded: no matches for {}\n", names.join(", "))
    });
    if wants_json(parts, snapshot) {
        return json_response(status, &document(signal, ok, snapshot, cx, &all, &excluded, &unknown));
    }
    if verbose(parts) {
        let mut body = String::new();
        for outcome in &mine {
            let is_excluded = excluded.contains(&outcome.name);
            let mark = if outcome.ok || is_excluded { '+' } else { '-' };
            let verdict = match (is_excluded, outcome.ok) {
                (true, true) => "excluded: ok".to_owned(),
                (true, false) => format!("excluded: failed: {}", outcome.reason),
                (false, true) => "ok".to_owned(),
                (false, false) => format!("failed: {}", outcome.reason),
            };
            body.push_str(&format!("[{mark}]{} {verdict}\n", outcome.name));
        }
        body.push_str(warning.as_deref().unwrap_or(""));
        body.push_str(&format!("{} check {}\n", signal.path_name(), if ok { "passed" } else { "failed" }));
        return plain(status, body);
    }
    let word = match (signal, ok) {
        (Signal::Health, true) => "ok\n",
        (Signal::Live, true) => "live\n",
        (Signal::Health | Signal::Live, false) => "not_live\n",
        (Signal::Ready, true) => "ready\n",
        (Signal::Ready, false) => "not_ready\n",
    };
    match warning {
        Some(warning) => plain(status, format!("{word}{warning}")),
        None => plain(status, word),
    }
}

fn single_check(signal: Signal, checks: &[String], name: &str, mine: &[&Outcome]) -> Response {
    match mine.iter().find(|o| o.name == name) {
        None => plain(
            StatusCode::NOT_FOUND,
            format!("no check named {name:?} on /{}; checks: {}\n", signal.path_name(), checks.join(", ")),
        ),
        Some(outcome) if outcome.ok => plain(StatusCode::OK, "ok\n"),
        Some(outcome) => {
            plain(StatusCode::SERVICE_UNAVAILABLE, format!("[-]{} failed: {}\n", outcome.name, outcome.reason))
        }
    }
}

fn document(
    signal: Signal,
    ok: bool,
    snapshot: &Snapshot,
    cx: &Context<'_>,
    outcomes: &[Outcome],
    excluded: &[String],
    unknown: &[&String],
) -> ProbeDocument {
    let ok_of = |name: &str| outcomes.iter().find(|o| o.name == name).is_none_or(|o| o.ok);
    let settings = &snapshot.settings;
    let quorum = &snapshot.quorum;
    let readiness = snapshot.readiness_at(cx.monotonic_now);
    // The gate, judged at this request's instant (a due transition applied).
    let gate = snapshot.gate.settle(Timestamp { monotonic: cx.monotonic_now, wall: cx.now });
    let (gated_met, since, pending) = (gate.met, gate.since.wall, gate.pending);
    ProbeDocument {
        ok,
        signal: signal.name().into(),
        status: match (signal, ok) {
            (Signal::Ready, true) => "ready",
            (Signal::Ready, false) => "not_ready",
            (_, true) => "ok",
            (_, false) => "not_live",
        }
        .into(),
        timestamp_utc: timestamp_utc(cx.now),
        uptime_seconds: cx.uptime_seconds,
        ready: (signal == Signal::Ready).then_some(ok),
        checks: Checks {
            request_dispatch: RequestDispatch { ok: true, mode: "in_process".into() },
            metrics_registry: MetricsRegistry {
                ok: true,
                source: REGISTRY_SOURCE.into(),
                enabled: settings.metrics_enabled,
            },
            active_requests: ActiveRequests { ok: true, value: cx.metrics.active_requests() as f64 },
            startup: Startup {
                ok: ok_of("startup"),
                started: snapshot.lifecycle.started,
                required_for_readyz: settings.readiness_requires_startup,
            },
            cluster_quorum: ClusterQuorum {
                ok: ok_of("cluster_quorum"),
                required_for_readyz: readiness.quorum_required,
                status: quorum.status,
                observed_nodes: quorum.observed_nodes,
                expected_nodes: quorum.expected_nodes,
                met: gated_met,
                met_now: quorum.met,
                policy: quorum.policy.name(),
                required_nodes: quorum.required_nodes,
                failure_tolerance: quorum.failure_tolerance,
                since_utc: timestamp_utc(since),
                pending: pending
                    .map(|p| PendingSection { met: p.to_met, effective_at_utc: timestamp_utc(p.effective_at.wall) }),
            },
            draining: Draining {
                ok: ok_of("draining"),
                draining: snapshot.lifecycle.draining,
                since_utc: snapshot.lifecycle.draining_since.map(timestamp_utc),
            },
            upstream: snapshot.upstream.as_ref().map(|u| UpstreamCheck {
                ok: ok_of("upstream"),
                target: if cx.full_details { u.target.clone() } else { RESTRICTED.to_owned() },
                detail: if cx.full_details { u.detail.clone() } else { RESTRICTED.to_owned() },
                since_utc: timestamp_utc(u.since),
            }),
            application: snapshot
                .checks
                .of_kind(signal.app_kind())
                .map(|c| {
                    let now = Timestamp { monotonic: cx.monotonic_now, wall: cx.now };
                    (c.name.clone(), crate::checks::section(c, now, cx.full_details))
                })
                .collect(),
        },
        excluded: excluded.iter().filter(|e| signal.checks(snapshot).contains(e)).cloned().collect(),
        unknown_excluded: unknown.iter().map(|s| (*s).clone()).collect(),
        details: if cx.full_details { FULL.into() } else { RESTRICTED.into() },
    }
}
