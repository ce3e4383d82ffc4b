//! The quorum model of CONTRACT §2, with selectable quorum policies.
//!
//! `status` always follows the contract's table (`degraded` = fewer than
//! expected). `met` follows the policy: `all` (the contract's default),
//! `majority`, an explicit number of nodes, or `zones` (a majority of the
//! nodes, in a majority of the zones).

pub use arlen_wire::states::QuorumStatus;

/// When quorum counts as met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuorumPolicy {
    /// Every expected node observed (the contract's rule).
    #[default]
    All,
    /// More than half of the expected nodes: ⌊E/2⌋ + 1.
    Majority,
    /// At least this many nodes (≥ 1).
    AtLeast(u32),
    /// A majority of the expected nodes, with live members in a majority of
    /// this many expected zones (`cluster.expectedZones`, ≥ 1). The zone
    /// count keeps a node cut off with its zone out of rotation however big
    /// the zone; the node count keeps two sides of a zone split in two from
    /// both being ready.
    Zones(u32),
}

impl QuorumPolicy {
    /// Nodes that must be observed for quorum, given `E` (clamped ≥ 1).
    pub fn required_nodes(self, expected_nodes: u32) -> u32 {
        let expected = expected_nodes.max(1);
        match self {
            QuorumPolicy::All => expected,
            QuorumPolicy::Majority | QuorumPolicy::Zones(_) => expected / 2 + 1,
            QuorumPolicy::AtLeast(n) => n.max(1),
        }
    }

    /// Zones that must have a live member for quorum (0: zones do not count).
    pub fn required_zones(self) -> u32 {
        match self {
            QuorumPolicy::Zones(expected) => expected.max(1) / 2 + 1,
            QuorumPolicy::All | QuorumPolicy::Majority | QuorumPolicy::AtLeast(_) => 0,
        }
    }

    /// The wire name: `all`, `majority`, or the number.
    pub fn name(self) -> String {
        match self {
            QuorumPolicy::All => "all".to_owned(),
            QuorumPolicy::Majority => "majority".to_owned(),
            QuorumPolicy::AtLeast(n) => n.to_string(),
            QuorumPolicy::Zones(_) => "zones".to_owned(),
        }
    }

    /// What this policy means for a rolling restart of `expected_nodes`
    /// (one node down at a time), with `loss_grace_ms` of
    /// `cluster.quorumLossGraceMs`: said at start-up by `serve`, `up` and the
    /// drills, so nobody learns it from an outage.
    pub fn rolling_restart_note(self, expected_nodes: u32, loss_grace_ms: u64) -> String {
        let expected = expected_nodes.max(1);
        let required = self.required_nodes(expected);
        let name = self.name();
        if expected == 1 {
            return format!("quorumPolicy={name}: a single node is out of rotation while it restarts");
        }
        if required < expected {
            return format!(
                "quorumPolicy={name}: {required} of {expected} nodes keep quorum, so a rolling restart (one node down at a time) keeps the others in rotation"
            );
        }
        let grace = if loss_grace_ms == 0 {
            "at once".to_owned()
        } else {
            format!("after quorumLossGraceMs={loss_grace_ms} ms")
        };
        format!(
            "quorumPolicy={name}: every one of {expected} nodes is needed, so while one node restarts every node leaves rotation ({grace}); \
             for a rolling restart use quorumPolicy=majority, or a quorumLossGraceMs longer than a restart"
        )
    }
}

/// The quorum verdict for one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub status: QuorumStatus,
    /// Whether the policy is satisfied right now (before any hysteresis).
    pub met: bool,
    /// Raw observed count (never clamped; may exceed expected).
    pub observed_nodes: u32,
    /// Expected count, clamped to ≥ 1.
    pub expected_nodes: u32,
    pub policy: QuorumPolicy,
    pub required_nodes: u32,
    /// How many more members can be lost while quorum stays met (0 when not met).
    pub failure_tolerance: u32,
    /// Zones with a live member (0 when the source vouches for nobody).
    pub observed_zones: u32,
    /// Zones quorum needs (0 unless the policy is `zones`).
    pub required_zones: u32,
}

/// Evaluates the contract's table (policy `all`): `E = max(expected, 1)`, `O = observed`.
///
/// ```
/// use arlen_cluster::{evaluate_quorum, QuorumStatus};
/// let q = evaluate_quorum(true, 3, 2);
/// assert_eq!((q.status, q.met), (QuorumStatus::Degraded, false));
/// ```
pub fn evaluate_quorum(cluster_enabled: bool, expected_nodes: u32, observed_nodes: u32) -> Quorum {
    evaluate_quorum_with(cluster_enabled, expected_nodes, observed_nodes, QuorumPolicy::All)
}

