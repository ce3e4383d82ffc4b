//! The seam every membership source implements. A new source is one file
//! implementing [`Source`] plus one arm in [`crate::start`] (and its keys in
//! the configuration registry); nothing else names it. What a source can do
//! beyond publishing views — fault injection, its own counters — it says
//! itself, so the node, the operations endpoint and the tools ask instead of
//! matching on source names.

use arlen_config::Config;

use crate::faults::FaultRules;

/// A counter a source keeps, named and described by the source itself.
pub struct SourceCounter {
    /// The metric name without `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub read: CounterRead,
}

impl std::fmt::Debug for SourceCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCounter").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SourceCounter {
    /// A counter family with one `reason` label per value of a closed set
    /// (`labels`, each value's label), read by `read` at each scrape.
    pub fn by_reason<R: Copy + Send + Sync + 'static>(
        name: &'static str,
        help: &'static str,
        reasons: &'static [R],
        label: fn(R) -> &'static str,
        read: impl Fn(R) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self::by_label(name, help, "reason", reasons, label, read)
    }

    /// A counter family with one `label_name` label per value of a closed set.
    pub fn by_label<R: Copy + Send + Sync + 'static>(
        name: &'static str,
        help: &'static str,
        label_name: &'static str,
        reasons: &'static [R],
        label: fn(R) -> &'static str,
        read: impl Fn(R) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            read: CounterRead::Labeled {
                label: label_name,
                values: reasons.iter().map(|r| label(*r)).collect(),
                read: Box::new(move |wanted| reasons.iter().find(|r| label(**r) == wanted).map_or(0, |r| read(*r))),
            },
        }
    }
}

/// How a [`SourceCounter`] is read at each scrape.
pub enum CounterRead {
    /// One value.
    Plain(Box<dyn Fn() -> u64 + Send + Sync>),
    /// One value per `label` value, over a closed set.
    Labeled { label: &'static str, values: Vec<&'static str>, read: Box<dyn Fn(&str) -> u64 + Send + Sync> },
}

/// A running membership source: it publishes views through the
/// [`arlen_cluster::SnapshotPublisher`] it was started with, and answers
/// the node's lifecycle.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// The source's wire name (`coordination.membership_source`).
    fn name(&self) -> &'static str;

    /// The counters it keeps, for `/metrics`.
    fn counters(&self) -> Vec<SourceCounter> {
        Vec::new()
    }

    /// The fault rules of its transport, when it has one that fault
    /// injection can cut (drills, `/_arlen/faults`).
    fn fault_rules(&self) -> Option<FaultRules> {
        None
    }

    /// Where stop permits are kept so that no two askers are granted from
    /// the same reading, when the source has a shared store (etcd); `None`:
    /// the node keeps them in memory and one member grants for all.
    fn permit_store(&self) -> Option<std::sync::Arc<dyn arlen_cluster::permits::PermitStore>> {
        None
    }

    /// Tells peers this node is draining (still serving, about to leave).
    async fn announce_draining(&self) {}

    /// Applies the settings it can change while running (SIGHUP).
    async fn reload(&self, _config: &Config) {}

    /// Resolves, with the reason, when it has failed for good (the process
    /// should exit so its supervisor restarts it); never, while it runs.
    async fn failed(&self) -> String {
        std::future::pending().await
    }

    /// Announces that this node is leaving, waits briefly for the news to
    /// spread, and stops.
    async fn leave(self: Box<Self>);
}
