//! Membership on a real etcd (Debian's etcd-server, started by the tests on
//! free loopback ports): registration, crash, graceful stop, etcd outage and
//! recovery, a three-member etcd losing one and two members, duplicate ids.

use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::{poll_until, ArlenProcess, EtcdCluster};

const TTL_SECONDS: u64 = 3;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_arlen"))
}

fn start_node(etcd: &EtcdCluster, cluster: &str, node_id: &str) -> ArlenProcess {
    let endpoints = etcd.endpoints();
    let ttl = TTL_SECONDS.to_string();
    let mut node = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", cluster),
            ("ARLEN_CLUSTER_NODE_ID", node_id),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"),
            ("ARLEN_CLUSTER_ETCD_ENDPOINTS", &endpoints),
            ("ARLEN_CLUSTER_ETCD_LEASE_TTL_SECONDS", &ttl),
            ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
        ],
    );
    node.wait_live();
    node
}

fn start_cluster(etcd: &EtcdCluster, cluster: &str) -> Vec<ArlenProcess> {
    let nodes: Vec<ArlenProcess> = (1..=3).map(|i| start_node(etcd, cluster, &format!("{cluster}-{i}"))).collect();
    for node in &nodes {
        wait_status(node, "nominal", Duration::from_secs(15));
    }
    nodes
}

fn clusterz(node: &ArlenProcess) -> serde_json::Value {
    node.get("/clusterz").json()
}

fn status(node: &ArlenProcess) -> String {
    clusterz(node)["cluster"]["quorum"]["status"].as_str().unwrap_or_default().to_owned()
}

/// Waits for `status` and returns how long it took.
fn wait_status(node: &ArlenProcess, wanted: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    poll_until(&format!("node on {} to be {wanted}", node.port), timeout, || (status(node) == wanted).then_some(()));
    started.elapsed()
}

