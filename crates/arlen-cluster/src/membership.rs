//! What a membership source reports: members, their states, source health.

use std::sync::Arc;
use std::time::SystemTime;

/// A member's state as its membership source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Alive,
    Suspect,
    /// Announced that it is shutting down; still answering, not counted.
    Draining,
    Dead,
    Left,
}

impl MemberState {
    pub const ALL: [MemberState; 5] =
        [MemberState::Alive, MemberState::Suspect, MemberState::Draining, MemberState::Dead, MemberState::Left];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Draining => "draining",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

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
        }
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
        }
    }
}
