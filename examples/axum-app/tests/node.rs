//! The example application as two real processes gossiping on loopback: its
//! own route carries the cluster headers, `/readyz` follows quorum, and
//! SIGTERM drains it without a failed request.

use std::path::Path;
use std::time::Duration;

use arlen_testkit::{free_port, keep_sending, poll_until_explained, ArlenProcess};

fn start(index: usize, ports: &[u16]) -> ArlenProcess {
    let port = ports[index];
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let (port_text, node_id) = (port.to_string(), format!("shop-{}", index + 1));
    let mut node = ArlenProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_arlen-example-axum-app")),
        &[],
        &[
            ("ARLEN_PORT", &port_text),
            ("ARLEN_APP_ROOT", "/nonexistent"),
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", "shop"),
            ("ARLEN_CLUSTER_NODE_ID", &node_id),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "2"),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
            ("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds),
            ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
            ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "1"),
        ],
        port,
    );
    node.wait_live();
    node
}

fn wait_ready(node: &ArlenProcess, status: u16) {
    poll_until_explained(
        &format!("/readyz {status} on {}", node.port),
        Duration::from_secs(15),
        || (node.get("/readyz").status == status).then_some(()),
        || node.describe(),
    );
}

#[test]
fn the_application_is_a_node_its_routes_carry_headers_readiness_follows_quorum_and_it_drains() {
    let ports = [free_port(), free_port()];
    let mut first = start(0, &ports);
    let mut second = start(1, &ports);
    wait_ready(&first, 200);
    wait_ready(&second, 200);

    let hello = first.get("/hello");
    assert_eq!(hello.text(), "hello from my app\n");
    assert!(hello.has_exact_header("X-Arlen-Cluster-Status"), "{}", hello.head);
    assert_eq!(hello.header("X-Arlen-Cluster"), Some("shop"));
    assert_eq!(hello.header("X-Arlen-Cluster-Status"), Some("nominal"));
    assert_eq!(hello.header("X-Request-Id").map(str::len), Some(32));
    let missing = first.get("/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("X-Arlen-Cluster-Observed-Nodes"), Some("2"));
    assert_eq!(first.get("/clusterz").json()["coordination"]["membership_source"], "gossip");

    // Quorum lost: the survivor leaves rotation, its own routes say so.
    second.signal("KILL");
    wait_ready(&first, 503);
    assert_eq!(first.get("/hello").header("X-Arlen-Cluster-Status"), Some("degraded"));
    assert_eq!(first.get("/livez").status, 200, "liveness never depends on the cluster");
    // Back in rotation once the peer returns.
    drop(second);
    second = start(1, &ports);
    wait_ready(&first, 200);

    // SIGTERM: requests keep being answered until the listener closes.
    let address = first.address();
    let client = std::thread::spawn(move || keep_sending(address, "/hello", Duration::from_secs(30)));
    poll_until_explained(
        "traffic to flow",
        Duration::from_secs(10),
        || (first.get("/metrics").text().contains("arlen_http_requests_total")).then_some(()),
        || first.describe(),
    );
    first.signal("TERM");
    let tally = client.join().unwrap();
    assert!(tally.failed.is_empty(), "requests failed during the drain: {:#?}", tally.failed);
    assert!(tally.refused && tally.complete > 0, "{tally:?}");
    assert_eq!(first.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", first.stderr());
    assert!(first.stderr().contains("left the gossip cluster"), "{}", first.stderr());
    wait_ready(&second, 503);
}

#[test]
fn its_database_check_its_metric_its_cluster_view_and_its_hooks() {
    // The dependency: a real TCP service the test opens and closes.
    let database = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let database_addr = database.local_addr().unwrap().to_string();
    let port = free_port();
    let port_text = port.to_string();
    let mut node = ArlenProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_arlen-example-axum-app")),
        &[],
        &[
            ("ARLEN_PORT", &port_text),
            ("ARLEN_APP_ROOT", "/nonexistent"),
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", "shop"),
            ("ARLEN_CLUSTER_NODE_ID", "shop-db"),
            ("APP_DATABASE_ADDR", &database_addr),
        ],
        port,
    );
    node.wait_live();
    wait_ready(&node, 200);
    assert!(node.get("/readyz?verbose").text().contains("[+]database ok\n"));
    assert_eq!(node.get("/peers").text(), "shop-db sees 1 of 1 nodes (nominal); ready: true; members: shop-db=alive\n");
    for _ in 0..3 {
        node.get("/hello");
    }
    let metrics = node.get("/metrics").text();
    assert!(metrics.contains("# TYPE app_hello_requests_total counter\napp_hello_requests_total 3\n"), "{metrics}");
    assert!(metrics.contains("arlen_check_up{check=\"database\",kind=\"readiness\"} 1"), "{metrics}");

    // The database goes away: out of rotation, still alive, still serving.
    drop(database);
    wait_ready(&node, 503);
    let reason = node.get("/readyz/database").text();
    assert!(reason.starts_with(&format!("[-]database failed: {database_addr}:")), "{reason}");
    assert_eq!(node.get("/livez").status, 200);
    assert!(node.get("/peers").text().contains("ready: false"));
    // It comes back on the same address: back in rotation.
    let _database = std::net::TcpListener::bind(&database_addr).unwrap();
    wait_ready(&node, 200);

    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", node.stderr());
    let log = node.stderr();
    let before = log.find("app: stopping background work before the drain").expect("the before_drain hook ran");
    let after = log.find("app: left the cluster; buffers flushed").expect("the after_leave hook ran");
    let stopped = log.find("stopped").unwrap_or(0);
    assert!(before < after && stopped < after, "{log}");
}
