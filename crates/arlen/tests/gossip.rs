//! Live membership between real `arlen serve` processes gossiping over UDP on
//! loopback: convergence, crash detection, restart, graceful leave, cluster
//! isolation, and `arlen up`.

use arlen_wire::documents::ClusterDocument;
use arlen_wire::states::MemberState;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, free_port_range, poll_until, poll_until_explained, ArlenProcess, RawResponse};

mod support;
use support::binary;

/// Starts one gossip node; `ports` are every node's ports (the seeds).
fn start_node(cluster: &str, index: usize, ports: &[u16], extra: &[(&str, &str)]) -> ArlenProcess {
    support::gossip_node(cluster, index, ports, extra)
}

fn start_cluster(cluster: &str, size: usize) -> (Vec<u16>, Vec<ArlenProcess>) {
    let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let nodes = (0..size).map(|i| start_node(cluster, i, &ports, &[])).collect();
    (ports, nodes)
}

fn clusterz(node: &ArlenProcess) -> Option<ClusterDocument> {
    node.cluster_document()
}

fn observed(node: &ArlenProcess) -> Option<u64> {
    clusterz(node).map(|doc| u64::from(doc.cluster.observed_nodes))
}

fn wait_observed(node: &ArlenProcess, count: u64, timeout: Duration) {
    poll_until_explained(
        &format!("node on {} to observe {count}", node.port),
        timeout,
        || (observed(node) == Some(count)).then_some(()),
        || node.describe(),
    );
}

fn member_state(node: &ArlenProcess, node_id: &str) -> Option<String> {
    let doc = clusterz(node)?;
    doc.cluster
        .members
        .iter()
        .filter(|m| m.node_id == node_id)
        .max_by_key(|m| m.generation)
        .map(|m| m.state.to_string())
}

fn assert_degraded_everywhere_it_shows(response: &RawResponse) {
    assert_eq!(response.status, 503, "{}", response.head);
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("degraded"));
    assert_eq!(response.header("X-Arlen-Cluster-Observed-Nodes"), Some("2"));
    let quorum = response.document::<arlen_wire::documents::ProbeDocument>().checks.cluster_quorum;
    assert_eq!((quorum.status, quorum.observed_nodes), (arlen_wire::states::QuorumStatus::Degraded, 2));
}

#[test]
fn three_nodes_converge_detect_a_kill_and_take_the_restarted_node_back_once() {
    let (ports, mut nodes) = start_cluster("alpha", 3);
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
        assert_eq!(node.get("/readyz").status, 200);
        assert_eq!(clusterz(node).unwrap().coordination.membership_source, "gossip");
    }

    let victim = nodes.pop().unwrap();
    victim.signal("KILL");
    let killed_at = Instant::now();
    for node in &nodes {
        wait_observed(node, 2, Duration::from_secs(10));
        let response = arlen_testkit::get(node.address(), "/readyz?format=json", &[]).unwrap();
        assert_degraded_everywhere_it_shows(&response);
        assert_eq!(member_state(node, "alpha-3").as_deref(), Some("dead"));
    }
    eprintln!("kill -9 seen by both survivors after {:?}", killed_at.elapsed());
    drop(victim);

    let restarted = start_node("alpha", 2, &ports, &[]);
    nodes.push(restarted);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counts: Vec<Option<u64>> = nodes.iter().map(observed).collect();
        assert!(counts.iter().all(|c| c.unwrap_or(0) <= 3), "a node counted an incarnation twice: {counts:?}");
        if counts.iter().all(|c| *c == Some(3)) {
            break;
        }
        assert!(Instant::now() < deadline, "never back to 3 everywhere: {counts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for node in &nodes {
        assert_eq!(node.get("/readyz").status, 200);
        assert_eq!(node.get("/").header("X-Arlen-Cluster-Status"), Some("nominal"));
    }
}

