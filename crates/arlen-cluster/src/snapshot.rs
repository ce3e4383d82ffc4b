//! The immutable snapshot every response is computed from.
//!
//! A [`Snapshot`] holds everything a response needs: identity, the settings
//! that shape probes, the membership view, lifecycle flags, the quorum verdict
//! (raw and gated by hysteresis) and the six cluster header values,
//! precomputed. It is built only by the cell in `cell.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};

use crate::gate::{GateWindows, QuorumGate, Timestamp};
use crate::membership::MembershipView;
use crate::quorum::{evaluate_quorum_in_zones, Quorum, QuorumPolicy};

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_enabled: bool,
    pub cluster_name: String,
    pub node_id: String,
    pub worker_pid: u32,
}

/// Settings that shape probe answers and headers; replaceable at run time
/// (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub expected_nodes: u32,
    pub quorum_policy: QuorumPolicy,
    pub gate_windows: GateWindows,
    pub emit_headers: bool,
    pub health_details_enabled: bool,
    pub readiness_requires_startup: bool,
    pub readiness_requires_cluster_quorum: bool,
    pub metrics_enabled: bool,
    pub legacy_metric_names: bool,
    pub trace_propagation_enabled: bool,
    pub response_identity_headers_enabled: bool,
    /// Keep a well-formed incoming `X-Request-Id`.
    pub keep_incoming_request_id: bool,
    /// The access log's share of requests (percent), when it is on.
    pub access_log: Option<u8>,
    pub session_enabled: bool,
    pub session_secret_configured: bool,
}

impl RuntimeSettings {
    /// Contract defaults (everything on that the contract turns on by default).
    pub fn contract_defaults(expected_nodes: u32) -> Self {
        Self {
            expected_nodes,
            quorum_policy: QuorumPolicy::All,
            gate_windows: GateWindows::default(),
            emit_headers: true,
            health_details_enabled: true,
            readiness_requires_startup: false,
            readiness_requires_cluster_quorum: false,
            metrics_enabled: true,
            legacy_metric_names: false,
            trace_propagation_enabled: true,
            response_identity_headers_enabled: true,
            keep_incoming_request_id: false,
            access_log: None,
            session_enabled: false,
            session_secret_configured: false,
        }
    }
}

/// The node's own lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// Config loaded, listeners bound, membership source initialised.
    pub started: bool,
    /// Shutting down: out of rotation, still serving.
    pub draining: bool,
    pub draining_since: Option<SystemTime>,
}

/// What the sidecar's upstream health check last found (a node without an
/// upstream has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// The upstream URL, or `host:port` for a TCP check.
    pub target: String,
    pub ok: bool,
    /// What the last check saw (status, or the error).
    pub detail: String,
    /// When `ok` last changed.
    pub since: SystemTime,
}

/// The readiness verdict of CONTRACT §3.1, plus drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub startup_ok: bool,
    pub quorum_required: bool,
    /// The gated quorum verdict (on a fresh view), or true when quorum is
    /// not required.
    pub quorum_ok: bool,
    /// How old the membership view is when it is older than the source
    /// allows ([`MembershipView::fresh_for`]): quorum is then not met.
    pub stale_view: Option<Duration>,
    pub draining: bool,
    /// The upstream answers its health check, or there is no upstream.
    pub upstream_ok: bool,
    /// Every readiness check of the application's own passes (after
    /// hysteresis), or there is none.
    pub checks_ok: bool,
}

/// The header values of one snapshot, made once and copied into every
/// response answered from it (a `HeaderValue` clone shares its bytes): the
/// six cluster headers, and `X-Arlen-Draining: 1` while the node drains.
#[derive(Debug, Clone)]
pub struct ClusterHeaders {
    pairs: [(HeaderName, HeaderValue); 6],
    draining: bool,
}

static DRAINING_HEADER: (HeaderName, HeaderValue) =
    (HeaderName::from_static(arlen_wire::headers::DRAINING), HeaderValue::from_static("1"));

impl ClusterHeaders {
    fn new(identity: &NodeIdentity, quorum: &Quorum, draining: bool) -> Self {
        let values = [
            header_value(&identity.cluster_name),
            header_value(&identity.node_id),
            HeaderValue::from(identity.worker_pid),
            HeaderValue::from_static(quorum.status.as_str()),
            HeaderValue::from(quorum.observed_nodes),
            HeaderValue::from(quorum.expected_nodes),
        ];
        let pairs = std::array::from_fn(|i| {
            (HeaderName::from_static(arlen_wire::headers::CLUSTER_HEADERS[i]), values[i].clone())
        });
        Self { pairs, draining }
    }

    /// A copy whose values share no buffers with `self`, so that cloning them
    /// on one thread does not contend with another thread's clones.
    fn deep_copy(&self) -> Self {
        let pairs = self.pairs.clone().map(|(name, value)| {
            let value = HeaderValue::from_bytes(value.as_bytes()).expect("copied from a valid header value");
            (name, value)
        });
        Self { pairs, draining: self.draining }
    }

