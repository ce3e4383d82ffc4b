//! The shell and curl lines of `README.md` and `docs/RUNBOOK.md`, run
//! against real nodes, read from the documents themselves (there is no
//! second copy to drift): every ```sh block is either run here or named in
//! [`NOT_RUN`] with the reason, so a new block cannot go unnoticed.
//!
//! What a block needs that a laptop has and this test does not is mapped,
//! and only that: `cargo run --release --` is the built `arlen` (the README
//! says `cargo install --path crates/arlen` makes them the same), fixed
//! ports and the example addresses (`127.0.0.1:3000`, `10.0.0.11:3000`,
//! `node-3:3000`, etcd at `10.0.0.5:2379`) are free loopback ports of real
//! nodes the test starts, `/etc/arlen/` is a temporary directory, and
//! `kubectl delete pod node-N` restarts node N (as the StatefulSet would).
//! A status a comment promises (`# 200 ok`, `# 503 not_ready`) is checked
//! against what the line printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use arlen_testkit::{free_port, poll_until_explained, EtcdCluster};

mod support;
use support::binary;

/// Blocks not run here, by their first line, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("./scripts/up", "interactive; `arlen up` is exercised by crates/arlen/tests/gossip.rs"),
    ("./scripts/test", "this test is part of it"),
    ("arlen drill list", "every drill runs in crates/arlen/tests/drills.rs; `drill list` is run below"),
    ("cargo install --path crates/arlen", "a release build of the binary the suite already built and runs"),
    (
        "kubectl create secret generic shop-gossip",
        "no Kubernetes here: crates/arlen/tests/kubernetes.rs plays the applied manifests",
    ),
    (
        "podman build -t registry.example/arlen",
        "pulls base images; crates/arlen/tests/image.rs builds the Dockerfile's runtime stage",
    ),
];

#[derive(Debug, Clone)]
struct Block {
    file: &'static str,
    line: usize,
    text: String,
}

