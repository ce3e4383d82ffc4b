//! `arlen drill run … --via haproxy`: the drill's traffic through a real load
//! balancer — Debian's haproxy, started on a loopback port, health-checking
//! every node's `/readyz` every 100 ms (one failure takes a node out, one
//! success puts it back) — so "failed requests" are what the balancer's
//! clients saw, its own 503s when no node is up included.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::sampler::Shared;

/// A running haproxy, stopped on drop.
pub struct Haproxy {
    _child: Child,
    pub url: String,
}

impl Haproxy {
    /// Starts haproxy in front of `ports` (the nodes' HTTP ports), with its
    /// configuration and log in `dir`, and waits until it answers.
    pub async fn start(ports: &[u16], dir: &Path) -> anyhow::Result<Self> {
        let front = crate::cluster::free_port()?;
        let mut config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  retries 3\n  option redispatch\n\
             frontend drill\n  bind 127.0.0.1:{front}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n\
             \x20 default-server inter 100ms fall 1 rise 1\n"
        );
        for (index, port) in ports.iter().enumerate() {
            config.push_str(&format!("  server node-{} 127.0.0.1:{port} check\n", index + 1));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                anyhow::anyhow!(
                    "--via haproxy: cannot start haproxy ({error}); install it (Debian: apt-get install haproxy)"
                )
            })?;
        let balancer = Self { _child: child, url: format!("http://127.0.0.1:{front}") };
        let client = crate::probe::client(Duration::from_millis(500));
        let started = Instant::now();
        while client.get(&balancer.url).send().await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy did not listen on {} within 10 s; see {}",
                balancer.url,
                dir.join("haproxy.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(balancer)
    }
}

/// Sends `GET /` through the balancer about every `interval` until `limit`;
/// once the drill counts, a connection error or a 5xx (haproxy's 503 with no
/// node up among them) is a failed request.
pub async fn run_traffic(url: String, started: Instant, interval: Duration, shared: Shared, limit: Duration) {
    let client = crate::probe::client(Duration::from_secs(2));
    let mut ticker = tokio::time::interval(interval);
    while started.elapsed() < limit {
        ticker.tick().await;
        let outcome = client.get(format!("{url}/")).send().await;
        let t_ms = started.elapsed().as_millis();
        let mut timeline = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !timeline.counting {
            continue;
        }
        match outcome {
            Ok(response) if !response.status().is_server_error() => timeline.requests_ok += 1,
            Ok(response) => {
                timeline.requests_failed += 1;
                timeline.failures.push(format!("t={t_ms} ms haproxy: HTTP {}", response.status()));
            }
            Err(error) => {
                timeline.requests_failed += 1;
                timeline.failures.push(format!("t={t_ms} ms haproxy: {error}"));
            }
        }
    }
}
