//! `static_config`: the operator states how many nodes are observed.

use std::time::SystemTime;

use arlen_cluster::{Member, MemberState, MembershipView, SourceHealth};
use arlen_config::Config;

/// The running `static_config` source: it republishes the configured count
/// when the configuration is reloaded.
pub(crate) struct StaticSource {
    publisher: arlen_cluster::SnapshotPublisher,
}

impl StaticSource {
    pub(crate) fn start(config: &Config, publisher: arlen_cluster::SnapshotPublisher) -> Self {
        publisher.set_membership(view(config, SystemTime::now()));
        Self { publisher }
    }
}

#[async_trait::async_trait]
impl crate::Source for StaticSource {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reload(&self, config: &Config) {
        self.publisher.set_membership(view(config, SystemTime::now()));
    }

    async fn leave(self: Box<Self>) {
        tracing::debug!("static membership stopped");
    }
}

/// Source name on the wire.
pub const NAME: &str = "static_config";

/// The view `static_config` reports: the configured observed count, and this
/// node as the one member it can vouch for.
pub fn view(config: &Config, now: SystemTime) -> MembershipView {
    let cluster = &config.cluster;
    MembershipView {
        source: NAME,
        observed_nodes: cluster.observed_nodes,
        members: vec![Member {
            node_id: cluster.node_id.clone(),
            generation: 0,
            http_url: Some(crate::node_url(&config.host, config.port)),
            gossip_address: None,
            state: MemberState::Alive,
            is_self: true,
            software: Some(arlen_config::build::software()),
            zone: cluster.zone.clone(),
        }],
        health: SourceHealth {
            ok: true,
            detail: format!("observed nodes configured as {}", cluster.observed_nodes),
            last_membership_change: Some(now),
        },
        duplicate_node_ids: Vec::new(),
        heard: None,
        fresh_for: None,
        accusations: Vec::new(),
        reachability: None,
    }
}
