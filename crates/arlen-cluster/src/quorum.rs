//! The quorum model of CONTRACT §2.

use serde::Serialize;

/// The cluster's status as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// The quorum verdict for one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub status: QuorumStatus,
    pub met: bool,
    /// Raw observed count (never clamped; may exceed expected).
    pub observed_nodes: u32,
    /// Expected count, clamped to ≥ 1.
    pub expected_nodes: u32,
}

/// Evaluates the contract's table: `E = max(expected, 1)`, `O = observed`.
///
/// ```
/// use arlen_cluster::{evaluate_quorum, QuorumStatus};
/// let q = evaluate_quorum(true, 3, 2);
/// assert_eq!((q.status, q.met), (QuorumStatus::Degraded, false));
/// ```
pub fn evaluate_quorum(cluster_enabled: bool, expected_nodes: u32, observed_nodes: u32) -> Quorum {
    let expected_nodes = expected_nodes.max(1);
    let (status, met) = if !cluster_enabled {
        (QuorumStatus::SingleNode, true)
    } else if observed_nodes == 0 {
        (QuorumStatus::Partitioned, false)
    } else if observed_nodes < expected_nodes {
        (QuorumStatus::Degraded, false)
    } else {
        (QuorumStatus::Nominal, true)
    };
    Quorum { status, met, observed_nodes, expected_nodes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contract_table() {
        let cases = [
            (false, 3, 0, QuorumStatus::SingleNode, true),
            (false, 3, 7, QuorumStatus::SingleNode, true),
            (true, 3, 0, QuorumStatus::Partitioned, false),
            (true, 3, 1, QuorumStatus::Degraded, false),
            (true, 3, 2, QuorumStatus::Degraded, false),
            (true, 3, 3, QuorumStatus::Nominal, true),
            (true, 3, 4, QuorumStatus::Nominal, true),
            (true, 0, 1, QuorumStatus::Nominal, true),
            (true, 0, 0, QuorumStatus::Partitioned, false),
        ];
        for (enabled, expected, observed, status, met) in cases {
            let q = evaluate_quorum(enabled, expected, observed);
            assert_eq!((q.status, q.met), (status, met), "enabled={enabled} E={expected} O={observed}");
        }
        assert_eq!(evaluate_quorum(true, 0, 5).expected_nodes, 1);
    }

    proptest! {
        #[test]
        fn met_exactly_when_nominal_or_single(enabled in any::<bool>(), expected in 0u32..100, observed in 0u32..100) {
            let q = evaluate_quorum(enabled, expected, observed);
            prop_assert_eq!(q.met, matches!(q.status, QuorumStatus::Nominal | QuorumStatus::SingleNode));
            prop_assert!(q.expected_nodes >= 1);
            prop_assert_eq!(q.observed_nodes, observed);
        }
    }
}
