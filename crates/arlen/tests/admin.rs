//! The admin listener and gated member details, on real `arlen serve`
//! processes: the admin port serves the probes, `/clusterz`, `/metrics` and
//! the operations endpoint apart from application traffic (which cannot
//! starve it); with it set, the operations endpoint exists only there; with
//! `observability.detailsAccess = restricted`, member addresses, URLs and
//! generations reach only the admin port and the details token's bearers.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use arlen_testkit::{free_port, get, poll_until_explained, ArlenProcess};

mod support;
use support::{binary, hold_every_session};

const OPS_TOKEN: &str = "ops-0123456789abcdef0123456789abcdef";
const DETAILS_TOKEN: &str = "details-0123456789abcdef0123456789ab";

fn admin_node(env: &str, extra: &[(&str, &str)]) -> (ArlenProcess, SocketAddr) {
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let mut vars = vec![
        ("ARLEN_ENV", env),
        ("ARLEN_ADMIN_LISTEN", admin.as_str()),
        ("ARLEN_CLUSTER_ENABLED", "YES"),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
        ("ARLEN_CLUSTER_FAULT_INJECTION_ENABLED", "YES"),
        ("ARLEN_OPS_TOKEN", OPS_TOKEN),
        ("ARLEN_DETAILS_TOKEN", DETAILS_TOKEN),
        ("ARLEN_LOG_FORMAT", "text"),
    ];
    vars.extend_from_slice(extra);
    let mut node = ArlenProcess::serve(binary(), Path::new("/nonexistent"), &vars);
    node.wait_live();
    let admin: SocketAddr = admin.parse().unwrap();
    poll_until_explained(
        "the admin listener answers",
        Duration::from_secs(10),
        || get(admin, "/livez", &[]).ok().filter(|r| r.status == 200),
        || node.describe(),
    );
    (node, admin)
}

#[test]
fn the_admin_listener_serves_operability_and_owns_the_operations_endpoint() {
    let (node, admin) = admin_node("development", &[]);
    let bearer = format!("Bearer {OPS_TOKEN}");
    for (path, status) in [("/livez", 200), ("/readyz", 200), ("/healthz", 200), ("/clusterz", 200), ("/metrics", 200)]
    {
        let response = get(admin, path, &[]).unwrap();
        assert_eq!(response.status, status, "admin {path}: {}", response.head);
        assert!(response.header("X-Arlen-Cluster-Status").is_some(), "admin {path} carries the cluster headers");
    }
    let faults = get(admin, "/_arlen/faults", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(faults.status, 200, "{}", faults.head);
    assert!(faults.json()["rules"].is_array(), "{}", faults.text());
    assert_eq!(get(admin, "/", &[]).unwrap().status, 404, "no application on the admin port");
    // On the service port the operations endpoint does not exist: the path is the application's.
    let service = node.address();
    let hidden = get(service, "/_arlen/faults", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(hidden.status, 404, "{}", hidden.head);
    assert!(!hidden.text().contains("rules"), "no trace of the fault rules: {}", hidden.text());
    // The probes are still on the service port too.
    assert_eq!(get(service, "/readyz", &[]).unwrap().status, 200);
}

#[test]
fn application_traffic_holding_every_service_session_does_not_reach_the_admin_listener() {
    let (node, admin) = admin_node(
        "development",
        &[
            ("ARLEN_MAX_HTTP_SESSIONS", "8"),
            ("ARLEN_HEAD_TIMEOUT_MS", "30000"),
            ("ARLEN_CONNECTION_TIMEOUT_SECONDS", "60"),
        ],
    );
    let service = node.address();
    // Long-polls hold every service session; 40 slow heads load the
    // over-limit path as well.
    let polls = hold_every_session(&node, admin, 8);
    let slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = TcpStream::connect(service).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream
        })
        .collect();
    for _ in 0..20 {
        for path in ["/livez", "/readyz", "/clusterz", "/metrics"] {
            let response = get(admin, path, &[]).unwrap();
            assert_eq!(response.status, 200, "admin {path} while the service port is full: {}", response.head);
        }
    }
    drop(slow);
    drop(polls);
}

#[test]
fn restricted_details_reach_only_the_admin_listener_and_the_token() {
    let (node, admin) = admin_node(
        "production",
        &[("ARLEN_CLUSTER_GOSSIP_ALLOW_UNAUTHENTICATED", "YES"), ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "0")],
    );
    let service = node.address();
    let members = |document: &serde_json::Value| document["cluster"]["members"].as_array().cloned().unwrap_or_default();
    let public = get(service, "/clusterz", &[]).unwrap().json();
    assert_eq!(public["details"], "restricted", "{public}");
    // The contract's fields stay.
    for field in ["enabled", "name", "node_id", "expected_nodes", "observed_nodes", "worker_pid", "mode", "quorum"] {
        assert!(!public["cluster"][field].is_null(), "cluster.{field} is still there: {public}");
    }
    assert!(!members(&public).is_empty(), "{public}");
    for member in members(&public) {
        assert!(member["node_id"].is_string() && member["state"].is_string(), "{member}");
        for withheld in ["http_url", "gossip_address", "generation"] {
            assert!(member[withheld].is_null(), "{withheld} withheld: {member}");
        }
    }
    let probe = get(service, "/readyz?format=json", &[]).unwrap().json();
    assert_eq!(probe["details"], "restricted", "{probe}");
    assert!(probe["checks"]["cluster_quorum"]["observed_nodes"].is_number(), "{probe}");
    let bearer = format!("Bearer {DETAILS_TOKEN}");
    for (address, headers) in [(service, vec![("Authorization", bearer.as_str())]), (admin, vec![])] {
        let full = get(address, "/clusterz", &headers).unwrap().json();
        assert_eq!(full["details"], "full", "{full}");
        assert!(members(&full).iter().all(|m| m["http_url"].is_string() && m["generation"].is_number()), "{full}");
    }
    let wrong = get(service, "/clusterz", &[("Authorization", "Bearer details-0123456789abcdef0123456789aX")]).unwrap();
    assert_eq!(wrong.json()["details"], "restricted");
}