fn blocks() -> Vec<Block> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for file in ["README.md", "docs/RUNBOOK.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let Some(lang) = line.strip_prefix("```") else { continue };
            let shell = matches!(lang.trim(), "sh" | "bash" | "shell");
            let mut body = String::new();
            for (_, inner) in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            if shell {
                out.push(Block { file, line: n + 1, text: body });
            }
        }
    }
    out
}

fn find<'a>(blocks: &'a [Block], starts: &str) -> &'a Block {
    blocks
        .iter()
        .find(|b| b.text.trim_start().starts_with(starts))
        .unwrap_or_else(|| panic!("no shell block starting with {starts:?} in README.md or docs/RUNBOOK.md"))
}

/// The test's stand-ins for what a reader has: `arlen` on the PATH, a
/// `kubectl` that restarts nodes, a scratch directory.
struct Desk {
    dir: tempfile::TempDir,
    vars: BTreeMap<String, String>,
}

impl Desk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(binary(), bin.join("arlen")).unwrap();
        // `kubectl delete pod node-N`: stop node N's process (SIGTERM, as the
        // kubelet does) and start it again from its recorded command line.
        let kubectl = format!(
            "#!/bin/bash\nset -eu\n[ \"$1 $2\" = \"delete pod\" ] || {{ echo \"kubectl stand-in: only 'delete pod' ($*)\" >&2; exit 2; }}\n\
             dir={}\npid=$(cat \"$dir/$3.pid\")\nkill -TERM \"$pid\"\nwhile kill -0 \"$pid\" 2>/dev/null && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null; do sleep 0.1; done\n\
             setsid bash \"$dir/$3.sh\" >>\"$dir/$3.log\" 2>&1 </dev/null &\necho $! > \"$dir/$3.pid\"\necho \"pod \\\"$3\\\" deleted\"\n",
            dir.path().display()
        );
        std::fs::write(bin.join("kubectl"), kubectl).unwrap();
        Command::new("chmod").arg("+x").arg(bin.join("kubectl")).status().unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("PATH".to_owned(), format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
        vars.insert("HOME".to_owned(), dir.path().display().to_string());
        vars.insert("ARLEN_LOG_FORMAT".to_owned(), "text".to_owned());
        Self { dir, vars }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with bash; its status and what it printed.
    fn run(&self, script: &str, timeout: Duration) -> (Option<i32>, String) {
        let output = Command::new("timeout")
            .arg(format!("{}s", timeout.as_secs()))
            .args(["bash", "-c", script])
            .env_clear()
            .envs(&self.vars)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    }

    /// Starts `command` (a block's lines that run a node in the foreground,
    /// after `prelude`) in the background as `name`, with `extra` variables,
    /// recorded so the kubectl stand-in can restart it.
    fn start(&self, name: &str, prelude: &str, command: &str, extra: &[(&str, &str)], port: u16) {
        let path = self.path().join(format!("{name}.sh"));
        let extra: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&path, format!("{prelude}\nexec env {} {}\n", extra.join(" "), command.trim())).unwrap();
        let log = std::fs::File::create(self.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new("setsid")
            .arg("bash")
            .arg(&path)
            .env_clear()
            .envs(&self.vars)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.path().join(format!("{name}.pid")), child.id().to_string()).unwrap();
        std::mem::forget(child); // stopped by pid on drop (the kubectl stand-in may replace it)
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        poll_until_explained(
            &format!("{name} (from the document) to answer /livez on {port}"),
            Duration::from_secs(20),
            || arlen_testkit::get(address, "/livez", &[]).ok().filter(|r| r.status == 200),
            || self.log(name),
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.path()) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pid") {
                if let Ok(pid) = std::fs::read_to_string(&path) {
                    // Its process group too (`setsid`): what a block started
                    // in the background (`python3 -m http.server … &`).
                    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", pid.trim())]).status();
                    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                }
            }
        }
    }
}

fn replace_all(text: &str, pairs: &[(&str, String)]) -> String {
    pairs.iter().fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

/// Runs a block of curl lines one at a time, checking each exits 0 and,
/// where its comment starts with a status code, that the status printed is
/// that one.
fn run_lines(desk: &Desk, block: &Block, pairs: &[(&str, String)]) -> usize {
    let mut checked = 0;
    for line in block.text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (command, comment) = match line.split_once(" # ") {
            Some((c, m)) => (c.trim(), m.trim()),
            None => (line, ""),
        };
        let command = replace_all(command, pairs);
        let (status, out) = desk.run(&command, Duration::from_secs(10));
        let streaming = command.contains("curl -sN");
        assert!(
            status == Some(0) || (streaming && status == Some(124) && !out.is_empty()),
            "{}:{}: `{command}` exited {status:?}:\n{out}",
            block.file,
            block.line
        );
        if let Some(code) = comment.split_whitespace().next().filter(|w| w.len() == 3 && w.parse::<u16>().is_ok()) {
            let first = out.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("HTTP/") && first.contains(&format!(" {code}")),
                "{}:{}: `{command}` promises {code}, printed:\n{out}",
                block.file,
                block.line
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn every_shell_block_is_run_here_or_named_with_its_reason() {
    let all = blocks();
    let run_here = [
        "ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=alpha",
        "curl -sS -D - http://127.0.0.1:3000/healthz",
        "ARLEN_CLUSTER_NODE_ID=node-a ARLEN_ENV=production",
        "arlen gossip keygen",
        "ARLEN_CLUSTER_MEMBERSHIP_SOURCE=etcd",
        "python3 -m http.server",
        "arlen triage http://10.0.0.11:3000",
        "curl -s http://10.0.0.13:3000/readyz?verbose",
        "#!/bin/sh",
        "curl -X PUT",
    ];
    for block in &all {
        let first = block.text.trim_start();
        let known = run_here.iter().any(|s| first.starts_with(s)) || NOT_RUN.iter().any(|(s, _)| first.starts_with(s));
        assert!(
            known,
            "{}:{}: a shell block neither run by crates/arlen/tests/documents.rs nor named in NOT_RUN:\n{}",
            block.file, block.line, block.text
        );
    }
    for starts in run_here {
        find(&all, starts);
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let all = blocks();
    let desk = Desk::new();
    let port = free_port();
    let pairs = [
        ("cargo run --release -- ", "arlen ".to_owned()),
        ("127.0.0.1:3000", format!("127.0.0.1:{port}")),
        ("--port 3000", format!("--port {port}")),
    ];
    let start = find(&all, "ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_NAME=alpha");
    desk.start("tour", "", &replace_all(&start.text, &pairs), &[], port);
    let tour = find(&all, "curl -sS -D - http://127.0.0.1:3000/healthz");
    // The headers the tour shows are what the node sends.
    let (_, healthz) =
        desk.run(&replace_all("curl -sS -D - http://127.0.0.1:3000/healthz", &pairs), Duration::from_secs(5));
    for line in tour.text.lines().filter_map(|l| l.trim().strip_prefix("#   ")) {
        let (name, value) = line.split_once(": ").unwrap();
        let shown = healthz.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::trim);
        match name {
            "X-Arlen-Worker-Pid" => assert!(shown.is_some_and(|v| v.parse::<u32>().is_ok()), "{healthz}"),
            _ => assert_eq!(shown, Some(value), "{name} in:\n{healthz}"),
        }
    }
    let checked = run_lines(&desk, tour, &pairs);
    println!("README tour: {checked} lines ran");

    // The production line, with the `config/app.toml` the README shows
    // before it: a static cluster of three expecting quorum, so up and not
    // ready.
    let production = find(&all, "ARLEN_CLUSTER_NODE_ID=node-a ARLEN_ENV=production");
    let config_port = free_port();
    std::fs::create_dir_all(desk.path().join("config")).unwrap();
    let toml = code_after("README.md", "# config/app.toml").expect("README's config/app.toml");
    std::fs::write(desk.path().join("config/app.toml"), toml).unwrap();
    let pairs = [
        ("cargo run --release -- ", "arlen ".to_owned()),
        ("--host 0.0.0.0 --port 3000", format!("--host 127.0.0.1 --port {config_port}")),
    ];
    desk.start("production", "", &replace_all(&production.text, &pairs), &[], config_port);
    let doc = arlen_testkit::cluster_document(std::net::SocketAddr::from(([127, 0, 0, 1], config_port))).unwrap();
    assert_eq!((doc.cluster.name.as_str(), doc.cluster.expected_nodes), ("shop", 3), "{}", desk.log("production"));
}

/// The rest of the code block whose text contains `marker` (a first-line
/// comment naming the file), from that line on.
fn code_after(file: &str, marker: &str) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join(file)).ok()?;
    let at = text.find(marker)?;
    let close = text[at..].find("```")? + at;
    Some(text[at..close].to_owned())
}

