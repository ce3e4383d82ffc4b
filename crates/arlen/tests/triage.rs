//! `arlen triage` and the fault endpoint against real gossip clusters, put
//! into each state through `/_arlen/faults`.

use arlen_wire::documents::ClusterDocument;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use arlen_testkit::{free_port, poll_until, poll_until_explained, send_raw, ArlenProcess};

mod support;
use support::binary;

const TOKEN: &str = "drill-token-drill-token-drill-token";

fn start_cluster(cluster: &str, size: usize, expected: usize, extra: &[(&str, &str)]) -> Vec<ArlenProcess> {
    let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let expected = expected.to_string();
    let nodes: Vec<ArlenProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let node_id = format!("{cluster}-{}", i + 1);
            let mut vars = vec![
                ("ARLEN_CLUSTER_ENABLED", "1"),
                ("ARLEN_CLUSTER_NAME", cluster),
                ("ARLEN_CLUSTER_NODE_ID", node_id.as_str()),
                ("ARLEN_CLUSTER_EXPECTED_NODES", expected.as_str()),
                ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
                ("ARLEN_CLUSTER_GOSSIP_SEEDS", seeds.as_str()),
                ("ARLEN_CLUSTER_FAULT_INJECTION_ENABLED", "1"),
                ("ARLEN_OPS_TOKEN", TOKEN),
            ];
            vars.extend_from_slice(extra);
            let mut node = ArlenProcess::spawn(
                binary(),
                &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"],
                &vars,
                *port,
            );
            node.wait_live();
            node
        })
        .collect();
    let size = size as u64;
    for node in &nodes {
        poll_until_explained(
            "convergence",
            Duration::from_secs(15),
            || {
                (u64::from(node.get("/clusterz").document::<ClusterDocument>().cluster.observed_nodes) == size)
                    .then_some(())
            },
            || nodes.iter().map(ArlenProcess::describe).collect(),
        );
    }
    nodes
}

fn faults(node: &ArlenProcess, method: &str, token: Option<&str>, body: &str) -> arlen_testkit::RawResponse {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} /_arlen/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_raw(node.address(), request.as_bytes()).unwrap()
}

