//! `/clusterz`: the status document (CONTRACT §3.2 plus additive fields), and
//! waiting for a state: `?wait_for_status=nominal|degraded&wait_for_nodes=>=3&timeout=10s`
//! answers as soon as the condition holds (200) or at the timeout (408, with
//! the current document). Waiting wakes on snapshot changes; it never polls.

use std::sync::Arc;
use std::time::Duration;

use arlen_cluster::{QuorumStatus, Snapshot, SnapshotReader, Timestamp};
use http::StatusCode;

use crate::documents::{
    AccusationEntry, AccusationEvidence, AccuserHealthEntry, CapabilityMatrix, ClusterDocument, ClusterSection,
    Contracts, Coordination, LifecycleSection, MaintenanceSection, MemberEntry, QuorumSection, RealtimeContract,
    SessionContract, SourceHealthSection, UpstreamCheck, FULL, RESTRICTED,
};

use super::{bad_parameter, json_response, query_pairs, timestamp_utc, Answered, Context};

/// The longest a request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The wait when `timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Requests that may wait at once; beyond, the answer is immediate (429,
/// with the current document and `X-Arlen-Backpressure-Reason: wait_limit`),
/// so long-polls cannot hold every connection.
pub const MAX_CONCURRENT_WAITS: usize = 64;

/// A comparison on the observed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtLeast(u32),
    AtMost(u32),
    Above(u32),
    Below(u32),
    Exactly(u32),
}

impl Comparison {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (make, number): (fn(u32) -> Comparison, &str) = if let Some(n) = text.strip_prefix(">=") {
            (Comparison::AtLeast, n)
        } else if let Some(n) = text.strip_prefix("<=") {
            (Comparison::AtMost, n)
        } else if let Some(n) = text.strip_prefix("==") {
            (Comparison::Exactly, n)
        } else if let Some(n) = text.strip_prefix('>') {
            (Comparison::Above, n)
        } else if let Some(n) = text.strip_prefix('<') {
            (Comparison::Below, n)
        } else if let Some(n) = text.strip_prefix('=') {
            (Comparison::Exactly, n)
        } else {
            (Comparison::Exactly, text)
        };
        number
            .trim()
            .parse::<u32>()
            .map(make)
            .map_err(|_| format!("expected a count like >=3, <=2, =3 or 3, got {text:?}"))
    }

    fn holds(self, observed: u32) -> bool {
        match self {
            Comparison::AtLeast(n) => observed >= n,
            Comparison::AtMost(n) => observed <= n,
            Comparison::Above(n) => observed > n,
            Comparison::Below(n) => observed < n,
            Comparison::Exactly(n) => observed == n,
        }
    }
}

/// What a `/clusterz` request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitCondition {
    /// Any of these statuses (empty: any status).
    pub statuses: Vec<QuorumStatus>,
    pub nodes: Option<Comparison>,
    pub timeout: Duration,
}

/// Parses `10s`, `500ms`, `1m`, or a bare number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("expected a duration like 10s or 500ms, got {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

impl WaitCondition {
    /// The condition a request asks for, if any. `Err((parameter, message))`
    /// names the bad parameter.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Option<Self>, (&'static str, String)> {
        let last = |name: &str| pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let status = last("wait_for_status");
        let nodes = last("wait_for_nodes");
        if status.is_none() && nodes.is_none() {
            if last("timeout").is_some() {
                return Err(("timeout", "needs wait_for_status or wait_for_nodes".to_owned()));
            }
            return Ok(None);
        }
        let statuses = match status {
            Some(text) => text
                .split(['|', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse::<QuorumStatus>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ("wait_for_status", e))?,
            None => Vec::new(),
        };
        let nodes = nodes.map(Comparison::parse).transpose().map_err(|e| ("wait_for_nodes", e))?;
        let timeout = match last("timeout") {
            Some(text) => parse_timeout(text).map_err(|e| ("timeout", e))?,
            None => DEFAULT_WAIT,
        };
        Ok(Some(Self { statuses, nodes, timeout: timeout.min(MAX_WAIT) }))
    }

