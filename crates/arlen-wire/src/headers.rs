//! The names of the headers Arlen sets, written once. Header names are
//! case-insensitive; these are the lower-case forms the `http` crate stores
//! (HTTP/2 sends them so), and [`title_case`] gives the contract's spelling
//! that HTTP/1.1 responses carry by default (`X-Arlen-Cluster-Status`).

/// The cluster's name (CONTRACT §4).
pub const CLUSTER: &str = "x-arlen-cluster";
/// This node's id.
pub const NODE: &str = "x-arlen-node";
/// The process id of the worker that answered.
pub const WORKER_PID: &str = "x-arlen-worker-pid";
/// `nominal`, `degraded` or `partitioned`.
pub const CLUSTER_STATUS: &str = "x-arlen-cluster-status";
/// Nodes the answering node observes.
pub const CLUSTER_OBSERVED_NODES: &str = "x-arlen-cluster-observed-nodes";
/// Nodes the cluster should have.
pub const CLUSTER_EXPECTED_NODES: &str = "x-arlen-cluster-expected-nodes";
/// `1` while the node drains.
pub const DRAINING: &str = "x-arlen-draining";
/// Why the node answered 503 or 429 itself (`http_session_limit`, `wait_limit`, ...).
pub const BACKPRESSURE_REASON: &str = "x-arlen-backpressure-reason";
/// Why the sidecar answered instead of the upstream.
pub const UPSTREAM_ERROR: &str = "x-arlen-upstream-error";

/// The six cluster headers on every response, in the contract's order.
pub const CLUSTER_HEADERS: [&str; 6] =
    [CLUSTER, NODE, WORKER_PID, CLUSTER_STATUS, CLUSTER_OBSERVED_NODES, CLUSTER_EXPECTED_NODES];

/// `x-arlen-cluster-status` → `X-Arlen-Cluster-Status`.
pub fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_title_case_is_the_contracts_spelling() {
        for name in CLUSTER_HEADERS.iter().chain(&[DRAINING, BACKPRESSURE_REASON, UPSTREAM_ERROR]) {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
        let spelled: Vec<String> = CLUSTER_HEADERS.iter().map(|n| title_case(n)).collect();
        assert_eq!(
            spelled,
            [
                "X-Arlen-Cluster",
                "X-Arlen-Node",
                "X-Arlen-Worker-Pid",
                "X-Arlen-Cluster-Status",
                "X-Arlen-Cluster-Observed-Nodes",
                "X-Arlen-Cluster-Expected-Nodes"
            ]
        );
    }
}