#[test]
fn nodes_register_and_a_killed_node_disappears_within_the_lease() {
    let etcd = EtcdCluster::start(1);
    let mut nodes = start_cluster(&etcd, "kv");
    let doc = clusterz(&nodes[0]);
    assert_eq!(doc["coordination"]["membership_source"], "etcd");
    assert_eq!(doc["coordination"]["source_health"]["ok"], true);
    assert_eq!(doc["cluster"]["members"].as_array().unwrap().len(), 3);
    assert_eq!(nodes[0].get("/readyz").status, 200);

    let victim = nodes.pop().unwrap();
    victim.signal("KILL");
    let limit = Duration::from_secs(TTL_SECONDS + 1);
    for node in &nodes {
        let took = wait_status(node, "degraded", Duration::from_secs(TTL_SECONDS + 5));
        eprintln!("kill -9 seen after {took:?}");
        assert!(took <= limit, "took {took:?}, more than the lease TTL + 1 s");
        assert_eq!(node.get("/readyz").status, 503);
        let dead = clusterz(node)["cluster"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node_id"] == "kv-3")
            .cloned()
            .unwrap();
        assert_eq!(dead["state"], "dead");
    }
}

#[test]
fn a_graceful_stop_is_seen_at_once() {
    let etcd = EtcdCluster::start(1);
    let mut nodes = start_cluster(&etcd, "kg");
    let mut leaving = nodes.pop().unwrap();
    leaving.signal("TERM");
    let signalled = Instant::now();
    for node in &nodes {
        wait_status(node, "degraded", Duration::from_secs(5));
    }
    let took = signalled.elapsed();
    eprintln!("graceful stop seen by both peers after {took:?}");
    assert!(took <= Duration::from_millis(500), "took {took:?}");
    assert_eq!(leaving.wait_exit(Duration::from_secs(15)).code(), Some(0));
    for node in &nodes {
        poll_until("kg-3 listed as left", Duration::from_secs(5), || {
            let doc = clusterz(node);
            doc["cluster"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["node_id"] == "kg-3" && m["state"] == "left")
                .then_some(())
        });
    }
}

#[test]
fn losing_etcd_partitions_every_node_and_its_return_heals_them_without_restart() {
    let mut etcd = EtcdCluster::start(1);
    let nodes = start_cluster(&etcd, "ko");
    etcd.stop_member(0);
    for node in &nodes {
        let took = wait_status(node, "partitioned", Duration::from_secs(TTL_SECONDS + 5));
        eprintln!("etcd loss seen after {took:?}");
        assert!(took <= Duration::from_secs(TTL_SECONDS + 1), "took {took:?}");
        let health = &clusterz(node)["coordination"]["source_health"];
        assert_eq!(health["ok"], false);
        assert!(health["detail"].as_str().unwrap().contains("etcd"), "{health}");
        assert_eq!(node.get("/readyz").status, 503);
        assert_eq!(node.get("/livez").status, 200);
    }
    etcd.start_member(0);
    etcd.wait_healthy(Duration::from_secs(30));
    for node in &nodes {
        let took = wait_status(node, "nominal", Duration::from_secs(20));
        eprintln!("recovery after etcd returned: {took:?}");
        assert_eq!(clusterz(node)["coordination"]["source_health"]["ok"], true);
    }
}

#[test]
fn a_three_member_etcd_survives_one_loss_and_not_two() {
    let mut etcd = EtcdCluster::start(3);
    let nodes = start_cluster(&etcd, "k3");
    etcd.stop_member(0);
    // Several lease periods with one etcd member down: nothing changes.
    let until = Instant::now() + Duration::from_secs(2 * TTL_SECONDS);
    while Instant::now() < until {
        for node in &nodes {
            assert_eq!(
                status(node),
                "nominal",
                "one etcd member down must change nothing: {}\n{}",
                clusterz(node)["coordination"]["source_health"],
                node.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd.stop_member(1);
    for node in &nodes {
        let took = wait_status(node, "partitioned", Duration::from_secs(TTL_SECONDS + 10));
        eprintln!("etcd quorum loss seen after {took:?}");
    }
}

#[test]
fn a_second_process_with_the_same_node_id_is_refused() {
    let etcd = EtcdCluster::start(1);
    let first = start_node(&etcd, "kd", "kd-1");
    wait_status(&first, "degraded", Duration::from_secs(10));
    let endpoints = etcd.endpoints();
    let port = arlen_testkit::free_port();
    let mut second = ArlenProcess::spawn(
        binary(),
        &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"],
        &[
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", "kd"),
            ("ARLEN_CLUSTER_NODE_ID", "kd-1"),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"),
            ("ARLEN_CLUSTER_ETCD_ENDPOINTS", &endpoints),
        ],
        port,
    );
    let status = second.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    let stderr = second.stderr();
    assert!(stderr.contains("node id kd-1 is already registered in etcd"), "{stderr}");
    assert!(stderr.contains("refusing to register a second one"), "{stderr}");
    // The first one is untouched.
    assert_eq!(clusterz(&first)["coordination"]["source_health"]["ok"], true);
    assert_eq!(clusterz(&first)["cluster"]["observed_nodes"], 1);
}

#[test]
fn arlen_up_with_etcd_runs_its_own_etcd_and_stops_it() {
    use std::io::{BufRead as _, BufReader};
    let base = arlen_testkit::free_port_range(3);
    let mut up = std::process::Command::new(binary())
        .args(["up", "--nodes", "3", "--base-port", &base.to_string(), "--source", "etcd", "--refresh-ms", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut etcd_pid = None;
    let mut nominal = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        assert!(Instant::now() < deadline, "no nominal table in time");
        if let Some(rest) = line.trim_start().strip_prefix("etcd ") {
            etcd_pid = rest.split("pid ").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned);
        }
        if line.starts_with("NODE") {
            nominal = 0;
        } else if line.starts_with("node-") && line.split_whitespace().nth(2) == Some("nominal") {
            nominal += 1;
            if nominal == 3 {
                break;
            }
        }
    }
    assert_eq!(nominal, 3);
    let etcd_pid = etcd_pid.expect("arlen up names its etcd");
    assert!(std::process::Command::new("kill").args(["-INT", &up.id().to_string()]).status().unwrap().success());
    let status = poll_until("arlen up to exit", Duration::from_secs(30), || up.try_wait().unwrap());
    assert!(status.success());
    poll_until("its etcd to be gone", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{etcd_pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z")).then_some(())
    });
}
