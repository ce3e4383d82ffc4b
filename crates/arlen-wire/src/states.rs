//! The words for a member's state and the cluster's status, as the
//! documents and headers carry them (`alive`, `degraded`, ...): typed, so
//! that tools compare values rather than strings.

use serde::{Deserialize, Serialize};

/// The cluster's status as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumStatus {
    SingleNode,
    Partitioned,
    Degraded,
    Nominal,
}

impl QuorumStatus {
    pub const ALL: [QuorumStatus; 4] =
        [QuorumStatus::SingleNode, QuorumStatus::Partitioned, QuorumStatus::Degraded, QuorumStatus::Nominal];

    /// The wire name (`single_node`, `partitioned`, `degraded`, `nominal`).
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumStatus::SingleNode => "single_node",
            QuorumStatus::Partitioned => "partitioned",
            QuorumStatus::Degraded => "degraded",
            QuorumStatus::Nominal => "nominal",
        }
    }
}

impl std::fmt::Display for QuorumStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QuorumStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuorumStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?} (expected single_node, partitioned, degraded or nominal)"))
    }
}

/// A member's state as its membership source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MemberState {
    /// Counted towards quorum, or on its way out but still answering.
    pub fn is_up(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Draining)
    }
}

impl std::str::FromStr for MemberState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemberState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown member state {s:?} (expected alive, suspect, draining, dead or left)"))
    }
}