/// [`evaluate_quorum`] with a quorum policy: `status` is unchanged, `met`
/// follows the policy.
pub fn evaluate_quorum_with(
    cluster_enabled: bool,
    expected_nodes: u32,
    observed_nodes: u32,
    policy: QuorumPolicy,
) -> Quorum {
    evaluate_quorum_in_zones(cluster_enabled, expected_nodes, observed_nodes, 0, policy)
}

/// [`evaluate_quorum_with`], counting `observed_zones` (zones with a live
/// member) for the `zones` policy.
pub fn evaluate_quorum_in_zones(
    cluster_enabled: bool,
    expected_nodes: u32,
    observed_nodes: u32,
    observed_zones: u32,
    policy: QuorumPolicy,
) -> Quorum {
    let expected_nodes = expected_nodes.max(1);
    let status = if !cluster_enabled {
        QuorumStatus::SingleNode
    } else if observed_nodes == 0 {
        QuorumStatus::Partitioned
    } else if observed_nodes < expected_nodes {
        QuorumStatus::Degraded
    } else {
        QuorumStatus::Nominal
    };
    let required_zones = if cluster_enabled { policy.required_zones() } else { 0 };
    let (required_nodes, met) = if cluster_enabled {
        let required = policy.required_nodes(expected_nodes);
        (required, observed_nodes >= required && observed_zones >= required_zones)
    } else {
        (1, true)
    };
    let failure_tolerance = if met && cluster_enabled { observed_nodes - required_nodes } else { 0 };
    Quorum {
        status,
        met,
        observed_nodes,
        expected_nodes,
        policy,
        required_nodes,
        failure_tolerance,
        observed_zones,
        required_zones,
    }
}

/// Whether the cluster keeps quorum through the loss of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneTolerance {
    pub zone: String,
    /// Live members in the zone.
    pub alive: u32,
    /// Members listed in the zone (live or not).
    pub members: u32,
    /// Quorum is met now and stays met with every live member of the zone gone.
    pub survives_loss: bool,
}

