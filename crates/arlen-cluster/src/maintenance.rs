//! "May I stop this node now?" — the maintenance verdict (MinIO's
//! `?maintenance=true`), decided from one snapshot: stopping this node must
//! leave enough members, under the quorum policy, counting those already
//! draining, dead or left as gone.

use crate::{MemberState, Snapshot};

/// The verdict of `GET /clusterz?maintenance=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// This node may be stopped now without the cluster losing quorum.
    pub can_stop: bool,
    /// Why, in one sentence.
    pub reason: String,
    /// Members that would still count after this node stops.
    pub remaining_nodes: u32,
    /// What the policy needs.
    pub required_nodes: u32,
    /// Other members that already do not count, with their state (`node-b draining`).
    pub unavailable: Vec<String>,
}

impl Snapshot {
    /// Whether this node can be stopped now without the cluster losing quorum.
    pub fn maintenance(&self) -> Maintenance {
        let quorum = &self.quorum;
        let node = &self.identity.node_id;
        let unavailable: Vec<String> = self
            .membership
            .members
            .iter()
            .filter(|m| !m.is_self && m.state != MemberState::Alive)
            .map(|m| format!("{} {}", m.node_id, m.state.as_str()))
            .collect();
        let self_counted = self.membership.members.iter().any(|m| m.is_self && m.state == MemberState::Alive)
            && !self.lifecycle.draining;
        let remaining = quorum.observed_nodes.saturating_sub(u32::from(self_counted));
        let required = quorum.required_nodes;
        let policy = quorum.policy.name();
        let nodes = |n: u32| if n == 1 { "1 node".to_owned() } else { format!("{n} nodes") };
        let gone =
            if unavailable.is_empty() { String::new() } else { format!(" ({} already out)", unavailable.join(", ")) };
        let (can_stop, reason) = if !self.identity.cluster_enabled {
            (true, format!("the cluster is not enabled: stopping {node} loses no quorum"))
        } else if !quorum.met {
            (
                false,
                format!(
                    "quorum is not met now ({}: {} of {} expected observed, policy {policy} needs {required}){gone}",
                    quorum.status, quorum.observed_nodes, quorum.expected_nodes
                ),
            )
        } else if remaining >= required {
            (true, format!("stopping {node} leaves {}; policy {policy} needs {required}{gone}", nodes(remaining)))
        } else {
            (
                false,
                format!(
                    "stopping {node} would leave {}; policy {policy} needs {required}: quorum would be lost{gone}",
                    nodes(remaining)
                ),
            )
        };
        Maintenance { can_stop, reason, remaining_nodes: remaining, required_nodes: required, unavailable }
    }
}
