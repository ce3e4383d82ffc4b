use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::*;
use crate::gate::GateWindows;
use crate::{MemberState, QuorumStatus};
use arlen_wire::headers::{CLUSTER_HEADERS, DRAINING};

/// A clock the test moves by hand.
#[derive(Debug, Default)]
pub(crate) struct ManualClock(Mutex<Duration>);

impl ManualClock {
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let monotonic = *self.0.lock().unwrap();
        Timestamp { monotonic, wall: SystemTime::UNIX_EPOCH + monotonic }
    }
}

fn identity() -> NodeIdentity {
    NodeIdentity { cluster_enabled: true, cluster_name: "alpha".into(), node_id: "node-a".into(), worker_pid: 42 }
}

fn settings(expected: u32) -> RuntimeSettings {
    RuntimeSettings { readiness_requires_cluster_quorum: true, ..RuntimeSettings::contract_defaults(expected) }
}

fn view(observed: u32) -> MembershipView {
    MembershipView::counted("static_config", observed)
}

fn channel(settings: RuntimeSettings, observed: u32) -> (SnapshotPublisher, SnapshotReader, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let (publisher, reader) = snapshot_channel(identity(), settings, view(observed), clock.clone());
    (publisher, reader, clock)
}

#[test]
fn every_change_bumps_the_generation_and_no_change_does_not() {
    let (publisher, reader, _) = channel(settings(3), 3);
    assert_eq!(reader.current().generation, 1);
    publisher.set_membership(view(2));
    assert_eq!(reader.current().generation, 2);
    publisher.set_membership(view(2));
    assert_eq!(reader.current().generation, 2, "identical view publishes nothing");
    publisher.mark_started();
    publisher.mark_started();
    assert_eq!(reader.current().generation, 3);
    publisher.set_settings(settings(2));
    let snapshot = reader.current();
    assert_eq!(snapshot.generation, 4);
    assert_eq!(snapshot.quorum.status, QuorumStatus::Nominal);
    // 3/3 nominal → 2/3 degraded → (expected 2) nominal: two transitions, one membership change.
    assert_eq!((snapshot.status_transitions, snapshot.membership_changes), (2, 1));
    publisher.refresh();
    assert_eq!(reader.current().generation, 4, "nothing due, nothing published");
}

#[test]
fn headers_body_and_readiness_come_from_one_snapshot() {
    let (publisher, reader, _) = channel(settings(3), 3);
    let before = reader.current();
    publisher.set_membership(view(2));
    let after = reader.current();
    let header = |s: &Snapshot, name: &str| {
        s.headers.as_ref().unwrap().iter().find(|(n, _)| n.as_str() == name).unwrap().1.clone()
    };
    assert_eq!(header(&before, "x-arlen-cluster-status"), "nominal");
    assert!(before.readiness_at(reader.now().monotonic).ready);
    assert_eq!(header(&after, "x-arlen-cluster-status"), "degraded");
    assert_eq!(header(&after, "x-arlen-cluster-observed-nodes"), "2");
    assert!(!after.readiness_at(reader.now().monotonic).ready);
    assert_eq!(header(&after, "x-arlen-worker-pid"), "42");
}

#[test]
fn headers_need_both_flags() {
    let off = RuntimeSettings { emit_headers: false, ..settings(1) };
    let (_, reader, _) = channel(off, 1);
    assert!(reader.current().headers.is_none());
    let clock = Arc::new(ManualClock::default());
    let (_, reader) =
        snapshot_channel(NodeIdentity { cluster_enabled: false, ..identity() }, settings(1), view(1), clock);
    assert!(reader.current().headers.is_none());
}

