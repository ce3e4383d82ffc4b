//! Stop permits: "may this node be stopped now?", answered for every asker
//! at once. A permit is granted only if the cluster keeps quorum with every
//! permit already granted counted as stopped (nodes, and zones under the
//! `zones` policy), and one zone at a time: while a permit is in force in
//! one zone, a node of another zone waits; a permit expires on its own
//! (a crashed script does not pin the cluster) and is spent when its node is
//! back (alive under a new generation: it restarted). Pure: the stores that
//! hold permits (in memory on one node, or an etcd transaction) implement
//! [`PermitStore`] elsewhere.

use std::future::Future;
use std::pin::Pin;

pub use arlen_wire::documents::StopPermit;

use crate::membership::{Member, MemberState};

/// Why a permit was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No member of that name in this node's view.
    UnknownNode(String),
    /// Granting it would leave fewer members up than quorum needs.
    BreaksQuorum { node: String, up_after: u32, required: u32, stopping: Vec<String> },
    /// Another holder has a permit for that node.
    HeldByAnother { node: String, holder: String },
    /// Granting it would leave live members in fewer zones than quorum needs.
    BreaksZoneQuorum { node: String, zones_after: u32, required: u32 },
    /// Permits are in force in another zone: one zone at a time.
    OtherZone { node: String, zone: String, stopping_zone: String, stopping: Vec<String> },
}

/// What quorum needs up: nodes, and zones with a live member (0: zones do
/// not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub nodes: u32,
    pub zones: u32,
}

impl Needs {
    /// Only nodes count.
    pub fn nodes(nodes: u32) -> Self {
        Self { nodes, zones: 0 }
    }
}

impl From<&crate::Quorum> for Needs {
    fn from(quorum: &crate::Quorum) -> Self {
        Self { nodes: quorum.required_nodes, zones: quorum.required_zones }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownNode(node) => write!(f, "{node} is not a member of this cluster"),
            Refusal::BreaksQuorum { node, up_after, required, stopping } => write!(
                f,
                "stopping {node} would leave {up_after} of the {required} members quorum needs up (counting as stopped: {})",
                stopping.join(", ")
            ),
            Refusal::HeldByAnother { node, holder } => write!(f, "{holder} holds the permit to stop {node}"),
            Refusal::BreaksZoneQuorum { node, zones_after, required } => write!(
                f,
                "stopping {node} would leave live members in {zones_after} zones, and quorum needs {required}"
            ),
            Refusal::OtherZone { node, zone, stopping_zone, stopping } => write!(
                f,
                "{node} is in zone {zone}, and permits are in force in zone {stopping_zone} ({}): one zone at a time",
                stopping.join(", ")
            ),
        }
    }
}

/// The permits still in force at `now_ms` (Unix milliseconds): not expired,
/// and whose node has not come back under a new generation.
pub fn in_force(permits: Vec<StopPermit>, members: &[Member], now_ms: u64) -> Vec<StopPermit> {
    permits
        .into_iter()
        .filter(|permit| permit.expires_unix_ms > now_ms)
        .filter(|permit| {
            !members
                .iter()
                .any(|m| m.node_id == permit.node && m.state == MemberState::Alive && m.generation != permit.generation)
        })
        .collect()
}

