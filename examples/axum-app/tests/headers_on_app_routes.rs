//! The example application, run as a process: its own route carries the
//! cluster headers, and the reserved endpoints are the runtime's.

use std::path::Path;

use arlen_testkit::ArlenProcess;

#[test]
fn application_routes_carry_cluster_headers() {
    let app_root = tempfile::tempdir().unwrap();
    let port = arlen_testkit::free_port();
    let port_text = port.to_string();
    let mut node = ArlenProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_arlen-example-axum-app")),
        &[],
        &[
            ("ARLEN_PORT", &port_text),
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", "shop"),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
            ("ARLEN_CLUSTER_OBSERVED_NODES", "3"),
            ("ARLEN_APP_ROOT", &app_root.path().display().to_string()),
        ],
        port,
    );
    node.wait_live();
    let hello = node.get("/hello");
    assert_eq!(hello.text(), "hello from my app\n");
    assert!(hello.has_exact_header("X-Arlen-Cluster-Status"), "{}", hello.head);
    assert_eq!(hello.header("X-Arlen-Cluster"), Some("shop"));
    assert_eq!(hello.header("X-Arlen-Cluster-Status"), Some("nominal"));
    let missing = node.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.has_exact_header("X-Arlen-Cluster-Observed-Nodes"));
    assert_eq!(node.get("/clusterz").json()["cluster"]["name"], "shop");
}
