//! Membership on a real etcd (Debian's etcd-server, started by the tests on
//! free loopback ports): registration, crash, graceful stop, etcd outage and
//! recovery, a three-member etcd losing one and two members, duplicate ids.

use arlen_wire::documents::ClusterDocument;
use arlen_wire::states::{MemberState, QuorumStatus};
use std::path::Path;
use std::time::{Duration, Instant};

use arlen_testkit::{poll_until, ArlenProcess, EtcdCluster};

mod support;
use support::binary;

const TTL_SECONDS: u64 = 3;

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

fn clusterz(node: &ArlenProcess) -> ClusterDocument {
    node.cluster_document().unwrap_or_else(|| panic!("no /clusterz document\n{}", node.describe()))
}

fn status(node: &ArlenProcess) -> String {
    node.cluster_document().map(|doc| doc.cluster.quorum.status.to_string()).unwrap_or_default()
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
    assert_eq!(doc.coordination.membership_source, "etcd");
    assert!(doc.coordination.source_health.ok);
    assert_eq!(doc.cluster.members.len(), 3);
    assert_eq!(nodes[0].get("/readyz").status, 200);

    let victim = nodes.pop().unwrap();
    victim.signal("KILL");
    let limit = Duration::from_secs(TTL_SECONDS + 1);
    for node in &nodes {
        let took = wait_status(node, "degraded", Duration::from_secs(TTL_SECONDS + 5));
        eprintln!("kill -9 seen after {took:?}");
        assert!(took <= limit, "took {took:?}, more than the lease TTL + 1 s");
        assert_eq!(node.get("/readyz").status, 503);
        let dead = clusterz(node).cluster.members.into_iter().find(|m| m.node_id == "kv-3").unwrap();
        assert_eq!(dead.state, MemberState::Dead);
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
            doc.cluster.members.iter().any(|m| m.node_id == "kg-3" && m.state == MemberState::Left).then_some(())
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
        let health = clusterz(node).coordination.source_health;
        assert!(!health.ok);
        assert!(health.detail.contains("etcd"), "{health:?}");
        assert_eq!(node.get("/readyz").status, 503);
        assert_eq!(node.get("/livez").status, 200);
    }
    etcd.start_member(0);
    etcd.wait_healthy(Duration::from_secs(30));
    for node in &nodes {
        let took = wait_status(node, "nominal", Duration::from_secs(20));
        eprintln!("recovery after etcd returned: {took:?}");
        assert!(clusterz(node).coordination.source_health.ok);
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
                clusterz(node).coordination.source_health.detail,
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
    assert!(clusterz(&first).coordination.source_health.ok);
    assert_eq!(clusterz(&first).cluster.observed_nodes, 1);
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

/// Base64 (etcd's JSON gateway takes keys and values in base64).
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// POSTs JSON to etcd's v3 gateway (what a rogue writer with etcd access could do).
fn etcd_post(etcd: &EtcdCluster, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = arlen_testkit::send_raw(etcd.client_address(0), request.as_bytes()).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

fn put_member(etcd: &EtcdCluster, key: &str, value: &serde_json::Value, lease: Option<&str>) {
    let mut body = serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.to_string().as_bytes()) });
    if let Some(lease) = lease {
        body["lease"] = serde_json::Value::String(lease.to_owned());
    }
    etcd_post(etcd, "/v3/kv/put", &body);
}

fn rejected_records(node: &ArlenProcess, reason: &str) -> f64 {
    let text = node.get("/metrics").text();
    arlen_http::metrics::sample_value(&text, &format!("arlen_etcd_rejected_records_total{{reason=\"{reason}\"}}"))
        .unwrap_or(0.0)
}