/// Decides whether `node` may be stopped by `holder`, given the members this
/// node sees, the members quorum requires, and the permits in force. On
/// success: the node's current generation (recorded in the permit). The same
/// holder asking again for the same node is granted again (a retry).
pub fn decide(
    members: &[Member],
    needs: Needs,
    permits: &[StopPermit],
    node: &str,
    holder: &str,
) -> Result<u64, Refusal> {
    let required = needs.nodes;
    let target = members.iter().find(|m| m.node_id == node).ok_or_else(|| Refusal::UnknownNode(node.to_owned()))?;
    if let Some(held) = permits.iter().find(|p| p.node == node) {
        if held.holder != holder {
            return Err(Refusal::HeldByAnother { node: node.to_owned(), holder: held.holder.clone() });
        }
    }
    let mut stopping: Vec<String> = permits.iter().map(|p| p.node.clone()).collect();
    if !stopping.iter().any(|n| n == node) {
        stopping.push(node.to_owned());
    }
    stopping.sort();
    let zone_of = |name: &str| members.iter().find(|m| m.node_id == name).and_then(|m| m.zone.clone());
    if let Some(zone) = &target.zone {
        let elsewhere: Vec<(String, String)> = permits
            .iter()
            .filter(|p| p.node != node)
            .filter_map(|p| zone_of(&p.node).filter(|z| z != zone).map(|z| (p.node.clone(), z)))
            .collect();
        if let Some((_, stopping_zone)) = elsewhere.first() {
            return Err(Refusal::OtherZone {
                node: node.to_owned(),
                zone: zone.clone(),
                stopping_zone: stopping_zone.clone(),
                stopping: elsewhere.iter().map(|(n, _)| n.clone()).collect(),
            });
        }
    }
    let up_after = u32::try_from(
        members.iter().filter(|m| m.state == MemberState::Alive && !stopping.contains(&m.node_id)).count(),
    )
    .unwrap_or(u32::MAX);
    if up_after < required {
        return Err(Refusal::BreaksQuorum { node: node.to_owned(), up_after, required, stopping });
    }
    if needs.zones > 0 {
        let zones: std::collections::BTreeSet<&str> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive && !stopping.contains(&m.node_id))
            .filter_map(|m| m.zone.as_deref())
            .collect();
        let zones_after = u32::try_from(zones.len()).unwrap_or(u32::MAX);
        if zones_after < needs.zones {
            return Err(Refusal::BreaksZoneQuorum { node: node.to_owned(), zones_after, required: needs.zones });
        }
    }
    Ok(target.generation)
}

/// What a store answers.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where permits are kept: a document read with a version and written only
/// if the version is unchanged (compare-and-set), so two askers cannot both
/// be granted from the same reading.
pub trait PermitStore: Send + Sync + 'static {
    /// What guarantee the store gives, in a sentence (shown to operators).
    fn guarantee(&self) -> &'static str;
    /// The permits and the version they were read at.
    fn read(&self) -> StoreFuture<'_, (Vec<StopPermit>, u64)>;
    /// Writes `permits` if the document is still at `version`; false when it
    /// changed meanwhile (read again and decide again).
    fn write(&self, version: u64, permits: Vec<StopPermit>) -> StoreFuture<'_, bool>;
}

/// Permits kept in this process (the gossip and static sources: one node,
/// the lowest-named member alive, grants for the cluster).
#[derive(Debug, Default)]
pub struct LocalPermits {
    document: std::sync::Mutex<(Vec<StopPermit>, u64)>,
}

