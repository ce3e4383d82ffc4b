//! Every drill scenario end-to-end on a real local cluster, with short
//! durations; each must pass its budget. An impossible budget must fail.

use std::process::Command;

mod support;
use support::binary;

/// Runs a drill and returns its exit code and parsed report.
fn drill(scenario: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    // Ports claimed for this test process, so a parallel test cannot take
    // one between the drill choosing it and a node binding it.
    let base_port = arlen_testkit::free_port_range(3).to_string();
    let output = Command::new(binary())
        .args(["drill", "run", scenario, "--hold-ms", "1500", "--base-port", &base_port, "--report"])
        .arg(dir.path())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let report = std::fs::read_to_string(dir.path().join("report.json"))
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(serde_json::Value::Null);
    if report != serde_json::Value::Null {
        let markdown = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(markdown.starts_with(&format!("# Drill `{scenario}`")), "{markdown}");
        let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(">fault window</text>") && svg.contains("node-1"), "{svg}");
        assert!(svg.contains("fill=\"#ffffff\""), "an opaque background: {svg}");
        let windows = report["fault_windows_ms"].as_array().unwrap().len();
        assert_eq!(svg.matches("<title>fault ").count(), windows, "one shaded window per fault");
        let events = report["events"].as_array().unwrap().len();
        assert_eq!(svg.matches("<g><title>").count(), events, "a marker per event");
    }
    (output.status.code().unwrap_or(-1), report, stdout)
}

fn assert_passes(scenario: &str, extra: &[&str]) -> serde_json::Value {
    let (code, report, output) = drill(scenario, extra);
    assert_eq!(code, 0, "drill {scenario} failed:\n{output}");
    assert_eq!(report["passed"], true);
    for figure in report["figures"].as_array().unwrap() {
        assert_eq!(figure["within_budget"], true, "{figure}");
    }
    assert!(report["samples"].as_u64().unwrap() > 10, "sampled throughout");
    report
}

fn figure(report: &serde_json::Value, name: &str) -> f64 {
    report["figures"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()["value"].as_f64().unwrap()
}

#[test]
fn drill_crash() {
    let report = assert_passes("crash", &[]);
    assert!(figure(&report, "detection_ms") > 0.0);
    let timeline = report["timeline"].as_array().unwrap();
    assert!(
        timeline[2].as_array().unwrap().iter().any(|c| c["state"]["status"] == "unreachable"),
        "the victim went down"
    );
    assert!(timeline[0].as_array().unwrap().iter().any(|c| c["state"]["status"] == "degraded"), "a survivor saw it");
}

/// A rolling restart keeps the others in rotation only when one node down
/// keeps quorum: majority (or a grace longer than a restart).
const MAJORITY: [&str; 2] = ["--set", "cluster.quorumPolicy=majority"];

#[test]
fn drill_churn() {
    let report = assert_passes("churn", &MAJORITY);
    assert_eq!(figure(&report, "graceful_failed_requests"), 0.0);
    assert_eq!(figure(&report, "graceful_unserved_ms"), 0.0);
    assert_eq!(report["fault_windows_ms"].as_array().unwrap().len(), 6, "a window per restart: 3 graceful, 3 hard");
    assert!(report["requests_ok"].as_u64().unwrap() > 0, "traffic flowed");
}

#[test]
fn drill_partition() {
    assert_passes("partition", &[]);
}

#[test]
fn drill_split() {
    let report = assert_passes("split", &[]);
    let events: Vec<String> =
        report["events"].as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap().to_owned()).collect();
    assert!(events.iter().any(|e| e.starts_with("majority ready, minority not after")), "{events:?}");
}

#[test]
fn drill_one_way() {
    assert_passes("one-way", &[]);
}

#[test]
fn drill_flaky_link() {
    let report = assert_passes("flaky-link", &[]);
    assert_eq!(figure(&report, "spurious_transitions"), 0.0);
}

#[test]
fn drill_crash_on_etcd() {
    assert_passes("crash", &["--source", "etcd"]);
}

#[test]
fn drill_churn_on_etcd() {
    // A node restarted after kill -9 finds its predecessor's key still
    // leased: it waits the lease out instead of refusing to start.
    let report = assert_passes("churn", &["--source", "etcd", MAJORITY[0], MAJORITY[1]]);
    assert!(figure(&report, "kill_rejoin_worst_ms").is_finite());
    assert_eq!(figure(&report, "graceful_failed_requests"), 0.0);
}

#[test]
fn drill_etcd_outage() {
    let report = assert_passes("etcd-outage", &["--source", "etcd"]);
    assert!(figure(&report, "recovery_ms") > 0.0);
}

#[test]
fn drill_with_an_impossible_budget_fails() {
    let (code, report, output) = drill("crash", &["--budget", "detection_ms=1"]);
    assert_eq!(code, 1, "{output}");
    assert_eq!(report["passed"], false);
    assert!(output.contains("OVER BUDGET"), "{output}");
}