#[test]
fn the_gossip_cluster_the_runbook_and_the_rolling_deploy_script_run_as_written() {
    let all = blocks();
    let desk = Desk::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let keys_dir = desk.path().join("etc-arlen");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let token = "ops-0123456789abcdef0123456789abcdef";
    let gossip = find(&all, "arlen gossip keygen");
    let (keygen, node_lines): (Vec<&str>, Vec<&str>) =
        gossip.text.lines().partition(|l| l.starts_with("arlen gossip keygen"));
    let keygen = replace_all(keygen[0], &[("/etc/arlen/", format!("{}/", keys_dir.display()))]);
    let (status, out) = desk.run(&keygen, Duration::from_secs(10));
    assert_eq!(status, Some(0), "{keygen}: {out}");
    for (i, port) in ports.iter().enumerate() {
        let node = format!("node-{}", i + 1);
        let pairs = [
            ("/etc/arlen/", format!("{}/", keys_dir.display())),
            ("ARLEN_CLUSTER_NODE_ID=node-a", format!("ARLEN_CLUSTER_NODE_ID={node}")),
            ("10.0.0.11:3000,10.0.0.12:3000,10.0.0.13:3000", seeds.clone()),
            (
                "ARLEN_CLUSTER_GOSSIP_ADVERTISE=10.0.0.11:3000",
                format!("ARLEN_CLUSTER_GOSSIP_ADVERTISE=127.0.0.1:{port}"),
            ),
            ("--host 0.0.0.0 --port 3000", format!("--host 127.0.0.1 --port {port}")),
        ];
        // What the fault block needs: the operations token and fault injection.
        let extra = [("ARLEN_OPS_TOKEN", token), ("ARLEN_CLUSTER_FAULT_INJECTION_ENABLED", "1")];
        desk.start(&node, "", &replace_all(&node_lines.join("\n"), &pairs), &extra, *port);
    }
    let addresses = [
        ("10.0.0.11:3000", format!("127.0.0.1:{}", ports[0])),
        ("10.0.0.12:3000", format!("127.0.0.1:{}", ports[1])),
        ("10.0.0.13:3000", format!("127.0.0.1:{}", ports[2])),
        ("node-3:3000", format!("127.0.0.1:{}", ports[2])),
        ("$TOKEN", token.to_owned()),
    ];
    let whole =
        format!("http://127.0.0.1:{}/clusterz?wait_for_status=nominal&wait_for_nodes=%3E%3D3&timeout=20s", ports[0]);
    let (status, out) = desk.run(&format!("curl -fsS '{whole}'"), Duration::from_secs(25));
    assert_eq!(status, Some(0), "the cluster never became whole: {out}\n{}", desk.log("node-1"));

    let triage = find(&all, "arlen triage http://10.0.0.11:3000");
    let (status, out) = desk.run(&replace_all(&triage.text, &addresses), Duration::from_secs(30));
    assert_eq!(status, Some(0), "triage of a whole cluster:\n{out}");
    assert!(out.contains("verdict:"), "{out}");

    let reading = find(&all, "curl -s http://10.0.0.13:3000/readyz?verbose");
    let checked = run_lines(&desk, reading, &addresses);
    println!("RUNBOOK reading lines: {checked} ran");

    // The rolling deploy, unchanged but for the addresses: every node is
    // restarted, each only when the cluster can spare it.
    let script = find(&all, "#!/bin/sh");
    let before: Vec<String> =
        (1..=3).map(|i| std::fs::read_to_string(desk.path().join(format!("node-{i}.pid"))).unwrap()).collect();
    let (status, out) = desk.run(&replace_all(&script.text, &addresses), Duration::from_secs(240));
    assert_eq!(
        status,
        Some(0),
        "{}:{}: the rolling deploy script failed:\n{out}\n{}",
        script.file,
        script.line,
        desk.log("node-1")
    );
    let after: Vec<String> =
        (1..=3).map(|i| std::fs::read_to_string(desk.path().join(format!("node-{i}.pid"))).unwrap()).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a), "every node restarted: {before:?} -> {after:?}\n{out}");
    println!("rolling deploy:\n{out}");

    let faults = find(&all, "curl -X PUT");
    let checked = run_lines(&desk, faults, &addresses);
    println!("RUNBOOK fault lines: {checked} ran");

    let (status, out) = desk.run("arlen drill list", Duration::from_secs(10));
    assert_eq!(status, Some(0), "{out}");
}