#[test]
fn keys_without_a_lease_naming_another_node_or_an_unknown_state_are_not_counted() {
    let etcd = EtcdCluster::start(1);
    let node = start_node(&etcd, "rogue", "rogue-1");
    wait_status(&node, "degraded", Duration::from_secs(15));
    let lease =
        etcd_post(&etcd, "/v3/lease/grant", &serde_json::json!({ "TTL": 60 }))["ID"].as_str().unwrap().to_owned();
    let record = |node_id: &str, state: &str| {
        serde_json::json!({
            "node_id": node_id, "generation": 1, "http_url": "http://127.0.0.1:1",
            "started_utc": "2026-12-01T00:00:00.000Z", "state": state
        })
    };
    let prefix = "/arlen/clusters/rogue/members/";
    put_member(&etcd, &format!("{prefix}ghost-1"), &record("ghost-1", "alive"), None);
    put_member(&etcd, &format!("{prefix}ghost-2"), &record("rogue-1", "alive"), Some(&lease));
    put_member(&etcd, &format!("{prefix}ghost-3"), &record("ghost-3", "zombie"), Some(&lease));
    for reason in ["no_lease", "wrong_node_id", "unknown_state"] {
        poll_until(&format!("a {reason} record to be refused"), Duration::from_secs(10), || {
            (rejected_records(&node, reason) >= 1.0).then_some(())
        });
    }
    let doc = clusterz(&node);
    assert_eq!(doc.cluster.observed_nodes, 1, "{:?}", doc.cluster.members);
    let ids: Vec<&str> = doc.cluster.members.iter().map(|m| m.node_id.as_str()).collect();
    assert_eq!(ids, ["rogue-1"]);
    assert!(node.stderr().contains("etcd key under the member prefix is not counted"));

    // Control: a proper leased registration counts, so the writes above were seen.
    put_member(&etcd, &format!("{prefix}ghost-4"), &record("ghost-4", "alive"), Some(&lease));
    poll_until("a valid registration to count", Duration::from_secs(10), || {
        (clusterz(&node).cluster.observed_nodes == 2).then_some(())
    });
    // A counted member overwritten with a record that does not qualify stops counting.
    put_member(&etcd, &format!("{prefix}ghost-4"), &record("ghost-4", "alive"), None);
    poll_until("the overwritten member to stop counting", Duration::from_secs(10), || {
        (clusterz(&node).cluster.observed_nodes == 1).then_some(())
    });
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans, usage) in [
            ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()], ExtendedKeyUsagePurpose::ServerAuth),
            ("client", vec!["arlen-node".to_owned()], ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn https_endpoints_work_with_a_ca_bundle_and_a_client_certificate() {
    let certs = Certificates::make();
    let etcd = EtcdCluster::start_tls(
        1,
        arlen_testkit::EtcdTls {
            ca_file: certs.path("ca.pem").into(),
            server_cert_file: certs.path("server.pem").into(),
            server_key_file: certs.path("server.key").into(),
        },
    );
    let endpoints = etcd.endpoints();
    assert!(endpoints.starts_with("https://"), "{endpoints}");
    let start = |node_id: &str, client_certificate: bool| {
        let (ca, cert, key) = (certs.path("ca.pem"), certs.path("client.pem"), certs.path("client.key"));
        let mut vars = vec![
            ("ARLEN_CLUSTER_ENABLED", "1".to_owned()),
            ("ARLEN_CLUSTER_NAME", "secure".to_owned()),
            ("ARLEN_CLUSTER_NODE_ID", node_id.to_owned()),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "1".to_owned()),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd".to_owned()),
            ("ARLEN_CLUSTER_ETCD_ENDPOINTS", endpoints.clone()),
            ("ARLEN_CLUSTER_ETCD_CA_FILE", ca),
        ];
        if client_certificate {
            vars.push(("ARLEN_CLUSTER_ETCD_CERT_FILE", cert));
            vars.push(("ARLEN_CLUSTER_ETCD_KEY_FILE", key));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut node = ArlenProcess::serve(binary(), Path::new("/nonexistent"), &vars);
        node.wait_live();
        node
    };
    let trusted = start("secure-1", true);
    wait_status(&trusted, "nominal", Duration::from_secs(15));
    assert!(clusterz(&trusted).coordination.source_health.ok);

    // etcd checks client certificates: a node without one cannot register and says so.
    let anonymous = start("secure-2", false);
    let detail = poll_until("the node without a client certificate to report why", Duration::from_secs(15), || {
        let doc = clusterz(&anonymous);
        let health = doc.coordination.source_health;
        (!health.ok && doc.cluster.quorum.status == QuorumStatus::Partitioned && health.detail.contains("last error"))
            .then_some(health.detail)
    });
    eprintln!("without a client certificate: {detail}");
    assert_eq!(clusterz(&trusted).cluster.observed_nodes, 1, "the anonymous node never registered");
}
