//! Gossip under attack: a forger written here sends datagrams over real UDP
//! to real `arlen serve` processes. With keys set, forged, unsealed,
//! wrong-key and replayed datagrams change nothing; oversized and garbage
//! datagrams are dropped and counted with memory bounded; a gossip task that
//! dies turns its node `partitioned` and comes back; keys are turned on and
//! rotated in a running cluster without a single status transition.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arlen_membership::forge::{self, Claim, ForgedMember, Wrapping};
use arlen_testkit::{free_port, poll_until_explained, ArlenProcess};
use arlen_wire::documents::ClusterDocument;
use arlen_wire::states::{MemberState, QuorumStatus};

mod support;
use support::binary;

const WRONG_KEY: [u8; 32] = [0x22; 32];
const KEY_B64: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";
/// Base64 of 32 bytes of 0x31 and of 0x32: the old and new key of the rotation.
const K1_B64: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const K2_B64: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";

struct Node {
    process: ArlenProcess,
    port: u16,
}

/// Starts a gossip node. `advertise` overrides the gossip address peers use.
fn start(cluster: &str, id: &str, port: u16, seeds: &[SocketAddr], expected: usize, extra: &[(&str, &str)]) -> Node {
    let seeds = seeds.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let expected = expected.to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", cluster),
        ("ARLEN_CLUSTER_NODE_ID", id),
        ("ARLEN_CLUSTER_EXPECTED_NODES", &expected),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
        ("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds),
    ];
    vars.extend_from_slice(extra);
    let app_root = extra.iter().find(|(k, _)| *k == "APP_ROOT").map_or("/nonexistent", |(_, v)| *v);
    let vars: Vec<(&str, &str)> = vars.into_iter().filter(|(k, _)| *k != "APP_ROOT").collect();
    let mut process =
        ArlenProcess::spawn(binary(), &["serve", "--port", &port.to_string(), "--app-root", app_root], &vars, port);
    process.wait_live();
    Node { process, port }
}

