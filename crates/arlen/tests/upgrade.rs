//! Rolling upgrades across the gossip wire's versions: three nodes of an
//! earlier release (built by `scripts/previous-release`) are replaced one by
//! one by this build, sealed gossip throughout. Old and new count each other
//! in both directions at every step, the untouched nodes never leave
//! rotation, and each node shows the software versions and zones its wire
//! can carry:
//!
//! - from protocol version 1 (before the versioned wire): the new nodes show
//!   each other's software, the old ones show none;
//! - from protocol version 2 (software in the envelope, identities without
//!   it): every node shows every member's software throughout, and the new
//!   nodes show each other's zones (carried in their identities, layout 3),
//!   which the old ones never see.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arlen_testkit::{free_port, poll_until_explained, ArlenProcess};

/// The release before the versioned wire (protocol version 1).
const VERSION_1: &str = "453ebf9a586a";
/// The release before identities carried software and zone (version 2).
const VERSION_2: &str = "d1173a417f01";
const KEY_B64: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";

fn previous_binary(commit: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/previous/arlen-{commit}"));
    assert!(path.exists(), "{} is missing: run scripts/previous-release (scripts/test does)", path.display());
    path
}

/// The zone this build's node `index` runs in (earlier releases have no `cluster.zone`).
fn zone_of(index: usize) -> String {
    format!("zone-{}", index + 1)
}

fn start(binary: &Path, index: usize, ports: &[u16], current: bool) -> ArlenProcess {
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let node_id = format!("node-{}", index + 1);
    let vars = [
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", "upgrade"),
        ("ARLEN_CLUSTER_NODE_ID", node_id.as_str()),
        ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
        ("ARLEN_CLUSTER_QUORUM_POLICY", "majority"),
        ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
        ("ARLEN_CLUSTER_GOSSIP_SEEDS", seeds.as_str()),
        ("ARLEN_CLUSTER_GOSSIP_KEYS", KEY_B64),
    ];
    let zone = zone_of(index);
    let mut vars = vars.to_vec();
    if current {
        vars.push(("ARLEN_CLUSTER_ZONE", zone.as_str()));
    }
    let port = ports[index].to_string();
    let mut node =
        ArlenProcess::spawn(binary, &["serve", "--port", &port, "--app-root", "/nonexistent"], &vars, ports[index]);
    node.wait_live();
    node
}

fn clusterz(port: u16) -> Option<arlen_wire::documents::ClusterDocument> {
    arlen_testkit::cluster_document(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Member id → (software version, zone) as the node on `port` sees its
/// alive members.
fn versions(port: u16) -> Vec<(String, Option<String>, Option<String>)> {
    let mut seen: Vec<(String, Option<String>, Option<String>)> = clusterz(port)
        .into_iter()
        .flat_map(|doc| doc.cluster.members)
        .filter(|m| m.state == arlen_wire::states::MemberState::Alive)
        .map(|m| {
            let software = m.software();
            (m.node_id, software, m.zone)
        })
        .collect();
    seen.sort();
    seen
}

fn wait_all_count_three(ports: &[u16], nodes: &[Option<ArlenProcess>]) {
    for (port, node) in ports.iter().zip(nodes) {
        poll_until_explained(
            &format!("node on {port} to count 3"),
            Duration::from_secs(20),
            || clusterz(*port).is_some_and(|doc| doc.cluster.observed_nodes == 3).then_some(()),
            || node.as_ref().map(ArlenProcess::describe).unwrap_or_default(),
        );
    }
}

#[test]
fn a_cluster_of_protocol_version_1_upgrades_node_by_node_without_a_split() {
    rolling_upgrade(VERSION_1, 1);
}

#[test]
fn a_cluster_of_protocol_version_2_upgrades_node_by_node_without_a_split() {
    rolling_upgrade(VERSION_2, 2);
}

/// Replaces three nodes of `commit` (which speaks up to protocol
/// `version`) one by one by this build.
fn rolling_upgrade(commit: &str, version: u8) {
    let previous = previous_binary(commit);
    let current = Path::new(env!("CARGO_BIN_EXE_arlen"));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Option<ArlenProcess>> = (0..3).map(|i| Some(start(&previous, i, &ports, false))).collect();
    wait_all_count_three(&ports, &nodes);

    // Readiness of every node, sampled throughout; `restarting` names the
    // node being replaced (its own samples do not count).
    let restarting = Arc::new(Mutex::new(None::<usize>));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (ports, restarting, stop) = (ports.clone(), restarting.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0u32;
            let mut out_of_rotation = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (index, port) in ports.iter().enumerate() {
                    if *restarting.lock().unwrap() == Some(index) {
                        continue;
                    }
                    let address = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
                    let status = arlen_testkit::get(address, "/readyz", &[]).map(|r| r.status).unwrap_or(0);
                    samples += 1;
                    if status != 200 {
                        out_of_rotation.push(format!("node-{} answered {status}", index + 1));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, out_of_rotation)
        })
    };

    for index in 0..3 {
        *restarting.lock().unwrap() = Some(index);
        let mut old = nodes[index].take().expect("each node is replaced once");
        old.signal("TERM");
        let exited = old.wait_exit(Duration::from_secs(20));
        assert!(exited.success(), "node-{} did not stop cleanly: {exited:?}\n{}", index + 1, old.describe());
        nodes[index] = Some(start(current, index, &ports, true));
        wait_all_count_three(&ports, &nodes);
        *restarting.lock().unwrap() = None;
        // Both directions: the old nodes count the new one, the new one
        // counts them. Software versions travel in envelopes of version 2
        // and identities of version 3; zones only in identities of version 3.
        for (position, port) in ports.iter().enumerate() {
            let upgraded = position <= index;
            poll_until_explained(
                &format!("node-{} to see the versions after upgrading node-{}", position + 1, index + 1),
                Duration::from_secs(10),
                || {
                    let seen = versions(*port);
                    let right = seen.len() == 3
                        && seen.iter().all(|(id, software, zone)| {
                            let member: usize = id.trim_start_matches("node-").parse().unwrap_or(usize::MAX);
                            let member_upgraded = member <= index + 1;
                            let software_known = match version {
                                1 => upgraded && member_upgraded,
                                _ => true,
                            };
                            let zone_known = upgraded && member_upgraded;
                            software.is_some() == software_known && *zone == zone_known.then(|| zone_of(member - 1))
                        });
                    right.then_some(())
                },
                || format!("{:?}", versions(*port)),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, out_of_rotation) = watcher.join().unwrap();
    let expected = format!("{}+", env!("CARGO_PKG_VERSION"));
    let last = versions(ports[0]);
    assert!(
        last.iter().all(|(_, software, _)| software.as_deref().is_some_and(|s| s.starts_with(&expected))),
        "{last:?}"
    );
    eprintln!(
        "rolling upgrade {commit} (protocol {version}) -> this build over 3 nodes: {samples} readiness samples of untouched nodes, {} out of rotation",
        out_of_rotation.len()
    );
    assert!(out_of_rotation.is_empty(), "untouched nodes left rotation: {out_of_rotation:?}");
}
