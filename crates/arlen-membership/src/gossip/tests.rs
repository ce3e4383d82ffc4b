//! Gossip membership in one process over an in-memory network, on tokio's
//! paused clock: the real protocol core, sealing and driver, deterministic
//! timing, and partitions chosen by a seeded generator so a failure
//! reproduces (`ARLEN_TEST_SEED=<n>`).

use crate::Source as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use arlen_cluster::{
    snapshot_channel, MemberState, MembershipView, NodeIdentity, QuorumStatus, Snapshot, SnapshotReader,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;

use super::core::Protocol;
use super::seal::UnsealedTraffic;
use super::{GossipSettings, GossipSource};
use crate::faults::{Direction, FaultRule, FaultRules};
use crate::transport::{Network, Transport};

type Inbox = mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>;

/// Datagrams between sockets of one process; a dropped socket is gone.
#[derive(Clone, Default)]
pub(crate) struct MemoryNetwork {
    sockets: Arc<Mutex<HashMap<SocketAddr, Inbox>>>,
}

struct MemorySocket {
    addr: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>>,
    network: MemoryNetwork,
}

#[async_trait]
impl Network for MemoryNetwork {
    async fn bind(&self, listen: SocketAddr) -> std::io::Result<Arc<dyn Transport>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sockets = self.sockets.lock().unwrap();
        if sockets.get(&listen).is_some_and(|inbox| !inbox.is_closed()) {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"));
        }
        sockets.insert(listen, tx);
        Ok(Arc::new(MemorySocket { addr: listen, inbox: tokio::sync::Mutex::new(rx), network: self.clone() }))
    }
}

#[async_trait]
impl Transport for MemorySocket {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let (from, datagram) = self.inbox.lock().await.recv().await.ok_or(std::io::ErrorKind::BrokenPipe)?;
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok((len, from))
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let (from, datagram) = self.inbox.try_lock().ok()?.try_recv().ok()?;
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Some((len, from))
    }

    fn send_to(&self, to: SocketAddr, datagram: &[u8]) {
        if let Some(inbox) = self.network.sockets.lock().unwrap().get(&to) {
            let _ = inbox.send((self.addr, datagram.to_vec()));
        }
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.network.sockets.lock().unwrap().remove(&self.addr);
    }
}

/// The seed of every random choice in this test process (foca's RNG in each
/// node, fault rules, partitions): `ARLEN_TEST_SEED` or a fresh one, printed
/// so a failing run can be repeated exactly.
pub(crate) fn test_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("ARLEN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("ARLEN_TEST_SEED={seed}");
        seed
    })
}

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn settings(cluster: &str, node_id: &str, port: u16, generation: u64, seeds: &[u16]) -> GossipSettings {
    GossipSettings {
        cluster_name: cluster.to_owned(),
        node_id: node_id.to_owned(),
        generation,
        listen: address(port),
        advertise: address(port),
        seeds: seeds.iter().map(|p| address(*p).to_string()).collect(),
        http_url: format!("http://127.0.0.1:{}", port + 1000),
        zone: None,
        protocol: Protocol {
            interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            suspicion_timeout: Duration::from_millis(200),
            dead_member_ttl: Duration::from_secs(60),
            max_members: 1024,
            max_joins_per_minute: 60,
            expected_nodes: 3,
        },
        keys: vec![[7; 32]],
        unsealed: UnsealedTraffic::Refuse,
        rng_seed: test_seed() ^ u64::from(port),
    }
}

struct TestNode {
    source: Option<GossipSource>,
    reader: SnapshotReader,
    faults: FaultRules,
    port: u16,
}

async fn start_node(network: &MemoryNetwork, settings: GossipSettings, expected: u32) -> TestNode {
    let (publisher, reader) = snapshot_channel(
        NodeIdentity {
            cluster_enabled: true,
            cluster_name: settings.cluster_name.clone(),
            node_id: settings.node_id.clone(),
            worker_pid: 1,
        },
        crate::tests_support::settings(expected),
        MembershipView::uninitialised("unstarted"),
        crate::tests_support::clock(),
    );
    let faults = FaultRules::with_seed(test_seed() ^ u64::from(settings.listen.port()));
    let port = settings.listen.port();
    let source =
        GossipSource::start_with(settings, publisher, Arc::new(network.clone()), Some(faults.clone())).await.unwrap();
    TestNode { source: Some(source), reader, faults, port }
}

async fn start_cluster(network: &MemoryNetwork, cluster: &str, ports: &[u16]) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let mut settings = settings(cluster, &name, *port, 1, &ports[..1]);
        settings.protocol.expected_nodes = ports.len() as u32;
        nodes.push(start_node(network, settings, ports.len() as u32).await);
    }
    nodes
}

