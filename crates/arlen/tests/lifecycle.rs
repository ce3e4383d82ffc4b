//! Drain on SIGTERM, the second signal, and SIGHUP reload, on real processes.

use arlen_wire::documents::{ClusterDocument, ProbeDocument};
use arlen_wire::states::QuorumStatus;
use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, keep_sending, poll_until, ArlenProcess};

mod support;
use support::binary;

const CLUSTER: &[(&str, &str)] = &[
    ("ARLEN_CLUSTER_ENABLED", "1"),
    ("ARLEN_CLUSTER_NAME", "alpha"),
    ("ARLEN_CLUSTER_NODE_ID", "node-a"),
    ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
];

#[test]
fn drain_serves_every_request_sent_before_the_listener_closed() {
    let app = tempfile::tempdir().unwrap();
    let mut node = ArlenProcess::serve(
        binary(),
        app.path(),
        &[CLUSTER, &[("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "1"), ("ARLEN_SHUTDOWN_GRACEFUL_TIMEOUT_SECONDS", "5")]]
            .concat(),
    );
    node.wait_live();
    let address = node.address();
    let client = std::thread::spawn(move || keep_sending(address, "/", Duration::from_secs(30)));
    // Let traffic flow, then ask the node to stop.
    poll_until("some traffic", Duration::from_secs(10), || {
        arlen_testkit::get(address, "/metrics", &[])
            .ok()
            .and_then(|r| arlen_testkit::get(address, "/metrics", &[]).ok().map(|_| r))
            .and_then(|r| arlen_http_total(&r.text()).filter(|n| *n > 50.0))
    });
    node.signal("TERM");
    let tally = client.join().unwrap();
    assert!(tally.failed.is_empty(), "requests failed during the drain: {:#?}", tally.failed);
    assert!(tally.refused, "the client stopped only when the listener refused");
    assert!(tally.while_not_ready > 0, "traffic was still served while /readyz said 503: {tally:?}");
    assert!(tally.with_connection_close > 0, "kept-alive connections were told to close: {tally:?}");
    assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", node.stderr());
    let stderr = node.stderr();
    assert!(stderr.contains("draining: /readyz answers 503"), "{stderr}");
}

fn arlen_http_total(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix("arlen_http_requests_total ").and_then(|v| v.parse().ok()))
}

#[test]
fn a_second_signal_skips_the_drain_delay() {
    let app = tempfile::tempdir().unwrap();
    let mut node =
        ArlenProcess::serve(binary(), app.path(), &[CLUSTER, &[("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "60")]].concat());
    node.wait_live();
    node.signal("TERM");
    poll_until("draining", Duration::from_secs(10), || (node.get("/readyz").status == 503).then_some(()));
    assert_eq!(node.get("/livez").status, 200, "liveness holds while draining");
    let signalled = Instant::now();
    node.signal("INT");
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(20));
    assert!(node.stderr().contains("second signal: skipping the rest of the drain delay"), "{}", node.stderr());
}

#[test]
fn sighup_reloads_what_can_change_and_keeps_the_rest() {
    let app = tempfile::tempdir().unwrap();
    let config = app.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let write = |text: &str| std::fs::write(config.join("app.toml"), text).unwrap();
    write("[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 3\nobservedNodes = 2\n");
    let mut node = ArlenProcess::serve(binary(), app.path(), &[("ARLEN_CLUSTER_NODE_ID", "node-a")]);
    node.wait_live();
    assert_eq!(node.get("/").header("X-Arlen-Cluster-Status"), Some("degraded"));

    write("[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 2\nobservedNodes = 2\nquorumPolicy = \"majority\"\n[observability]\nreadinessRequiresClusterQuorum = true\n");
    node.signal("HUP");
    poll_until("reload applied", Duration::from_secs(10), || {
        (node.get("/").header("X-Arlen-Cluster-Status") == Some("nominal")).then_some(())
    });
    let quorum = node.get("/clusterz").document::<ClusterDocument>().cluster.quorum;
    assert_eq!((quorum.expected_nodes, quorum.policy.as_str()), (2, "majority"));
    assert!(node.get("/readyz?format=json").document::<ProbeDocument>().checks.cluster_quorum.required_for_readyz);

    // A broken file is rejected; the running configuration stays.
    write("[cluster]\nexpectedNodes = \"lots\"\n");
    node.signal("HUP");
    poll_until("rejection logged", Duration::from_secs(10), || {
        node.stderr().contains("configuration reload rejected, keeping the running configuration").then_some(())
    });
    assert!(node.stderr().contains("key cluster.expectedNodes"), "{}", node.stderr());
    assert_eq!(node.get("/clusterz").document::<ClusterDocument>().cluster.expected_nodes, 2);

    // Listener settings need a restart, and the log says so. (The port in the
    // file would not even count: the --port flag beats it.)
    let other_port = free_port();
    write(&format!(
        "port = {other_port}\nconnectionTimeoutSeconds = 7\n[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 2\nobservedNodes = 2\n"
    ));
    node.signal("HUP");
    poll_until("restart warning", Duration::from_secs(10), || {
        node.stderr().contains("these changes need a restart to take effect").then_some(())
    });
    let stderr = node.stderr();
    assert!(stderr.contains("\"connectionTimeoutSeconds\""), "{stderr}");
    assert!(!stderr.contains("\"port\""), "the flag keeps the port: {stderr}");
    assert_eq!(node.get("/livez").status, 200, "still on the old port");

    // Keys the old hand-kept list forgot: the registry says they need a restart, so the log does.
    let warned = node.stderr().matches("these changes need a restart").count();
    write(&format!(
        "port = {other_port}\nconnectionTimeoutSeconds = 7\n[observability]\nopsToken = \"0123456789abcdef0123456789abcdef\"\n[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 2\nobservedNodes = 2\n[cluster.etcd]\nprefix = \"/elsewhere/\"\n"
    ));
    node.signal("HUP");
    poll_until("a second restart warning", Duration::from_secs(10), || {
        (node.stderr().matches("these changes need a restart").count() > warned).then_some(())
    });
    let stderr = node.stderr();
    let line = stderr.lines().rev().find(|l| l.contains("these changes need a restart")).unwrap_or_default();
    assert!(line.contains("\"observability.opsToken\"") && line.contains("\"cluster.etcd.prefix\""), "{line}");
    assert!(!stderr.contains("0123456789abcdef0123456789abcdef"), "the token is never printed");
}

/// Writes `config/app.toml` with the given observed count.
fn write_cluster_config(app: &Path, observed: u32, extra: &str) {
    let config = app.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("app.toml"),
        format!("[cluster]\nenabled = true\nname = \"alpha\"\nexpectedNodes = 3\nobservedNodes = {observed}\n{extra}\n[observability]\nreadinessRequiresClusterQuorum = true\n"),
    )
    .unwrap();
}

#[test]
fn hysteresis_on_a_real_process_holds_readiness_through_the_grace() {
    let app = tempfile::tempdir().unwrap();
    write_cluster_config(app.path(), 3, "quorumLossGraceMs = 1500");
    let mut node = ArlenProcess::serve(binary(), app.path(), &[("ARLEN_CLUSTER_NODE_ID", "node-a")]);
    node.wait_live();
    assert_eq!(node.get("/readyz").status, 200);
    write_cluster_config(app.path(), 2, "quorumLossGraceMs = 1500");
    node.signal("HUP");
    poll_until("the loss to be seen", Duration::from_secs(10), || {
        (node.get("/").header("X-Arlen-Cluster-Status") == Some("degraded")).then_some(())
    });
    let seen = Instant::now();
    let ready = node.get("/readyz?format=json");
    if seen.elapsed() < Duration::from_millis(1000) {
        assert_eq!(ready.status, 200, "still ready inside the grace: {}", ready.text());
        assert!(ready.document::<ProbeDocument>().checks.cluster_quorum.pending.is_some(), "a transition pending");
    }
    poll_until("readiness to flip after the grace", Duration::from_secs(10), || {
        (node.get("/readyz").status == 503).then_some(())
    });
    assert!(seen.elapsed() >= Duration::from_millis(1000), "flipped too early: {:?}", seen.elapsed());
}

#[test]
fn a_wait_on_a_real_process_returns_when_the_state_arrives() {
    let app = tempfile::tempdir().unwrap();
    write_cluster_config(app.path(), 2, "");
    let mut node = ArlenProcess::serve(binary(), app.path(), &[("ARLEN_CLUSTER_NODE_ID", "node-a")]);
    node.wait_live();
    let address = node.address();
    let waiting = std::thread::spawn(move || {
        arlen_testkit::get(address, "/clusterz?wait_for_status=nominal&wait_for_nodes=%3E%3D3&timeout=20s", &[])
            .unwrap()
    });
    // Once the request waits (two active requests: it and this metrics read), make the state true.
    poll_until("the wait to be in flight", Duration::from_secs(10), || {
        let metrics = node.get("/metrics").text();
        arlen_http_active(&metrics).filter(|active| *active >= 2.0)
    });
    write_cluster_config(app.path(), 3, "");
    node.signal("HUP");
    let response = waiting.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.document::<ClusterDocument>().cluster.quorum.status, QuorumStatus::Nominal);
    assert_eq!(response.header("X-Arlen-Cluster-Status"), Some("nominal"));
    let timed_out = node.get("/clusterz?wait_for_status=partitioned&timeout=300ms");
    assert_eq!(timed_out.status, 408);
}

fn arlen_http_active(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix("arlen_http_requests_active ").and_then(|v| v.parse().ok()))
}

#[test]
fn sighup_with_a_file_nested_too_deep_rejects_it_and_keeps_running() {
    let app = tempfile::tempdir().unwrap();
    let config = app.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("app.plist"), "{ cluster = { enabled = YES; name = alpha; }; }").unwrap();
    let mut node = ArlenProcess::serve(binary(), app.path(), &[("ARLEN_CLUSTER_NODE_ID", "node-a")]);
    node.wait_live();
    // 40 KB of nesting: once enough to overflow the parser's stack.
    let deep = format!(
        "{{ cluster = {{ enabled = YES; name = alpha; }}; x = {}1{}; }}",
        "(".repeat(20_000),
        ")".repeat(20_000)
    );
    std::fs::write(config.join("app.plist"), deep).unwrap();
    node.signal("HUP");
    poll_until("the deep file rejected", Duration::from_secs(10), || {
        node.stderr().contains("nest deeper than 64 levels").then_some(())
    });
    assert_eq!(node.get("/livez").status, 200, "still running: {}", node.stderr());
    assert_eq!(node.get("/clusterz").document::<ClusterDocument>().cluster.name, "alpha");
}
