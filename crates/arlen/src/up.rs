//! `arlen up`: a local cluster of real `arlen serve` processes on loopback,
//! wired by gossip, with a live status table until Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::{UpArgs, UpSource};
use crate::probe::{client, probe, NodeReport};

/// One child node.
struct Node {
    id: String,
    url: String,
    child: Child,
    log: PathBuf,
}

pub fn run(args: UpArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(up(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("arlen up: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that TCP and UDP `port` are free on loopback.
fn check_port(port: u16) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(address).map_err(|e| format!("port {port} is taken for HTTP (TCP): {e}"))?;
    UdpSocket::bind(address).map_err(|e| format!("port {port} is taken for gossip (UDP): {e}"))?;
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let count = args.nodes;
    anyhow::ensure!((1..=64).contains(&count), "--nodes must be 1..64, got {count}");
    let expected = args.expected.unwrap_or(count);
    let last_port = u32::from(args.base_port) + u32::from(count) - 1;
    anyhow::ensure!(last_port <= 65535, "--base-port {} leaves no room for {count} nodes", args.base_port);
    let ports: Vec<u16> = (0..count).map(|i| args.base_port + i).collect();
    let taken: Vec<String> = ports.iter().filter_map(|p| check_port(*p).err()).collect();
    if !taken.is_empty() {
        anyhow::bail!("{}; choose another --base-port", taken.join("; "));
    }
    let log_dir = std::env::temp_dir().join(format!("arlen-up-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let binary = std::env::current_exe()?;
    let mut etcd = match args.source {
        UpSource::Gossip => None,
        UpSource::Etcd => Some(start_etcd(&log_dir).await?),
    };

    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = format!("node-{}", i + 1);
        let log = log_dir.join(format!("{id}.log"));
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("ARLEN_CLUSTER_ENABLED", "1")
            .env("ARLEN_CLUSTER_NAME", &args.cluster)
            .env("ARLEN_CLUSTER_NODE_ID", &id)
            .env("ARLEN_CLUSTER_EXPECTED_NODES", expected.to_string())
            .env("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds)
            .env("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", if args.quorum_required { "1" } else { "0" })
            .env("ARLEN_LOG_FORMAT", "text")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            // Own process group: Ctrl-C reaches `arlen up`, which stops the nodes in order.
            .process_group(0)
            .kill_on_drop(true);
        match &etcd {
            None => command.env("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
            Some(etcd) => {
                command.env("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd").env("ARLEN_CLUSTER_ETCD_ENDPOINTS", &etcd.url)
            }
        };
        let child = command.spawn()?;
        nodes.push(Node { id, url: format!("http://127.0.0.1:{port}"), child, log });
    }
    println!(
        "arlen up: {count} nodes of cluster {:?}, expecting {expected}{}",
        args.cluster,
        if args.quorum_required { ", quorum required for readiness" } else { "" }
    );
    if let Some(etcd) = &etcd {
        println!("  etcd    {}  pid {}  log {}", etcd.url, etcd.child.id().unwrap_or(0), etcd.log.display());
    }
    for node in &nodes {
        println!("  {}  {}  pid {}  log {}", node.id, node.url, node.child.id().unwrap_or(0), node.log.display());
    }
    println!("Ctrl-C stops every node.\n");

    let result = watch(&mut nodes, args.refresh_ms).await;
    stop(&mut nodes).await;
    if let Some(etcd) = etcd.as_mut() {
        let _ = etcd.child.kill().await;
        println!("  etcd stopped");
    }
    result
}

/// The throwaway etcd of `arlen up --source etcd`.
struct Etcd {
    url: String,
    child: Child,
    log: PathBuf,
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

async fn start_etcd(dir: &std::path::Path) -> anyhow::Result<Etcd> {
    let client_port = free_loopback_port()?;
    let peer_port = free_loopback_port()?;
    let url = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = dir.join("etcd.log");
    let child = Command::new("etcd")
        .args(["--name", "arlen-up", "--data-dir"])
        .arg(dir.join("etcd.data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("arlen-up={peer}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            anyhow::anyhow!(
                "--source etcd needs the etcd binary on PATH ({error}); on Debian: apt-get install etcd-server"
            )
        })?;
    let http = client(Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let healthy = http.get(format!("{url}/health")).send().await.ok();
        if let Some(response) = healthy {
            if response.text().await.is_ok_and(|body| body.contains("\"health\":\"true\"")) {
                return Ok(Etcd { url, child, log });
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "etcd did not become healthy within 20 s; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Refreshes the table until SIGINT/SIGTERM.
async fn watch(nodes: &mut [Node], refresh_ms: u64) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let http = client(Duration::from_millis(400));
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(refresh_ms.max(50)));
    let mut last_table = String::new();
    let mut drawn_lines = 0usize;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
        let reports = futures_util::future::join_all(nodes.iter().map(|n| probe(&http, &n.url))).await;
        let exited: Vec<Option<String>> =
            nodes.iter_mut().map(|n| n.child.try_wait().ok().flatten().map(|status| status.to_string())).collect();
        let table = render(nodes, &reports, &exited);
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn_lines > 0 {
                write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
            }
            write!(out, "{table}")?;
            out.flush()?;
            drawn_lines = table.lines().count();
        } else if table != last_table {
            println!("{table}");
            std::io::stdout().flush()?;
        }
        last_table = table;
    }
}

fn render(nodes: &[Node], reports: &[NodeReport], exited: &[Option<String>]) -> String {
    let mut rows = vec![["NODE", "URL", "STATUS", "OBSERVED", "READY", "MEMBERS"].map(str::to_owned)];
    for ((node, report), exited) in nodes.iter().zip(reports).zip(exited) {
        let (status, observed, ready, members) = match (report.reachable, exited) {
            (_, Some(how)) => (format!("exited ({how})"), "-".into(), "-".into(), "-".into()),
            (false, None) => ("unreachable".into(), "-".into(), "-".into(), "-".into()),
            (true, None) => (
                report.status().to_owned(),
                format!("{}/{}", report.observed().unwrap_or(0), report.expected().unwrap_or(0)),
                if report.ready == Some(true) { "yes".into() } else { "no".into() },
                report.alive_members().join(","),
            ),
        };
        rows.push([node.id.clone(), node.url.clone(), status, observed, ready, members]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// SIGTERM to every node, then SIGKILL to any still running after 15 s.
async fn stop(nodes: &mut [Node]) {
    println!("\nstopping {} nodes", nodes.len());
    for node in nodes.iter() {
        if let Some(pid) = node.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(15), node.child.wait()).await {
            Ok(Ok(status)) => println!("  {} stopped ({status})", node.id),
            _ => {
                let _ = node.child.kill().await;
                println!("  {} killed after 15 s", node.id);
            }
        }
    }
}
