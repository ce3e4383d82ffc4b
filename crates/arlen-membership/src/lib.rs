//! Arlen membership sources. A source observes which members of the cluster
//! are alive and publishes [`MembershipView`]s through a
//! [`SnapshotPublisher`]; it is the only place membership IO happens.
//!
//! Sources today: `static_config` (the operator states `cluster.observedNodes`).
//! A live source (gossip, etcd) plugs in here without the HTTP layer changing:
//! it only ever reads snapshots.

#![forbid(unsafe_code)]

use std::time::SystemTime;

use arlen_cluster::{Member, MemberState, MembershipView, SnapshotPublisher, SourceHealth};
use arlen_config::Config;

/// Source name on the wire for configured membership.
pub const STATIC_CONFIG: &str = "static_config";

/// Errors starting a membership source.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("membership source {source_name} failed to start: {detail}")]
    Start { source_name: &'static str, detail: String },
}

/// A started membership source. Dropping it stops the source; [`RunningSource::leave`]
/// first tells peers that this node is leaving.
#[derive(Debug)]
pub struct RunningSource {
    name: &'static str,
}

impl RunningSource {
    /// The source's wire name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Announces that this node is leaving (a no-op for `static_config`,
    /// whose membership is whatever the operator configured).
    pub async fn leave(self) {
        tracing::debug!(source = self.name, "membership source stopped");
    }
}

/// Starts the configured membership source; returns once it has published its
/// first view.
pub async fn start(config: &Config, publisher: SnapshotPublisher) -> Result<RunningSource, MembershipError> {
    publisher.set_membership(static_view(config, SystemTime::now()));
    Ok(RunningSource { name: STATIC_CONFIG })
}

/// The view `static_config` reports: the configured observed count, and this
/// node as the one member it can vouch for.
pub fn static_view(config: &Config, now: SystemTime) -> MembershipView {
    let cluster = &config.cluster;
    MembershipView {
        source: STATIC_CONFIG,
        observed_nodes: cluster.observed_nodes,
        members: vec![Member {
            node_id: cluster.node_id.clone(),
            generation: 0,
            http_url: Some(format!("http://{}:{}", url_host(&config.host), config.port)),
            gossip_address: None,
            state: MemberState::Alive,
            is_self: true,
            last_heard: None,
        }],
        health: SourceHealth {
            ok: true,
            detail: format!("observed nodes configured as {}", cluster.observed_nodes),
            last_membership_change: Some(now),
        },
    }
}

/// A host as it appears in a URL (IPv6 literals in brackets).
pub fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_source_publishes_the_configured_count() {
        let config = Config::from_map(
            std::path::Path::new("/nonexistent"),
            &[
                ("ARLEN_CLUSTER_ENABLED", "1"),
                ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
                ("ARLEN_CLUSTER_OBSERVED_NODES", "2"),
            ],
        )
        .unwrap();
        let (publisher, reader) = arlen_cluster::snapshot_channel(
            arlen_cluster::NodeIdentity {
                cluster_enabled: true,
                cluster_name: "alpha".into(),
                node_id: "node-a".into(),
                worker_pid: 1,
            },
            arlen_cluster::RuntimeSettings {
                expected_nodes: 3,
                emit_headers: true,
                health_details_enabled: true,
                readiness_requires_startup: false,
                readiness_requires_cluster_quorum: false,
                metrics_enabled: true,
                trace_propagation_enabled: true,
                response_identity_headers_enabled: true,
                session_enabled: false,
                session_secret_configured: false,
            },
            MembershipView::uninitialised("unstarted"),
        );
        assert_eq!(reader.current().quorum.status, arlen_cluster::QuorumStatus::Partitioned);
        let source = start(&config, publisher).await.unwrap();
        let snapshot = reader.current();
        assert_eq!(source.name(), STATIC_CONFIG);
        assert_eq!(snapshot.membership.source, STATIC_CONFIG);
        assert_eq!(snapshot.quorum.observed_nodes, 2);
        assert_eq!(snapshot.quorum.status, arlen_cluster::QuorumStatus::Degraded);
        assert!(snapshot.membership.members[0].is_self);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
    }
}
