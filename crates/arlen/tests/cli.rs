//! The binary as a command-line tool: completions and a man page from the
//! clap definitions, `drill list --json`, quiet ends on closed pipes, and
//! what `arlen serve` says about its logging and its environment.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use arlen_testkit::{poll_until_explained, ArlenProcess};

mod support;
use support::binary;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).env_clear().output().unwrap()
}

#[test]
fn completions_for_each_shell_name_every_subcommand_and_bash_parses_its_own() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).unwrap();
        for sub in ["serve", "up", "triage", "drill", "config", "completions", "man"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arlen.bash");
    std::fs::write(&path, run(&["completions", "bash"]).stdout).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    // Loaded, it completes `arlen dr` to `drill`.
    let script = format!(
        "source {}; COMP_WORDS=(arlen dr); COMP_CWORD=1; COMP_LINE='arlen dr'; COMP_POINT=8; _arlen arlen dr arlen; echo \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let completed = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&completed.stdout).trim(), "drill", "{completed:?}");
}

#[test]
fn the_man_page_is_roff_for_every_command() {
    let output = run(&["man"]);
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH arlen 1"), "{page}");
    for sub in ["serve", "triage", "drill", "completions"] {
        assert!(page.contains(sub), "{sub} missing from the man page");
    }
}

#[test]
fn drill_list_json_names_every_scenario_with_its_budgets() {
    let output = run(&["drill", "list", "--json"]);
    assert!(output.status.success());
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let scenarios = list["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().filter_map(|s| s["scenario"].as_str()).collect();
    for expected in ["crash", "churn", "rolling-restart", "partition", "split"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let table = String::from_utf8(run(&["drill", "list"]).stdout).unwrap();
    for scenario in scenarios {
        assert!(!scenario["budgets"].as_array().unwrap().is_empty(), "{scenario}");
        assert!(table.contains(scenario["scenario"].as_str().unwrap()));
    }
}

/// A pipe whose reading end is already closed: every write to it fails.
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    write
}

#[test]
fn a_closed_pipe_never_turns_into_a_panic() {
    for args in [&["config"][..], &["drill", "list"], &["completions", "bash"], &["man"], &["gossip", "keygen"]] {
        let output = Command::new(binary())
            .args(args)
            .env_clear()
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "arlen {args:?} with stdout closed: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A configuration error with standard error closed still exits 2.
    let output = Command::new(binary())
        .args(["serve"])
        .env_clear()
        .env("ARLEN_PORT", "http")
        .stdout(Stdio::null())
        .stderr(Stdio::from(closed_pipe()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn rust_log_overrides_the_level_and_a_misspelled_variable_is_named() {
    let root = tempfile::tempdir().unwrap();
    // logLevel error would hide the start-up lines; RUST_LOG brings them back.
    let mut node = ArlenProcess::serve(
        binary(),
        root.path(),
        &[("ARLEN_LOG_LEVEL", "error"), ("RUST_LOG", "arlen_node=info"), ("ARLEN_CLUSTER_EXPECTED_NODE", "3")],
    );
    node.wait_live();
    let log = poll_until_explained(
        "the start-up line and the RUST_LOG line in the log",
        Duration::from_secs(10),
        || {
            let log = node.stderr();
            (log.contains("listening on") && log.contains("log filter from RUST_LOG")).then_some(log)
        },
        || node.stderr(),
    );
    assert!(
        log.contains("variable ARLEN_CLUSTER_EXPECTED_NODE is not a configuration variable and is ignored; did you mean ARLEN_CLUSTER_EXPECTED_NODES?"),
        "{log}"
    );
}

#[test]
fn protoc_comes_from_a_crate_not_from_the_machine() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(config.contains(r#"PROTOC = { value = "scripts/protoc", relative = true"#), "{config}");
    // The vendored protoc (36.x), not Debian's (3.21): found without any
    // system package, so a machine with only a Rust toolchain builds.
    let bare = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/uname", bare.path().join("uname")).unwrap();
    let output = Command::new(root.join("scripts/protoc")).arg("--version").env("PATH", bare.path()).output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.starts_with("libprotoc 36."),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