/// Waits (in virtual time) until `check` holds for the node's snapshot.
async fn wait_for(node: &TestNode, what: &str, limit: Duration, check: impl Fn(&Snapshot) -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    let mut reader = node.reader.clone();
    let outcome = tokio::time::timeout(limit, async {
        loop {
            if check(&reader.current_and_mark_seen()) {
                return;
            }
            reader.changed().await;
        }
    })
    .await;
    let snapshot = node.reader.current();
    assert!(outcome.is_ok(), "node on port {} never reached: {what}; last view: {:#?}", node.port, snapshot.membership);
    started.elapsed()
}

fn observed(n: u32) -> impl Fn(&Snapshot) -> bool {
    move |s| s.quorum.observed_nodes == n
}

#[tokio::test(start_paused = true)]
async fn three_nodes_converge_then_detect_a_crash() {
    let network = MemoryNetwork::default();
    let mut nodes = start_cluster(&network, "alpha", &[11001, 11002, 11003]).await;
    for node in &nodes {
        wait_for(node, "3 observed", Duration::from_secs(5), |s| s.quorum.status == QuorumStatus::Nominal).await;
    }
    let crashed = nodes.pop().unwrap();
    crashed.source.unwrap().crash().await;
    for node in &nodes {
        let took = wait_for(node, "crash detected", Duration::from_secs(5), observed(2)).await;
        assert!(took < Duration::from_millis(1500), "detection took {took:?}");
        let snapshot = node.reader.current();
        assert_eq!(snapshot.quorum.status, QuorumStatus::Degraded);
        let dead = snapshot.membership.members.iter().find(|m| m.node_id == "node-3").unwrap();
        assert_eq!(dead.state, MemberState::Dead);
    }
    // Whoever convicted node-3 says so, with its evidence.
    let verdicts: Vec<arlen_cluster::Accusation> = nodes
        .iter()
        .flat_map(|n| n.reader.current().membership.accusations.clone())
        .filter(|a| a.accused == "node-3" && a.verdict == arlen_cluster::Verdict::Down)
        .collect();
    assert!(!verdicts.is_empty(), "no survivor recorded its verdict");
    for verdict in &verdicts {
        assert!(verdict.evidence.direct_failed && verdict.evidence.indirect_asked == 1, "{verdict:?}");
        assert_eq!(verdict.evidence.indirect_acked, 0);
        assert!(
            verdict.explain().contains("declared node-3 down: its direct probe timed out"),
            "{}",
            verdict.explain()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_is_seen_before_failure_detection_could_fire() {
    let network = MemoryNetwork::default();
    let mut nodes = start_cluster(&network, "alpha", &[12001, 12002, 12003]).await;
    for node in &nodes {
        wait_for(node, "nominal", Duration::from_secs(5), observed(3)).await;
    }
    let leaving = nodes.pop().unwrap();
    let left = tokio::spawn(Box::new(leaving.source.unwrap()).leave());
    for node in &nodes {
        let took = wait_for(node, "leave seen", Duration::from_secs(5), observed(2)).await;
        assert!(took <= Duration::from_millis(500), "leave seen after {took:?}");
        let member = node.reader.current().membership.members.iter().find(|m| m.node_id == "node-3").cloned().unwrap();
        assert_eq!(member.state, MemberState::Left, "left, not dead");
    }
    left.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_replaces_its_old_incarnation() {
    let network = MemoryNetwork::default();
    let ports = [13001, 13002, 13003];
    let mut nodes = start_cluster(&network, "alpha", &ports).await;
    for node in &nodes {
        wait_for(node, "nominal", Duration::from_secs(5), observed(3)).await;
    }
    nodes.pop().unwrap().source.unwrap().crash().await;
    // The same node id and address, a new generation, before the old one is detected dead.
    let restarted = start_node(&network, settings("alpha", "node-3", 13003, 2, &ports[..1]), 3).await;
    for node in nodes.iter().chain(std::iter::once(&restarted)) {
        wait_for(node, "restart converged", Duration::from_secs(5), |s| {
            s.quorum.observed_nodes == 3
                && s.membership
                    .members
                    .iter()
                    .any(|m| m.node_id == "node-3" && m.generation == 2 && m.state == MemberState::Alive)
        })
        .await;
    }
    // It never counts twice, and the old incarnation is not alive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in nodes.iter().chain(std::iter::once(&restarted)) {
        let snapshot = node.reader.current();
        assert_eq!(snapshot.quorum.observed_nodes, 3);
        assert!(snapshot
            .membership
            .members
            .iter()
            .all(|m| !(m.node_id == "node-3" && m.generation == 1 && m.state == MemberState::Alive)));
    }
}

#[tokio::test(start_paused = true)]
async fn clusters_with_different_names_never_count_each_other() {
    let network = MemoryNetwork::default();
    let mut nodes = start_cluster(&network, "alpha", &[14001, 14002]).await;
    // A "beta" cluster that uses alpha's seed.
    nodes.push(start_node(&network, settings("beta", "node-b1", 14003, 1, &[14001]), 2).await);
    nodes.push(start_node(&network, settings("beta", "node-b2", 14004, 1, &[14001, 14003]), 2).await);
    for node in &nodes {
        wait_for(node, "own cluster of 2", Duration::from_secs(5), observed(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        let snapshot = node.reader.current();
        assert_eq!(snapshot.quorum.observed_nodes, 2);
        let cluster = &snapshot.identity.cluster_name;
        let foreign = snapshot
            .membership
            .members
            .iter()
            .filter(|m| m.node_id.starts_with("node-b") != (cluster == "beta"))
            .count();
        assert_eq!(foreign, 0, "{cluster} knows a member of the other cluster");
    }
}

#[tokio::test(start_paused = true)]
async fn two_processes_with_one_node_id_are_reported_and_counted_once() {
    let network = MemoryNetwork::default();
    let mut nodes = start_cluster(&network, "alpha", &[15001, 15002]).await;
    nodes.push(start_node(&network, settings("alpha", "node-2", 15003, 7, &[15001]), 3).await);
    wait_for(&nodes[0], "duplicate reported", Duration::from_secs(5), |s| {
        s.membership.duplicate_node_ids == ["node-2"]
    })
    .await;
    let snapshot = nodes[0].reader.current();
    assert_eq!(snapshot.quorum.observed_nodes, 2, "node-2 counts once");
    assert!(!snapshot.membership.health.ok);
    assert!(snapshot.membership.health.detail.contains("duplicate node ids: node-2"));
}

/// Splits five nodes into two sides chosen by a seeded generator, cutting
/// every link across; each side then counts only itself. Healing restores five.
#[tokio::test(start_paused = true)]
async fn seeded_partitions_split_the_count_and_heal() {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let network = MemoryNetwork::default();
    let ports = [16001, 16002, 16003, 16004, 16005];
    let nodes = start_cluster(&network, "alpha", &ports).await;
    for node in &nodes {
        wait_for(node, "5 observed", Duration::from_secs(10), observed(5)).await;
    }
    for round in 0..3 {
        let mut order: Vec<usize> = (0..ports.len()).collect();
        order.shuffle(&mut rng);
        let minority_size = 1 + round % 2;
        let minority: Vec<usize> = order[..minority_size].to_vec();
        let side_of = |i: usize| minority.contains(&i);
        for (i, node) in nodes.iter().enumerate() {
            let rules = (0..ports.len())
                .filter(|j| side_of(*j) != side_of(i))
                .map(|j| FaultRule {
                    peer: Some(address(ports[j])),
                    direction: Direction::Both,
                    drop_percent: 100,
                    delay_ms: 0,
                })
                .collect();
            node.faults.replace(rules).unwrap();
        }
        for (i, node) in nodes.iter().enumerate() {
            let expected = if side_of(i) { minority_size } else { ports.len() - minority_size } as u32;
            wait_for(
                node,
                &format!("seed {seed} round {round}: side of {expected}"),
                Duration::from_secs(10),
                observed(expected),
            )
            .await;
        }
        for node in &nodes {
            node.faults.heal();
        }
        for node in &nodes {
            wait_for(node, &format!("seed {seed} round {round}: healed"), Duration::from_secs(10), observed(5)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn one_way_loss_makes_the_deaf_node_see_nobody() {
    let network = MemoryNetwork::default();
    let nodes = start_cluster(&network, "alpha", &[17001, 17002, 17003]).await;
    for node in &nodes {
        wait_for(node, "3 observed", Duration::from_secs(5), observed(3)).await;
    }
    nodes[2]
        .faults
        .replace(vec![FaultRule { peer: None, direction: Direction::Inbound, drop_percent: 100, delay_ms: 0 }])
        .unwrap();
    wait_for(&nodes[2], "deaf node alone", Duration::from_secs(5), observed(1)).await;
    nodes[2].faults.heal();
    wait_for(&nodes[2], "healed", Duration::from_secs(5), observed(3)).await;
}

#[tokio::test(start_paused = true)]
async fn a_draining_node_is_visible_and_no_longer_counted() {
    let network = MemoryNetwork::default();
    let nodes = start_cluster(&network, "alpha", &[18001, 18002, 18003]).await;
    for node in &nodes {
        wait_for(node, "3 observed", Duration::from_secs(5), observed(3)).await;
    }
    nodes[2].source.as_ref().unwrap().announce_draining().await;
    for node in &nodes[..2] {
        wait_for(node, "drain seen", Duration::from_secs(2), observed(2)).await;
        let member = node.reader.current().membership.members.iter().find(|m| m.node_id == "node-3").cloned().unwrap();
        assert_eq!(member.state, MemberState::Draining);
    }
    let own = nodes[2].reader.current();
    assert_eq!(own.membership.members.iter().find(|m| m.is_self).unwrap().state, MemberState::Draining);
}

#[tokio::test(start_paused = true)]
async fn clusters_with_one_name_and_different_keys_never_merge() {
    let network = MemoryNetwork::default();
    let mut nodes = start_cluster(&network, "alpha", &[19001, 19002]).await;
    // Same cluster name, same seeds, another key.
    for (id, port) in [("intruder-1", 19003), ("intruder-2", 19004)] {
        let mut other = settings("alpha", id, port, 1, &[19001, 19003]);
        other.keys = vec![[9; 32]];
        nodes.push(start_node(&network, other, 2).await);
    }
    for node in &nodes {
        wait_for(node, "own side of 2", Duration::from_secs(5), observed(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        let snapshot = node.reader.current();
        assert_eq!(snapshot.quorum.observed_nodes, 2, "{:#?}", snapshot.membership);
        let intruders = snapshot.membership.members.iter().filter(|m| m.node_id.starts_with("intruder")).count();
        assert_eq!(intruders == 2, snapshot.identity.node_id.starts_with("intruder"));
    }
    let traffic = nodes[0].source.as_ref().unwrap().traffic();
    assert!(traffic.rejected(super::Rejection::BadSeal) > 0, "the other key's datagrams arrived and were refused");
}

#[tokio::test(start_paused = true)]
async fn members_beyond_the_limit_are_refused_and_counted() {
    let network = MemoryNetwork::default();
    let ports = [19101, 19102, 19103];
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut limited = settings("alpha", &format!("node-{}", i + 1), *port, 1, &ports[..1]);
        limited.protocol.max_members = 2;
        nodes.push(start_node(&network, limited, 3).await);
    }
    wait_for(&nodes[0], "two members (the limit)", Duration::from_secs(5), observed(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = nodes[0].reader.current();
    assert_eq!(snapshot.quorum.observed_nodes, 2, "never past the limit: {:#?}", snapshot.membership);
    let traffic = nodes[0].source.as_ref().unwrap().traffic();
    assert!(traffic.rejected(super::Rejection::MemberLimit) > 0);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_gossip_task_fails_closed_and_is_restarted() {
    let network = MemoryNetwork::default();
    let nodes = start_cluster(&network, "alpha", &[19201, 19202]).await;
    for node in &nodes {
        wait_for(node, "2 observed", Duration::from_secs(5), observed(2)).await;
    }
    nodes[0].faults.inject_task_fault(crate::faults::TaskFault::Crash);
    let took = wait_for(&nodes[0], "partitioned", Duration::from_secs(5), |s| {
        s.quorum.status == QuorumStatus::Partitioned && !s.membership.health.ok
    })
    .await;
    assert!(took < Duration::from_millis(500), "failed closed after {took:?}");
    assert!(nodes[0].reader.current().membership.health.detail.contains("panicked"));
    wait_for(&nodes[0], "restarted and back", Duration::from_secs(5), observed(2)).await;

    nodes[0].faults.inject_task_fault(crate::faults::TaskFault::Stall);
    let took = wait_for(&nodes[0], "partitioned after a stall", Duration::from_secs(5), |s| {
        s.quorum.status == QuorumStatus::Partitioned
    })
    .await;
    let limit = super::driver::stall_limit(Duration::from_millis(100));
    assert!(took >= limit && took < limit * 2, "a stall is noticed after the limit ({limit:?}), took {took:?}");
    wait_for(&nodes[0], "back after the stall", Duration::from_secs(5), observed(2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_source_that_keeps_failing_gives_up_so_the_process_can_exit() {
    let network = MemoryNetwork::default();
    let nodes = start_cluster(&network, "alpha", &[19301]).await;
    let source = nodes[0].source.as_ref().unwrap();
    let failed = async {
        loop {
            nodes[0].faults.inject_task_fault(crate::faults::TaskFault::Crash);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let reason = tokio::select! {
        reason = source.failed() => reason,
        () = failed => unreachable!(),
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("never gave up"),
    };
    assert!(reason.contains("giving up"), "{reason}");
}
