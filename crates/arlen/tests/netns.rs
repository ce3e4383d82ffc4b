//! Real network faults: real `arlen serve` processes, each in a network
//! namespace of its own joined by veth pairs to a bridge (in a hub namespace
//! of the test's own), cut with nftables rules inside the namespaces — the
//! partition also cuts HTTP and etcd and does not ask the product's
//! permission. A checker samples every node's `/readyz` and `/clusterz`
//! every 50 ms from a monitor address on the bridge and asserts, from the
//! recorded timeline, the invariants of a node that is never wrong:
//!
//! - an isolated node, or one in a minority, is not ready within
//!   [`OUT_BOUND`] of the cut and stays so until healed;
//! - under `majority`, two disjoint sides are never both ready beyond that;
//! - no node of the majority untouched by a fault ever leaves rotation;
//! - after a heal every node is back to `nominal` within [`HEAL_BOUND`];
//! - with etcd as the source, a node cut from etcd only reports
//!   `partitioned` within the lease TTL + 1 s.
//!
//! The schedule of faults (symmetric and one-way partitions, a minority
//! split, a flapping link, loss on one link, SIGSTOP, kill -9 and restart)
//! comes from the printed seed (`ARLEN_TEST_SEED`); `ARLEN_NETNS_PHASES`
//! sets its length (`bench/netns.sh` runs a long one and prints the
//! distributions). Namespaces, addresses and rules are the test's own and
//! are removed when it ends, also when it fails (and left-overs of a killed
//! run are removed by the next one). Needs root, `ip` and `nft`
//! (`scripts/provision --tests` installs them).

use arlen_wire::documents::ClusterDocument;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};

mod support;
use support::binary;
use support::netlab::{must, Lab};

/// How long after a cut an isolated node, or a minority, may still answer ready.
const OUT_BOUND: Duration = Duration::from_secs(3);
/// How long after a heal (or a restart) every node may take to be `nominal` again.
const HEAL_BOUND: Duration = Duration::from_secs(4);
/// Sampling period of the checker.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const HTTP_PORT: u16 = 8080;
const GOSSIP_PORT: u16 = 7946;