#[test]
fn the_sidecar_and_etcd_lines_run_as_written() {
    let all = blocks();
    let desk = Desk::new();
    let (app, port) = (free_port(), free_port());
    let sidecar = find(&all, "python3 -m http.server");
    let pairs = [
        ("8080", app.to_string()),
        ("127.0.0.1:3000", format!("127.0.0.1:{port}")),
        ("--port 3000", format!("--port {port}")),
    ];
    let text = replace_all(&sidecar.text, &pairs);
    let (starts, curls): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| !l.starts_with("curl"));
    let (background, foreground): (Vec<&str>, Vec<&str>) =
        starts.iter().partition(|l| l.split(" # ").next().unwrap_or_default().trim_end().ends_with('&'));
    desk.start("sidecar", &background.join("\n"), &foreground.join("\n"), &[], port);
    // As a reader would: the application answers once it has started.
    poll_until_explained(
        "the sidecar ready (its application up)",
        Duration::from_secs(20),
        || {
            arlen_testkit::get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "/readyz", &[])
                .ok()
                .filter(|r| r.status == 200)
        },
        || desk.log("sidecar"),
    );
    for line in curls {
        let (status, out) = desk.run(line, Duration::from_secs(10));
        assert_eq!(status, Some(0), "`{line}`: {out}");
        assert!(!out.contains("502") && !out.is_empty(), "`{line}`: {out}");
    }

    let etcd = EtcdCluster::start(1);
    etcd.wait_healthy(Duration::from_secs(20));
    let etcd_port = free_port();
    let block = find(&all, "ARLEN_CLUSTER_MEMBERSHIP_SOURCE=etcd");
    let pairs = [
        ("http://10.0.0.5:2379,http://10.0.0.6:2379,http://10.0.0.7:2379", etcd.endpoints()),
        ("--port 3000", format!("--port {etcd_port}")),
    ];
    desk.start("etcd-node", "", &replace_all(&block.text, &pairs), &[], etcd_port);
    let doc = arlen_testkit::cluster_document(std::net::SocketAddr::from(([127, 0, 0, 1], etcd_port)));
    let source = doc.map(|d| d.coordination.membership_source.to_string());
    assert_eq!(source.as_deref(), Some("etcd"), "{}", desk.log("etcd-node"));
}

#[test]
fn every_quoted_block_is_verbatim_in_the_file_it_quotes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut quotes = 0;
    for file in ["README.md", "docs/RUNBOOK.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("<!-- quoted from ") {
            let after = &rest[at + "<!-- quoted from ".len()..];
            let source = after.split(" -->").next().unwrap().trim();
            let open = after.find("```").unwrap();
            let body_start = open + after[open..].find('\n').unwrap() + 1;
            let body_end = body_start + after[body_start..].find("```").unwrap();
            let body = &after[body_start..body_end];
            let quoted =
                std::fs::read_to_string(root.join(source)).unwrap_or_else(|e| panic!("{file} quotes {source}: {e}"));
            assert!(quoted.contains(body), "{file} quotes {source}, which no longer says:\n{body}");
            quotes += 1;
            rest = &after[body_end..];
        }
    }
    assert!(quotes >= 3, "{quotes} quotes");
}

#[test]
fn no_table_is_split_by_a_blank_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["README.md", "docs/RUNBOOK.md", "ARCHITECTURE.md", "BENCHMARKS.md", "docs/CONTRACT.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, window) in lines.windows(3).enumerate() {
            // A blank line between two rows ends the table: the rows after
            // it render as a paragraph of pipes.
            let split = window[0].starts_with('|') && window[1].trim().is_empty() && window[2].starts_with("| ");
            let header_again = window[2].starts_with("| ") && lines.get(i + 3).is_some_and(|l| l.starts_with("|---"));
            assert!(!split || header_again, "{file}:{}: a table split by a blank line", i + 2);
        }
    }
}