impl PermitStore for LocalPermits {
    fn guarantee(&self) -> &'static str {
        "granted by one node (the lowest-named member alive), kept in its memory: exact while it lives; \
         if it goes away, permits it granted and not yet used are forgotten until their TTL ends"
    }

    fn read(&self) -> StoreFuture<'_, (Vec<StopPermit>, u64)> {
        let document = self.document.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Box::pin(async move { Ok(document) })
    }

    fn write(&self, version: u64, permits: Vec<StopPermit>) -> StoreFuture<'_, bool> {
        let mut document = self.document.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = document.1 == version;
        if written {
            *document = (permits, version + 1);
        }
        Box::pin(async move { Ok(written) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: MemberState, generation: u64) -> Member {
        Member {
            node_id: name.to_owned(),
            generation,
            http_url: None,
            gossip_address: None,
            state,
            is_self: false,
            software: None,
            zone: None,
        }
    }

    fn permit(node: &str, holder: &str, generation: u64, expires: u64) -> StopPermit {
        StopPermit {
            node: node.to_owned(),
            holder: holder.to_owned(),
            generation,
            granted_unix_ms: 0,
            expires_unix_ms: expires,
            granted_by: "node-1".to_owned(),
        }
    }

    #[test]
    fn every_granted_permit_counts_as_stopped() {
        let five: Vec<Member> = (1..=5).map(|i| member(&format!("node-{i}"), MemberState::Alive, 7)).collect();
        // Majority of 5: 3 must stay up, so two permits and no third.
        assert_eq!(decide(&five, Needs::nodes(3), &[], "node-5", "a"), Ok(7));
        let granted = [permit("node-5", "a", 7, u64::MAX), permit("node-4", "b", 7, u64::MAX)];
        assert_eq!(decide(&five, Needs::nodes(3), &granted[..1], "node-4", "b"), Ok(7));
        let refused = decide(&five, Needs::nodes(3), &granted, "node-3", "c").unwrap_err();
        assert!(matches!(refused, Refusal::BreaksQuorum { up_after: 2, required: 3, .. }), "{refused:?}");
        assert!(refused.to_string().contains("node-3, node-4, node-5"), "{refused}");
        // A member already down counts too: with node-2 dead, one permit is all.
        let mut degraded = five.clone();
        degraded[1].state = MemberState::Dead;
        assert_eq!(
            decide(&degraded, Needs::nodes(3), &granted[..1], "node-4", "b"),
            Err(Refusal::BreaksQuorum {
                node: "node-4".to_owned(),
                up_after: 2,
                required: 3,
                stopping: vec!["node-4".to_owned(), "node-5".to_owned()],
            })
        );
    }

    #[test]
    fn one_zone_at_a_time_and_zones_count_under_the_zones_policy() {
        let zoned =
            |name: &str, zone: &str| Member { zone: Some(zone.to_owned()), ..member(name, MemberState::Alive, 1) };
        // Six nodes, two per zone.
        let six = [
            zoned("n1", "a"),
            zoned("n2", "a"),
            zoned("n3", "b"),
            zoned("n4", "b"),
            zoned("n5", "c"),
            zoned("n6", "c"),
        ];
        let held = [permit("n1", "deploy", 1, u64::MAX)];
        assert_eq!(decide(&six, Needs::nodes(4), &held, "n2", "deploy"), Ok(1), "the same zone: granted");
        let refused = decide(&six, Needs::nodes(4), &held, "n3", "deploy").unwrap_err();
        assert!(matches!(&refused, Refusal::OtherZone { stopping_zone, .. } if stopping_zone == "a"), "{refused:?}");
        assert!(refused.to_string().contains("one zone at a time"), "{refused}");
        // `zones` with 3 expected zones needs 2: stopping all of zone a leaves b and c.
        let needs = Needs { nodes: 4, zones: 2 };
        let both = [permit("n1", "deploy", 1, u64::MAX)];
        assert_eq!(decide(&six, needs, &both, "n2", "deploy"), Ok(1));
        let three_zones_needed = Needs { nodes: 4, zones: 3 };
        assert!(matches!(
            decide(&six, three_zones_needed, &both, "n2", "deploy"),
            Err(Refusal::BreaksZoneQuorum { zones_after: 2, required: 3, .. })
        ));
    }

    #[test]
    fn a_node_has_one_holder_and_unknown_nodes_are_named() {
        let three: Vec<Member> = (1..=3).map(|i| member(&format!("node-{i}"), MemberState::Alive, 1)).collect();
        let held = [permit("node-3", "deploy-1", 1, u64::MAX)];
        assert_eq!(decide(&three, Needs::nodes(2), &held, "node-3", "deploy-1"), Ok(1), "a retry by the holder");
        assert!(matches!(
            decide(&three, Needs::nodes(2), &held, "node-3", "deploy-2"),
            Err(Refusal::HeldByAnother { .. })
        ));
        assert_eq!(decide(&three, Needs::nodes(2), &[], "node-9", "x"), Err(Refusal::UnknownNode("node-9".to_owned())));
        // quorumPolicy = all: nothing may be stopped.
        assert!(matches!(decide(&three, Needs::nodes(3), &[], "node-1", "x"), Err(Refusal::BreaksQuorum { .. })));
    }

    #[test]
    fn permits_expire_and_are_spent_when_their_node_is_back() {
        let mut members: Vec<Member> = (1..=3).map(|i| member(&format!("node-{i}"), MemberState::Alive, 1)).collect();
        let permits = vec![permit("node-3", "a", 1, 1_000), permit("node-2", "b", 1, 5_000)];
        assert_eq!(in_force(permits.clone(), &members, 999).len(), 2);
        assert_eq!(in_force(permits.clone(), &members, 1_000).len(), 1, "expired at its time");
        members[1].state = MemberState::Left;
        assert_eq!(in_force(permits.clone(), &members, 0).len(), 2, "gone, not yet back");
        members[1] = member("node-2", MemberState::Alive, 2);
        let left = in_force(permits, &members, 0);
        assert_eq!(left.len(), 1, "node-2 restarted: its permit is spent");
        assert_eq!(left[0].node, "node-3");
    }

    #[tokio::test]
    async fn the_local_store_writes_only_at_the_version_it_read() {
        let store = LocalPermits::default();
        let (permits, version) = store.read().await.unwrap();
        assert!(permits.is_empty());
        assert!(store.write(version, vec![permit("node-1", "a", 1, 10)]).await.unwrap());
        assert!(!store.write(version, vec![permit("node-2", "b", 1, 10)]).await.unwrap(), "a stale reading loses");
        assert_eq!(store.read().await.unwrap().0[0].node, "node-1");
    }
}
