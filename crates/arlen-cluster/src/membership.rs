//! What a membership source reports: members, their states, source health.

use std::sync::Arc;
use std::time::SystemTime;

pub use arlen_wire::states::MemberState;

/// One known member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// New on every start of the member's process.
    pub generation: u64,
    pub http_url: Option<String>,
    pub gossip_address: Option<String>,
    pub state: MemberState,
    pub is_self: bool,
    /// The member's software version (`1.2.0+0123abcd4567`), when it told.
    pub software: Option<String>,
    /// The member's `cluster.zone`, when it has one and told.
    pub zone: Option<String>,
}

/// When this node last heard from each member, updated by the membership
/// source between snapshots (hearing a heartbeat is not a membership change,
/// so it does not publish a new snapshot). Two clocks are equal when they are
/// the same clock.
#[derive(Debug, Clone, Default)]
pub struct HeardClock(Arc<std::sync::RwLock<std::collections::HashMap<(String, u64), SystemTime>>>);

impl PartialEq for HeardClock {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for HeardClock {}

impl HeardClock {
    /// Records that `node_id` at `generation` was heard from at `when`.
    pub fn record(&self, node_id: &str, generation: u64, when: SystemTime) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert((node_id.to_owned(), generation), when);
    }

    /// When `node_id` at `generation` was last heard from.
    pub fn last_heard(&self, node_id: &str, generation: u64) -> Option<SystemTime> {
        let map = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(node_id.to_owned(), generation)).copied()
    }

    /// Forgets members for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&str, u64) -> bool) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|(node_id, generation), _| keep(node_id, *generation));
    }
}

/// How each member answers this node's probes (gray failures named),
/// updated by the membership source between snapshots like [`HeardClock`]:
/// round-trip times move all the time, and a class is not a membership
/// change. Two boards are equal when they are the same board.
#[derive(Debug, Clone, Default)]
pub struct ReachabilityBoard(Arc<std::sync::RwLock<ReachabilityMap>>);

type ReachabilityMap = std::collections::HashMap<(String, u64), (Reachability, ReachabilityEvidence)>;

pub use arlen_wire::documents::ReachabilityEvidence;
pub use arlen_wire::states::Reachability;

impl PartialEq for ReachabilityBoard {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ReachabilityBoard {}

impl ReachabilityBoard {
    /// Replaces every entry: the classes of the members probed enough.
    /// Returns the members whose class changed (for counting).
    pub fn replace(
        &self,
        entries: Vec<((String, u64), (Reachability, ReachabilityEvidence))>,
    ) -> Vec<(String, Reachability)> {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = entries
            .iter()
            .filter(|(key, (class, _))| map.get(key).map(|(before, _)| before) != Some(class))
            .map(|((node_id, _), (class, _))| (node_id.clone(), *class))
            .collect();
        *map = entries.into_iter().collect();
        changed
    }

    /// The class and evidence of `node_id` at `generation`, when it has one.
    pub fn of(&self, node_id: &str, generation: u64) -> Option<(Reachability, ReachabilityEvidence)> {
        let map = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(node_id.to_owned(), generation)).cloned()
    }
}

/// How the membership source itself is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHealth {
    pub ok: bool,
    pub detail: String,
    pub last_membership_change: Option<SystemTime>,
}

/// What a membership source currently reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// Source name on the wire: `static_config`, `gossip`, `etcd`, ...
    pub source: &'static str,
    /// Members counted as observed (this node included while it can reach the source).
    pub observed_nodes: u32,
    pub members: Vec<Member>,
    pub health: SourceHealth,
    /// Node ids claimed by more than one live process (each counted once).
    pub duplicate_node_ids: Vec<String>,
    /// Last-heard times of the members, when the source tracks them.
    pub heard: Option<HeardClock>,
    /// How long this view may be trusted without the source confirming it
    /// again, when the source confirms it periodically (gossip does, every
    /// probe period). Readiness is not answered from a view older than this
    /// (after the process was paused, or the source stalled).
    pub fresh_for: Option<std::time::Duration>,
    /// This node's recent verdicts about others (bounded; newest last).
    pub accusations: Vec<Accusation>,
    /// How each member answers this node's probes, when the source probes.
    pub reachability: Option<ReachabilityBoard>,
}