#[test]
fn a_graceful_stop_is_seen_as_leaving_not_as_a_failure() {
    let (_ports, mut nodes) = start_cluster("beta", 3);
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    let mut leaving = nodes.pop().unwrap();
    leaving.signal("TERM");
    let signalled = Instant::now();
    for node in &nodes {
        poll_until("peers to see beta-3 leave", Duration::from_secs(5), || {
            (member_state(node, "beta-3").as_deref() == Some("left")).then_some(())
        });
        assert_eq!(observed(node), Some(2));
    }
    eprintln!("graceful leave seen by both peers after {:?}", signalled.elapsed());
    assert_eq!(leaving.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn clusters_with_different_names_on_the_same_seeds_never_count_each_other() {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    // Every node gets all four addresses as seeds; names split them 2 + 2.
    let nodes: Vec<ArlenProcess> = (0..4)
        .map(|i| {
            let cluster = if i < 2 { "red" } else { "blue" };
            let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
            let node_id = format!("n{i}");
            let port = ports[i];
            let mut node = ArlenProcess::spawn(
                binary(),
                &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"],
                &[
                    ("ARLEN_CLUSTER_ENABLED", "1"),
                    ("ARLEN_CLUSTER_NAME", cluster),
                    ("ARLEN_CLUSTER_NODE_ID", &node_id),
                    ("ARLEN_CLUSTER_EXPECTED_NODES", "2"),
                    ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
                    ("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds),
                ],
                port,
            );
            node.wait_live();
            node
        })
        .collect();
    for node in &nodes {
        wait_observed(node, 2, Duration::from_secs(15));
    }
    // Stay apart over many gossip rounds.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for node in &nodes {
            let doc = clusterz(node).unwrap();
            assert_eq!(doc.cluster.observed_nodes, 2);
            assert_eq!(doc.cluster.members.len(), 2, "{:?}", doc.cluster.members);
        }
    }
}

/// The child's stdout, line by line, from a reader thread.
fn output_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

#[test]
fn arlen_up_runs_a_cluster_shows_a_kill_and_stops_every_node() {
    let base = free_port_range(3);
    let mut up = Command::new(binary())
        .args(["up", "--nodes", "3", "--base-port", &base.to_string(), "--quorum-required", "--refresh-ms", "100"])
        .env_remove("ARLEN_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = output_lines(&mut up);
    let mut seen = Vec::new();
    let mut next_line = |timeout: Duration| {
        let line = lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("arlen up went quiet; output so far:\n{}", seen.join("\n")));
        seen.push(line.clone());
        line
    };
    // Header lines name each node with its pid.
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let line = next_line(Duration::from_secs(20));
        if let Some(rest) = line.trim_start().strip_prefix("node-") {
            let pid: u32 = rest.split("pid ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
            pids.push(pid);
        }
    }
    let row_status = |line: &str| line.split_whitespace().nth(2).map(str::to_owned);
    // Wait for a table where all three are nominal.
    let mut nominal_rows = 0;
    while nominal_rows < 3 {
        let line = next_line(Duration::from_secs(20));
        if line.starts_with("NODE") {
            nominal_rows = 0;
        } else if line.starts_with("node-") && row_status(&line).as_deref() == Some("nominal") {
            nominal_rows += 1;
        }
    }
    // kill -9 node-3 from "another terminal".
    assert!(Command::new("kill").args(["-9", &pids[2].to_string()]).status().unwrap().success());
    let mut degraded = std::collections::BTreeSet::new();
    while degraded.len() < 2 {
        let line = next_line(Duration::from_secs(20));
        if (line.starts_with("node-1") || line.starts_with("node-2"))
            && row_status(&line).as_deref() == Some("degraded")
        {
            degraded.insert(line[..6].to_owned());
        }
    }
    // Ctrl-C stops every child.
    assert!(Command::new("kill").args(["-INT", &up.id().to_string()]).status().unwrap().success());
    let status = poll_until("arlen up to exit", Duration::from_secs(30), || up.try_wait().unwrap());
    assert!(status.success(), "arlen up exited with {status}");
    for pid in &pids[..2] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z"),
            "node pid {pid} still running"
        );
    }
}

