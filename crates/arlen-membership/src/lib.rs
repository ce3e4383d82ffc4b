//! Arlen membership sources. A source observes which members of the cluster
//! are alive and publishes [`MembershipView`]s through a
//! [`SnapshotPublisher`]; it is the only place membership IO happens.
//!
//! Sources: `static_config` (the operator states `cluster.observedNodes`),
//! `gossip` (live membership over sealed UDP gossip, SWIM on foca) and `etcd`
//! (lease-registered members in etcd). Nothing outside this crate imports
//! foca or etcd-client: callers see [`start`], [`RunningSource`], the
//! [`Source`] seam every source implements, and the snapshot types of
//! `arlen-cluster`.

#![forbid(unsafe_code)]

mod etcd;
mod faults;
#[cfg(feature = "forge")]
pub mod forge;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gossip;
#[cfg(any(test, feature = "simulation"))]
pub mod simulation;
mod source;
mod static_config;
mod supervise;
mod transport;

use std::time::SystemTime;

use arlen_cluster::{MembershipView, SnapshotPublisher};
use arlen_config::{Config, MembershipSource};

pub use etcd::{EtcdStats, RecordRejection, ETCD_NAME};
pub use faults::{FaultRule, FaultRules, TaskFault};
pub use gossip::{GossipTraffic, Rejection, GOSSIP_NAME};
pub use source::{CounterRead, Source, SourceCounter};

/// A fresh gossip key, base64: what `cluster.gossip.keys` takes.
pub fn generate_gossip_key() -> String {
    let key: [u8; 32] = rand::random();
    <base64ct::Base64 as base64ct::Encoding>::encode_string(&key)
}

/// Source name on the wire for configured membership.
pub const STATIC_CONFIG: &str = static_config::NAME;

/// Errors starting a membership source.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("membership source {source_name} failed to start: {detail}")]
    Start { source_name: &'static str, detail: String },
}

/// A started membership source (any [`Source`]). [`RunningSource::leave`]
/// tells peers this node is leaving and stops the source.
pub struct RunningSource {
    inner: Box<dyn Source>,
}

impl std::fmt::Debug for RunningSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSource").field("name", &self.name()).finish()
    }
}

impl RunningSource {
    /// A running source of the caller's own (any [`Source`]).
    pub fn new(source: impl Source) -> Self {
        Self { inner: Box::new(source) }
    }

    /// The source's wire name.
    pub fn name(&self) -> &'static str {
        self.inner.name()
    }

    /// Fault-injection rules of the source's transport, when it has one.
    pub fn fault_rules(&self) -> Option<FaultRules> {
        self.inner.fault_rules()
    }

    /// The counters the source keeps, named by itself, for `/metrics`.
    pub fn counters(&self) -> Vec<SourceCounter> {
        self.inner.counters()
    }

    /// The source's shared store of stop permits, when it has one (etcd).
    pub fn permit_store(&self) -> Option<std::sync::Arc<dyn arlen_cluster::permits::PermitStore>> {
        self.inner.permit_store()
    }

    /// Tells peers this node is draining (still serving, about to leave); they
    /// stop counting it.
    pub async fn announce_draining(&self) {
        self.inner.announce_draining().await;
    }

    /// Applies the settings a running source can change (SIGHUP).
    pub async fn reload(&self, config: &Config) {
        self.inner.reload(config).await;
    }

    /// Resolves, with the reason, when the source has failed for good and
    /// the process should exit so its supervisor restarts it. Never resolves
    /// for a source that keeps running.
    pub async fn failed(&self) -> String {
        self.inner.failed().await
    }

    /// Announces that this node is leaving, waits briefly for the news to
    /// spread, and stops the source.
    pub async fn leave(self) {
        self.inner.leave().await;
    }
}

/// Starts the configured membership source; returns once it has published its
/// first view. The one place that names every source.
pub async fn start(config: &Config, publisher: SnapshotPublisher) -> Result<RunningSource, MembershipError> {
    Ok(match config.cluster.membership.source {
        MembershipSource::StaticConfig => RunningSource::new(static_config::StaticSource::start(config, publisher)),
        MembershipSource::Gossip => {
            RunningSource::new(gossip::GossipSource::start(config, publisher, std::sync::Arc::new(gossip::Udp)).await?)
        }
        MembershipSource::Etcd => RunningSource::new(etcd::EtcdSource::start(config, publisher).await?),
    })
}

/// The view `static_config` reports: the configured observed count, and this node.
pub fn static_view(config: &Config, now: SystemTime) -> MembershipView {
    static_config::view(config, now)
}

/// Milliseconds since the epoch at a process's start: a member's
/// generation, new on every start and larger for a later one (every source
/// stamps its member the same way).
pub(crate) fn new_generation() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The URL peers and tools reach a node's HTTP listener at.
pub(crate) fn node_url(host: &str, port: u16) -> String {
    format!("http://{}:{port}", url_host(host))
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
            tests_support::identity(&config),
            tests_support::settings(3),
            MembershipView::uninitialised("unstarted"),
            tests_support::clock(),
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

#[cfg(test)]
pub(crate) mod tests_support {
    use arlen_cluster::{NodeIdentity, RuntimeSettings};
    use arlen_config::Config;

    pub fn identity(config: &Config) -> NodeIdentity {
        NodeIdentity {
            cluster_enabled: config.cluster.enabled,
            cluster_name: config.cluster.name.clone(),
            node_id: config.cluster.node_id.clone(),
            worker_pid: 1,
        }
    }

    pub fn settings(expected_nodes: u32) -> RuntimeSettings {
        RuntimeSettings::contract_defaults(expected_nodes)
    }

    /// The real clock, for tests that run on tokio's clock.
    #[derive(Debug)]
    pub struct TokioClock(tokio::time::Instant);

    impl arlen_cluster::Clock for TokioClock {
        fn now(&self) -> arlen_cluster::Timestamp {
            arlen_cluster::Timestamp { monotonic: self.0.elapsed(), wall: std::time::SystemTime::now() }
        }
    }

    pub fn clock() -> std::sync::Arc<dyn arlen_cluster::Clock> {
        std::sync::Arc::new(TokioClock(tokio::time::Instant::now()))
    }
}
