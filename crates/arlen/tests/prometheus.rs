//! `/metrics` as Prometheus sees it, and what `deploy/` ships for it:
//!
//! - the classic text format passes `promtool check metrics` (names, help,
//!   `_total` counters, units), the OpenMetrics one is what Prometheus asks
//!   for and parses (with counter types intact), and the `aln_` names of the
//!   release before come back only behind `observability.legacyMetricNames`;
//! - the alert rules pass `promtool check rules` and their unit tests
//!   (`promtool test rules`), and every metric named by a rule or by the
//!   Grafana dashboard is one a real node exposes;
//! - a real Prometheus server scrapes three real nodes and an alert fires
//!   when one is killed.
//!
//! `scripts/provision --tests` installs Debian's `prometheus` (the server and
//! promtool).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arlen_testkit::{free_port, get, poll_until_explained, ArlenProcess};

mod support;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

fn gossip_node(cluster: &str, index: usize, ports: &[u16], extra: &[(&str, &str)]) -> ArlenProcess {
    let mut vars = vec![("ARLEN_CLUSTER_QUORUM_POLICY", "majority")];
    vars.extend_from_slice(extra);
    support::gossip_node(cluster, index, ports, &vars)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/provision --tests installs Debian's prometheus)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Names of the families in classic exposition text (from `# TYPE`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned)).collect()
}

#[test]
fn both_expositions_are_what_prometheus_expects_and_old_names_need_the_key() {
    let ports = [free_port()];
    let node = gossip_node("prom", 0, &ports, &[]);
    node.get("/anything");
    let classic = get(node.address(), "/metrics", &[]).unwrap();
    assert_eq!(classic.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = classic.text();
    let (ok, said) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}\n---\n{text}");
    let names = families(&text);
    for expected in [
        "arlen_http_requests_total",
        "arlen_http_responses_total",
        "arlen_http_request_duration_seconds",
        "arlen_cluster_ready",
        "arlen_build_info",
        "arlen_gossip_suspicions_total",
        "arlen_membership_source_up",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(names.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains("aln_"), "old names without the key:\n{text}");
    assert!(!text.contains("# EOF"), "{text}");
    // Probes are counted, not timed: the histogram has the one application request.
    assert!(text.contains("arlen_http_request_duration_seconds_count 1\n"), "{text}");

    let open = get(
        node.address(),
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")],
    )
    .unwrap();
    assert_eq!(open.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let om = open.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE arlen_http_requests counter\narlen_http_requests_total "), "{om}");
    assert!(om.contains("# TYPE process_cpu_seconds counter\n"), "{om}");

    let ports = [free_port()];
    let legacy = gossip_node("prom-legacy", 0, &ports, &[("ARLEN_LEGACY_METRIC_NAMES", "YES")]);
    let text = get(legacy.address(), "/metrics", &[]).unwrap().text();
    let (ok, said) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok && said.trim().is_empty(), "promtool check metrics, legacy names:\n{said}");
    let names = families(&text);
    for name in names.iter().filter(|n| n.starts_with("arlen_") && *n != "arlen_build_info") {
        let old = name.replacen("arlen_", "aln_", 1);
        assert!(names.contains(&old), "{old} missing beside {name}");
    }
    assert!(!names.contains("aln_build_info"));
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let rules = deploy("prometheus/arlen-alerts.yaml");
    let (ok, said) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "{said}");
    println!("{said}");
    let tests = deploy("prometheus/arlen-alerts.test.yaml");
    let (ok, said) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok && said.contains("SUCCESS"), "{said}");
    let config = deploy("prometheus/prometheus.yaml");
    let (ok, said) = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(ok, "{said}");
}

/// Metric names in a PromQL expression (ours and the process ones).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("arlen_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_exists() {
    let ports = [free_port()];
    let node = gossip_node("prom-names", 0, &ports, &[]);
    node.get("/");
    let text = get(node.address(), "/metrics", &[]).unwrap().text();
    let exposed = families(&text);
    let exists = |name: &str| {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        exposed.contains(name) || exposed.contains(base)
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/arlen-cluster.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(deploy("prometheus/arlen-alerts.yaml")).unwrap();
    exprs.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ").map(str::to_owned)));
    let mut checked = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(exists(&name), "`{name}` (in `{expr}`) is not exposed by a node:\n{exposed:#?}");
            checked += 1;
        }
    }
    println!("{checked} metric references in {} expressions, all exposed", exprs.len());
}