fn seed() -> u64 {
    let seed = std::env::var("ARLEN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("ARLEN_TEST_SEED={seed}");
    seed
}

/// One `arlen serve` in a host's namespace; killed on drop.
struct Node {
    child: Child,
    log: std::path::PathBuf,
}

impl Node {
    fn start(lab: &Lab, i: usize, vars: &[(String, String)], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("node-{}.log", i + 1));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &lab.ns(i)])
            .arg(binary())
            .args(["serve", "--host", &lab.ip(i), "--port", &HTTP_PORT.to_string(), "--app-root", "/nonexistent"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ARLEN_LOG_FORMAT", "text")
            .env("ARLEN_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (name, value) in vars {
            command.env(name, value);
        }
        Self { child: command.spawn().expect("start arlen in its namespace"), log }
    }

    fn signal(&self, name: &str) {
        must("kill", &[&format!("-{name}"), &self.child.id().to_string()]);
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET with timeouts (a paused node must not hang the checker): the status
/// and the body, or `None`.
fn get_raw(address: SocketAddr, target: &str, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn get(address: SocketAddr, target: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// A header of a raw response, by name (any case).
fn header_of(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

/// One reading of one node.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    /// `None`: no answer (paused, killed, restarting).
    ready: Option<bool>,
    /// The quorum status of the same answer (its `X-Arlen-Cluster-Status`).
    status: Option<String>,
    /// What the node's `/clusterz` said of its source (for a failure's message).
    detail: Option<String>,
    /// What its `/readyz?verbose` said, but for the checks that passed.
    said: Option<String>,
}

impl Sample {
    /// For a failure's message.
    fn explain(&self) -> String {
        format!(
            "at {:?}: ready {:?}, status {:?}, {}; /readyz?verbose: {}",
            self.at,
            self.ready,
            self.status,
            self.detail.as_deref().unwrap_or("no /clusterz answer"),
            self.said.as_deref().unwrap_or("no answer")
        )
    }
}

/// Samples every node's `/readyz` and `/clusterz` until stopped.
struct Checker {
    timeline: Arc<Mutex<Vec<Vec<Sample>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Checker {
    fn start(addresses: Vec<SocketAddr>) -> Self {
        let timeline = Arc::new(Mutex::new(vec![Vec::new(); addresses.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = addresses
            .into_iter()
            .enumerate()
            .map(|(i, address)| {
                let (timeline, stop) = (timeline.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let at = started.elapsed();
                        // Readiness and status from one response: one
                        // snapshot feeds its status code, body and headers
                        // (a `/clusterz` read after it may already see the
                        // next view).
                        let readyz = get_raw(address, "/readyz?verbose", Duration::from_millis(250));
                        let ready =
                            readyz.as_deref().and_then(|raw| raw.split_whitespace().nth(1)).map(|code| code == "200");
                        let status = readyz.as_deref().and_then(|raw| header_of(raw, "x-arlen-cluster-status"));
                        let said = readyz.as_deref().map(|raw| {
                            let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
                            let said = body.lines().filter(|l| !l.starts_with("[+]")).collect::<Vec<_>>().join(" | ");
                            format!("{said} (observed {:?})", header_of(raw, "x-arlen-cluster-observed-nodes"))
                        });
                        let doc: Option<ClusterDocument> = get(address, "/clusterz", Duration::from_millis(250))
                            .and_then(|(_, body)| serde_json::from_str(&body).ok());
                        let detail = doc.as_ref().map(|d| {
                            let members: Vec<String> =
                                d.cluster.members.iter().map(|m| format!("{} {}", m.node_id, m.state)).collect();
                            format!(
                                "then /clusterz {}, observed {} members [{}]: {}",
                                d.cluster.quorum.status,
                                d.cluster.observed_nodes,
                                members.join(", "),
                                d.coordination.source_health.detail
                            )
                        });
                        timeline.lock().unwrap()[i].push(Sample { at, ready, status, detail, said });
                        std::thread::sleep(SAMPLE_EVERY.saturating_sub(started.elapsed() - at));
                    }
                })
            })
            .collect();
        Self { timeline, stop, threads, started }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn samples(&self, node: usize, from: Duration, to: Duration) -> Vec<Sample> {
        self.timeline.lock().unwrap()[node].iter().filter(|s| s.at >= from && s.at < to).cloned().collect()
    }

    /// Waits until every node's last sample is ready and `nominal`; how long it took.
    fn wait_nominal(&self, since: Duration, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let all = self.timeline.lock().unwrap().iter().all(|samples| {
                samples
                    .last()
                    .is_some_and(|s| s.at > since && s.ready == Some(true) && s.status.as_deref() == Some("nominal"))
            });
            if all {
                let done = self.now();
                return Some(done.saturating_sub(since));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The faults of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// One node cut from every other, both ways.
    Isolate,
    /// Two nodes cut from the three others, both ways.
    Minority,
    /// One node hears nobody (its inbound dropped).
    Deaf,
    /// One node is heard by nobody (its outbound dropped).
    Mute,
    /// One node cut and healed every 100-500 ms.
    Flapping,
    /// 30 % loss on one link.
    Lossy,
    /// One node SIGSTOPped for 2 s.
    Pause,
    /// One node killed (-9) and started again.
    Restart,
}

const FAULTS: [Fault; 8] = [
    Fault::Isolate,
    Fault::Minority,
    Fault::Deaf,
    Fault::Mute,
    Fault::Flapping,
    Fault::Lossy,
    Fault::Pause,
    Fault::Restart,
];

/// What one phase measured.
#[derive(Debug, Default)]
struct Measured {
    /// Per node that had to leave rotation: from the cut until its first 503.
    out: Vec<Duration>,
    /// From the heal until every node was nominal.
    heal: Option<Duration>,
}

fn gossip_vars(lab: &Lab, i: usize, size: usize) -> Vec<(String, String)> {
    let seeds = (0..size).map(|h| format!("{}:{GOSSIP_PORT}", lab.ip(h))).collect::<Vec<_>>().join(",");
    [
        ("ARLEN_CLUSTER_ENABLED", "1".to_owned()),
        ("ARLEN_CLUSTER_NAME", "netns".to_owned()),
        ("ARLEN_CLUSTER_NODE_ID", format!("node-{}", i + 1)),
        ("ARLEN_CLUSTER_EXPECTED_NODES", size.to_string()),
        ("ARLEN_CLUSTER_QUORUM_POLICY", "majority".to_owned()),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip".to_owned()),
        ("ARLEN_CLUSTER_GOSSIP_LISTEN", format!("{}:{GOSSIP_PORT}", lab.ip(i))),
        ("ARLEN_CLUSTER_GOSSIP_SEEDS", seeds),
        ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn describe(lab: &Lab, nodes: &[Node]) -> String {
    let monitor: Vec<String> = (0..nodes.len())
        .map(|i| {
            let address: SocketAddr = format!("{}:{HTTP_PORT}", lab.ip(i)).parse().unwrap();
            let clusterz = get(address, "/clusterz", Duration::from_millis(500)).map(|(_, b)| b).unwrap_or_default();
            let summary = serde_json::from_str::<ClusterDocument>(&clusterz).map_or_else(
                |_| "no /clusterz document".to_owned(),
                |doc| {
                    format!(
                        "{} observed {} ({})",
                        doc.cluster.quorum.status, doc.cluster.observed_nodes, doc.coordination.source_health.detail
                    )
                },
            );
            format!("node-{}: {summary}\n{}", i + 1, nodes[i].tail())
        })
        .collect();
    monitor.join("\n")
}

/// Five gossip nodes under a seeded schedule of real faults.
#[test]
fn real_partitions_pauses_and_crashes_keep_the_signal_honest() {
    let seed = seed();
    let phases: usize = std::env::var("ARLEN_NETNS_PHASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let mut rng = StdRng::seed_from_u64(seed);
    let size = 5;
    let lab = Lab::new(size, seed);
    let logs = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> =
        (0..size).map(|i| Node::start(&lab, i, &gossip_vars(&lab, i, size), logs.path())).collect();
    let addresses: Vec<SocketAddr> = (0..size).map(|i| format!("{}:{HTTP_PORT}", lab.ip(i)).parse().unwrap()).collect();
    let checker = Checker::start(addresses.clone());
    let converged = checker.wait_nominal(Duration::ZERO, Duration::from_secs(30));
    assert!(converged.is_some(), "seed {seed}: never converged\n{}", describe(&lab, &nodes));

    let mut results: BTreeMap<Fault, Vec<Measured>> = BTreeMap::new();
    // Every kind once (in a seeded order), then seeded picks;
    // `ARLEN_NETNS_ONLY=Flapping,Mute` restricts the kinds.
    let only = std::env::var("ARLEN_NETNS_ONLY").unwrap_or_default();
    let kinds: Vec<Fault> =
        FAULTS.iter().copied().filter(|f| only.is_empty() || only.split(',').any(|o| o == format!("{f:?}"))).collect();
    let mut order: Vec<Fault> = kinds.clone();
    order.shuffle(&mut rng);
    while order.len() < phases {
        order.push(kinds[rng.random_range(0..kinds.len())]);
    }
    for (phase, fault) in order.into_iter().take(phases).enumerate() {
        let mut hosts: Vec<usize> = (0..size).collect();
        hosts.shuffle(&mut rng);
        let victim = hosts[0];
        let context = format!("seed {seed} phase {phase} ({fault:?}, node-{})", victim + 1);
        let others = |set: &[usize]| (0..size).filter(|h| !set.contains(h)).collect::<Vec<_>>();
        // Who must leave rotation, who must never leave it.
        let (out, touched): (Vec<usize>, Vec<usize>) = match fault {
            Fault::Isolate | Fault::Deaf | Fault::Flapping | Fault::Pause | Fault::Restart => {
                (vec![victim], vec![victim])
            }
            Fault::Minority => (hosts[..2].to_vec(), hosts[..2].to_vec()),
            // A node nobody hears is counted out by the others, and hears
            // that it is: it leaves rotation too.
            Fault::Mute => (vec![victim], vec![victim]),
            Fault::Lossy => (vec![], vec![]),
        };
        let cut_at = checker.now();
        let mut hold = Duration::from_secs(4);
        let mut paused_answer = None;
        match fault {
            Fault::Isolate => {
                let rest = others(&[victim]);
                lab.filter(victim, &rest, &rest, &[]);
            }
            Fault::Minority => {
                let (small, large) = (hosts[..2].to_vec(), hosts[2..].to_vec());
                for h in &small {
                    lab.filter(*h, &large, &large, &[]);
                }
                for h in &large {
                    lab.filter(*h, &small, &small, &[]);
                }
            }
            Fault::Deaf => lab.filter(victim, &others(&[victim]), &[], &[]),
            Fault::Mute => lab.filter(victim, &[], &others(&[victim]), &[]),
            Fault::Lossy => {
                lab.filter(hosts[0], &[], &[], &[(hosts[1], 30)]);
                lab.filter(hosts[1], &[], &[], &[(hosts[0], 30)]);
            }
            Fault::Flapping => {
                // Its own generator: how many toggles fit depends on timing,
                // and the schedule after this phase must not.
                let mut flaps = StdRng::seed_from_u64(seed ^ phase as u64);
                let rest = others(&[victim]);
                let until = Instant::now() + Duration::from_secs(4);
                let mut cut = false;
                while Instant::now() < until {
                    if cut {
                        lab.heal(victim);
                    } else {
                        lab.filter(victim, &rest, &rest, &[]);
                    }
                    cut = !cut;
                    std::thread::sleep(Duration::from_millis(flaps.random_range(100..500)));
                }
                // It ends cut: the node must then leave rotation like an isolated one.
                lab.filter(victim, &rest, &rest, &[]);
                hold = Duration::from_secs(4);
            }
            Fault::Pause => {
                nodes[victim].signal("STOP");
                // A probe queued while the node is stopped is answered when it
                // resumes, from a view it cannot vouch for: it must be 503.
                let address = addresses[victim];
                paused_answer = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    get(address, "/readyz", Duration::from_secs(10)).map(|(status, _)| status)
                }));
                hold = Duration::from_secs(2);
            }
            Fault::Restart => {
                nodes[victim].signal("KILL");
                hold = Duration::from_millis(500);
            }
        }
        let out_from = checker.now();
        std::thread::sleep(hold);
        // The heal starts now: a node healed first (the rules of five
        // namespaces go one by one) may be ready before the last is healed.
        // A sample is stamped when its request starts and answered up to
        // its timeout later: "out until the heal" is checked until then.
        let heal_at = checker.now();
        let out_until = heal_at.saturating_sub(Duration::from_millis(250));
        match fault {
            Fault::Pause => nodes[victim].signal("CONT"),
            Fault::Restart => {
                nodes[victim] = Node::start(&lab, victim, &gossip_vars(&lab, victim, size), logs.path());
            }
            _ => (0..size).for_each(|h| lab.heal(h)),
        }
        let heal = checker.wait_nominal(heal_at, HEAL_BOUND);
        let detail = || describe(&lab, &nodes);
        assert!(heal.is_some(), "{context}: not every node nominal within {HEAL_BOUND:?} of the heal\n{}", detail());
        if let Some(answer) = paused_answer {
            let status = answer.join().unwrap();
            assert_eq!(status, Some(503), "{context}: a probe queued during the pause was answered {status:?}");
        }

        let mut measured = Measured { heal, ..Measured::default() };
        // Nodes that had to leave rotation did, within the bound, and stayed out.
        for &node in &out {
            let samples = checker.samples(node, out_from, out_until);
            let first_out = samples.iter().find(|s| s.ready != Some(true)).map(|s| s.at.saturating_sub(cut_at));
            let Some(first_out) = first_out else {
                panic!("{context}: node-{} answered ready throughout the fault\n{}", node + 1, detail());
            };
            if fault != Fault::Flapping {
                assert!(first_out <= OUT_BOUND, "{context}: node-{} left rotation after {first_out:?}", node + 1);
                let back = samples.iter().find(|s| s.at > cut_at + OUT_BOUND && s.ready == Some(true));
                assert!(
                    back.is_none(),
                    "{context}: node-{} ready again before the heal (cut at {cut_at:?}): {}\n{}",
                    node + 1,
                    back.map(Sample::explain).unwrap_or_default(),
                    detail()
                );
            }
            measured.out.push(first_out);
        }
        if fault == Fault::Flapping {
            // Ended cut at `out_from - hold`: out within the bound of that last cut.
            let last_cut = out_from;
            let samples = checker.samples(victim, last_cut + OUT_BOUND, out_until);
            let ready: Vec<String> = samples.iter().filter(|s| s.ready == Some(true)).map(Sample::explain).collect();
            assert!(
                ready.is_empty(),
                "{context}: flapping node ready while cut off (cut at {last_cut:?}): {ready:?}\n{}",
                detail()
            );
        }
        // Two disjoint sides never both ready beyond the bound.
        if fault == Fault::Minority {
            let small = checker.samples(hosts[0], cut_at + OUT_BOUND, out_until);
            assert!(small.iter().all(|s| s.ready != Some(true)), "{context}: the minority was ready");
        }
        // The untouched majority never left rotation, from the cut to nominal again.
        for node in others(&touched) {
            let samples = checker.samples(node, cut_at, checker.now());
            let bad: Vec<&Sample> = samples.iter().filter(|s| s.ready != Some(true)).collect();
            assert!(
                bad.is_empty(),
                "{context}: untouched node-{} left rotation: {}\n{}",
                node + 1,
                bad.first().map(|s| s.explain()).unwrap_or_default(),
                detail()
            );
        }
        println!("{context}: out after {:?}, nominal {:?} after the heal", measured.out, measured.heal);
        results.entry(fault).or_default().push(measured);
    }
    checker.stop();
    println!("\nseed {seed}: {phases} phases on 5 nodes (bounds: out {OUT_BOUND:?}, heal {HEAL_BOUND:?})");
    println!("{:<10} {:>6} {:>28} {:>28}", "fault", "count", "out ms (min/median/max)", "heal ms (min/median/max)");
    let stats = |mut values: Vec<Duration>| {
        values.sort();
        if values.is_empty() {
            return "-".to_owned();
        }
        let ms = |d: Duration| d.as_millis();
        format!("{}/{}/{}", ms(values[0]), ms(values[values.len() / 2]), ms(values[values.len() - 1]))
    };
    for (fault, runs) in &results {
        let out: Vec<Duration> = runs.iter().flat_map(|m| m.out.clone()).collect();
        let heal: Vec<Duration> = runs.iter().filter_map(|m| m.heal).collect();
        println!("{:<10} {:>6} {:>28} {:>28}", format!("{fault:?}"), runs.len(), stats(out), stats(heal));
    }
    drop(nodes);
}

/// etcd as the source: a node cut from etcd only (its peers still reach it)
/// reports `partitioned` within the lease TTL + 1 s and leaves rotation;
/// the others never do; healed, it is back.
#[test]
fn a_node_cut_from_etcd_only_reports_partitioned_within_the_ttl() {
    let seed = seed();
    let size = 4; // three nodes and etcd
    let lab = Lab::new(size, seed ^ 0xe7cd);
    let logs = tempfile::tempdir().unwrap();
    let etcd_ip = lab.ip(3);
    let data = tempfile::tempdir().unwrap();
    let etcd_log = std::fs::File::create(logs.path().join("etcd.log")).unwrap();
    let mut etcd = Command::new("ip")
        .args(["netns", "exec", &lab.ns(3), "etcd", "--name", "netns", "--data-dir"])
        .arg(data.path())
        .args([
            "--listen-client-urls",
            &format!("http://{etcd_ip}:2379"),
            "--advertise-client-urls",
            &format!("http://{etcd_ip}:2379"),
            "--listen-peer-urls",
            &format!("http://{etcd_ip}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{etcd_ip}:2380"),
            "--initial-cluster",
            &format!("netns=http://{etcd_ip}:2380"),
        ])
        .stdout(Stdio::null())
        .stderr(etcd_log)
        .spawn()
        .expect("start etcd in its namespace (scripts/provision --tests installs etcd-server)");
    let ttl = 3u64;
    let vars = |i: usize| -> Vec<(String, String)> {
        [
            ("ARLEN_CLUSTER_ENABLED", "1".to_owned()),
            ("ARLEN_CLUSTER_NAME", "netns-etcd".to_owned()),
            ("ARLEN_CLUSTER_NODE_ID", format!("node-{}", i + 1)),
            ("ARLEN_CLUSTER_EXPECTED_NODES", "3".to_owned()),
            ("ARLEN_CLUSTER_QUORUM_POLICY", "majority".to_owned()),
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd".to_owned()),
            ("ARLEN_CLUSTER_ETCD_ENDPOINTS", format!("http://{etcd_ip}:2379")),
            ("ARLEN_CLUSTER_ETCD_LEASE_TTL_SECONDS", ttl.to_string()),
            ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let nodes: Vec<Node> = (0..3).map(|i| Node::start(&lab, i, &vars(i), logs.path())).collect();
    let addresses: Vec<SocketAddr> = (0..3).map(|i| format!("{}:{HTTP_PORT}", lab.ip(i)).parse().unwrap()).collect();
    let checker = Checker::start(addresses);
    let converged = checker.wait_nominal(Duration::ZERO, Duration::from_secs(40));
    let etcd_tail = || std::fs::read_to_string(logs.path().join("etcd.log")).unwrap_or_default();
    assert!(converged.is_some(), "seed {seed}: never converged\n{}\n{}", describe(&lab, &nodes), etcd_tail());
    let victim = StdRng::seed_from_u64(seed).random_range(0..3usize);
    let cut_at = checker.now();
    lab.filter(victim, &[3], &[3], &[]);
    let bound = Duration::from_secs(ttl + 1);
    let deadline = Instant::now() + bound + Duration::from_secs(2);
    let partitioned = loop {
        let last = checker.samples(victim, cut_at, checker.now());
        if let Some(s) = last.iter().find(|s| s.status.as_deref() == Some("partitioned")) {
            break Some(s.at - cut_at);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = partitioned.unwrap_or_else(|| panic!("seed {seed}: never partitioned\n{}", describe(&lab, &nodes)));
    assert!(took <= bound, "seed {seed}: partitioned after {took:?}, bound {bound:?}");
    std::thread::sleep(Duration::from_secs(2));
    let out = checker.samples(victim, cut_at + took, checker.now());
    let back_in: Vec<String> = out.iter().filter(|s| s.ready == Some(true)).map(Sample::explain).collect();
    assert!(
        back_in.is_empty(),
        "seed {seed}: the node cut from etcd was in rotation again after {took:?}: {back_in:#?}\n{}",
        describe(&lab, &nodes)
    );
    let heal_at = checker.now();
    lab.heal(victim);
    let healed = checker.wait_nominal(heal_at, Duration::from_secs(ttl * 3 + 5));
    assert!(healed.is_some(), "seed {seed}: not back after the heal\n{}", describe(&lab, &nodes));
    for node in (0..3).filter(|n| *n != victim) {
        let samples = checker.samples(node, cut_at, checker.now());
        assert!(samples.iter().all(|s| s.ready == Some(true)), "node-{} left rotation", node + 1);
    }
    println!("seed {seed}: node-{} cut from etcd: partitioned after {took:?} (bound {bound:?}); nominal {healed:?} after the heal", victim + 1);
    checker.stop();
    drop(nodes);
    let _ = etcd.kill();
    let _ = etcd.wait();
}

/// A request with a bearer token and a JSON body: the status and the body.
fn send_with_token(address: SocketAddr, method: &str, target: &str, token: &str, body: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// Zone-aware readiness on real processes: six gossip nodes in three zones
/// (two each) under `quorumPolicy = zones`. Whole, every node says the
/// cluster survives the loss of any one zone, and stop permits go one zone
/// at a time; zone a cut off from the others (nftables, both ways), its two
/// nodes leave rotation within the bound and stay out, the four others never
/// leave it and say the cluster survives the loss of zone a but of no other;
/// healed, every node is nominal again.
#[test]
fn a_zone_cut_off_leaves_rotation_and_the_others_name_what_they_survive() {
    const TOKEN: &str = "zones-netns-operations-token-0123456789";
    let seed = seed();
    let size = 6;
    let lab = Lab::new(size, seed ^ 0x2011e5);
    let logs = tempfile::tempdir().unwrap();
    let zone = |i: usize| format!("zone-{}", ["a", "b", "c"][i / 2]);
    let vars = |i: usize| {
        let mut vars: Vec<(String, String)> =
            gossip_vars(&lab, i, size).into_iter().filter(|(k, _)| k != "ARLEN_CLUSTER_QUORUM_POLICY").collect();
        vars.extend(
            [
                ("ARLEN_CLUSTER_QUORUM_POLICY", "zones".to_owned()),
                ("ARLEN_CLUSTER_EXPECTED_ZONES", "3".to_owned()),
                ("ARLEN_CLUSTER_ZONE", zone(i)),
                ("ARLEN_OPS_TOKEN", TOKEN.to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        vars
    };
    let nodes: Vec<Node> = (0..size).map(|i| Node::start(&lab, i, &vars(i), logs.path())).collect();
    let addresses: Vec<SocketAddr> = (0..size).map(|i| format!("{}:{HTTP_PORT}", lab.ip(i)).parse().unwrap()).collect();
    let checker = Checker::start(addresses.clone());
    let converged = checker.wait_nominal(Duration::ZERO, Duration::from_secs(40));
    assert!(converged.is_some(), "seed {seed}: never converged\n{}", describe(&lab, &nodes));
    let tolerance = |i: usize| -> Option<String> {
        let (_, body) = get(addresses[i], "/clusterz", Duration::from_secs(1))?;
        serde_json::from_str::<ClusterDocument>(&body).ok()?.cluster.quorum.zone_summary
    };
    // Zones travel in the identities of protocol version 3, which peers
    // speak once they have heard each other's versions: a member first
    // learnt through a datagram of version 1 shows its zone a few rounds later.
    let whole = "survives the loss of any one zone (zone-a, zone-b, zone-c)";
    for i in 0..size {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = tolerance(i);
        while said.as_deref() != Some(whole) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
            said = tolerance(i);
        }
        assert_eq!(said.as_deref(), Some(whole), "node-{}\n{}", i + 1, describe(&lab, &nodes));
    }

    // Stop permits, one zone at a time (node-1 grants: the lowest-named member).
    let permit = |node: &str| {
        let body = format!(r#"{{"node": "{node}", "holder": "deploy", "ttl_seconds": 60}}"#);
        send_with_token(addresses[0], "POST", "/_arlen/stop-permits", TOKEN, &body).expect("node-1 answers")
    };
    assert_eq!(permit("node-1").0, 200, "the first permit");
    let (status, refused) = permit("node-3");
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("one zone at a time"), "{refused}");
    assert_eq!(permit("node-2").0, 200, "a second node of the same zone: the others keep 4 nodes in 2 zones");
    for node in ["node-1", "node-2"] {
        let released = send_with_token(addresses[0], "DELETE", &format!("/_arlen/stop-permits/{node}"), TOKEN, "");
        assert_eq!(released.map(|(s, _)| s), Some(200), "{node} released");
    }

    // Zone a (node-1, node-2) cut from zones b and c, both ways.
    let cut_at = checker.now();
    let others: Vec<usize> = (2..size).collect();
    for i in 0..2 {
        lab.filter(i, &others, &others, &[]);
    }
    let deadline = Instant::now() + OUT_BOUND + Duration::from_secs(2);
    let out_after = loop {
        let out: Vec<Option<Duration>> = (0..2)
            .map(|i| {
                checker.samples(i, cut_at, checker.now()).iter().find(|s| s.ready == Some(false)).map(|s| s.at - cut_at)
            })
            .collect();
        if out.iter().all(Option::is_some) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let detail = || describe(&lab, &nodes);
    for (i, out) in out_after.iter().enumerate() {
        let out =
            out.unwrap_or_else(|| panic!("seed {seed}: node-{} of the cut zone stayed ready\n{}", i + 1, detail()));
        assert!(out <= OUT_BOUND, "seed {seed}: node-{} left rotation after {out:?}", i + 1);
    }
    // Hold the cut: the zone stays out, the others say what they survive.
    let hold_until = Instant::now() + Duration::from_secs(2);
    let survivors_said = poll_said(&tolerance, 2, hold_until);
    assert_eq!(
        survivors_said.as_deref(),
        Some("survives the loss of zone zone-a; not of zone zone-b or zone-c"),
        "seed {seed}\n{}",
        detail()
    );
    while Instant::now() < hold_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let heal_at = checker.now();
    for i in 0..2 {
        let out = checker.samples(i, cut_at + OUT_BOUND, heal_at);
        let back: Vec<String> = out.iter().filter(|s| s.ready == Some(true)).map(Sample::explain).collect();
        assert!(back.is_empty(), "seed {seed}: node-{} of the cut zone ready again: {back:?}\n{}", i + 1, detail());
    }
    for i in 0..size {
        lab.heal(i);
    }
    let healed = checker.wait_nominal(heal_at, HEAL_BOUND);
    assert!(healed.is_some(), "seed {seed}: not nominal within {HEAL_BOUND:?} of the heal\n{}", detail());
    for i in 2..size {
        let samples = checker.samples(i, cut_at, checker.now());
        let bad: Vec<String> = samples.iter().filter(|s| s.ready != Some(true)).map(Sample::explain).collect();
        assert!(
            bad.is_empty(),
            "seed {seed}: node-{} of an untouched zone left rotation: {bad:?}\n{}",
            i + 1,
            detail()
        );
    }
    println!(
        "seed {seed}: zone-a cut off: out after {:?}; nominal {healed:?} after the heal; the others stayed in rotation",
        out_after
    );
    checker.stop();
    drop(nodes);
}

/// What node `i` says of its zones, once it says something else than before
/// the cut (or the last thing it said by `until`).
fn poll_said(tolerance: &dyn Fn(usize) -> Option<String>, i: usize, until: Instant) -> Option<String> {
    loop {
        let said = tolerance(i);
        let changed = said.as_deref().is_some_and(|s| !s.starts_with("survives the loss of any one zone"));
        if changed || Instant::now() > until {
            return said;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How node `observer` classes `member` in its `/clusterz` (with the evidence's sentence).
fn reachability_of(address: SocketAddr, member: &str) -> Option<(String, String)> {
    let (_, body) = get(address, "/clusterz", Duration::from_secs(1))?;
    let doc: ClusterDocument = serde_json::from_str(&body).ok()?;
    let entry = doc.cluster.members.into_iter().find(|m| m.node_id == member && m.state.is_up())?;
    Some((entry.reachability?.to_string(), entry.evidence.map(|e| e.explanation).unwrap_or_default()))
}

/// Polls until `observer` classes `member` as `class`; how long it took.
fn wait_class(address: SocketAddr, member: &str, class: &str, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < limit {
        let seen = reachability_of(address, member);
        if seen.as_ref().is_some_and(|(c, _)| c == class) {
            return Ok(started.elapsed());
        }
        last = seen;
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("{member} never {class} within {limit:?}; last seen {last:?}"))
}

/// Gray failures named, from real faults: four gossip nodes; a link that
/// drops 40 % of one direction (`lossy`), a node that cannot send to one
/// peer (`one_way`, both ends), a node SIGSTOPped 40 ms of every 50 ms (a
/// CPU-throttled container: `slow`). Each class appears in the observer's
/// `/clusterz` with its evidence, the time it took is printed, and each
/// member is `ok` again once the fault ends. Nobody leaves rotation.
#[test]
fn gray_failures_are_named_with_their_evidence() {
    let seed = seed();
    let size = 4;
    let lab = Lab::new(size, seed ^ 0x6a7);
    let logs = tempfile::tempdir().unwrap();
    let nodes: Vec<Node> = (0..size).map(|i| Node::start(&lab, i, &gossip_vars(&lab, i, size), logs.path())).collect();
    let addresses: Vec<SocketAddr> = (0..size).map(|i| format!("{}:{HTTP_PORT}", lab.ip(i)).parse().unwrap()).collect();
    let checker = Checker::start(addresses.clone());
    assert!(
        checker.wait_nominal(Duration::ZERO, Duration::from_secs(40)).is_some(),
        "never converged\n{}",
        describe(&lab, &nodes)
    );
    let limit = Duration::from_secs(20);
    let detail = |what: String| format!("seed {seed}: {what}\n{}", describe(&lab, &nodes));
    let started = checker.now();
    // Everyone is ok to begin with.
    for member in ["node-2", "node-3", "node-4"] {
        wait_class(addresses[0], member, "ok", limit).unwrap_or_else(|e| panic!("{}", detail(e)));
    }

    // Lossy: node-1 drops 40 % of what node-2 sends it.
    lab.filter(0, &[], &[], &[(1, 40)]);
    let lossy = wait_class(addresses[0], "node-2", "lossy", limit).unwrap_or_else(|e| panic!("{}", detail(e)));
    let said = reachability_of(addresses[0], "node-2").map(|(_, why)| why).unwrap_or_default();
    assert!(said.contains("needed a second try or failed"), "{said}");
    lab.heal(0);
    let lossy_gone = wait_class(addresses[0], "node-2", "ok", limit).unwrap_or_else(|e| panic!("{}", detail(e)));

    // One way: node-1 cannot send to node-2 (node-2 still reaches node-1).
    lab.filter(0, &[], &[1], &[]);
    let one_way = wait_class(addresses[0], "node-2", "one_way", limit).unwrap_or_else(|e| panic!("{}", detail(e)));
    let said = reachability_of(addresses[0], "node-2").map(|(_, why)| why).unwrap_or_default();
    assert!(said.contains("it reaches this node and this node does not reach it"), "{said}");
    let other_end = wait_class(addresses[1], "node-1", "one_way", limit).unwrap_or_else(|e| panic!("{}", detail(e)));
    lab.heal(0);
    let one_way_gone = wait_class(addresses[0], "node-2", "ok", limit).unwrap_or_else(|e| panic!("{}", detail(e)));

    // Slow: node-3 runs 10 ms of every 50 ms.
    let throttling = Arc::new(AtomicBool::new(true));
    let throttle = {
        let (throttling, pid) = (throttling.clone(), nodes[2].child.id().to_string());
        std::thread::spawn(move || {
            while throttling.load(Ordering::Relaxed) {
                must("kill", &["-STOP", &pid]);
                std::thread::sleep(Duration::from_millis(40));
                must("kill", &["-CONT", &pid]);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let slow = wait_class(addresses[0], "node-3", "slow", limit);
    throttling.store(false, Ordering::Relaxed);
    throttle.join().unwrap();
    nodes[2].signal("CONT");
    let slow = slow.unwrap_or_else(|e| panic!("{}", detail(e)));
    let slow_gone = wait_class(addresses[0], "node-3", "ok", limit).unwrap_or_else(|e| panic!("{}", detail(e)));

    // Nobody left rotation for any of it (the throttled node may answer late, never 503).
    for node in 0..size {
        let samples = checker.samples(node, started, checker.now());
        let out: Vec<String> = samples.iter().filter(|s| s.ready == Some(false)).map(Sample::explain).collect();
        assert!(out.is_empty(), "{}", detail(format!("node-{} left rotation: {out:?}", node + 1)));
    }
    checker.stop();
    println!(
        "seed {seed}: time for each class to appear (and to clear after the fault): lossy {lossy:?} ({lossy_gone:?}), one_way {one_way:?} at node-1 and {other_end:?} at node-2 ({one_way_gone:?}), slow {slow:?} ({slow_gone:?})"
    );
    drop(nodes);
}