    /// Every header this snapshot adds to a response: the six, then
    /// `X-Arlen-Draining` while draining.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let draining = self.draining.then_some(&DRAINING_HEADER);
        self.pairs.iter().chain(draining).map(|(name, value)| (name, value))
    }
}

/// A header value for free text: characters a header cannot carry become `_`.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let cleaned: String = text.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '_' }).collect();
        HeaderValue::from_str(&cleaned).expect("visible ASCII is a valid header value")
    })
}

/// Everything a response needs, at one moment. Immutable once published.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one with every published change.
    pub generation: u64,
    pub identity: Arc<NodeIdentity>,
    pub settings: Arc<RuntimeSettings>,
    pub membership: Arc<MembershipView>,
    pub lifecycle: Lifecycle,
    /// The verdict of this moment (status, raw `met`, counts, policy).
    pub quorum: Quorum,
    /// The `met` verdict readiness uses, after hysteresis.
    pub gate: QuorumGate,
    /// `Some` when `cluster.enabled && cluster.emitHeaders`.
    pub headers: Option<Arc<ClusterHeaders>>,
    /// How many times the quorum status changed since start.
    pub status_transitions: u64,
    /// How many membership views with a different membership were published.
    pub membership_changes: u64,
    /// The upstream's health, when the node is a sidecar.
    pub upstream: Option<Arc<UpstreamHealth>>,
    /// The application's own readiness and liveness checks.
    pub checks: Arc<crate::checks::AppChecks>,
    /// When the source last confirmed the membership view (shared by every
    /// snapshot of one cell: a confirmation that changes nothing publishes
    /// no new snapshot).
    pub membership_confirmed: Arc<MembershipConfirmed>,
}

/// The monotonic time (since the clock's origin) at which the membership
/// source last confirmed its view.
#[derive(Debug, Default)]
pub struct MembershipConfirmed(std::sync::atomic::AtomicU64);

impl MembershipConfirmed {
    pub(crate) fn set(&self, monotonic: Duration) {
        let nanos = u64::try_from(monotonic.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the view was last confirmed.
    pub fn at(&self) -> Duration {
        Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Snapshot {
    pub(crate) fn build(
        generation: u64,
        identity: Arc<NodeIdentity>,
        settings: Arc<RuntimeSettings>,
        membership: Arc<MembershipView>,
        lifecycle: Lifecycle,
        previous_gate: Option<QuorumGate>,
        now: Timestamp,
    ) -> Self {
        let quorum = evaluate_quorum_in_zones(
            identity.cluster_enabled,
            settings.expected_nodes,
            membership.observed_nodes,
            membership.observed_zones(),
            settings.quorum_policy,
        );
        let gate = match previous_gate {
            Some(gate) => gate.advance(quorum.met, now, settings.gate_windows),
            None => QuorumGate::new(quorum.met, now),
        };
        let headers = (identity.cluster_enabled && settings.emit_headers)
            .then(|| Arc::new(ClusterHeaders::new(&identity, &quorum, lifecycle.draining)));
        Self {
            generation,
            identity,
            settings,
            membership,
            lifecycle,
            quorum,
            gate,
            headers,
            status_transitions: 0,
            membership_changes: 0,
            upstream: None,
            checks: Arc::default(),
            membership_confirmed: Arc::default(),
        }
    }

    /// A copy for one thread's cache: the same values, with header buffers of
    /// its own.
    pub(crate) fn thread_copy(&self) -> Self {
        Self { headers: self.headers.as_ref().map(|h| Arc::new(h.deep_copy())), ..self.clone() }
    }

    /// The readiness verdict at monotonic time `now` (from the cell's clock):
    /// startup and gated-quorum gates of CONTRACT §3.1, and drain.
    pub fn readiness_at(&self, now: Duration) -> Readiness {
        let startup_ok = !self.settings.readiness_requires_startup || self.lifecycle.started;
        let quorum_required = self.settings.readiness_requires_cluster_quorum && self.identity.cluster_enabled;
        // A view its source has not confirmed for longer than it allows
        // (the process was paused, the source stalled) is not evidence.
        let age = now.saturating_sub(self.membership_confirmed.at());
        let stale_view = self.membership.fresh_for.filter(|bound| age > *bound).map(|_| age);
        let quorum_ok = !quorum_required || (self.gate.met_at(now) && stale_view.is_none());
        let draining = self.lifecycle.draining;
        let upstream_ok = self.upstream.as_ref().is_none_or(|upstream| upstream.ok);
        let checks_ok = self.checks.all_healthy(crate::checks::CheckKind::Readiness, now);
        Readiness {
            ready: startup_ok && quorum_ok && !draining && upstream_ok && checks_ok,
            startup_ok,
            quorum_required,
            quorum_ok,
            stale_view,
            draining,
            upstream_ok,
            checks_ok,
        }
    }

    /// Whether `/livez` passes at monotonic time `now`: every liveness check
    /// of the application's own (none by default). Never cluster state.
    pub fn live_at(&self, now: Duration) -> bool {
        self.checks.all_healthy(crate::checks::CheckKind::Liveness, now)
    }
}