/// For every zone the members name: whether quorum survives losing all of
/// its live members at once (`/clusterz`: "survives the loss of a; not of b").
pub fn zone_tolerance(quorum: &Quorum, members: &[crate::Member]) -> Vec<ZoneTolerance> {
    let mut zones: std::collections::BTreeMap<&str, (u32, u32)> = std::collections::BTreeMap::new();
    for member in members {
        let Some(zone) = member.zone.as_deref() else { continue };
        let entry = zones.entry(zone).or_default();
        entry.1 += 1;
        if member.state == crate::MemberState::Alive && quorum.observed_nodes > 0 {
            entry.0 += 1;
        }
    }
    zones
        .into_iter()
        .map(|(zone, (alive, listed))| {
            let nodes_after = quorum.observed_nodes.saturating_sub(alive);
            let zones_after = quorum.observed_zones.saturating_sub(u32::from(alive > 0));
            let survives_loss =
                quorum.met && nodes_after >= quorum.required_nodes && zones_after >= quorum.required_zones;
            ZoneTolerance { zone: zone.to_owned(), alive, members: listed, survives_loss }
        })
        .collect()
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

    #[test]
    fn majority_keeps_the_bigger_side_of_a_split() {
        let two = evaluate_quorum_with(true, 3, 2, QuorumPolicy::Majority);
        let one = evaluate_quorum_with(true, 3, 1, QuorumPolicy::Majority);
        assert_eq!(
            (two.status, two.met, two.required_nodes, two.failure_tolerance),
            (QuorumStatus::Degraded, true, 2, 0)
        );
        assert_eq!((one.status, one.met), (QuorumStatus::Degraded, false));
        let five = evaluate_quorum_with(true, 5, 5, QuorumPolicy::Majority);
        assert_eq!((five.required_nodes, five.failure_tolerance), (3, 2));
        assert!(!evaluate_quorum_with(true, 4, 2, QuorumPolicy::Majority).met, "2 of 4 is not a majority");
    }

    #[test]
    fn zones_need_a_majority_of_nodes_in_a_majority_of_zones() {
        let policy = QuorumPolicy::Zones(3);
        // Five nodes in three zones (2, 2, 1): losing zone c keeps 4 nodes in 2 zones.
        let whole = evaluate_quorum_in_zones(true, 5, 5, 3, policy);
        assert_eq!((whole.met, whole.required_nodes, whole.required_zones), (true, 3, 2));
        assert!(evaluate_quorum_in_zones(true, 5, 4, 2, policy).met);
        // The zone cut off alone: 1 node, 1 zone.
        assert!(!evaluate_quorum_in_zones(true, 5, 1, 1, policy).met);
        // A majority of nodes in one zone is not enough.
        assert!(!evaluate_quorum_in_zones(true, 5, 3, 1, policy).met);
        // A zone split in two: each side sees 2 zones, only one a majority of nodes.
        assert!(evaluate_quorum_in_zones(true, 5, 3, 2, policy).met);
        assert!(!evaluate_quorum_in_zones(true, 5, 2, 2, policy).met);
        assert_eq!(policy.name(), "zones");
        assert!(!evaluate_quorum_with(true, 5, 5, policy).met, "no zone information: not met");
    }

    #[test]
    fn zone_tolerance_names_the_zones_quorum_survives() {
        use crate::{Member, MemberState};
        let member = |name: &str, zone: &str, state: MemberState| Member {
            node_id: name.to_owned(),
            generation: 1,
            http_url: None,
            gossip_address: None,
            state,
            is_self: false,
            software: None,
            zone: Some(zone.to_owned()),
        };
        let members = [
            member("n1", "a", MemberState::Alive),
            member("n2", "a", MemberState::Alive),
            member("n3", "a", MemberState::Alive),
            member("n4", "b", MemberState::Alive),
            member("n5", "c", MemberState::Dead),
        ];
        // Majority of 5 with 4 alive: losing zone a (3) leaves 1; losing b leaves 3.
        let quorum = evaluate_quorum_with(true, 5, 4, QuorumPolicy::Majority);
        let tolerance = zone_tolerance(&quorum, &members);
        let survives: Vec<(&str, u32, u32, bool)> =
            tolerance.iter().map(|t| (t.zone.as_str(), t.alive, t.members, t.survives_loss)).collect();
        assert_eq!(survives, [("a", 3, 3, false), ("b", 1, 1, true), ("c", 0, 1, true)]);
        // Under `zones` with 3 expected zones, 2 live zones are just enough: no zone with a live member can go.
        let zoned = evaluate_quorum_in_zones(true, 5, 4, 2, QuorumPolicy::Zones(3));
        let tolerance = zone_tolerance(&zoned, &members);
        assert_eq!(tolerance.iter().map(|t| t.survives_loss).collect::<Vec<_>>(), [false, false, true]);
    }

    #[test]
    fn explicit_count() {
        let q = evaluate_quorum_with(true, 5, 2, QuorumPolicy::AtLeast(2));
        assert_eq!((q.met, q.required_nodes, q.failure_tolerance, q.status), (true, 2, 0, QuorumStatus::Degraded));
        assert!(!evaluate_quorum_with(true, 5, 1, QuorumPolicy::AtLeast(2)).met);
        assert_eq!(evaluate_quorum_with(true, 3, 3, QuorumPolicy::All).failure_tolerance, 0);
        assert_eq!(evaluate_quorum_with(true, 3, 4, QuorumPolicy::All).failure_tolerance, 1);
    }

    proptest! {
        #[test]
        fn all_policy_met_exactly_when_nominal_or_single(enabled in any::<bool>(), expected in 0u32..100, observed in 0u32..100) {
            let q = evaluate_quorum(enabled, expected, observed);
            prop_assert_eq!(q.met, matches!(q.status, QuorumStatus::Nominal | QuorumStatus::SingleNode));
            prop_assert!(q.expected_nodes >= 1);
            prop_assert_eq!(q.observed_nodes, observed);
        }

        #[test]
        fn policies_never_change_status(expected in 0u32..50, observed in 0u32..60, n in 1u32..60) {
            let base = evaluate_quorum(true, expected, observed);
            for policy in [QuorumPolicy::Majority, QuorumPolicy::AtLeast(n)] {
                let q = evaluate_quorum_with(true, expected, observed, policy);
                prop_assert_eq!(q.status, base.status);
                prop_assert_eq!(q.met, observed >= q.required_nodes);
                prop_assert!(!q.met || observed - q.failure_tolerance == q.required_nodes);
            }
        }
    }

    #[test]
    fn the_rolling_restart_note_says_what_a_restart_costs() {
        let all = QuorumPolicy::All.rolling_restart_note(3, 0);
        assert!(all.contains("every node leaves rotation (at once)") && all.contains("majority"), "{all}");
        let graced = QuorumPolicy::All.rolling_restart_note(3, 10_000);
        assert!(graced.contains("after quorumLossGraceMs=10000 ms"), "{graced}");
        let majority = QuorumPolicy::Majority.rolling_restart_note(3, 0);
        assert!(majority.contains("2 of 3") && majority.contains("keeps the others in rotation"), "{majority}");
        assert!(QuorumPolicy::AtLeast(3).rolling_restart_note(3, 0).contains("every node leaves rotation"));
        assert!(QuorumPolicy::Majority.rolling_restart_note(1, 0).contains("single node"));
    }
}