impl MembershipView {
    /// A view that reports only a count (no member list), healthy: what a
    /// configured count looks like, and a convenient fixture.
    pub fn counted(source: &'static str, observed_nodes: u32) -> Self {
        Self {
            source,
            observed_nodes,
            members: Vec::new(),
            health: SourceHealth { ok: true, detail: String::new(), last_membership_change: None },
            duplicate_node_ids: Vec::new(),
            heard: None,
            fresh_for: None,
            accusations: Vec::new(),
            reachability: None,
        }
    }

    /// Zones with a live member (what the `zones` policy counts): none when
    /// the source vouches for nobody.
    pub fn observed_zones(&self) -> u32 {
        if self.observed_nodes == 0 {
            return 0;
        }
        let zones: std::collections::BTreeSet<&str> =
            self.members.iter().filter(|m| m.state == MemberState::Alive).filter_map(|m| m.zone.as_deref()).collect();
        u32::try_from(zones.len()).unwrap_or(u32::MAX)
    }

    /// The view before any source has reported: nothing observed.
    pub fn uninitialised(source: &'static str) -> Self {
        Self {
            source,
            observed_nodes: 0,
            members: Vec::new(),
            health: SourceHealth { ok: false, detail: "not initialised yet".to_owned(), last_membership_change: None },
            duplicate_node_ids: Vec::new(),
            heard: None,
            fresh_for: None,
            accusations: Vec::new(),
            reachability: None,
        }
    }
}

/// What a member's accuser concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A probe failed (direct and indirect): the member has a suspicion
    /// timeout to refute.
    Suspect,
    /// The suspicion ran out: the accuser declared the member down.
    Down,
    /// The member answered in time: the suspicion was false.
    Refuted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Suspect => "suspect",
            Verdict::Down => "down",
            Verdict::Refuted => "refuted",
        }
    }
}

/// The probe outcomes a suspicion rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeEvidence {
    /// The direct probe timed out (false: this node did not probe the member
    /// itself; it learnt the suspicion from gossip).
    pub direct_failed: bool,
    /// How long the direct probe waited for its ack, in milliseconds.
    pub probe_timeout_ms: u64,
    /// Members asked to probe it on this node's behalf, and how many of them
    /// got an answer.
    pub indirect_asked: u32,
    pub indirect_acked: u32,
}

/// How the accuser itself was doing when it accused: Lifeguard's point is
/// that most false verdicts come from a slow accuser, not a dead accused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccuserHealth {
    /// 0 when its own probes succeed; grows with its recent failures and
    /// with suspicions about itself (it then waits longer before accusing).
    pub local_health: u32,
    /// When it last noticed its own stall (paused, starved of CPU), in
    /// milliseconds before the verdict.
    pub stalled_ms_ago: Option<u64>,
}

impl AccuserHealth {
    /// Healthy: no recent failures of its own and no stall in the last minute.
    pub fn healthy(&self) -> bool {
        self.local_health == 0 && self.stalled_ms_ago.is_none_or(|ms| ms > 60_000)
    }
}

/// One verdict of this node about another, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accusation {
    pub accused: String,
    pub accused_generation: u64,
    pub accuser: String,
    pub verdict: Verdict,
    pub at: SystemTime,
    pub evidence: ProbeEvidence,
    pub accuser_health: AccuserHealth,
    /// [`Accusation::compose`]'s sentence, made once when the verdict is
    /// recorded (documents and events only read it).
    pub explanation: String,
}

impl Accusation {
    /// The one line for an operator, as recorded.
    pub fn explain(&self) -> &str {
        &self.explanation
    }

    /// One line for an operator: who, what, on what evidence.
    pub fn compose(&self) -> String {
        let evidence = &self.evidence;
        let probes = if evidence.direct_failed {
            format!(
                "its direct probe timed out after {} ms and {} of {} indirect probes answered",
                evidence.probe_timeout_ms, evidence.indirect_acked, evidence.indirect_asked
            )
        } else {
            "no probe of its own".to_owned()
        };
        let health = if self.accuser_health.healthy() {
            format!("{} was healthy", self.accuser)
        } else {
            format!(
                "{} itself was unwell (local health {}{})",
                self.accuser,
                self.accuser_health.local_health,
                self.accuser_health.stalled_ms_ago.map(|ms| format!(", stalled {ms} ms before")).unwrap_or_default()
            )
        };
        match self.verdict {
            Verdict::Suspect => format!("{} suspected {}: {probes}; {health}", self.accuser, self.accused),
            Verdict::Down => format!("{} declared {} down: {probes}; {health}", self.accuser, self.accused),
            Verdict::Refuted => format!("{} refuted {}'s suspicion in time", self.accused, self.accuser),
        }
    }
}