#[test]
fn arlen_up_keys_kill_partition_heal_and_restart_nodes_and_time_what_the_others_see() {
    use std::io::Write as _;
    let base = free_port_range(3);
    let mut up = Command::new(binary())
        .args(["up", "--nodes", "3", "--base-port", &base.to_string(), "--refresh-ms", "100"])
        .env_remove("ARLEN_ENV")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut keys = up.stdin.take().unwrap();
    let lines = output_lines(&mut up);
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |what: &str, check: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line for {what}; output so far:\n{}", seen.join("\n")));
            seen.push(line.clone());
            if check(&line) {
                return line;
            }
        }
    };
    let header = wait_for("the header", &|l| l.starts_with("arlen up:"));
    assert!(header.contains("readiness requires quorum (policy majority)"), "{header}");
    wait_for("the keys", &|l| l.starts_with("keys: 1-9 select a node"));
    wait_for("a nominal node-3", &|l| l.starts_with("node-3") && l.split_whitespace().nth(2) == Some("nominal"));
    keys.write_all(b"3k").unwrap();
    wait_for("the kill", &|l| l.ends_with("node-3: kill -9"));
    let seen_gone = wait_for("the kill seen", &|l| l.contains("node-3 killed: no longer counted by the others after"));
    assert!(seen_gone.ends_with("node-1 ready, node-2 ready"), "majority: two of three stay ready: {seen_gone}");
    keys.write_all(b"1p").unwrap();
    let cut = wait_for("the partition seen", &|l| l.contains("node-1 partitioned: no longer counted by the others"));
    // node-2, alone with the dead node-3, is out of rotation at once; node-1
    // learns that it is alone by hearing no answer for its vouch bound (a few
    // hundred ms), which may end just after the others counted it out.
    assert!(cut.ends_with("node-2 not ready"), "node-2 alone, out of rotation: {cut}");
    let cut_at = Instant::now();
    wait_for("node-1 out of rotation too", &|l| l.starts_with("node-1") && l.split_whitespace().nth(4) == Some("no"));
    assert!(
        cut_at.elapsed() < Duration::from_secs(3),
        "node-1 stayed ready {:?} after it was cut off",
        cut_at.elapsed()
    );
    keys.write_all(b"h").unwrap();
    wait_for("the heal seen", &|l| l.contains("node-1 healed: counted by every node again after"));
    keys.write_all(b"3r").unwrap();
    let back = wait_for("the restart seen", &|l| l.contains("node-3 restarted: counted by every node again after"));
    assert!(back.ends_with("node-1 ready, node-2 ready, node-3 ready"), "{back}");
    keys.write_all(b"q").unwrap();
    let status = poll_until("arlen up to exit", Duration::from_secs(30), || up.try_wait().unwrap());
    assert!(status.success(), "arlen up exited with {status}");
}

#[test]
fn arlen_up_refuses_a_taken_port() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let output =
        Command::new(binary()).args(["up", "--nodes", "2", "--base-port", &port.to_string()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("port {port} is taken for HTTP (TCP)")), "{stderr}");
    assert!(stderr.contains("choose another --base-port"), "{stderr}");
}

