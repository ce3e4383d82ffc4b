//! `/clusterz/events`: what one event says, as the node sends it and a
//! client reads it back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::states::{MemberState, QuorumStatus};

crate::states::wire_words!(
    /// What changed.
    EventKind ("event kind") {
        /// The first event of a stream: the state now, every member included.
        Snapshot => "snapshot",
        /// A member's state changed (`node_id`, `from`, `to`).
        Membership => "membership",
        /// The cluster's status or count changed.
        Quorum => "quorum",
        /// This node's readiness or draining changed.
        Readiness => "readiness",
        /// This node suspected, declared down or was refuted about a member.
        Accusation => "accusation",
        /// The history no longer reaches back to `Last-Event-ID`: the state now.
        Resync => "resync",
    }
);

/// One transition, as sent (the `data:` of an event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub generation: u64,
    pub at_utc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub status: QuorumStatus,
    pub observed_nodes: u32,
    pub expected_nodes: u32,
    pub ready: bool,
    pub draining: bool,
    /// Only in `accusation`: who accused whom, on what evidence, in a sentence
    /// (`node_id` is the accused, `from` the accuser, `to` the verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Only in `snapshot` and `resync`: every member and its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<BTreeMap<String, MemberState>>,
    /// Set on the last event of its generation, which carries the SSE `id`
    /// (not part of the data).
    #[serde(skip)]
    pub last_of_generation: bool,
}