/// A Prometheus server on a free loopback port. Killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The shipped rules, with each `for:` cut to one evaluation: their
        // timing is what the unit tests check; here, that they fire on what
        // real nodes expose.
        let rules = std::fs::read_to_string(deploy("prometheus/arlen-alerts.yaml")).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| if l.trim_start().starts_with("for: ") { "        for: 1s".to_owned() } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("arlen-alerts.yaml"), rules).unwrap();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [arlen-alerts.yaml]\n\
             scrape_configs:\n  - job_name: arlen\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yaml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yaml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/provision --tests installs it)");
        Self { child, port, _dir: dir }
    }

    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let response = get(address, path, &[]).ok()?;
        (response.status == 200).then(|| response.json())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_three_nodes_and_an_alert_fires_when_one_is_killed() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<ArlenProcess> = (0..3).map(|i| gossip_node("prom-real", i, &ports, &[])).collect();
    let prometheus = Prometheus::start(&ports);
    // Every target scraped, in OpenMetrics (Prometheus asks for it first).
    poll_until_explained(
        "Prometheus to scrape all three nodes",
        Duration::from_secs(30),
        || {
            let targets = prometheus.api("/api/v1/targets")?;
            let active = targets["data"]["activeTargets"].as_array()?.clone();
            (active.len() == 3 && active.iter().all(|t| t["health"] == "up")).then_some(())
        },
        || format!("{:?}\n{}", prometheus.api("/api/v1/targets"), prometheus.log()),
    );
    let ready = poll_until_explained(
        "every node ready in Prometheus' view",
        Duration::from_secs(30),
        || {
            let result = prometheus.api("/api/v1/query?query=sum(arlen_cluster_ready)")?;
            let value = result["data"]["result"][0]["value"][1].as_str()?.to_owned();
            (value == "3").then_some(value)
        },
        || format!("{:?}", prometheus.api("/api/v1/query?query=arlen_cluster_ready")),
    );
    println!("sum(arlen_cluster_ready) = {ready}");
    // Counter types survived the scrape (the classic parser of the old
    // exposition lost them).
    let metadata = prometheus.api("/api/v1/metadata?metric=arlen_http_requests_total").unwrap_or_default();
    let metadata_om = prometheus.api("/api/v1/metadata?metric=arlen_http_requests").unwrap_or_default();
    let typed = [&metadata, &metadata_om].iter().any(|m| {
        m["data"]
            .as_object()
            .is_some_and(|d| d.values().filter_map(|v| v.as_array()).flatten().any(|e| e["type"] == "counter"))
    });
    assert!(typed, "arlen_http_requests is not a counter to Prometheus: {metadata} {metadata_om}");

    let victim = nodes.remove(2);
    drop(victim); // SIGKILL
    let killed = format!("127.0.0.1:{}", ports[2]);
    let firing = poll_until_explained(
        "ArlenNodeDown firing for the killed node, ArlenClusterDegraded for the others",
        Duration::from_secs(40),
        || {
            let alerts = prometheus.api("/api/v1/alerts")?;
            let firing: Vec<(String, String)> = alerts["data"]["alerts"]
                .as_array()?
                .iter()
                .filter(|a| a["state"] == "firing")
                .map(|a| {
                    (
                        a["labels"]["alertname"].as_str().unwrap_or_default().to_owned(),
                        a["labels"]["instance"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let down = firing.iter().any(|(name, instance)| name == "ArlenNodeDown" && *instance == killed);
            let degraded = firing.iter().filter(|(name, _)| name == "ArlenClusterDegraded").count() == 2;
            (down && degraded).then_some(firing)
        },
        || format!("{:?}", prometheus.api("/api/v1/alerts")),
    );
    println!("firing after the kill: {firing:?}");
    // The survivors keep quorum (majority of three): no quorum alert.
    assert!(!firing.iter().any(|(name, _)| name == "ArlenQuorumLost"), "{firing:?}");
}