    pub fn holds(&self, snapshot: &Snapshot) -> bool {
        let status_ok = self.statuses.is_empty() || self.statuses.contains(&snapshot.quorum.status);
        let nodes_ok = self.nodes.is_none_or(|c| c.holds(snapshot.quorum.observed_nodes));
        status_ok && nodes_ok
    }
}

/// `maintenance=true` (or `1`, `yes`) asks for the maintenance verdict.
fn maintenance_asked(pairs: &[(String, String)]) -> Result<bool, String> {
    match pairs.iter().rev().find(|(k, _)| k == "maintenance").map(|(_, v)| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => Err(format!("expected true or false, got {v:?}")),
    }
}

pub(super) async fn clusterz(
    parts: &http::request::Parts,
    snapshot: Arc<Snapshot>,
    reader: &SnapshotReader,
    cx: &Context<'_>,
) -> Answered {
    let pairs = query_pairs(parts);
    let condition = match WaitCondition::from_query(&pairs) {
        Ok(condition) => condition,
        Err((parameter, message)) => return Answered { response: bad_parameter(parameter, &message), snapshot },
    };
    match maintenance_asked(&pairs) {
        Ok(false) => {}
        Ok(true) if condition.is_some() => {
            let response = bad_parameter("maintenance", "cannot be combined with wait_for_status or wait_for_nodes");
            return Answered { response, snapshot };
        }
        Ok(true) => {
            let verdict = snapshot.maintenance();
            let status = if verdict.can_stop { StatusCode::OK } else { StatusCode::PRECONDITION_FAILED };
            let mut document =
                document(&snapshot, Timestamp { monotonic: cx.monotonic_now, wall: cx.now }, cx.full_details);
            document.maintenance = Some(MaintenanceSection {
                can_stop: verdict.can_stop,
                reason: verdict.reason,
                remaining_nodes: verdict.remaining_nodes,
                required_nodes: verdict.required_nodes,
                unavailable: verdict.unavailable,
            });
            return Answered { response: json_response(status, &document), snapshot };
        }
        Err(message) => return Answered { response: bad_parameter("maintenance", &message), snapshot },
    }
    let Some(condition) = condition else {
        let response = json_response(
            StatusCode::OK,
            &document(&snapshot, Timestamp { monotonic: cx.monotonic_now, wall: cx.now }, cx.full_details),
        );
        return Answered { response, snapshot };
    };
    let _share = match super::share_of(parts, crate::connections::Slot::Wait) {
        Ok(share) => share,
        Err(used_up) => return Answered { response: used_up.response(), snapshot },
    };
    let Ok(_permit) = cx.waits.clone().try_acquire_owned() else {
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &document(&snapshot, Timestamp { monotonic: cx.monotonic_now, wall: cx.now }, cx.full_details),
        );
        response.headers_mut().insert(crate::X_ARLEN_BACKPRESSURE_REASON, http::HeaderValue::from_static("wait_limit"));
        return Answered { response, snapshot };
    };
    let deadline = tokio::time::Instant::now() + condition.timeout;
    let mut reader = reader.clone();
    let mut current = snapshot;
    loop {
        if condition.holds(&current) {
            let response = json_response(StatusCode::OK, &document(&current, reader.now(), cx.full_details));
            return Answered { response, snapshot: current };
        }
        tokio::select! {
            alive = reader.changed() => {
                if !alive {
                    break;
                }
                current = reader.current_and_mark_seen();
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let current = reader.current();
    let response = json_response(StatusCode::REQUEST_TIMEOUT, &document(&current, reader.now(), cx.full_details));
    Answered { response, snapshot: current }
}

/// The document; without `full` details, member addresses, URLs and
/// generations and the source's and upstream's details are withheld.
fn document(snapshot: &Snapshot, at: Timestamp, full: bool) -> ClusterDocument {
    let now = at.wall;
    let withheld = |text: &String| if full { text.clone() } else { RESTRICTED.to_owned() };
    let identity = &snapshot.identity;
    let quorum = &snapshot.quorum;
    let membership = &snapshot.membership;
    let settings = &snapshot.settings;
    let zones: Vec<arlen_wire::documents::ZoneEntry> = arlen_cluster::zone_tolerance(quorum, &membership.members)
        .into_iter()
        .map(|z| arlen_wire::documents::ZoneEntry {
            zone: z.zone,
            alive_members: z.alive,
            members: z.members,
            survives_loss: z.survives_loss,
        })
        .collect();
    let zoned = !zones.is_empty() || quorum.required_zones > 0;
    ClusterDocument {
        ok: true,
        cluster: ClusterSection {
            enabled: identity.cluster_enabled,
            name: identity.cluster_name.clone(),
            node_id: identity.node_id.clone(),
            expected_nodes: quorum.expected_nodes,
            observed_nodes: quorum.observed_nodes,
            worker_pid: identity.worker_pid,
            mode: if identity.cluster_enabled { "multi_node".into() } else { "single_node".into() },
            quorum: QuorumSection {
                status: quorum.status,
                met: quorum.met,
                observed_nodes: quorum.observed_nodes,
                expected_nodes: quorum.expected_nodes,
                policy: quorum.policy.name(),
                required_nodes: quorum.required_nodes,
                failure_tolerance: quorum.failure_tolerance,
                observed_zones: zoned.then_some(quorum.observed_zones),
                required_zones: zoned.then_some(quorum.required_zones),
                zone_summary: arlen_wire::documents::zone_tolerance_sentence(&zones),
                zone_tolerance: zones,
            },
            generation: snapshot.generation,
            lifecycle: LifecycleSection {
                started: snapshot.lifecycle.started,
                draining: snapshot.lifecycle.draining,
                draining_since_utc: snapshot.lifecycle.draining_since.map(timestamp_utc),
            },
            members: membership
                .members
                .iter()
                .map(|m| {
                    // What members gossip is `version+git_sha` (the sha
                    // only when the build knew its commit).
                    let reachability =
                        membership.reachability.as_ref().and_then(|board| board.of(&m.node_id, m.generation));
                    let software = m.software.as_deref().filter(|_| full).map(|s| match s.split_once('+') {
                        Some((version, sha)) => (version, Some(sha)),
                        None => (s, None),
                    });
                    MemberEntry {
                        node_id: m.node_id.clone(),
                        generation: full.then_some(m.generation),
                        http_url: m.http_url.clone().filter(|_| full),
                        gossip_address: m.gossip_address.clone().filter(|_| full),
                        state: m.state,
                        is_self: m.is_self,
                        version: software.map(|(version, _)| version.to_owned()),
                        git_sha: software.and_then(|(_, sha)| sha.map(str::to_owned)),
                        zone: m.zone.clone(),
                        reachability: reachability.as_ref().map(|(class, _)| *class),
                        evidence: reachability.map(|(_, evidence)| evidence),
                        last_heard_ms: membership
                            .heard
                            .as_ref()
                            .and_then(|clock| clock.last_heard(&m.node_id, m.generation))
                            .map(|t| {
                                u64::try_from(now.duration_since(t).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
                            }),
                    }
                })
                .collect(),
            accusations: full.then(|| {
                membership
                    .accusations
                    .iter()
                    .map(|a| AccusationEntry {
                        accused: a.accused.clone(),
                        accused_generation: a.accused_generation,
                        accuser: a.accuser.clone(),
                        verdict: a.verdict.as_str().to_owned(),
                        at: timestamp_utc(a.at),
                        evidence: AccusationEvidence {
                            direct_probe_failed: a.evidence.direct_failed,
                            probe_timeout_ms: a.evidence.probe_timeout_ms,
                            indirect_probes: a.evidence.indirect_asked,
                            indirect_acks: a.evidence.indirect_acked,
                        },
                        accuser_health: AccuserHealthEntry {
                            healthy: a.accuser_health.healthy(),
                            local_health: a.accuser_health.local_health,
                            stalled_ms_ago: a.accuser_health.stalled_ms_ago,
                        },
                        explanation: a.explain().to_owned(),
                    })
                    .collect()
            }),
        },
        contracts: Contracts {
            session: SessionContract {
                enabled: settings.session_enabled,
                mode: "cookie_signed".into(),
                shared_secret_required: settings.session_enabled && identity.cluster_enabled,
                shared_secret_configured: settings.session_secret_configured,
            },
            realtime: RealtimeContract {
                mode: "node_local_pubsub".into(),
                cluster_broadcast: "external_broker_required".into(),
            },
        },
        coordination: Coordination {
            membership_source: membership.source.into(),
            state: quorum.status,
            capability_matrix: CapabilityMatrix {
                cross_node_request_routing: "external_load_balancer_required".into(),
                cross_node_realtime_fanout: "external_broker_required".into(),
                cross_node_jobs_deduplication: "external_queue_required".into(),
                cross_node_cache_coherence: "external_cache_required".into(),
            },
            source_health: SourceHealthSection {
                ok: membership.health.ok,
                detail: withheld(&membership.health.detail),
                last_membership_change_utc: membership.health.last_membership_change.map(timestamp_utc),
            },
            duplicate_node_ids: membership.duplicate_node_ids.clone(),
        },
        upstream: snapshot.upstream.as_ref().map(|u| UpstreamCheck {
            ok: u.ok,
            target: withheld(&u.target),
            detail: withheld(&u.detail),
            since_utc: timestamp_utc(u.since),
        }),
        checks: snapshot.checks.0.iter().map(|c| (c.name.clone(), crate::checks::section(c, at, full))).collect(),
        details: if full { FULL.into() } else { RESTRICTED.into() },
        maintenance: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    #[test]
    fn wait_parameters() {
        assert_eq!(WaitCondition::from_query(&pairs("format=json")), Ok(None));
        let c =
            WaitCondition::from_query(&pairs("wait_for_status=nominal|degraded&wait_for_nodes=%3E%3D3&timeout=500ms"))
                .unwrap()
                .unwrap();
        assert_eq!(c.statuses, vec![QuorumStatus::Nominal, QuorumStatus::Degraded]);
        assert_eq!(c.nodes, Some(Comparison::AtLeast(3)));
        assert_eq!(c.timeout, Duration::from_millis(500));
        let c = WaitCondition::from_query(&pairs("wait_for_nodes=2&timeout=10m")).unwrap().unwrap();
        assert_eq!((c.nodes, c.timeout), (Some(Comparison::Exactly(2)), MAX_WAIT), "capped");
        assert_eq!(WaitCondition::from_query(&pairs("wait_for_nodes=<3")).unwrap().unwrap().timeout, DEFAULT_WAIT);
    }

    #[test]
    fn bad_wait_parameters_name_the_parameter() {
        assert_eq!(WaitCondition::from_query(&pairs("wait_for_status=great")).unwrap_err().0, "wait_for_status");
        assert_eq!(WaitCondition::from_query(&pairs("wait_for_nodes=lots")).unwrap_err().0, "wait_for_nodes");
        assert_eq!(WaitCondition::from_query(&pairs("wait_for_nodes=3&timeout=5h")).unwrap_err().0, "timeout");
        assert_eq!(WaitCondition::from_query(&pairs("timeout=5s")).unwrap_err().0, "timeout");
    }

    #[test]
    fn comparisons() {
        for (text, observed, holds) in
            [(">=3", 3, true), (">3", 3, false), ("<3", 2, true), ("<=2", 3, false), ("=4", 4, true)]
        {
            assert_eq!(Comparison::parse(text).unwrap().holds(observed), holds, "{text} {observed}");
        }
    }
}