#[test]
fn drill_refuses_unknown_scenarios_and_budgets() {
    let output = Command::new(binary()).args(["drill", "run", "meteor"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scenario \"meteor\""));
    let output = Command::new(binary()).args(["drill", "run", "crash", "--budget", "speed=1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no budget \"speed\""));
    let output = Command::new(binary()).args(["drill", "run", "partition", "--source", "etcd"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let listing = Command::new(binary()).args(["drill", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    for scenario in ["crash", "churn", "rolling-restart", "partition", "split", "one-way", "flaky-link", "etcd-outage"]
    {
        assert!(text.contains(scenario), "{text}");
    }
    // A budget that does not apply is absent, not 0.
    assert!(!text.contains("etcd 0)"), "{text}");
    let partition = text.lines().skip_while(|l| !l.starts_with("partition")).nth(1).unwrap_or_default();
    assert!(partition.contains("detection_ms ≤ 1500") && !partition.contains("etcd"), "{partition}");
    let output =
        Command::new(binary()).args(["drill", "run", "etcd-outage", "--budget", "detection_ms=1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "etcd-outage does not apply to gossip");
}

#[test]
fn drill_rolling_restart() {
    let (_, _, output) = drill("rolling-restart", &["--set", "cluster.quorumPolicy=majorty"]);
    assert!(output.contains("cluster.quorumPolicy") && output.contains("majorty"), "a bad --set is named: {output}");
    let (_, _, output) = drill("rolling-restart", &["--set", "cluster.quorumPolisy=majority"]);
    assert!(output.contains("did you mean cluster.quorumPolicy?"), "{output}");

    let (code, report, output) = drill("rolling-restart", &MAJORITY);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("quorumPolicy=majority: 2 of 3 nodes keep quorum"), "the policy explained: {output}");
    assert_eq!(figure(&report, "failed_requests"), 0.0);
    assert_eq!(figure(&report, "unserved_ms"), 0.0);
    assert_eq!(figure(&report, "permits_refused"), 0.0, "a stop permit before each restart, all granted");
    assert!(output.contains("stop permit granted for node-3"), "{output}");
    assert!(report["requests_ok"].as_u64().unwrap() > 0, "traffic flowed");
    let events: Vec<String> =
        report["events"].as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap().to_owned()).collect();
    let nodes = report["nodes"].as_u64().unwrap();
    for node in 1..=nodes {
        assert!(events.iter().any(|e| e == &format!("graceful restart of node-{node} (SIGTERM, drain)")), "{events:?}");
    }
    assert!(!events.iter().any(|e| e.contains("kill -9")), "graceful only: {events:?}");
}

/// Under the contract's default (`all`, no grace) every node leaves rotation
/// while one restarts: the drill must fail, counting the time no node was
/// ready and every request a load balancer would have answered 503 — it
/// used to skip those and pass while the whole service was down.
#[test]
fn drill_rolling_restart_under_all_fails_and_a_grace_longer_than_a_restart_passes() {
    let (code, report, output) = drill("rolling-restart", &[]);
    assert_eq!(code, 1, "the service was down; the drill must fail:\n{output}");
    assert!(output.contains("quorumPolicy=all: every one of 3 nodes is needed"), "{output}");
    assert!(figure(&report, "unserved_ms") > 0.0, "{output}");
    assert!(figure(&report, "failed_requests") > 0.0, "{output}");
    assert!(report["unserved_ticks"].as_u64().unwrap() > 0);
    assert_eq!(figure(&report, "permits_refused"), 3.0, "no node may stop under all: {output}");
    let failures: Vec<&str> = report["failures"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(failures.iter().any(|f| f.contains("no node ready")), "{failures:?}");

    // A grace longer than a restart keeps the others ready — though quorum
    // is lost meanwhile, so the stop permits stay refused (their budget is
    // waived here to show the rest).
    let (code, report, output) =
        drill("rolling-restart", &["--set", "cluster.quorumLossGraceMs=20000", "--budget", "permits_refused=3"]);
    assert_eq!(code, 0, "a grace longer than a restart keeps the others ready:\n{output}");
    assert_eq!(figure(&report, "unserved_ms"), 0.0);
    assert_eq!(figure(&report, "failed_requests"), 0.0);
}

/// Through a real load balancer (haproxy, started by the drill,
/// health-checking `/readyz`): failed requests are what its clients saw.
#[test]
fn drill_rolling_restart_through_haproxy() {
    let (code, report, output) = drill("rolling-restart", &["--via", "haproxy", MAJORITY[0], MAJORITY[1]]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("traffic through haproxy at http://127.0.0.1:"), "{output}");
    assert_eq!(figure(&report, "failed_requests"), 0.0);
    assert!(report["requests_ok"].as_u64().unwrap() > 50, "traffic flowed through haproxy: {output}");

    let (code, report, output) = drill("rolling-restart", &["--via", "haproxy"]);
    assert_eq!(code, 1, "under quorumPolicy=all haproxy has no node to send to during each restart:\n{output}");
    let failures: Vec<&str> = report["failures"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(failures.iter().any(|f| f.contains("haproxy: HTTP 503")), "{failures:?}");
}
