//! Behind a real load balancer: haproxy (Debian's, started here on loopback
//! ports) health-checks `/readyz` of three Arlen nodes — sidecars each in
//! front of a real Python application, and `arlen serve`'s own demo route —
//! and the product's promises are checked through it: a rolling restart under
//! steady traffic loses no request; a `kill -9` under `quorumPolicy = all`
//! empties the pool, and a restart refills it; an upstream that stops takes
//! only its own node out.

use arlen_wire::states::QuorumStatus;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arlen_testkit::{free_port, poll_until_explained, ArlenProcess, PythonUpstream};

mod support;
use support::binary;

struct Haproxy {
    child: Child,
    front: u16,
    stats: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(servers: &[u16]) -> Self {
        let (front, stats) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  retries 3\n  option redispatch\n\
             frontend web\n  bind 127.0.0.1:{front}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n  default-server inter 100ms fall 1 rise 1\n"
        );
        for (i, port) in servers.iter().enumerate() {
            config.push_str(&format!("  server node{} 127.0.0.1:{port} check\n", i + 1));
        }
        config.push_str(&format!("listen stats\n  bind 127.0.0.1:{stats}\n  stats enable\n  stats uri /stats\n"));
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy (Debian's package; ./scripts/test installs it)");
        let haproxy = Self { child, front, stats, _dir: dir };
        let log = haproxy._dir.path().join("haproxy.log");
        let config = haproxy._dir.path().join("haproxy.cfg");
        poll_until_explained(
            "haproxy to serve its stats",
            Duration::from_secs(10),
            || haproxy.pool(),
            || {
                format!(
                    "config:\n{}\nlog:\n{}",
                    std::fs::read_to_string(&config).unwrap_or_default(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        );
        haproxy
    }

    /// Server name → UP/DOWN as haproxy's health checks see them.
    fn pool(&self) -> Option<BTreeMap<String, String>> {
        // HTTP/1.0: a plain body to EOF (no chunked framing to undo).
        let address = SocketAddr::from(([127, 0, 0, 1], self.stats));
        let response = arlen_testkit::send_raw(address, b"GET /stats;csv HTTP/1.0\r\n\r\n").ok()?;
        let text = String::from_utf8(response.decoded_body()).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let (name, status) = (header.iter().position(|h| *h == "svname")?, header.iter().position(|h| *h == "status")?);
        Some(
            lines
                .map(|line| line.split(',').collect::<Vec<_>>())
                .filter(|fields| fields.first() == Some(&"nodes") && fields[name].starts_with("node"))
                .map(|fields| (fields[name].to_owned(), fields[status].split(' ').next().unwrap_or("").to_owned()))
                .collect(),
        )
    }

    fn up(&self) -> usize {
        self.pool().map_or(0, |pool| pool.values().filter(|s| *s == "UP").count())
    }

    fn wait_up(&self, count: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        poll_until_explained(
            &format!("{count} servers UP in haproxy"),
            timeout,
            || (self.up() == count).then_some(()),
            || format!("{:?}", self.pool()),
        );
        started.elapsed()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upstream(port: u16, name: &str) -> PythonUpstream {
    PythonUpstream::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/upstream.py"), port, name)
}

/// Three gossiping nodes, each a sidecar in front of its own upstream or
/// (`sidecars = false`) serving the demo route.
struct Cluster {
    ports: Vec<u16>,
    upstream_ports: Vec<u16>,
    nodes: Vec<Option<ArlenProcess>>,
    upstreams: Vec<Option<PythonUpstream>>,
    policy: &'static str,
    sidecars: bool,
    /// More variables for every node.
    extra: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    fn start(sidecars: bool, policy: &'static str) -> Self {
        Self::start_with(sidecars, policy, Vec::new())
    }

    fn start_with(sidecars: bool, policy: &'static str, extra: Vec<(&'static str, &'static str)>) -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let upstream_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let upstreams = upstream_ports
            .iter()
            .enumerate()
            .map(|(i, p)| sidecars.then(|| upstream(*p, &format!("app-{}", i + 1))))
            .collect();
        let mut cluster = Self { ports, upstream_ports, nodes: Vec::new(), upstreams, policy, sidecars, extra };
        for i in 0..3 {
            let node = cluster.spawn(i);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> ArlenProcess {
        let seeds = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let (node_id, port) = (format!("node-{}", i + 1), self.ports[i].to_string());
        let upstream = format!("http://127.0.0.1:{}", self.upstream_ports[i]);
        let mut args = vec!["serve", "--port", &port, "--app-root", "/nonexistent"];
        if self.sidecars {
            args.extend(["--upstream", &upstream]);
        }
        let mut vars = vec![
            ("ARLEN_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", "lb"),
            ("ARLEN_CLUSTER_NODE_ID", node_id.as_str()),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "3"),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
            ("ARLEN_CLUSTER_GOSSIP_SEEDS", seeds.as_str()),
            ("ARLEN_CLUSTER_QUORUM_POLICY", self.policy),
            ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
            ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "1"),
            ("ARLEN_PROXY_HEALTH_PATH", "/health"),
            ("ARLEN_PROXY_HEALTH_INTERVAL_MS", "200"),
        ];
        vars.extend(self.extra.iter().copied());
        let mut node = ArlenProcess::spawn(binary(), &args, &vars, self.ports[i]);
        node.wait_live();
        node
    }
}

/// Keeps sending `GET /` through haproxy on a kept-alive connection until
/// stopped; returns (answered 200, failures).
fn steady_traffic(front: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let address = SocketAddr::from(([127, 0, 0, 1], front));
        let (mut ok, mut failed) = (0usize, Vec::new());
        let mut connection: Option<TcpStream> = None;
        let started = Instant::now();
        // Bounded: 200 000 requests or 120 s.
        for sent in 0..200_000usize {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            let stream = match connection.as_mut() {
                Some(stream) => stream,
                None => {
                    let stream = TcpStream::connect(address).expect("haproxy accepts");
                    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    connection.insert(stream)
                }
            };
            let outcome = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
                .and_then(|()| arlen_testkit::read_response(stream));
            match outcome {
                Ok(response) if response.status == 200 => ok += 1,
                Ok(response) => {
                    failed.push(format!("request {sent}: {}", response.head.lines().next().unwrap_or("")));
                    connection = None;
                }
                Err(error) => {
                    failed.push(format!("request {sent}: {error}"));
                    connection = None;
                }
            }
            if connection.is_some() && sent % 50 == 0 {
                connection = None; // new connections too, not only one kept-alive
            }
        }
        (ok, failed)
    })
}

fn rolling_restart_loses_nothing(sidecars: bool) {
    let mut cluster = Cluster::start(sidecars, "majority");
    let haproxy = Haproxy::start(&cluster.ports);
    haproxy.wait_up(3, Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = steady_traffic(haproxy.front, stop.clone());
    for i in 0..3 {
        let mut node = cluster.nodes[i].take().unwrap();
        node.signal("TERM");
        assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", node.stderr());
        cluster.nodes[i] = Some(cluster.spawn(i));
        haproxy.wait_up(3, Duration::from_secs(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    eprintln!(
        "rolling restart ({}): {ok} requests answered, {} failed",
        if sidecars { "sidecars" } else { "demo route" },
        failed.len()
    );
    assert!(failed.is_empty(), "requests lost during the rolling restart: {failed:#?}");
    assert!(ok > 100, "traffic flowed: {ok}");
}

fn kill_under_quorum_all_empties_the_pool(sidecars: bool) {
    let mut cluster = Cluster::start(sidecars, "all");
    let haproxy = Haproxy::start(&cluster.ports);
    haproxy.wait_up(3, Duration::from_secs(20));
    let victim = cluster.nodes[2].take().unwrap();
    victim.signal("KILL");
    let emptied = haproxy.wait_up(0, Duration::from_secs(10));
    eprintln!("kill -9 ({}): haproxy's pool empty after {emptied:?}", if sidecars { "sidecars" } else { "demo route" });
    assert!(emptied < Duration::from_secs(3), "pool emptied after {emptied:?}");
    drop(victim);
    cluster.nodes[2] = Some(cluster.spawn(2));
    let refilled = haproxy.wait_up(3, Duration::from_secs(20));
    eprintln!("restart: pool whole again after {refilled:?}");
}

#[test]
fn a_rolling_restart_of_sidecars_behind_haproxy_loses_no_request() {
    rolling_restart_loses_nothing(true);
}

#[test]
fn a_rolling_restart_of_arlen_serve_behind_haproxy_loses_no_request() {
    rolling_restart_loses_nothing(false);
}

#[test]
fn kill_minus_nine_under_quorum_all_empties_haproxy_s_pool_of_sidecars_and_a_restart_refills_it() {
    kill_under_quorum_all_empties_the_pool(true);
}

#[test]
fn kill_minus_nine_under_quorum_all_empties_haproxy_s_pool_of_arlen_serve_and_a_restart_refills_it() {
    kill_under_quorum_all_empties_the_pool(false);
}

#[test]
fn an_upstream_that_stops_takes_only_its_own_node_out_of_haproxy_s_pool() {
    let mut cluster = Cluster::start(true, "majority");
    let haproxy = Haproxy::start(&cluster.ports);
    haproxy.wait_up(3, Duration::from_secs(20));
    let started = Instant::now();
    drop(cluster.upstreams[1].take());
    poll_until_explained(
        "node2 alone DOWN",
        Duration::from_secs(10),
        || haproxy.pool().filter(|pool| pool.get("node2").is_some_and(|s| s == "DOWN")),
        || format!("{:?}", haproxy.pool()),
    );
    eprintln!("upstream 2 stopped: node2 out of haproxy's pool after {:?}", started.elapsed());
    // And only node2, for a while: the cluster is whole, the others stay in.
    for _ in 0..20 {
        let pool = haproxy.pool().unwrap();
        assert_eq!(pool.get("node1").map(String::as_str), Some("UP"), "{pool:?}");
        assert_eq!(pool.get("node3").map(String::as_str), Some("UP"), "{pool:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let node2 = cluster.nodes[1].as_ref().unwrap();
    assert_eq!(node2.get("/livez").status, 200, "the sidecar itself is alive");
    assert_eq!(node2.cluster_document().map(|doc| doc.cluster.quorum.status), Some(QuorumStatus::Nominal));
}

/// The drain that ends when traffic has: behind haproxy (checks every
/// 100 ms), a node with `drainQuietPeriodMs` leaves as soon as haproxy has stopped
/// sending it requests — not after a fixed delay — and not one request is
/// lost. Each node's drain time is printed beside the fixed delay it replaces.
#[test]
fn an_adaptive_drain_ends_when_haproxy_stops_sending_and_loses_no_request() {
    let extra = vec![
        // The minimum (drainDelaySeconds) is 0 here: the traffic is steady,
        // so the quiet period cannot begin before haproxy stops sending.
        ("ARLEN_SHUTDOWN_DRAIN_DELAY_SECONDS", "0"),
        ("ARLEN_SHUTDOWN_DRAIN_QUIET_PERIOD_MS", "300"),
        ("ARLEN_SHUTDOWN_DRAIN_MAX_DELAY_SECONDS", "30"),
        ("ARLEN_LOG_FORMAT", "json"),
    ];
    let mut cluster = Cluster::start_with(false, "majority", extra);
    let haproxy = Haproxy::start(&cluster.ports);
    haproxy.wait_up(3, Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = steady_traffic(haproxy.front, stop.clone());
    let mut drains = Vec::new();
    for i in 0..3 {
        let mut node = cluster.nodes[i].take().unwrap();
        let signalled = Instant::now();
        node.signal("TERM");
        assert_eq!(node.wait_exit(Duration::from_secs(40)).code(), Some(0), "{}", node.stderr());
        let exited = signalled.elapsed();
        let stderr = node.stderr();
        let drained_ms = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|l| l["fields"]["drained_ms"].as_u64())
            .unwrap_or_else(|| panic!("the drain's end is logged: {stderr}"));
        assert!(stderr.contains("no request for the quiet period"), "it ended by going quiet: {stderr}");
        assert!(drained_ms < 10_000, "node-{} drained in {drained_ms} ms, not the 30 s maximum", i + 1);
        assert!(drained_ms >= 200, "never before the minimum: {drained_ms} ms");
        drains.push((drained_ms, exited));
        cluster.nodes[i] = Some(cluster.spawn(i));
        haproxy.wait_up(3, Duration::from_secs(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    eprintln!("adaptive drain behind haproxy (quiet 300 ms, min 0 s, max 30 s): drained in {drains:?}; {ok} requests answered, {} failed", failed.len());
    assert!(failed.is_empty(), "requests lost during the drains: {failed:#?}");
    assert!(ok > 100, "traffic flowed: {ok}");
}
