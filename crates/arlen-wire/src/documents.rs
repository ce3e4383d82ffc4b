//! The documents a node serves — `/clusterz` and the probes' JSON
//! (`/readyz?format=json`, ...) — as public typed structs. The endpoints
//! render them; `arlen up`, `arlen triage`, the drill sampler and the tests
//! read them back with the same types, so there is one reading of a node's
//! state. Field order is the contract's (CONTRACT §3.1, §3.2); fields beyond
//! the contract's are additive.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use crate::states::{MemberState, QuorumStatus};

/// Text that is a constant when rendered and owned when read back.
pub type Text = Cow<'static, str>;

/// `GET /clusterz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDocument {
    pub ok: bool,
    pub cluster: ClusterSection,
    pub contracts: Contracts,
    pub coordination: Coordination,
    /// Only for a sidecar: what its upstream health check found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamCheck>,
    /// The application's own readiness and liveness checks, by name (none:
    /// absent).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, AppCheckSection>,
    /// `full`, or `restricted`: member addresses, URLs and generations, and
    /// the source's and upstream's details, are left out for this requester
    /// (`observability.detailsAccess`).
    #[serde(default = "full")]
    pub details: Text,
    /// Only for `?maintenance=true`: may this node stop now?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSection>,
}

/// The verdict of `GET /clusterz?maintenance=true` (200 when `can_stop`, else 412).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceSection {
    pub can_stop: bool,
    pub reason: String,
    /// Members that would still count after this node stops.
    pub remaining_nodes: u32,
    pub required_nodes: u32,
    /// Other members already not counted, with their state (`node-b draining`).
    pub unavailable: Vec<String>,
}

/// What a document shows of member details: [`FULL`] or [`RESTRICTED`].
pub const FULL: &str = "full";
/// See [`FULL`]; also the text that stands in for a withheld detail.
pub const RESTRICTED: &str = "restricted";

