//! A local cluster of `arlen serve` child processes on loopback — what
//! `arlen up` runs and what drills break. Optionally with a throwaway
//! single-member etcd.

use arlen_config::Key;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cli::{Capability, UpSource};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: u16,
    /// First HTTP/gossip port, or `None` for free ports anywhere.
    pub base_port: Option<u16>,
    pub expected: u16,
    pub cluster: String,
    pub source: UpSource,
    pub quorum_required: bool,
    /// More variables for every node (fault injection, policy, ...).
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// What the nodes' quorum policy means for a rolling restart (from the
    /// variables this spec gives every node; the contract's defaults
    /// otherwise), when readiness follows quorum.
    pub fn rolling_restart_note(&self) -> Option<String> {
        // The nodes' own configuration, read as they read it.
        let (expected, required) = (self.expected.to_string(), if self.quorum_required { "1" } else { "0" });
        let mut pairs: Vec<(String, String)> = vec![
            (Key::ClusterEnabled.variable(), "1".to_owned()),
            (Key::ClusterExpectedNodes.variable(), expected),
            (Key::ObservabilityReadinessRequiresClusterQuorum.variable(), required.to_owned()),
        ];
        pairs.extend(self.env.iter().cloned());
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config = arlen_config::Config::from_map(Path::new("/nonexistent"), &pairs).ok()?;
        arlen_node::rolling_restart_note(&config)
    }
}

pub struct LocalNode {
    pub id: String,
    pub port: u16,
    pub url: String,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl LocalNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

pub struct LocalCluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<LocalNode>,
    pub etcd: Option<Etcd>,
    pub log_dir: PathBuf,
    binary: PathBuf,
    seeds: String,
    /// A throwaway gossip key for this cluster's datagrams.
    gossip_key: String,
}

/// Checks that TCP and UDP `port` are free on loopback.
pub fn check_port(port: u16) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(address).map_err(|e| format!("port {port} is taken for HTTP (TCP): {e}"))?;
    UdpSocket::bind(address).map_err(|e| format!("port {port} is taken for gossip (UDP): {e}"))?;
    Ok(())
}

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        if check_port(port).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free loopback port"))
}

impl LocalCluster {
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let count = spec.nodes;
        anyhow::ensure!((1..=64).contains(&count), "--nodes must be 1..64, got {count}");
        let ports: Vec<u16> = match spec.base_port {
            Some(base) => {
                anyhow::ensure!(
                    u32::from(base) + u32::from(count) - 1 <= 65535,
                    "--base-port {base} leaves no room for {count} nodes"
                );
                let ports: Vec<u16> = (0..count).map(|i| base + i).collect();
                let taken: Vec<String> = ports.iter().filter_map(|p| check_port(*p).err()).collect();
                anyhow::ensure!(taken.is_empty(), "{}; choose another --base-port", taken.join("; "));
                ports
            }
            None => (0..count).map(|_| free_port()).collect::<Result<_, _>>()?,
        };
        let log_dir = std::env::temp_dir().join(format!(
            "arlen-{}-{}-{}",
            spec.cluster,
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
        ));
        std::fs::create_dir_all(&log_dir)?;
        let etcd =
            if spec.source.offers().contains(&Capability::Store) { Some(Etcd::start(&log_dir).await?) } else { None };
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, port)| LocalNode {
                id: format!("node-{}", i + 1),
                port: *port,
                url: format!("http://127.0.0.1:{port}"),
                log: log_dir.join(format!("node-{}.log", i + 1)),
                child: None,
            })
            .collect();
        let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let gossip_key = arlen_membership::generate_gossip_key();
        let mut cluster = Self { spec, nodes, etcd, log_dir, binary: std::env::current_exe()?, seeds, gossip_key };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Starts node `index` (again).
    pub fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let spec = &self.spec;
        let node = &self.nodes[index];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut command = Command::new(&self.binary);
        command
            .args(["serve", "--host", "127.0.0.1", "--port", &node.port.to_string()])
            .env(Key::ClusterEnabled.variable(), "1")
            .env(Key::ClusterName.variable(), &spec.cluster)
            .env(Key::ClusterNodeID.variable(), &node.id)
            .env(Key::ClusterExpectedNodes.variable(), spec.expected.to_string())
            .env(Key::ClusterGossipSeeds.variable(), &self.seeds)
            .env(Key::ClusterGossipKeys.variable(), &self.gossip_key)
            .env(
                Key::ObservabilityReadinessRequiresClusterQuorum.variable(),
                if spec.quorum_required { "1" } else { "0" },
            )
            .env(Key::LogFormat.variable(), "text")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            // Own process group: Ctrl-C reaches the parent, which stops the nodes in order.
            .process_group(0)
            .kill_on_drop(true);
        match &self.etcd {
            None => command.env(Key::ClusterMembershipSource.variable(), "gossip"),
            Some(etcd) => command
                .env(Key::ClusterMembershipSource.variable(), "etcd")
                .env(Key::ClusterEtcdEndpoints.variable(), &etcd.url),
        };
        for (name, value) in &spec.env {
            command.env(name, value);
        }
        self.nodes[index].child = Some(command.spawn()?);
        Ok(())
    }

    fn signal(&self, index: usize, signal: Signal) {
        if let Some(pid) = self.nodes[index].pid().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// `kill -9`.
    pub async fn kill(&mut self, index: usize) {
        self.signal(index, Signal::SIGKILL);
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.wait().await;
        }
    }

    /// Sends SIGTERM (a graceful stop) without waiting.
    pub fn terminate(&self, index: usize) {
        self.signal(index, Signal::SIGTERM);
    }

    /// Waits for node `index` to exit, killing it after `timeout`.
    pub async fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.nodes[index].child.take()?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// SIGTERM to every node, then SIGKILL to any still running after 15 s,
    /// then the etcd. Reports each node's end through `report`.
    pub async fn stop_all(&mut self, mut report: impl FnMut(&str, String)) {
        for index in 0..self.nodes.len() {
            self.terminate(index);
        }
        for index in 0..self.nodes.len() {
            let id = self.nodes[index].id.clone();
            if self.nodes[index].child.is_none() {
                continue;
            }
            match self.wait_exit(index, Duration::from_secs(15)).await {
                Some(status) => report(&id, format!("stopped ({status})")),
                None => report(&id, "killed after 15 s".to_owned()),
            }
        }
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.stop().await;
            report("etcd", "stopped".to_owned());
        }
    }
}

/// A throwaway single-member etcd.
pub struct Etcd {
    pub url: String,
    pub log: PathBuf,
    data_dir: PathBuf,
    peer: String,
    pub child: Option<Child>,
}

impl Etcd {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let mut etcd = Self {
            url: format!("http://127.0.0.1:{client_port}"),
            log: dir.join("etcd.log"),
            data_dir: dir.join("etcd.data"),
            peer: format!("http://127.0.0.1:{peer_port}"),
            child: None,
        };
        etcd.resume().await?;
        Ok(etcd)
    }

    /// Starts (or restarts, with its data) the etcd process and waits until healthy.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new("etcd")
            .args(["--name", "arlen-local", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.url, "--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer, "--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("arlen-local={}", self.peer)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                anyhow::anyhow!(
                    "the etcd source needs the etcd binary on PATH ({error}); on Debian: apt-get install etcd-server"
                )
            })?;
        self.child = Some(child);
        let http = crate::probe::client(Duration::from_millis(300));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(format!("{}/health", self.url)).send().await {
                if response.text().await.is_ok_and(|body| body.contains("\"health\":\"true\"")) {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "etcd did not become healthy within 20 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the etcd process (as a crash would).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}
