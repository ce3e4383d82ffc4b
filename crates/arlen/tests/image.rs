//! The container image: the runtime stage of the repository's `Dockerfile`,
//! built with podman from the release binary and run.
//!
//! Base images cannot be pulled on the machines that run the suite, so the
//! test builds the `Dockerfile`'s own runtime stage (its lines from the last
//! `FROM` on, unchanged) on a base it makes itself: `scratch` plus what the
//! distroless `cc` base provides and the binary needs — the libraries it
//! links (from `ldd`), `/etc/passwd` with the `nonroot` user (65532) — named
//! in place of the image the `FROM` line asks for. `COPY --from=build` takes the
//! release binary from a build stage of the same kind. Then the image's
//! user, entrypoint and size are checked, and the node is run from the
//! image's filesystem (`podman image mount`, chroot, the image's user): it
//! answers `/readyz`. `podman run` itself is tried first; where the machine
//! does not allow containers (here crun cannot set rlimits) the test says
//! so and runs the filesystem instead.
//!
//! Needs root, podman (`scripts/provision --tests`) and the release binary
//! (`scripts/test` builds it: `cargo build --release -p arlen`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use arlen_testkit::{free_port, get, poll_until_explained};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podman(args: &[&str]) -> Result<String, String> {
    let output = Command::new("podman").args(args).output().map_err(|e| format!("podman: {e}"))?;
    let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(said)
    } else {
        Err(format!("podman {}: {}{}", args.join(" "), said, String::from_utf8_lossy(&output.stderr)))
    }
}

/// The `Dockerfile`'s last stage: its `FROM` image and the lines after it.
fn runtime_stage(dockerfile: &str) -> (String, String) {
    let lines: Vec<&str> = dockerfile.lines().collect();
    let at = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM line");
    let base = lines[at].split_whitespace().nth(1).expect("FROM <image>").to_owned();
    (base, lines[at..].join("\n") + "\n")
}

/// Images made by this test, removed on drop.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = podman(&["image", "unmount", image]);
            let _ = podman(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn the_dockerfile_runtime_stage_builds_and_its_node_serves_readyz() {
    let release = root().join("target/release/arlen");
    assert!(release.exists(), "{} missing: scripts/test builds it (cargo build --release -p arlen)", release.display());
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let (base, stage) = runtime_stage(&dockerfile);
    assert!(stage.contains("COPY --from=build "), "{stage}");
    let tag = format!("arlen-test-{}", std::process::id());
    let mut images = Images(Vec::new());

    // The base: scratch + the binary's libraries + the nonroot user.
    let base_ctx = tempfile::tempdir().unwrap();
    let rootfs = base_ctx.path().join("rootfs");
    let ldd = Command::new("ldd").arg(&release).output().unwrap();
    let linked = String::from_utf8_lossy(&ldd.stdout).into_owned();
    for library in linked.split_whitespace().filter(|w| w.starts_with('/')) {
        let to = rootfs.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(library, &to).unwrap_or_else(|e| panic!("{library}: {e}"));
    }
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
    std::fs::write(base_ctx.path().join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    let base_tag = format!("{tag}-base");
    podman(&["build", "-q", "--layers=false", "-t", &base_tag, &base_ctx.path().display().to_string()]).unwrap();
    images.0.push(base_tag.clone());
    println!("the Dockerfile's runtime base {base} is played by {base_tag}");
    // The stage as written, on the base made here.
    let stage = stage.replacen(&format!("FROM {base}"), &format!("FROM {base_tag}"), 1);

    // The build stage the runtime stage copies from: the release binary,
    // stripped as the Dockerfile's build stage strips it.
    let ctx = tempfile::tempdir().unwrap();
    let binary = ctx.path().join("src/target/release/arlen");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(&release, &binary).unwrap();
    assert!(Command::new("strip").arg(&binary).status().unwrap().success());
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        std::fs::copy(root().join(licence), ctx.path().join(licence)).unwrap();
    }
    let containerfile = format!("FROM {base_tag} AS build\nCOPY src/ /src/\n\n{stage}");
    std::fs::write(ctx.path().join("Containerfile"), &containerfile).unwrap();
    podman(&["build", "-q", "--layers=false", "-t", &tag, &ctx.path().display().to_string()])
        .unwrap_or_else(|e| panic!("{e}\n{containerfile}"));
    images.0.push(tag.clone());

    let config = podman(&[
        "image",
        "inspect",
        &tag,
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Size}}",
    ])
    .unwrap();
    let fields: Vec<&str> = config.split('|').collect();
    assert_eq!(fields[0], "65532:65532", "{config}");
    assert_eq!(fields[1], r#"["/usr/local/bin/arlen"]"#, "{config}");
    let cmd: Vec<String> = serde_json::from_str(fields[2]).unwrap();
    let size: u64 = fields[3].parse().unwrap();
    println!("image {tag}: user {}, entrypoint {}, cmd {cmd:?}, {:.1} MB", fields[0], fields[1], size as f64 / 1e6);
    assert!(size < 60_000_000, "the image is {size} bytes");

    // Run it: podman run where the machine allows, else the image's
    // filesystem under chroot as the image's user, with its CMD.
    let port = free_port();
    let mut cmd = cmd;
    for (i, arg) in cmd.clone().iter().enumerate() {
        if arg == "--port" {
            cmd[i + 1] = port.to_string();
        }
    }
    let tried = Command::new("podman").args(["run", "--rm", "--network", "host", &tag, "--version"]).output().unwrap();
    let mut node = if tried.status.success() {
        println!("podman run works here: {}", String::from_utf8_lossy(&tried.stdout).trim());
        let mut args = vec![
            "run".to_owned(),
            "--rm".into(),
            "--network".into(),
            "host".into(),
            format!("--name={tag}"),
            tag.clone(),
        ];
        args.extend(cmd.iter().cloned());
        Command::new("podman").args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    } else {
        println!(
            "podman run is not allowed here ({}); running the image's filesystem instead",
            String::from_utf8_lossy(&tried.stderr).trim()
        );
        let mount = podman(&["image", "mount", &tag]).unwrap();
        Command::new("/usr/sbin/chroot")
            .args(["--userspec=65532:65532", &mount, "/usr/local/bin/arlen"])
            .args(&cmd)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ready = poll_until_explained(
        "the node from the image to answer /readyz 200",
        Duration::from_secs(20),
        || get(address, "/readyz", &[]).ok().filter(|r| r.status == 200),
        || format!("exited: {:?}", node.try_wait()),
    );
    println!("/readyz from the image: {} {}", ready.status, ready.text().trim());
    let uid = std::fs::read_to_string(format!("/proc/{}/status", node.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next().unwrap_or_default().to_owned()));
    if !tried.status.success() {
        assert_eq!(uid.as_deref(), Some("65532"), "the node runs as the image's user");
    }
    let _ = Command::new("kill").args(["-TERM", &node.id().to_string()]).status();
    let status = node.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the node cleanly: {status}");
    let _ = podman(&["rm", "-f", &tag]);
}

#[test]
fn the_runtime_stage_is_found_in_the_dockerfile() {
    let (base, stage) = runtime_stage("FROM a AS build\nRUN x\n\nFROM b:1 AS runtime\nUSER 1\n");
    assert_eq!(base, "b:1");
    assert_eq!(stage, "FROM b:1 AS runtime\nUSER 1\n");
}
