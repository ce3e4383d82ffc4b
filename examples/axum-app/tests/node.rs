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
