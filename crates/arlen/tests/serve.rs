//! `arlen serve` as a real process on a free loopback port, read as raw bytes.

use arlen_wire::documents::ClusterDocument;
use std::net::TcpListener;
use std::time::Duration;

use arlen_testkit::{free_port, ArlenProcess};

mod support;
use support::binary;

const DONE_WHEN: &[(&str, &str)] = &[
    ("ARLEN_CLUSTER_ENABLED", "1"),
    ("ARLEN_CLUSTER_NAME", "alpha"),
    ("ARLEN_CLUSTER_NODE_ID", "node-a"),
    ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
    ("ARLEN_CLUSTER_OBSERVED_NODES", "2"),
];

#[test]
fn healthz_shows_cluster_headers_with_exact_casing() {
    let app = tempfile::tempdir().unwrap();
    let mut node = ArlenProcess::serve(binary(), app.path(), DONE_WHEN);
    node.wait_live();
    let response = node.get("/healthz");
    assert_eq!(response.status, 200);
    let expected = [
        ("X-Arlen-Cluster", "alpha".to_owned()),
        ("X-Arlen-Node", "node-a".to_owned()),
        ("X-Arlen-Worker-Pid", node.pid().to_string()),
        ("X-Arlen-Cluster-Status", "degraded".to_owned()),
        ("X-Arlen-Cluster-Observed-Nodes", "2".to_owned()),
        ("X-Arlen-Cluster-Expected-Nodes", "3".to_owned()),
    ];
    for (name, value) in expected {
        let sent = response.headers.iter().find(|(n, _)| n == name);
        assert_eq!(sent.map(|(_, v)| v.as_str()), Some(value.as_str()), "{name} in:\n{}", response.head);
    }
    let root = node.get("/");
    assert_eq!(root.text(), "arlen node node-a (cluster alpha)\n");
    assert!(root.has_exact_header("X-Arlen-Cluster-Status"));
    let clusterz: ClusterDocument = node.get("/clusterz").document();
    assert_eq!(clusterz.cluster.worker_pid, node.pid());
    assert_eq!(clusterz.coordination.membership_source, "static_config");
    assert!(node.stderr().contains(&format!("listening on http://127.0.0.1:{}", node.port)), "{}", node.stderr());
}

#[test]
fn legacy_variables_work_and_warn_once() {
    let app = tempfile::tempdir().unwrap();
    let mut node = ArlenProcess::serve(
        binary(),
        app.path(),
        &[("MOJOOBJC_CLUSTER_ENABLED", "YES"), ("MOJOOBJC_CLUSTER_NAME", "legacy"), ("ARLEN_CLUSTER_NODE_ID", "")],
    );
    node.wait_live();
    assert_eq!(node.get("/").header("X-Arlen-Cluster"), Some("legacy"));
    let stderr = node.stderr();
    assert_eq!(
        stderr.matches("MOJOOBJC_CLUSTER_NAME is a legacy variable name; use ARLEN_CLUSTER_NAME").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("MOJOOBJC_CLUSTER_ENABLED is a legacy").count(), 1, "{stderr}");
}

#[test]
fn configuration_files_in_every_format_are_read() {
    for (file, text) in [
        ("app.plist", "{\n  cluster = { enabled = YES; name = fromplist; expectedNodes = 2; };\n}\n"),
        ("app.toml", "[cluster]\nenabled = true\nname = \"fromtoml\"\nexpectedNodes = 2\n"),
        ("app.json", r#"{"cluster": {"enabled": "yes", "name": "fromjson", "expectedNodes": 2}}"#),
    ] {
        let app = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(app.path().join("config")).unwrap();
        std::fs::write(app.path().join("config").join(file), text).unwrap();
        let mut node = ArlenProcess::serve(binary(), app.path(), &[]);
        node.wait_live();
        let response = node.get("/clusterz");
        let name = response.document::<ClusterDocument>().cluster.name;
        assert_eq!(format!("from{}", file.rsplit('.').next().unwrap()), name);
        assert_eq!(response.header("X-Arlen-Cluster-Expected-Nodes"), Some("2"));
    }
}

#[test]
fn three_bad_variables_are_reported_together_with_status_2_and_nothing_bound() {
    let app = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = ArlenProcess::spawn(
        binary(),
        &["serve", "--port", &port.to_string(), "--app-root", &app.path().display().to_string()],
        &[
            ("ARLEN_CLUSTER_EXPECTED_NODES", "abc"),
            ("ARLEN_CLUSTER_ENABLED", "perhaps"),
            ("ARLEN_MAX_BODY_BYTES", "12abc"),
        ],
        port,
    );
    let status = node.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2));
    let stderr = node.stderr();
    assert!(stderr.contains("3 errors"), "{stderr}");
    for variable in ["ARLEN_CLUSTER_EXPECTED_NODES", "ARLEN_CLUSTER_ENABLED", "ARLEN_MAX_BODY_BYTES"] {
        assert!(stderr.contains(&format!("variable {variable}")), "{variable} in {stderr}");
    }
    assert!(!stderr.contains("listening on"), "{stderr}");
    TcpListener::bind(("127.0.0.1", port)).expect("the port was never bound");
}

#[test]
fn bad_file_is_reported_with_line_and_column() {
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("config/environments")).unwrap();
    std::fs::write(app.path().join("config/app.plist"), "{\n  port = 3000\n  host = x;\n}\n").unwrap();
    std::fs::write(app.path().join("config/environments/production.toml"), "[cluster]\nexpectedNodes = \"many\"\n")
        .unwrap();
    let output = std::process::Command::new(binary())
        .args(["serve", "--env", "production", "--app-root"])
        .arg(app.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config/app.plist:2:"), "{stderr}");
    assert!(stderr.contains("config/environments/production.toml:2:17: key cluster.expectedNodes"), "{stderr}");
}

#[test]
fn sigterm_and_sigint_stop_gracefully_with_status_0() {
    for signal in ["TERM", "INT"] {
        let app = tempfile::tempdir().unwrap();
        let mut node = ArlenProcess::serve(binary(), app.path(), &[("ARLEN_SHUTDOWN_GRACEFUL_TIMEOUT_SECONDS", "5")]);
        node.wait_live();
        node.signal(signal);
        let status = node.wait_exit(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "SIG{signal}; stderr:\n{}", node.stderr());
        assert!(node.stderr().contains(&format!("signal=\"SIG{signal}\"")), "{}", node.stderr());
    }
}

#[test]
fn flags_beat_variables_and_port_in_use_is_a_clear_error() {
    let app = tempfile::tempdir().unwrap();
    let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let mut node = ArlenProcess::spawn(
        binary(),
        &["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--app-root", &app.path().display().to_string()],
        &[("ARLEN_PORT", "1")],
        port,
    );
    let status = node.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    assert!(node.stderr().contains(&format!("cannot listen on 127.0.0.1:{port}")), "{}", node.stderr());
}

#[test]
fn help_is_there_for_every_command() {
    for args in [&["--help"][..], &["serve", "--help"], &["config", "--help"]] {
        let output = std::process::Command::new(binary()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: arlen"), "{text}");
    }
    let serve_help = std::process::Command::new(binary()).args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&serve_help.stdout);
    for flag in ["--host", "--port", "--env", "--app-root"] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
}