fn full() -> Text {
    FULL.into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSection {
    pub enabled: bool,
    pub name: String,
    pub node_id: String,
    pub expected_nodes: u32,
    pub observed_nodes: u32,
    pub worker_pid: u32,
    pub mode: Text,
    pub quorum: QuorumSection,
    pub generation: u64,
    pub lifecycle: LifecycleSection,
    pub members: Vec<MemberEntry>,
    /// This node's recent verdicts about others, with their evidence
    /// (details-gated like member details: absent when restricted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accusations: Option<Vec<AccusationEntry>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccusationEntry {
    pub accused: String,
    pub accused_generation: u64,
    pub accuser: String,
    /// `suspect`, `down` or `refuted`.
    pub verdict: String,
    pub at: String,
    pub evidence: AccusationEvidence,
    pub accuser_health: AccuserHealthEntry,
    /// The same, in one sentence.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccusationEvidence {
    pub direct_probe_failed: bool,
    pub probe_timeout_ms: u64,
    pub indirect_probes: u32,
    pub indirect_acks: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuserHealthEntry {
    pub healthy: bool,
    pub local_health: u32,
    pub stalled_ms_ago: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuorumSection {
    pub status: QuorumStatus,
    pub met: bool,
    pub observed_nodes: u32,
    pub expected_nodes: u32,
    pub policy: String,
    pub required_nodes: u32,
    pub failure_tolerance: u32,
    /// Zones with a live member, and how many quorum needs (policy `zones`);
    /// absent when no member names a zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_zones: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_zones: Option<u32>,
    /// Per zone the members name: whether quorum survives its loss
    /// (CONTRACT §7.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_tolerance: Vec<ZoneEntry>,
    /// The same in a sentence: "survives the loss of zone b or c; not of zone a".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_summary: Option<String>,
}

/// One zone's weight in the quorum (`/clusterz` `cluster.quorum.zone_tolerance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneEntry {
    pub zone: String,
    /// Live members in the zone.
    pub alive_members: u32,
    /// Members listed in the zone, live or not.
    pub members: u32,
    /// Quorum is met and stays met with every live member of the zone gone.
    pub survives_loss: bool,
}

/// "survives the loss of zone b or c; not of zone a" (or the one half that applies).
pub fn zone_tolerance_sentence(zones: &[ZoneEntry]) -> Option<String> {
    if zones.is_empty() {
        return None;
    }
    let names = |survives: bool| -> Vec<&str> {
        zones.iter().filter(|z| z.survives_loss == survives).map(|z| z.zone.as_str()).collect()
    };
    let (yes, no) = (names(true), names(false));
    let list = |names: &[&str]| names.join(" or ");
    Some(match (yes.is_empty(), no.is_empty()) {
        (false, false) => format!("survives the loss of zone {}; not of zone {}", list(&yes), list(&no)),
        (false, true) => format!("survives the loss of any one zone ({})", yes.join(", ")),
        (true, _) => format!("does not survive the loss of any zone ({})", no.join(", ")),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleSection {
    pub started: bool,
    pub draining: bool,
    pub draining_since_utc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub node_id: String,
    /// `None` when details are restricted.
    pub generation: Option<u64>,
    pub http_url: Option<String>,
    pub gossip_address: Option<String>,
    pub state: MemberState,
    #[serde(rename = "self")]
    pub is_self: bool,
    pub last_heard_ms: Option<u64>,
    /// The member's software version (`1.2.0`) and the commit it was built
    /// from (`0123abcd4567`), when it told (members of releases before the
    /// versioned wire do not); `None` when details are restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    /// The member's `cluster.zone` (absent when it has none, or did not tell:
    /// members of releases before zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// How the member answers this node's probes (gossip; absent until it
    /// has been probed a few times, and for this node itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<crate::states::Reachability>,
    /// What `reachability` is concluded from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<ReachabilityEvidence>,
}

/// The probe evidence behind a member's reachability class, over this
/// node's recent probes of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReachabilityEvidence {
    /// Probes of the member in the window.
    pub probes: u32,
    /// Probes whose first direct ping went unanswered in time.
    pub first_try_failed: u32,
    /// Probes with no direct answer at all (the second try failed too).
    pub direct_failed: u32,
    /// Of those, how many the member answered through others (indirect acks).
    pub answered_through_others: u32,
    /// The member's smoothed round-trip time, and the median of the other
    /// members' (milliseconds).
    pub rtt_ms: Option<f64>,
    pub others_rtt_ms: Option<f64>,
    /// When this node last heard anything from the member.
    pub heard_ms_ago: Option<u64>,
    /// The class in one sentence.
    pub explanation: String,
}

impl MemberEntry {
    /// `version+git_sha`, or the version alone: one word for a member's build.
    pub fn software(&self) -> Option<String> {
        let version = self.version.as_deref()?;
        Some(match self.git_sha.as_deref().filter(|s| !s.is_empty()) {
            Some(sha) => format!("{version}+{sha}"),
            None => version.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contracts {
    pub session: SessionContract,
    pub realtime: RealtimeContract,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionContract {
    pub enabled: bool,
    pub mode: Text,
    pub shared_secret_required: bool,
    pub shared_secret_configured: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeContract {
    pub mode: Text,
    pub cluster_broadcast: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coordination {
    pub membership_source: Text,
    pub state: QuorumStatus,
    pub capability_matrix: CapabilityMatrix,
    pub source_health: SourceHealthSection,
    pub duplicate_node_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityMatrix {
    pub cross_node_request_routing: Text,
    pub cross_node_realtime_fanout: Text,
    pub cross_node_jobs_deduplication: Text,
    pub cross_node_cache_coherence: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceHealthSection {
    pub ok: bool,
    pub detail: String,
    pub last_membership_change_utc: Option<String>,
}

/// `GET /healthz`, `/livez` or `/readyz` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDocument {
    pub ok: bool,
    pub signal: Text,
    pub status: Text,
    pub timestamp_utc: String,
    pub uptime_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    pub checks: Checks,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_excluded: Vec<String>,
    /// See [`ClusterDocument::details`].
    #[serde(default = "full")]
    pub details: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    pub request_dispatch: RequestDispatch,
    pub metrics_registry: MetricsRegistry,
    pub active_requests: ActiveRequests,
    pub startup: Startup,
    pub cluster_quorum: ClusterQuorum,
    pub draining: Draining,
    /// Only for a sidecar (`proxy.upstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamCheck>,
    /// The application's own checks of this probe's kind, beside the
    /// runtime's (their names never collide with these).
    #[serde(flatten)]
    pub application: std::collections::BTreeMap<String, AppCheckSection>,
}

/// One of the application's own checks (`arlen_http::checks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppCheckSection {
    /// The verdict the probe uses (after hysteresis).
    pub ok: bool,
    /// `readiness` or `liveness`.
    pub kind: Text,
    /// What the last run said; `restricted` when details are.
    pub detail: String,
    /// Whether it has run yet (a readiness check fails until it has).
    pub checked: bool,
    /// The last run's own verdict, before hysteresis.
    pub last_ok: bool,
    /// When the verdict last changed.
    pub since_utc: String,
    /// A transition waiting for its window, as for quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingSection>,
}

/// The sidecar's upstream health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamCheck {
    pub ok: bool,
    pub target: String,
    pub detail: String,
    pub since_utc: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestDispatch {
    pub ok: bool,
    pub mode: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRegistry {
    pub ok: bool,
    pub source: Text,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveRequests {
    pub ok: bool,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Startup {
    pub ok: bool,
    pub started: bool,
    pub required_for_readyz: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterQuorum {
    pub ok: bool,
    pub required_for_readyz: bool,
    pub status: QuorumStatus,
    pub observed_nodes: u32,
    pub expected_nodes: u32,
    /// The gated verdict readiness uses.
    pub met: bool,
    /// The verdict of this moment, before hysteresis.
    pub met_now: bool,
    pub policy: String,
    pub required_nodes: u32,
    pub failure_tolerance: u32,
    pub since_utc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSection {
    pub met: bool,
    pub effective_at_utc: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draining {
    pub ok: bool,
    pub draining: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_utc: Option<String>,
}

impl ClusterDocument {
    /// Ids of the members this node counts as alive.
    pub fn alive_members(&self) -> impl Iterator<Item = &str> {
        self.cluster.members.iter().filter(|m| m.state == MemberState::Alive).map(|m| m.node_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_read_back_as_they_were_written() {
        let text = r#"{"ok":true,"signal":"ready","status":"not_ready","timestamp_utc":"2026-02-23T10:00:00.000Z","uptime_seconds":12,"ready":false,
            "checks":{"request_dispatch":{"ok":true,"mode":"in_process"},"metrics_registry":{"ok":true,"source":"prometheus_client","enabled":true},
            "active_requests":{"ok":true,"value":1.0},"startup":{"ok":true,"started":true,"required_for_readyz":false},
            "cluster_quorum":{"ok":false,"required_for_readyz":true,"status":"degraded","observed_nodes":2,"expected_nodes":3,"met":false,"met_now":false,
              "policy":"all","required_nodes":3,"failure_tolerance":0,"since_utc":"2026-02-23T10:00:00.000Z"},
            "draining":{"ok":true,"draining":false}}}"#;
        let probe: ProbeDocument = serde_json::from_str(text).unwrap();
        assert_eq!(probe.checks.cluster_quorum.status, QuorumStatus::Degraded);
        assert_eq!(probe.ready, Some(false));
        assert!(probe.excluded.is_empty());
        let again: ProbeDocument = serde_json::from_str(&serde_json::to_string(&probe).unwrap()).unwrap();
        assert_eq!(again, probe);
    }
}

/// A permit to stop one node (`/_arlen/stop-permits`): granted only while
/// the cluster keeps quorum with every permit counted as stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopPermit {
    pub node: String,
    /// Who asked (a script, a job, an operator): free text, bounded.
    pub holder: String,
    /// The node's generation when granted: back under another one, it
    /// restarted, and the permit is spent.
    pub generation: u64,
    pub granted_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// The node that granted it.
    pub granted_by: String,
}

/// What `GET /_arlen/stop-permits` answers, and `POST` on a grant
/// (`granted`), or on a refusal (`refused`, with the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopPermits {
    pub permits: Vec<StopPermit>,
    /// What the store guarantees, in a sentence.
    pub guarantee: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<StopPermit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}