#[test]
fn a_draining_node_is_shown_draining_to_peers_then_left() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<ArlenProcess> =
        (0..3).map(|i| start_node("gamma", i, &ports, &[("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "2")])).collect();
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    let mut draining = nodes.pop().unwrap();
    draining.signal("TERM");
    for node in &nodes {
        poll_until("peers to see gamma-3 draining", Duration::from_secs(5), || {
            (member_state(node, "gamma-3").as_deref() == Some("draining")).then_some(())
        });
        assert_eq!(observed(node), Some(2), "a draining node is not counted");
    }
    // Still serving while it drains, out of rotation.
    let ready = draining.get("/readyz");
    assert_eq!((ready.status, ready.header("X-Arlen-Draining")), (503, Some("1")));
    assert!(clusterz(&draining).unwrap().cluster.lifecycle.draining);
    for node in &nodes {
        poll_until("peers to see gamma-3 leave", Duration::from_secs(10), || {
            (member_state(node, "gamma-3").as_deref() == Some("left")).then_some(())
        });
    }
    assert_eq!(draining.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

/// A node killed and restarted at its address with its wall clock 45 s
/// behind (an NTP step, a VM restored from a snapshot; Debian's libfaketime)
/// ranks below the incarnation its peers keep as dead. It takes the
/// generation after it and is back within the crash bound — renewing itself
/// a handful of times, not thousands — and is never ready while excluded.
#[test]
fn a_restart_with_the_clock_45_s_behind_is_back_at_once_and_never_ready_while_excluded() {
    let (ports, mut nodes) = start_cluster("clock", 3);
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(15));
    }
    let generation_of = |node: &ArlenProcess, id: &str| -> Option<u64> {
        let doc = clusterz(node)?;
        doc.cluster
            .members
            .iter()
            .filter(|m| m.node_id == id && m.state == MemberState::Alive)
            .filter_map(|m| m.generation)
            .max()
    };
    let before = generation_of(&nodes[0], "clock-3").expect("clock-3 counted");
    let victim = nodes.pop().unwrap();
    victim.signal("KILL");
    for node in &nodes {
        wait_observed(node, 2, Duration::from_secs(10));
    }
    drop(victim);

    let port = ports[2];
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let vars = [
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", "clock"),
        ("ARLEN_CLUSTER_NODE_ID", "clock-3"),
        ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
        ("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds),
        ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
        // Debian's libfaketime preloaded into arlen itself (the `faketime`
        // wrapper forks, and killing it would leave the node running): the
        // loader expands `$LIB`. Only the wall clock goes back.
        ("LD_PRELOAD", "/usr/$LIB/faketime/libfaketime.so.1"),
        ("FAKETIME", "-45s"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let started = Instant::now();
    let port_text = port.to_string();
    let restarted =
        ArlenProcess::spawn(binary(), &["serve", "--port", &port_text, "--app-root", "/nonexistent"], &vars, port);
    // Until a peer counts the new incarnation (with it, a majority of
    // three), it must never say ready: a sample of its readiness, then the
    // peers' view (counting only grows here, so a ready sample followed by
    // no peer counting it was ready while excluded). The second peer learns
    // it by gossip a round later.
    let mut samples = 0;
    let back = loop {
        let ready = arlen_testkit::get(restarted.address(), "/readyz", &[]).ok().map(|r| r.status == 200);
        let counting = nodes.iter().filter(|n| generation_of(n, "clock-3").is_some_and(|g| g > before)).count();
        if ready.is_some() {
            samples += 1;
        }
        assert!(
            counting > 0 || ready != Some(true),
            "ready while no peer counts it (sample {samples}):\n{}",
            restarted.describe()
        );
        if counting == nodes.len() {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never back:\n{}", restarted.describe());
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut restarted = restarted;
    restarted.wait_live();
    wait_observed(&restarted, 3, Duration::from_secs(5));
    for node in &nodes {
        wait_observed(node, 3, Duration::from_secs(5));
    }
    let log = restarted.stderr();
    assert!(log.contains("taking the generation after it"), "{log}");
    let rejoins = log.matches("rejoined as a renewed identity").count();
    assert!(rejoins <= 3, "{rejoins} rejoin warnings:\n{log}");
    let renewals = arlen_testkit::get(restarted.address(), "/metrics", &[]).unwrap().text();
    let rejoined: f64 = renewals
        .lines()
        .find(|l| l.starts_with("arlen_gossip_rejoins_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(f64::NAN);
    assert!(rejoined <= 5.0, "renewed itself {rejoined} times");
    eprintln!("restart 45 s behind: counted by both peers after {back:?} ({samples} readiness samples before, none ready while no peer counted it), {rejoined} renewals");
}