#[test]
fn readiness_gates_and_drain() {
    let (publisher, reader, _) = channel(RuntimeSettings { readiness_requires_startup: true, ..settings(3) }, 3);
    let r = reader.current().readiness_at(reader.now().monotonic);
    assert_eq!((r.ready, r.startup_ok, r.quorum_ok), (false, false, true));
    publisher.mark_started();
    assert!(reader.current().readiness_at(reader.now().monotonic).ready);
    publisher.set_membership(view(0));
    let r = reader.current().readiness_at(reader.now().monotonic);
    assert_eq!((r.ready, r.quorum_required, r.quorum_ok), (false, true, false));
    publisher.set_membership(view(3));
    publisher.mark_draining();
    let snapshot = reader.current();
    let r = snapshot.readiness_at(reader.now().monotonic);
    assert_eq!((r.ready, r.draining, r.quorum_ok), (false, true, true));
    assert!(snapshot.lifecycle.started && snapshot.lifecycle.draining_since.is_some());
}

#[test]
fn hysteresis_holds_readiness_through_a_blip_and_flips_after_the_grace() {
    let windows = GateWindows { loss_grace: Duration::from_millis(2000), recovery_stable: Duration::from_millis(1000) };
    let (publisher, reader, clock) = channel(RuntimeSettings { gate_windows: windows, ..settings(3) }, 3);
    clock.advance(Duration::from_secs(10));
    publisher.set_membership(view(2));
    let snapshot = reader.current();
    assert_eq!(snapshot.quorum.status, QuorumStatus::Degraded, "raw status shows the present");
    assert!(snapshot.readiness_at(reader.now().monotonic).ready, "still ready inside the grace");
    let pending = snapshot.gate.pending.unwrap();
    assert_eq!(pending.effective_at.monotonic, Duration::from_secs(12));
    // The blip ends inside the grace: nothing ever flipped.
    clock.advance(Duration::from_millis(1500));
    publisher.set_membership(view(3));
    assert!(reader.current().gate.pending.is_none() && reader.current().gate.met);
    // A real loss: not ready once the grace has passed, even before a publish.
    publisher.set_membership(view(1));
    clock.advance(Duration::from_millis(2001));
    assert!(!reader.current().readiness_at(reader.now().monotonic).ready);
    publisher.refresh();
    let snapshot = reader.current();
    assert!(!snapshot.gate.met && snapshot.gate.pending.is_none());
    assert_eq!(snapshot.gate.since.monotonic, Duration::from_millis(13_500));
}

#[test]
fn header_pairs_spell_the_contract_names_and_follow_draining() {
    let (publisher, reader, _) = channel(settings(3), 3);
    publisher.set_membership(view(2));
    let rendered = |s: &Snapshot| -> Vec<String> {
        s.headers.as_ref().unwrap().iter().map(|(name, value)| format!("{name}: {}", value.to_str().unwrap())).collect()
    };
    let lines = rendered(&reader.current());
    assert_eq!(lines.len(), 6);
    for (line, name) in lines.iter().zip(CLUSTER_HEADERS) {
        assert!(line.starts_with(&format!("{name}: ")), "{line}");
    }
    assert_eq!(lines[0], "x-arlen-cluster: alpha");
    assert_eq!(lines[3..5], ["x-arlen-cluster-status: degraded", "x-arlen-cluster-observed-nodes: 2"]);
    publisher.mark_draining();
    let draining = rendered(&reader.current());
    assert_eq!(draining[..6], lines[..]);
    assert_eq!(draining[6], format!("{DRAINING}: 1"));
}

#[test]
fn unprintable_names_still_make_valid_headers() {
    let clock = Arc::new(ManualClock::default());
    let (_, reader) =
        snapshot_channel(NodeIdentity { cluster_name: "a\u{7}b".into(), ..identity() }, settings(1), view(1), clock);
    let snapshot = reader.current();
    let (_, value) = snapshot.headers.as_ref().unwrap().iter().next().unwrap();
    assert_eq!(value, "a_b");
}

#[tokio::test]
async fn readers_wake_on_change() {
    let (publisher, mut reader, _) = channel(settings(3), 3);
    reader.current_and_mark_seen();
    let waiter = tokio::spawn(async move {
        assert!(reader.changed().await);
        reader.current().quorum.observed_nodes
    });
    publisher.set_membership(view(1));
    assert_eq!(waiter.await.unwrap(), 1);
}

