//! `arlen config`: effective values with provenance, masked secrets, exit 2.

use assert_cmd::Command;

fn arlen(app_root: &std::path::Path) -> Command {
    let mut command = Command::cargo_bin("arlen").unwrap();
    command.env_clear().arg("config").arg("--app-root").arg(app_root);
    command
}

#[test]
fn table_shows_value_and_source_for_every_key() {
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("config")).unwrap();
    std::fs::write(app.path().join("config/app.toml"), "[cluster]\nenabled = true\nexpectedNodes = 3\n").unwrap();
    let output = arlen(app.path())
        .env("ARLEN_CLUSTER_NAME", "alpha")
        .env("MOJOOBJC_SESSION_SECRET", "hunter2")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
            .to_owned()
    };
    assert!(line("cluster.name").contains("alpha") && line("cluster.name").ends_with("variable ARLEN_CLUSTER_NAME"));
    assert!(line("cluster.expectedNodes").ends_with("file config/app.toml:3:17"), "{}", line("cluster.expectedNodes"));
    assert!(line("cluster.observedNodes").ends_with("default (cluster.expectedNodes)"));
    assert!(line("cluster.observedNodes").contains(" 3 "));
    assert!(line("port").ends_with("default"));
    assert!(
        line("session.secret").contains("(configured)")
            && line("session.secret").ends_with("variable MOJOOBJC_SESSION_SECRET")
    );
    assert!(stderr.contains("warning: MOJOOBJC_SESSION_SECRET is a legacy variable name"), "{stderr}");
    for spec in arlen_config::KEYS {
        line(spec.key);
    }
}

#[test]
fn json_output_is_typed() {
    let app = tempfile::tempdir().unwrap();
    let output = arlen(app.path())
        .arg("--json")
        .env("ARLEN_SESSION_SECRET", "hunter2")
        .env("ARLEN_ENV", "production")
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["env"], "production");
    let setting = |key: &str| value["settings"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap().clone();
    assert_eq!(setting("port")["value"], 3000);
    assert_eq!(setting("cluster.enabled")["value"], false);
    assert_eq!(setting("logFormat")["value"], "json");
    assert_eq!(setting("session.secret")["value"], "(configured)");
    assert_eq!(setting("session.secret")["variable"], "ARLEN_SESSION_SECRET");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
}

#[test]
fn errors_are_listed_together_with_status_2() {
    let app = tempfile::tempdir().unwrap();
    let output = arlen(app.path())
        .env("ARLEN_PORT", "99999")
        .env("ARLEN_LOG_LEVEL", "loud")
        .env("MOJOOBJC_LISTEN_BACKLOG", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("3 errors"), "{stderr}");
    assert!(stderr.contains("variable ARLEN_PORT (key port): 99999 is out of range (must be 1..65535)"), "{stderr}");
    assert!(
        stderr.contains("variable ARLEN_LOG_LEVEL (key logLevel): expected one of debug, info, warn, error"),
        "{stderr}"
    );
    assert!(stderr.contains("variable MOJOOBJC_LISTEN_BACKLOG (key listenBacklog)"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn gossip_keygen_prints_a_key_the_configuration_accepts_and_config_never_shows_it() {
    let output = Command::cargo_bin("arlen").unwrap().args(["gossip", "keygen"]).output().unwrap();
    assert!(output.status.success());
    let key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(key.len(), 44, "base64 of 32 bytes: {key}");
    let other = Command::cargo_bin("arlen").unwrap().args(["gossip", "keygen"]).output().unwrap();
    assert_ne!(String::from_utf8(other.stdout).unwrap().trim(), key, "fresh every time");

    let app = tempfile::tempdir().unwrap();
    let output = arlen(app.path())
        .env("ARLEN_ENV", "production")
        .env("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip")
        .env("ARLEN_CLUSTER_GOSSIP_KEYS", &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains(&key), "the key is never printed");
    let line = stdout.lines().find(|l| l.starts_with("cluster.gossip.keys ")).unwrap();
    assert!(line.contains("(1 configured)"), "{line}");

    let refused = arlen(app.path())
        .env("ARLEN_ENV", "production")
        .env("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("arlen gossip keygen"));
}

#[test]
fn a_very_long_value_is_shown_shortened_and_never_panics() {
    let app = tempfile::tempdir().unwrap();
    let long = "n".repeat(70_000);
    let output = arlen(app.path()).env("ARLEN_CLUSTER_NAME", &long).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().find(|l| l.starts_with("cluster.name ")).unwrap();
    assert!(line.contains("(70000 characters; --json shows it whole)"), "{}", &line[..300.min(line.len())]);
    let json = arlen(app.path()).env("ARLEN_CLUSTER_NAME", &long).arg("--json").output().unwrap();
    assert!(json.status.success() && String::from_utf8_lossy(&json.stdout).contains(&long));
}