/// Two nodes sealed with [`KEY_B64`] that see each other; their ports.
fn sealed_pair(cluster: &str, expected: usize, extra: &[(&str, &str)]) -> ([u16; 2], [Node; 2]) {
    let ports = [free_port(), free_port()];
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let vars = [&[("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64)], extra].concat();
    let nodes = [
        start(cluster, "node-1", ports[0], &seeds, expected, &vars),
        start(cluster, "node-2", ports[1], &seeds, expected, &vars),
    ];
    for node in &nodes {
        wait_observed(node, 2, Duration::from_secs(15));
    }
    (ports, nodes)
}

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn clusterz(node: &Node) -> Option<ClusterDocument> {
    node.process.cluster_document()
}

fn observed(node: &Node) -> Option<u64> {
    clusterz(node).map(|doc| u64::from(doc.cluster.observed_nodes))
}

/// Member id → state, as `node` sees them (newest generation per id).
fn states(node: &Node) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    let mut generations: BTreeMap<String, u64> = BTreeMap::new();
    for member in clusterz(node).into_iter().flat_map(|doc| doc.cluster.members) {
        let generation = member.generation.unwrap_or(0);
        if generations.get(&member.node_id).is_none_or(|g| generation >= *g) {
            generations.insert(member.node_id.clone(), generation);
            states.insert(member.node_id, member.state.to_string());
        }
    }
    states
}

fn rejected(node: &Node, reason: &str) -> f64 {
    let text = node.process.get("/metrics").text();
    arlen_http::metrics::sample_value(&text, &format!("arlen_gossip_rejected_datagrams_total{{reason=\"{reason}\"}}"))
        .unwrap_or(0.0)
}

fn wait_observed(node: &Node, count: u64, timeout: Duration) {
    poll_until_explained(
        &format!("node on {} to observe {count}", node.port),
        timeout,
        || (observed(node) == Some(count)).then_some(()),
        || node.process.describe(),
    );
}

/// How a member looks to a forger that read `/clusterz` (seq 0: nodes that
/// have not renewed their identity).
fn forged_member(seen_by: &Node, node_id: &str) -> ForgedMember {
    let doc = clusterz(seen_by).expect("a /clusterz document");
    let member = doc
        .cluster
        .members
        .iter()
        .find(|m| m.node_id == node_id)
        .unwrap_or_else(|| panic!("{node_id} not in {:?}", doc.cluster.members));
    ForgedMember {
        node_id: node_id.to_owned(),
        generation: member.generation.expect("member details are public in tests"),
        seq: 0,
        addr: member.gossip_address.as_deref().expect("a gossip address").parse().unwrap(),
        http_url: member.http_url.clone().expect("an http url"),
        state: "alive",
    }
}

fn ghost_at(addr: SocketAddr) -> ForgedMember {
    ForgedMember {
        node_id: "ghost".to_owned(),
        // A plausible start (now): a generation beyond the clock plus the
        // replay window is refused outright (`future_generation`).
        generation: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        seq: 0,
        addr,
        http_url: "http://127.0.0.1:1".to_owned(),
        state: "alive",
    }
}

/// Asserts `check` holds on every sample for `how_long` (the attack is sent
/// meanwhile by `attack`, each round).
fn holds_while(how_long: Duration, mut attack: impl FnMut(), mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        attack();
        if let Err(problem) = check() {
            panic!("{problem}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Both nodes of [`sealed_pair`] still count exactly each other, alive.
fn pair_unchanged(nodes: &[Node], what: &str) -> Result<(), String> {
    for node in nodes {
        let seen = states(node);
        let expected: BTreeMap<String, String> =
            [("node-1", "alive"), ("node-2", "alive")].map(|(a, b)| (a.to_owned(), b.to_owned())).into();
        if observed(node) != Some(2) || seen != expected {
            return Err(format!("{what} changed node {}: {seen:?}\n{}", node.port, node.process.describe()));
        }
    }
    Ok(())
}

#[test]
fn forged_unsealed_and_wrong_key_datagrams_change_nothing() {
    // Expecting 3 with 2 up: degraded. Injection would make it nominal, eviction partitioned-ish.
    let (ports, nodes) = sealed_pair("sealed", 3, &[]);
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forger_addr = forger.local_addr().unwrap();
    let node1 = forged_member(&nodes[0], "node-1");
    let mut node2 = forged_member(&nodes[0], "node-2");
    node2.state = "left";
    let ghost = ghost_at(forger_addr);
    let mut sent = 0u32;
    for wrapping in [Wrapping::Unsealed, Wrapping::SealedWith(&WRONG_KEY)] {
        let datagrams = [
            // Injection: a member that does not exist announces itself.
            forge::announce("sealed", wrapping, &ghost, address(ports[0])),
            forge::announce("sealed", wrapping, &ghost, address(ports[1])),
            // Eviction: node-2 is down and has left, says the forger to node-1.
            forge::gossip("sealed", wrapping, &ghost, &node1, &[(node2.clone(), Claim::Down)]),
            // Impersonation: "node-1" tells node-2 that node-1 has left.
            forge::gossip(
                "sealed",
                wrapping,
                &ForgedMember { state: "left", seq: 7, ..node1.clone() },
                &forged_member(&nodes[1], "node-2"),
                &[(ForgedMember { state: "left", seq: 7, ..node1.clone() }, Claim::Down)],
            ),
        ];
        holds_while(
            Duration::from_millis(1500),
            || {
                for datagram in &datagrams {
                    forger.send_to(datagram, address(ports[0])).unwrap();
                    forger.send_to(datagram, address(ports[1])).unwrap();
                    sent += 2;
                }
            },
            || pair_unchanged(&nodes, "a forged datagram"),
        );
    }
    let refused: f64 = nodes.iter().map(|n| rejected(n, "unsealed") + rejected(n, "bad_seal")).sum();
    eprintln!("forged datagrams sent: {sent}, refused (unsealed + bad_seal): {refused}");
    assert!(
        refused >= f64::from(sent) * 0.9,
        "the forged datagrams reached the nodes and were refused: {refused} of {sent}"
    );

    // Control: the same injection against a node without keys works, so
    // the forger's packets are real gossip and the refusal above is the seal's.
    let open_port = free_port();
    let open = start("open", "open-1", open_port, &[address(open_port)], 3, &[]);
    let open_ghost = ghost_at(forger_addr);
    poll_until_explained(
        "the unauthenticated node to count the forged member",
        Duration::from_secs(5),
        || {
            forger
                .send_to(
                    &forge::announce("open", Wrapping::Unsealed, &open_ghost, address(open_port)),
                    address(open_port),
                )
                .unwrap();
            states(&open).contains_key("ghost").then_some(())
        },
        || open.process.describe(),
    );
}

/// `unsealedTraffic = accept` (a key rollout's step): what arrives unsealed
/// can neither add a member nor evict one — not even under a real member's
/// identity — and the node says loudly that the door is open.
#[test]
fn while_unsealed_traffic_is_accepted_an_outsider_can_neither_add_nor_evict() {
    let accept = [("ARLEN_CLUSTER_GOSSIP_UNSEALED_TRAFFIC", "accept")];
    let (ports, nodes) = sealed_pair("rollout", 3, &accept);
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost = ghost_at(forger.local_addr().unwrap());
    let node1 = forged_member(&nodes[0], "node-1");
    let node2 = forged_member(&nodes[0], "node-2");
    let datagrams = [
        // Injection: a member nobody sealed vouches for announces itself, or
        // is named alive by a real member's identity.
        forge::announce("rollout", Wrapping::Unsealed, &ghost, address(ports[0])),
        forge::gossip("rollout", Wrapping::Unsealed, &node1, &node2, &[(ghost.clone(), Claim::Alive)]),
        // Eviction: node-2 is down, says "node-1" (its real identity) to node-2's peer...
        forge::gossip("rollout", Wrapping::Unsealed, &node2, &node1, &[(node1.clone(), Claim::Down)]),
        forge::gossip("rollout", Wrapping::Unsealed, &node1, &node2, &[(node2.clone(), Claim::Suspect)]),
        // ... or node-1 itself has left (a renewed identity of node-1).
        forge::gossip(
            "rollout",
            Wrapping::Unsealed,
            &ForgedMember { state: "left", seq: 7, ..node1.clone() },
            &node2,
            &[(ForgedMember { state: "left", seq: 7, ..node1.clone() }, Claim::Alive)],
        ),
    ];
    holds_while(
        Duration::from_millis(2000),
        || {
            for datagram in &datagrams {
                forger.send_to(datagram, address(ports[0])).unwrap();
                forger.send_to(datagram, address(ports[1])).unwrap();
            }
        },
        || pair_unchanged(&nodes, "an unsealed datagram"),
    );
    let unvouched: f64 = nodes.iter().map(|n| rejected(n, "unvouched")).sum();
    assert!(unvouched > 0.0, "no datagram was refused as unvouched");
    for node in &nodes {
        assert!(node.process.stderr().contains("unsealed gossip datagrams are accepted"), "no warning at start");
        let detail = clusterz(node).map(|doc| doc.coordination.source_health.detail).unwrap_or_default();
        assert!(detail.contains("unsealedTraffic = accept"), "/clusterz does not say so: {detail}");
    }
    eprintln!("unsealed injections and evictions refused: {unvouched} as unvouched");
}

/// Without keys, a forger names a member at somebody else's address (a
/// victim that never answers): the cluster sends the victim no more than
/// the forger sent (before: ~90 times as much, pinging it every round).
#[test]
fn unsealed_gossip_reflects_no_more_than_it_receives() {
    let ports = [free_port(), free_port()];
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let nodes = [start("open", "open-1", ports[0], &seeds, 2, &[]), start("open", "open-2", ports[1], &seeds, 2, &[])];
    for node in &nodes {
        wait_observed(node, 2, Duration::from_secs(15));
    }
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    victim.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost = ghost_at(victim.local_addr().unwrap());
    let open1 = forged_member(&nodes[0], "open-1");
    let mut sent = 0usize;
    let mut reflected = 0usize;
    let mut buf = [0u8; 2048];
    let until = Instant::now() + Duration::from_secs(3);
    let mut counted_ghost = false;
    while Instant::now() < until {
        for datagram in [
            forge::announce("open", Wrapping::Unsealed, &ghost, address(ports[0])),
            forge::gossip("open", Wrapping::Unsealed, &open1, &open1, &[(ghost.clone(), Claim::Alive)]),
        ] {
            for port in ports {
                sent += forger.send_to(&datagram, address(port)).unwrap();
            }
        }
        while let Ok(n) = victim.recv(&mut buf) {
            reflected += n;
        }
        counted_ghost |= states(&nodes[0]).contains_key("ghost");
    }
    while let Ok(n) = victim.recv(&mut buf) {
        reflected += n;
    }
    eprintln!("forger sent {sent} bytes naming a member at the victim's address; the victim got {reflected} bytes");
    assert!(counted_ghost, "the forged member was never counted: the attack did not reach the nodes");
    assert!(reflected <= sent, "reflection: {reflected} bytes towards the victim for {sent} sent");
}

/// One key holder announces 1,040 members that do not exist. Nodes take in
/// no more than twice `expectedNodes`, at the join budget's pace, and a real
/// crash is seen as fast as without the flood (before: 931 members counted,
/// the crash seen after 15–57 s).
#[test]
fn a_key_holders_flood_of_members_is_held_back_and_a_real_crash_is_still_seen() {
    const KEY: [u8; 32] = [0x11; 32];
    let ports = [free_port(), free_port(), free_port()];
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let keys = [("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64)];
    let mut nodes: Vec<Node> =
        (0..3).map(|i| start("flood", &format!("real-{}", i + 1), ports[i], &seeds, 3, &keys)).collect();
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghosts: Vec<ForgedMember> = (0..1040u16)
        .map(|i| ForgedMember {
            node_id: format!("ghost-{i}"),
            ..ghost_at(SocketAddr::from(([127, 0, 0, 1], 40_000 + i)))
        })
        .collect();
    let mut next = 0usize;
    let mut flood = |forger: &UdpSocket| {
        for _ in 0..100 {
            let ghost = &ghosts[next % ghosts.len()];
            next += 1;
            for port in ports {
                let _ = forger.send_to(
                    &forge::announce("flood", Wrapping::SealedWith(&KEY), ghost, address(port)),
                    address(port),
                );
            }
        }
    };
    let known_live = |node: &Node| -> usize {
        clusterz(node).map_or(0, |doc| {
            doc.cluster.members.iter().filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect)).count()
        })
    };
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        flood(&forger);
        most = most.max(nodes.iter().map(known_live).max().unwrap_or(0));
    }
    assert!(most <= 6, "a node took in {most} live members (expected 3: at most 6)");
    let held_back = rejected(&nodes[0], "held_back");
    assert!(held_back > 0.0, "nothing was held back: the flood did not reach the nodes");
    // A real crash during the flood.
    let victim = nodes.pop().unwrap();
    victim.process.signal("KILL");
    let killed = Instant::now();
    let seen = loop {
        flood(&forger);
        if states(&nodes[0]).get("real-3").map(String::as_str) == Some("dead") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the crash was not seen in 10 s\n{}",
            nodes[0].process.describe()
        );
    };
    eprintln!("1,040 forged members: at most {most} live members known, {held_back} held back; a real crash seen after {seen:?}");
    assert!(seen < Duration::from_secs(3), "a real crash seen after {seen:?} during the flood");
}

/// A UDP relay in front of one node: peers reach that node through it (it is
/// the node's advertised gossip address), and it records what they send.
/// Datagrams the relay saw, with their sender.
type Captured = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

struct Relay {
    address: SocketAddr,
    captured: Captured,
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, halt) = (socket.clone(), captured.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::Relaxed) {
                if let Ok((len, from)) = s.recv_from(&mut buf) {
                    let mut captured = c.lock().unwrap();
                    if captured.len() < 10_000 {
                        captured.push((from, buf[..len].to_vec()));
                    }
                    let _ = s.send_to(&buf[..len], target);
                }
            }
        });
        Self { address: socket.local_addr().unwrap(), captured, socket, stop }
    }

    fn captured_from(&self, peer: SocketAddr) -> Vec<Vec<u8>> {
        self.captured.lock().unwrap().iter().filter(|(from, _)| *from == peer).map(|(_, d)| d.clone()).collect()
    }

    fn replay(&self, datagrams: &[Vec<u8>], to: SocketAddr) {
        for datagram in datagrams {
            let _ = self.socket.send_to(datagram, to);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn replayed_datagrams_neither_resurrect_a_member_nor_undo_a_newer_state() {
    let ports = [free_port(), free_port(), free_port()];
    let relay = Relay::start(address(ports[0]));
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let relay_advertise = relay.address.to_string();
    let keys = [("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64), ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "60")];
    let mut first = keys.to_vec();
    first.push(("ARLEN_CLUSTER_GOSSIP_ADVERTISE", &relay_advertise));
    let node1 = start("replay", "node-1", ports[0], &seeds, 3, &first);
    let node2 = start("replay", "node-2", ports[1], &seeds, 3, &keys);
    let node3 = start("replay", "node-3", ports[2], &seeds, 3, &keys);
    for node in [&node1, &node2, &node3] {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    poll_until_explained(
        "the relay to capture gossip from node-2 and node-3",
        Duration::from_secs(10),
        || {
            (relay.captured_from(address(ports[1])).len() >= 5 && relay.captured_from(address(ports[2])).len() >= 5)
                .then_some(())
        },
        || node1.process.describe(),
    );
    let from_node3 = relay.captured_from(address(ports[2]));
    let from_node2 = relay.captured_from(address(ports[1]));

    // node-3 dies; its earlier (authentic, sealed, recent) datagrams are replayed to node-1.
    node3.process.signal("KILL");
    wait_observed(&node1, 2, Duration::from_secs(10));
    wait_observed(&node2, 2, Duration::from_secs(10));
    holds_while(
        Duration::from_millis(1500),
        || relay.replay(&from_node3, address(ports[0])),
        || match (observed(&node1), states(&node1).get("node-3").map(String::as_str)) {
            (Some(2), Some("dead")) => Ok(()),
            (count, state) => Err(format!(
                "a replay resurrected node-3: observed {count:?}, state {state:?}\n{}",
                node1.process.describe()
            )),
        },
    );

    // node-2 drains (a newer identity); its older "alive" datagrams are replayed.
    node2.process.signal("TERM");
    poll_until_explained(
        "node-1 to see node-2 draining",
        Duration::from_secs(10),
        || (states(&node1).get("node-2").map(String::as_str) == Some("draining")).then_some(()),
        || node1.process.describe(),
    );
    holds_while(
        Duration::from_millis(1500),
        || relay.replay(&from_node2, address(ports[0])),
        || match states(&node1).get("node-2").map(String::as_str) {
            Some("draining") => Ok(()),
            other => Err(format!("a replay undid node-2's drain: {other:?}\n{}", node1.process.describe())),
        },
    );
    eprintln!("replayed {} datagrams of node-3 and {} of node-2", from_node3.len(), from_node2.len());
}

/// A relay without the key sits in front of node-1 and records everything
/// the victim sends it (its acks among them). The victim is killed and the
/// relay answers node-1's probes with the recordings, again and again:
/// foca's ack carries only a u8 probe number, so an ack recorded one wrap
/// earlier matches a probe of now. Each sealed datagram is accepted once, so
/// node-1 sees the death as fast as without the relay.
fn replayed_acks_change_nothing_on(size: usize) -> Duration {
    let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let relay = Relay::start(address(ports[0]));
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let relay_advertise = relay.address.to_string();
    let keys = [("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64), ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")];
    let mut first = keys.to_vec();
    first.push(("ARLEN_CLUSTER_GOSSIP_ADVERTISE", &relay_advertise));
    let cluster = format!("acks{size}");
    let mut nodes: Vec<Node> = (0..size)
        .map(|i| {
            start(&cluster, &format!("node-{}", i + 1), ports[i], &seeds, size, if i == 0 { &first } else { &keys })
        })
        .collect();
    for node in &nodes {
        wait_observed(node, size as u64, Duration::from_secs(15));
    }
    let victim_port = ports[size - 1];
    // Three wraps of probe numbers at most: the recording spans a few seconds.
    poll_until_explained(
        "the relay to record the victim's acks",
        Duration::from_secs(10),
        || (relay.captured_from(address(victim_port)).len() >= 60).then_some(()),
        || nodes[0].process.describe(),
    );
    let recorded = relay.captured_from(address(victim_port));
    let replayed_before = rejected(&nodes[0], "replayed");
    let victim = nodes.pop().unwrap();
    victim.process.signal("KILL");
    let killed = Instant::now();
    let deadline = Duration::from_secs(20);
    let detected = loop {
        relay.replay(&recorded, address(ports[0]));
        if observed(&nodes[0]) == Some(size as u64 - 1) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < deadline,
            "replayed acks kept the dead node counted for {deadline:?}\n{}",
            nodes[0].process.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Replays continue a little while after detection: still nothing comes back.
    holds_while(
        Duration::from_millis(1500),
        || relay.replay(&recorded, address(ports[0])),
        || match observed(&nodes[0]) {
            Some(count) if count == size as u64 - 1 => Ok(()),
            other => Err(format!("a replayed ack brought the victim back: {other:?}")),
        },
    );
    let refused = rejected(&nodes[0], "replayed") - replayed_before;
    assert!(refused > 0.0, "no replay was refused as such: the relay did not reach node-1");
    eprintln!(
        "{size} nodes: {} recorded datagrams replayed every 20 ms; death seen after {detected:?}, {refused} replays refused",
        recorded.len()
    );
    detected
}

#[test]
fn replayed_acks_do_not_keep_a_dead_node_alive_on_two_and_three_nodes() {
    for size in [2, 3] {
        let detected = replayed_acks_change_nothing_on(size);
        // The crash bound of the default protocol with one lost round is well
        // under 3 s; before the replay guard the relay held it for 52 s.
        assert!(detected < Duration::from_secs(3), "{size} nodes: death seen after {detected:?}");
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    support::memory_kib(pid, "VmHWM")
}

#[test]
fn oversized_and_garbage_datagrams_are_dropped_and_counted_with_memory_bounded() {
    let (_, nodes) = sealed_pair("flood", 2, &[]);
    let victim = &nodes[0];
    let before = peak_rss_kib(victim.process.pid());
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = vec![0x41u8; 65_000];
    let mut sealed_garbage = b"ARL\x02".to_vec();
    sealed_garbage.extend(std::iter::repeat_n(0x5a, 1300));
    let mut unsealed_bomb = b"ARL\x01\x05flood\xff\xff".to_vec();
    unsealed_bomb.extend(std::iter::repeat_n(0xff, 1300));
    let started = Instant::now();
    let mut sent = 0u32;
    // Bounded: 3 × 3000 datagrams (about 200 MB), or 20 s.
    for _ in 0..3000 {
        for datagram in [&big, &sealed_garbage, &unsealed_bomb] {
            if attacker.send_to(datagram, victim.process.address()).is_ok() {
                sent += 1;
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let oversized = poll_until_explained(
        "the victim to count oversized datagrams",
        Duration::from_secs(10),
        || Some(rejected(victim, "oversized")).filter(|n| *n > 0.0),
        || victim.process.describe(),
    );
    let after = peak_rss_kib(victim.process.pid());
    eprintln!(
        "flood: {sent} datagrams in {:?}; counted oversized {oversized}, bad_seal {}, unsealed {}; peak RSS {before} KiB -> {after} KiB",
        started.elapsed(),
        rejected(victim, "bad_seal"),
        rejected(victim, "unsealed"),
    );
    assert!(after < before + 16 * 1024, "peak RSS grew from {before} KiB to {after} KiB");
    assert!(rejected(victim, "bad_seal") > 0.0 && rejected(victim, "unsealed") > 0.0);
    for node in &nodes {
        assert_eq!(observed(node), Some(2), "{}", node.process.describe());
    }
    assert!(victim.process.stderr().contains("gossip datagram dropped"), "the drops are logged");
}

fn inject_task_fault(node: &Node, fault: &str) {
    let body = format!("{{\"rules\": [], \"gossip_task\": \"{fault}\"}}");
    let request = format!(
        "PUT /_arlen/faults HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer test-token-test-token-test-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = arlen_testkit::send_raw(node.process.address(), request.as_bytes()).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn a_gossip_task_that_dies_or_stalls_turns_the_node_partitioned_and_is_restarted() {
    let faults = [
        ("ARLEN_CLUSTER_FAULT_INJECTION_ENABLED", "1"),
        ("ARLEN_OPS_TOKEN", "test-token-test-token-test-token"),
        ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
    ];
    let (_, nodes) = sealed_pair("supervised", 2, &faults);
    for fault in ["crash", "stall"] {
        let injected = Instant::now();
        inject_task_fault(&nodes[0], fault);
        let detail = poll_until_explained(
            &format!("the node to fail closed after a {fault}"),
            Duration::from_secs(10),
            || {
                let doc = clusterz(&nodes[0])?;
                (doc.cluster.quorum.status == QuorumStatus::Partitioned && !doc.coordination.source_health.ok)
                    .then_some(doc.coordination.source_health.detail)
            },
            || nodes[0].process.describe(),
        );
        let partitioned_after = injected.elapsed();
        assert_eq!(nodes[0].process.get("/readyz").status, 503, "readiness follows the quorum rule");
        assert_eq!(nodes[0].process.get("/livez").status, 200, "liveness does not");
        wait_observed(&nodes[0], 2, Duration::from_secs(15));
        eprintln!(
            "gossip task {fault}: partitioned after {partitioned_after:?} ({detail}); nominal again after {:?}",
            injected.elapsed()
        );
    }
    assert!(nodes[0].process.stderr().contains("gossip task restarted"));
}

/// Samples every node's status until stopped; returns the statuses seen that were not `nominal`.
fn watch_statuses(ports: Vec<u16>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut anomalies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for port in &ports {
                let status = arlen_testkit::get(address(*port), "/", &[])
                    .ok()
                    .and_then(|r| r.header("X-Arlen-Cluster-Status").map(str::to_owned))
                    .unwrap_or_else(|| "unreachable".to_owned());
                if status != "nominal" {
                    anomalies.push(format!("{port}: {status}"));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anomalies
    })
}

#[test]
fn keys_are_turned_on_and_rotated_in_a_running_cluster_without_a_transition() {
    let ports = [free_port(), free_port(), free_port()];
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    let write_config = |keys: &[String], unsealed: &str| {
        std::fs::write(root.path().join("keys"), keys.join("\n") + "\n").unwrap();
        let keys_file = if keys.is_empty() { "" } else { "keys" };
        std::fs::write(
            root.path().join("config/app.toml"),
            format!("[cluster.gossip]\nkeysFile = \"{keys_file}\"\nunsealedTraffic = \"{unsealed}\"\n"),
        )
        .unwrap();
    };
    write_config(&[], "refuse");
    let app_root = root.path().display().to_string();
    let vars = [("APP_ROOT", app_root.as_str())];
    let nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| start("rotate", &format!("node-{}", i + 1), *p, &seeds, 3, &vars))
        .collect();
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_statuses(ports.to_vec(), stop.clone());
    let (k1, k2) = (K1_B64.to_owned(), K2_B64.to_owned());
    let steps: [(&str, Vec<String>, &str); 6] = [
        ("keys on everywhere, still sending unsealed", vec![k1.clone()], "send"),
        ("send sealed, accept both", vec![k1.clone()], "accept"),
        ("require sealed", vec![k1.clone()], "refuse"),
        ("add the new key everywhere", vec![k1.clone(), k2.clone()], "refuse"),
        ("make the new key first", vec![k2.clone(), k1.clone()], "refuse"),
        ("remove the old key", vec![k2.clone()], "refuse"),
    ];
    for (step, (what, keys, unsealed)) in steps.iter().enumerate() {
        write_config(keys, unsealed);
        let reloads = step + 1;
        // Node by node, as a rolling change would.
        for node in &nodes {
            node.process.signal("HUP");
            poll_until_explained(
                &format!("{what}: node {} to reload its keys", node.port),
                Duration::from_secs(10),
                || (node.process.stderr().matches("gossip keys reloaded").count() >= reloads).then_some(()),
                || node.process.describe(),
            );
            // Gossip has run under the new keys before the next node changes.
            let sent = |node: &Node| {
                arlen_http::metrics::sample_value(
                    &node.process.get("/metrics").text(),
                    "arlen_gossip_sent_messages_total",
                )
                .unwrap_or(0.0)
            };
            let before = sent(node);
            poll_until_explained(
                &format!("{what}: node {} to gossip under its new keys", node.port),
                Duration::from_secs(10),
                || (sent(node) >= before + 3.0).then_some(()),
                || node.process.describe(),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let anomalies = watcher.join().unwrap();
    assert!(anomalies.is_empty(), "status transitions during the rollout: {anomalies:?}");
    for node in &nodes {
        assert_eq!(rejected(node, "bad_seal"), 0.0, "no datagram failed to open: {}", node.process.describe());
        assert_eq!(rejected(node, "unsealed"), 0.0);
        assert_eq!(observed(node), Some(3));
    }
    // The old key no longer opens anything: a datagram sealed with it is refused.
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let old = [0x31u8; 32];
    let datagram = forge::announce(
        "rotate",
        Wrapping::SealedWith(&old),
        &ghost_at(forger.local_addr().unwrap()),
        address(ports[0]),
    );
    forger.send_to(&datagram, address(ports[0])).unwrap();
    poll_until_explained(
        "a datagram sealed with the removed key to be refused",
        Duration::from_secs(5),
        || (rejected(&nodes[0], "bad_seal") >= 1.0).then_some(()),
        || nodes[0].process.describe(),
    );
}

#[test]
fn a_false_suspicion_from_a_key_holder_is_refuted_without_a_transition() {
    let ports = [free_port(), free_port(), free_port()];
    let seeds: Vec<SocketAddr> = ports.iter().map(|p| address(*p)).collect();
    let keys = [("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64)];
    let nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| start("accused", &format!("node-{}", i + 1), *p, &seeds, 3, &keys))
        .collect();
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    // Correctly sealed (the forger holds the key), "from node-1", telling
    // node-2 and node-3 that node-3 is suspect: node-3 must refute it.
    let key: [u8; 32] = [0x11; 32];
    let (node1, node2, node3) =
        (forged_member(&nodes[0], "node-1"), forged_member(&nodes[0], "node-2"), forged_member(&nodes[0], "node-3"));
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let accusations = [
        (
            forge::gossip("accused", Wrapping::SealedWith(&key), &node1, &node2, &[(node3.clone(), Claim::Suspect)]),
            ports[1],
        ),
        (
            forge::gossip("accused", Wrapping::SealedWith(&key), &node1, &node3, &[(node3.clone(), Claim::Suspect)]),
            ports[2],
        ),
    ];
    holds_while(
        Duration::from_millis(1500),
        || {
            for (datagram, port) in &accusations {
                forger.send_to(datagram, address(*port)).unwrap();
            }
        },
        || {
            for node in &nodes {
                if observed(node) != Some(3) {
                    return Err(format!("a suspicion was not refuted in time:\n{}", node.process.describe()));
                }
            }
            Ok(())
        },
    );
}

/// A key holder who names a far-future generation at a member's address
/// (which would outrank every real restart of it for ever) is refused
/// outright and counted; the member stays counted everywhere.
#[test]
fn a_far_future_generation_is_refused_and_cannot_take_an_address() {
    let ([port1, _port2], nodes) = sealed_pair("future", 2, &[]);
    let key: [u8; 32] = [0x11; 32];
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = forged_member(&nodes[0], "node-1");
    let usurper = ForgedMember { generation: u64::MAX, ..forged_member(&nodes[0], "node-2") };
    let datagram = forge::gossip("future", Wrapping::SealedWith(&key), &sender, &sender, &[(usurper, Claim::Alive)]);
    holds_while(
        Duration::from_millis(1000),
        || {
            forger.send_to(&datagram, address(port1)).unwrap();
        },
        || {
            let seen = states(&nodes[0]);
            if observed(&nodes[0]) != Some(2) || seen.get("node-2").map(String::as_str) != Some("alive") {
                return Err(format!("the forged generation changed node-1: {seen:?}\n{}", nodes[0].process.describe()));
            }
            Ok(())
        },
    );
    assert!(rejected(&nodes[0], "future_generation") >= 1.0, "the forged datagrams were counted as refused");
}