fn members(states: &[(&str, MemberState)]) -> MembershipView {
    let members: Vec<crate::Member> = states
        .iter()
        .map(|(id, state)| crate::Member {
            node_id: (*id).into(),
            generation: 1,
            http_url: None,
            gossip_address: None,
            state: *state,
            is_self: *id == "node-a",
            software: None,
            zone: None,
        })
        .collect();
    let observed = states.iter().filter(|(_, s)| *s == MemberState::Alive).count() as u32;
    MembershipView { members, ..MembershipView::counted("gossip", observed) }
}

#[test]
fn maintenance_counts_members_already_out() {
    let majority = RuntimeSettings { quorum_policy: crate::QuorumPolicy::Majority, ..settings(3) };
    let (publisher, reader, _) = channel(majority, 3);
    use MemberState::{Alive, Dead, Draining};
    publisher.set_membership(members(&[("node-a", Alive), ("node-b", Alive), ("node-c", Alive)]));
    let verdict = reader.current().maintenance();
    assert!(verdict.can_stop, "{verdict:?}");
    assert_eq!((verdict.remaining_nodes, verdict.required_nodes), (2, 2));
    assert_eq!(verdict.reason, "stopping node-a leaves 2 nodes; policy majority needs 2");

    publisher.set_membership(members(&[("node-a", Alive), ("node-b", Draining), ("node-c", Alive)]));
    let verdict = reader.current().maintenance();
    assert!(!verdict.can_stop, "{verdict:?}");
    assert_eq!(verdict.remaining_nodes, 1);
    assert_eq!(
        verdict.reason,
        "stopping node-a would leave 1 node; policy majority needs 2: quorum would be lost (node-b draining already out)"
    );

    publisher.set_membership(members(&[("node-a", Alive), ("node-b", Dead), ("node-c", Dead)]));
    let verdict = reader.current().maintenance();
    assert!(!verdict.can_stop);
    assert!(
        verdict.reason.starts_with("quorum is not met now (degraded: 1 of 3 expected observed"),
        "{}",
        verdict.reason
    );

    // A node already draining is not counted: stopping it changes nothing.
    publisher.set_membership(members(&[("node-a", Alive), ("node-b", Alive), ("node-c", Dead)]));
    publisher.mark_draining();
    let verdict = reader.current().maintenance();
    assert_eq!(verdict.remaining_nodes, 2, "{verdict:?}");
}

/// A view its source must confirm every so often (gossip does, every probe
/// period) is no evidence once it is older than that: after a pause, the
/// probes queued during it are answered 503 until the source confirms it.
#[test]
fn readiness_is_never_answered_from_a_view_older_than_its_source_allows() {
    let (publisher, reader, clock) = channel(settings(3), 3);
    let fresh = |observed| MembershipView { fresh_for: Some(Duration::from_millis(400)), ..view(observed) };
    publisher.set_membership(fresh(3));
    let now = || reader.now().monotonic;
    assert!(reader.current().readiness_at(now()).ready);
    clock.advance(Duration::from_millis(300));
    // Confirmed unchanged: no new snapshot, but the view is fresh again.
    let generation = reader.current().generation;
    publisher.set_membership(fresh(3));
    assert_eq!(reader.current().generation, generation);
    clock.advance(Duration::from_millis(300));
    assert!(reader.current().readiness_at(now()).ready, "confirmed 300 ms ago");
    // The process was stopped for 5 s: nothing confirmed the view meanwhile.
    clock.advance(Duration::from_secs(5));
    let readiness = reader.current().readiness_at(now());
    assert!(!readiness.ready && !readiness.quorum_ok);
    assert_eq!(readiness.stale_view, Some(Duration::from_millis(5300)));
    publisher.set_membership(fresh(3));
    let readiness = reader.current().readiness_at(now());
    assert!(readiness.ready && readiness.stale_view.is_none());
    // A source that does not confirm periodically (static) never goes stale.
    publisher.set_membership(view(3));
    clock.advance(Duration::from_secs(60));
    assert!(reader.current().readiness_at(now()).ready);
}