/// Cuts `node` off from everyone, both ways.
fn isolate(node: &ArlenProcess) {
    let response = faults(node, "PUT", Some(TOKEN), r#"{"rules": [{"direction": "both"}]}"#);
    assert_eq!(response.status, 200, "{}", response.text());
}

fn triage(url: &str, extra: &[&str]) -> (i32, String) {
    let output = Command::new(binary()).arg("triage").arg(url).args(extra).output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_fault_endpoint_needs_the_flag_and_the_token_and_validates_rules() {
    let nodes = start_cluster("fe", 2, 2, &[]);
    let node = &nodes[0];
    for token in [None, Some("wrong")] {
        let response = faults(node, "GET", token, "");
        assert_eq!(response.status, 404, "no trace without the token");
        assert!(response.has_exact_header("X-Arlen-Cluster"), "an ordinary application 404");
    }
    let listing = faults(node, "GET", Some(TOKEN), "");
    assert_eq!(listing.status, 200);
    assert_eq!(listing.json()["rules"], serde_json::json!([]));
    let bad = faults(node, "PUT", Some(TOKEN), r#"{"rules": [{"direction": "sideways"}]}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("rules[0].direction"), "{}", bad.text());
    let bad = faults(node, "PUT", Some(TOKEN), r#"{"rules": [{"direction": "both", "drop_percent": 101}]}"#);
    assert!(bad.text().contains("rules[0]: drop_percent must be 0..100"), "{}", bad.text());
    isolate(node);
    assert_eq!(faults(node, "GET", Some(TOKEN), "").json()["rules"][0]["direction"], "both");
    poll_until("isolated node alone", Duration::from_secs(10), || {
        (node.get("/clusterz").document::<ClusterDocument>().cluster.observed_nodes == 1).then_some(())
    });
    assert_eq!(faults(node, "DELETE", Some(TOKEN), "").json()["rules"], serde_json::json!([]));
    poll_until("healed", Duration::from_secs(10), || {
        (node.get("/clusterz").document::<ClusterDocument>().cluster.observed_nodes == 2).then_some(())
    });

    // A node without fault injection has no such endpoint, token or not.
    let port = free_port();
    let mut plain = ArlenProcess::spawn(
        binary(),
        &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"],
        &[("ARLEN_OPS_TOKEN", TOKEN), ("ARLEN_CLUSTER_ENABLED", "1")],
        port,
    );
    plain.wait_live();
    assert_eq!(faults(&plain, "GET", Some(TOKEN), "").status, 404);
}

#[test]
fn triage_reports_nominal_then_a_partition_then_an_unreachable_node() {
    let nodes = start_cluster("tr", 3, 3, &[]);
    let url = format!("http://127.0.0.1:{}", nodes[0].port);
    let (code, text) = triage(&url, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("tr-")).count(), 3, "discovers all three from one URL:\n{text}");
    assert!(text.contains("findings: none"), "{text}");

    isolate(&nodes[2]);
    let observed = |node: &ArlenProcess| node.cluster_document().map(|doc| u64::from(doc.cluster.observed_nodes));
    poll_until("the partition seen from both sides", Duration::from_secs(10), || {
        (observed(&nodes[0]) == Some(2) && observed(&nodes[1]) == Some(2) && observed(&nodes[2]) == Some(1))
            .then_some(())
    });
    let (code, text) = triage(&url, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("nodes disagree about membership, a likely partition"), "{text}");
    assert!(text.contains("tr-3 sees {tr-3}"), "{text}");
    assert!(text.contains("tr-1, tr-2 see {tr-1, tr-2}"), "{text}");
    assert!(text.contains("partition: {tr-1, tr-2} | {tr-3}"), "the partition is named:\n{text}");
    assert!(text.contains("who sees whom:"), "the matrix is drawn when views differ:\n{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("tr-3 ") && l.contains("self")).unwrap_or_default();
    assert!(!row.contains("alive"), "tr-3 sees nobody else alive: {row}\n{text}");

    let (code, json) = triage(&url, &["--json"]);
    assert_eq!(code, 2);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["exit_code"], 2);
    assert!(report["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "disagreement"));

    faults(&nodes[2], "DELETE", Some(TOKEN), "");
    nodes[1].signal("KILL");
    let down = format!("tr-2 (http://127.0.0.1:{}) did not answer", nodes[1].port);
    let text = poll_until("tr-2 seen dead by its peers", Duration::from_secs(10), || {
        let (code, text) = triage(&url, &[]);
        (code == 3 && text.contains(&down) && text.contains("its peers see it: tr-1: dead")).then_some(text)
    });
    let line = text.lines().find(|l| l.starts_with("tr-2 ")).unwrap_or_default();
    assert!(
        line.contains(&format!("http://127.0.0.1:{}", nodes[1].port)) && line.contains(" no "),
        "by id in the table: {line}\n{text}"
    );
}

#[test]
fn triage_reports_degraded_and_quorum_required_but_unmet() {
    // Three nodes that expect four: every node degraded, all agree.
    let nodes = start_cluster("tq", 3, 4, &[("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1")]);
    let (code, text) = triage(&format!("http://127.0.0.1:{}", nodes[0].port), &["--samples", "2"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tq-1 reports degraded: 3 of 4 expected observed"), "{text}");
    assert!(text.contains("tq-2 requires quorum for readiness and does not have it (policy all"), "{text}");
    assert!(!text.contains("disagree"), "{text}");
}

/// A hostile "node": it answers every `/clusterz` with a document naming
/// ever more members (each a new URL on itself), node ids carrying terminal
/// escape sequences, and a few members of another cluster and another scheme.
fn hostile_node(
    template_clusterz: serde_json::Value,
    template_readyz: serde_json::Value,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        // Bounded: at most 5 000 connections.
        for stream in listener.incoming().take(5_000) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let _ = std::io::BufReader::new(&stream).read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = if path.ends_with("/clusterz") {
                let mut doc = template_clusterz.clone();
                doc["cluster"]["node_id"] = format!("evil-{n}\u{1b}[2J\u{1b}]0;owned\u{7}").into();
                let member = |i: usize, url: String| {
                    serde_json::json!({"node_id": format!("m{i}"), "generation": 1, "http_url": url, "gossip_address": null,
                                       "state": "alive", "self": false, "last_heard_ms": 1})
                };
                let mut members: Vec<serde_json::Value> =
                    (0..20).map(|i| member(i, format!("http://127.0.0.1:{port}/n{n}-{i}"))).collect();
                members.push(member(99, "gopher://127.0.0.1:70".to_owned()));
                doc["cluster"]["members"] = serde_json::Value::Array(members);
                doc.to_string()
            } else if path.contains("/readyz") {
                template_readyz.to_string()
            } else {
                "ok\n".to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, served)
}

#[test]
fn triage_stays_bounded_and_escapes_what_a_hostile_node_says() {
    let mut real = ArlenProcess::serve(
        binary(),
        Path::new("/nonexistent"),
        &[("ARLEN_CLUSTER_ENABLED", "1"), ("ARLEN_CLUSTER_NAME", "alpha")],
    );
    real.wait_live();
    let clusterz = real.get("/clusterz").json();
    let readyz = arlen_testkit::get(real.address(), "/readyz?format=json", &[]).unwrap().json();
    let (port, served) = hostile_node(clusterz, readyz);
    let started = std::time::Instant::now();
    let output = Command::new(binary())
        .args([
            "triage",
            &format!("http://127.0.0.1:{port}"),
            "--max-nodes",
            "10",
            "--samples",
            "1",
            "--deadline-ms",
            "10000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(started.elapsed() < Duration::from_secs(15), "triage ended in time");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{7}'), "control characters escaped: {stdout:?}");
    assert!(stdout.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7}"), "shown escaped: {stdout}");
    assert!(stdout.contains("discovery stopped at 10 nodes"), "{stdout}");
    assert!(
        stdout.contains("1 member URLs are not http(s)") || stdout.contains("member URLs are not http(s)"),
        "{stdout}"
    );
    let reads = served.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reads < 100, "discovery was bounded: {reads} requests to the hostile node");
    assert_eq!(output.status.code(), Some(2), "left-out members make the verdict not nominal");
}

#[test]
fn triage_follows_restricted_members_only_with_the_details_token() {
    let details_token = "details-token-0123456789abcdef0123456789";
    let nodes = start_cluster(
        "td",
        2,
        2,
        &[
            ("ARLEN_ENV", "production"),
            ("ARLEN_CLUSTER_GOSSIP_ALLOW_UNAUTHENTICATED", "YES"),
            ("ARLEN_DETAILS_TOKEN", details_token),
        ],
    );
    let url = format!("http://127.0.0.1:{}", nodes[0].port);
    let (code, text) = triage(&url, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("td-")).count(), 1, "no member URL to follow:\n{text}");
    assert!(text.contains("td-1 withheld member details"), "{text}");
    assert!(text.contains("set ARLEN_DETAILS_TOKEN"), "{text}");
    let output =
        Command::new(binary()).args(["triage", &url]).env("ARLEN_DETAILS_TOKEN", details_token).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("td-")).count(),
        2,
        "both nodes, discovered with the token:\n{text}"
    );
    assert!(!text.contains("withheld"), "{text}");
    assert!(!text.contains(details_token), "the token is never printed:\n{text}");
}

#[test]
fn maintenance_says_whether_a_node_may_stop_and_triage_turns_it_into_an_exit_status() {
    let nodes = start_cluster(
        "tm",
        3,
        3,
        &[("ARLEN_CLUSTER_QUORUM_POLICY", "majority"), ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "60")],
    );
    let url = format!("http://127.0.0.1:{}", nodes[0].port);
    let verdict = nodes[0].get("/clusterz?maintenance=true");
    assert_eq!(verdict.status, 200, "{}", verdict.text());
    let document: ClusterDocument = verdict.document();
    let maintenance = document.maintenance.expect("the verdict");
    assert!(maintenance.can_stop, "{maintenance:?}");
    assert_eq!(maintenance.remaining_nodes, 2);
    assert_eq!(
        document.cluster.quorum.status,
        arlen_wire::states::QuorumStatus::Nominal,
        "the usual document, plus the verdict"
    );
    let (code, text) = triage(&url, &["--can-stop", "tm-2"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("tm-2 may stop now: yes — stopping tm-2 leaves 2 nodes; policy majority needs 2"), "{text}");

    // tm-3 drains (and stays draining for its 60 s drain delay): now nobody else may stop.
    nodes[2].signal("TERM");
    poll_until_explained(
        "tm-1 to see tm-3 draining",
        Duration::from_secs(10),
        || (nodes[0].get("/clusterz?maintenance=true").status == 412).then_some(()),
        || nodes.iter().map(ArlenProcess::describe).collect(),
    );
    let refused = nodes[0].get("/clusterz?maintenance=true").json();
    let reason = refused["maintenance"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("would leave 1 node; policy majority needs 2: quorum would be lost"), "{reason}");
    assert!(reason.contains("tm-3 draining"), "{reason}");
    let (code, text) = triage(&url, &["--can-stop", "tm-1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tm-1 may stop now: no"), "{text}");
    let (code, text) = triage(&url, &["--can-stop", "nobody"]);
    assert_eq!(code, 3, "{text}");

    let bad = nodes[0].get("/clusterz?maintenance=perhaps");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("bad request parameter maintenance"), "{}", bad.text());
    let combined = nodes[0].get("/clusterz?maintenance=true&wait_for_nodes=3");
    assert_eq!(combined.status, 400, "{}", combined.text());
}
