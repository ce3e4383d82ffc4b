//! `arlen drill`: rehearse failures on a real local cluster and measure how
//! the cluster signals follow.
//!
//! Each drill starts a cluster (the `arlen up` machinery, with fault
//! injection on), runs background traffic that follows readiness like a load
//! balancer, samples every node's `/readyz` (status code and `X-Arlen-*`
//! headers, from one snapshot) at a fixed interval, injects its fault, heals
//! it, and measures detection, readiness flip, recovery, spurious transitions
//! and failed requests against written budgets. The run exits 1 when a budget
//! is missed. Everything stays on loopback; every loop is bounded.

mod report;
mod sampler;

use arlen_config::Key;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::{DrillArgs, DrillCommand, DrillRunArgs, UpSource};
use crate::cluster::{ClusterSpec, LocalCluster};
use report::{Event, Figure, Report};
use sampler::{NodeState, Shared, Timeline};

/// A drill scenario and its default budgets.
struct Scenario {
    name: &'static str,
    about: &'static str,
    /// Which membership sources it applies to.
    gossip: bool,
    etcd: bool,
    budgets: &'static [(&'static str, f64, f64)],
}

/// `(figure, gossip budget, etcd budget)`; a figure without a budget is only reported.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "crash",
        about: "kill -9 one node, then restart it",
        gossip: true,
        etcd: true,
        budgets: &[
            ("detection_ms", 1500.0, 4000.0),
            ("readiness_flip_ms", 1500.0, 4000.0),
            ("recovery_ms", 3000.0, 6000.0),
            ("spurious_transitions", 0.0, 0.0),
        ],
    },
    Scenario {
        name: "churn",
        about: "restart every node in turn: gracefully (SIGTERM, drained), then with kill -9",
        gossip: true,
        etcd: true,
        budgets: &[
            ("graceful_failed_requests", 0.0, 0.0),
            ("graceful_rejoin_worst_ms", 5000.0, 8000.0),
            ("kill_rejoin_worst_ms", 6000.0, 10000.0),
        ],
    },
    Scenario {
        name: "partition",
        about: "isolate one node both ways for a while, then heal",
        gossip: true,
        etcd: false,
        budgets: &[
            ("detection_ms", 1500.0, 0.0),
            ("readiness_flip_ms", 1500.0, 0.0),
            ("recovery_ms", 3000.0, 0.0),
            ("spurious_transitions", 0.0, 0.0),
        ],
    },
    Scenario {
        name: "split",
        about: "cut the cluster into a minority and a majority (quorumPolicy=majority): only the majority stays ready",
        gossip: true,
        etcd: false,
        budgets: &[("detection_ms", 1500.0, 0.0), ("recovery_ms", 3000.0, 0.0), ("spurious_transitions", 0.0, 0.0)],
    },
    Scenario {
        name: "one-way",
        about: "one node can send but not receive: it sees nobody, and the others count it out (it cannot answer their probes)",
        gossip: true,
        etcd: false,
        budgets: &[("detection_ms", 1500.0, 0.0), ("recovery_ms", 3000.0, 0.0), ("spurious_transitions", 0.0, 0.0)],
    },
    Scenario {
        name: "flaky-link",
        about: "25% loss between two nodes for a while: no status change is the expected outcome",
        gossip: true,
        etcd: false,
        budgets: &[("spurious_transitions", 0.0, 0.0), ("failed_requests", 0.0, 0.0)],
    },
    Scenario {
        name: "etcd-outage",
        about: "stop etcd: every node partitioned within the lease TTL + 1 s; start it again: nominal without restarts",
        gossip: false,
        etcd: true,
        budgets: &[("detection_ms", 0.0, 4000.0), ("recovery_ms", 0.0, 10000.0)],
    },
];

pub fn run(args: DrillArgs) -> ExitCode {
    match args.command {
        DrillCommand::List => {
            println!("{:<12} {:<12} about", "SCENARIO", "SOURCES");
            for s in SCENARIOS {
                let sources = match (s.gossip, s.etcd) {
                    (true, true) => "gossip,etcd",
                    (true, false) => "gossip",
                    _ => "etcd",
                };
                println!("{:<12} {:<12} {}", s.name, sources, s.about);
                let budgets: Vec<String> = s
                    .budgets
                    .iter()
                    .map(|(name, g, e)| match (s.gossip, s.etcd) {
                        (true, true) => format!("{name} ≤ {g} (etcd {e})"),
                        (true, false) => format!("{name} ≤ {g}"),
                        _ => format!("{name} ≤ {e}"),
                    })
                    .collect();
                println!("{:<25} budgets: {}", "", budgets.join(", "));
            }
            ExitCode::SUCCESS
        }
        DrillCommand::Run(run_args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(run_drill(run_args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(error) => {
                    eprintln!("arlen drill: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// A drill in progress.
struct Drill {
    cluster: LocalCluster,
    started: Instant,
    shared: Shared,
    events: Vec<Event>,
    token: String,
    http: reqwest::Client,
    figures: BTreeMap<String, (f64, &'static str)>,
    fault_window: (u64, u64),
    converged_at: u64,
}

impl Drill {
    fn t_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn event(&mut self, what: impl Into<String>) {
        let what = what.into();
        let t_ms = self.t_ms();
        println!("[{:>6.2}s] {what}", t_ms as f64 / 1000.0);
        self.events.push(Event { t_ms, what });
    }

    fn latest(&self) -> Vec<Option<NodeState>> {
        let timeline = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..self.cluster.nodes.len()).map(|n| timeline.latest(n).cloned()).collect()
    }

    /// Waits until `check` holds for the latest sampled states; returns the
    /// time it took, or `None` after `timeout`.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Option<NodeState>]) -> bool,
    ) -> Option<Duration> {
        let from = Instant::now();
        while from.elapsed() < timeout {
            if check(&self.latest()) {
                let took = from.elapsed();
                self.event(format!("{what} after {} ms", took.as_millis()));
                return Some(took);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.event(format!("{what}: NOT reached within {} s", timeout.as_secs()));
        None
    }

    fn record(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.insert(name.to_owned(), (value, unit));
    }

    /// Records a latency figure; `None` (the state was never reached) is
    /// recorded as infinite and fails any budget.
    fn record_latency(&mut self, name: &str, took: Option<Duration>) {
        let value = took.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1000.0);
        self.record(name, value, "ms");
    }

    async fn rules(&mut self, node: usize, rules: serde_json::Value) -> anyhow::Result<()> {
        let url = format!("{}/_arlen/faults", self.cluster.nodes[node].url);
        let request = if rules.as_array().is_some_and(Vec::is_empty) {
            self.http.delete(&url)
        } else {
            self.http.put(&url).json(&serde_json::json!({ "rules": rules }))
        };
        let response = request.bearer_auth(&self.token).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "fault rules on node-{}: HTTP {}: {}",
            node + 1,
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    fn gossip_address(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.cluster.nodes[node].port)
    }
}

fn all(states: &[Option<NodeState>], nodes: &[usize], check: impl Fn(&NodeState) -> bool) -> bool {
    nodes.iter().all(|n| states.get(*n).and_then(Option::as_ref).is_some_and(&check))
}

fn nominal_and_ready(s: &NodeState) -> bool {
    s.reachable && s.status == "nominal" && s.ready
}

fn parse_budgets(overrides: &[String], scenario: &Scenario, etcd: bool) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut budgets: BTreeMap<String, f64> =
        scenario.budgets.iter().map(|(name, g, e)| ((*name).to_owned(), if etcd { *e } else { *g })).collect();
    for entry in overrides {
        let (name, value) =
            entry.split_once('=').ok_or_else(|| anyhow::anyhow!("--budget {entry:?}: expected name=value"))?;
        anyhow::ensure!(
            budgets.contains_key(name),
            "--budget {entry:?}: scenario {} has no budget {name:?} (it has: {})",
            scenario.name,
            budgets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        let value: f64 = value.parse().map_err(|_| anyhow::anyhow!("--budget {entry:?}: {value:?} is not a number"))?;
        budgets.insert(name.to_owned(), value);
    }
    Ok(budgets)
}

/// Status changes per node after `from_ms`, counting reachable samples only.
fn status_changes(timeline: &Timeline, node: usize, from_ms: u64) -> u32 {
    let mut last: Option<&str> = None;
    let mut changes = 0;
    for change in &timeline.changes[node] {
        if !change.state.reachable {
            continue;
        }
        if change.t_ms >= from_ms && last.is_some_and(|l| l != change.state.status) {
            changes += 1;
        }
        last = Some(&change.state.status);
    }
    changes
}

async fn run_drill(args: DrillRunArgs) -> anyhow::Result<bool> {
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == args.scenario)
        .ok_or_else(|| anyhow::anyhow!("unknown scenario {:?}; `arlen drill list` shows them", args.scenario))?;
    let etcd = args.source == UpSource::Etcd;
    anyhow::ensure!(
        if etcd { scenario.etcd } else { scenario.gossip },
        "scenario {} does not apply to the {} source",
        scenario.name,
        if etcd { "etcd" } else { "gossip" }
    );
    let budgets = parse_budgets(&args.budget, scenario, etcd)?;
    let nodes = args.nodes.max(if scenario.name == "split" || scenario.name == "flaky-link" { 3 } else { 2 });
    let token = format!("{:032x}", rand::random::<u128>());
    let mut env = vec![
        (Key::ClusterFaultInjectionEnabled.variable(), "1".to_owned()),
        (Key::ObservabilityOpsToken.variable(), token.clone()),
        (Key::ShutdownDrainDelaySeconds.variable(), "1".to_owned()),
        (Key::LogLevel.variable(), "info".to_owned()),
    ];
    if scenario.name == "split" {
        env.push((Key::ClusterQuorumPolicy.variable(), "majority".to_owned()));
    }
    let spec = ClusterSpec {
        nodes,
        base_port: args.base_port,
        expected: nodes,
        cluster: format!("drill-{}", scenario.name),
        source: args.source,
        quorum_required: true,
        env,
    };
    let started = Instant::now();
    println!(
        "drill {}: {} — {nodes} nodes, {} source",
        scenario.name,
        scenario.about,
        if etcd { "etcd" } else { "gossip" }
    );
    let cluster = LocalCluster::start(spec).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let node_ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    let shared: Shared = Arc::new(std::sync::Mutex::new(Timeline::default()));
    let limit = Duration::from_secs(600);
    let sampler = tokio::spawn(sampler::run_sampler(
        urls.clone(),
        started,
        Duration::from_millis(args.sample_ms),
        shared.clone(),
        limit,
    ));
    let traffic = (!args.no_traffic)
        .then(|| tokio::spawn(sampler::run_traffic(urls, started, Duration::from_millis(20), shared.clone(), limit)));
    let mut drill = Drill {
        cluster,
        started,
        shared: shared.clone(),
        events: Vec::new(),
        token,
        http: crate::probe::client(Duration::from_secs(2)),
        figures: BTreeMap::new(),
        fault_window: (0, 0),
        converged_at: 0,
    };
    drill.event(format!("started {nodes} nodes; logs in {}", drill.cluster.log_dir.display()));
    let everyone: Vec<usize> = (0..nodes as usize).collect();
    let converged = drill
        .wait_for("all nodes nominal and ready", Duration::from_secs(30), |s| all(s, &everyone, nominal_and_ready))
        .await;
    let outcome = match converged {
        None => Err(anyhow::anyhow!(
            "the cluster never converged; see the node logs in {}",
            drill.cluster.log_dir.display()
        )),
        Some(_) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drill.converged_at = drill.t_ms();
            scenario_steps(&mut drill, scenario.name, Duration::from_millis(args.hold_ms)).await
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.abort();
    if let Some(traffic) = traffic {
        traffic.abort();
    }
    drill.event("stopping the cluster");
    drill.cluster.stop_all(|_, _| {}).await;
    outcome?;

    let timeline = std::mem::take(&mut *shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let figures: Vec<Figure> = drill
        .figures
        .iter()
        .map(|(name, (value, unit))| {
            let budget = budgets.get(name).copied();
            Figure {
                name: name.clone(),
                value: *value,
                unit,
                budget,
                within_budget: budget.is_none_or(|b| *value <= b),
            }
        })
        .collect();
    let passed = figures.iter().all(|f| f.within_budget);
    let duration_ms = drill.t_ms();
    let report = Report {
        scenario: scenario.name.to_owned(),
        source: if etcd { "etcd" } else { "gossip" }.to_owned(),
        nodes: nodes as usize,
        passed,
        figures,
        events: drill.events,
        fault_window_ms: drill.fault_window,
        duration_ms,
        node_ids,
        timeline: timeline.changes,
        samples: timeline.samples,
        requests_ok: timeline.requests_ok,
        requests_failed: timeline.requests_failed,
        failures: timeline.failures,
    };
    let dir = args.report.unwrap_or_else(|| {
        PathBuf::from("drill-reports").join(format!(
            "{}-{}",
            scenario.name,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        ))
    });
    report::write_all(&report, &dir)?;
    println!();
    for f in &report.figures {
        let budget = f.budget.map_or(String::new(), |b| format!(" (budget {b})"));
        println!(
            "  {:<28} {:>8.0} {}{budget}{}",
            f.name,
            f.value,
            f.unit,
            if f.within_budget { "" } else { "  OVER BUDGET" }
        );
    }
    println!("  background traffic: {} ok, {} failed", report.requests_ok, report.requests_failed);
    println!(
        "\ndrill {}: {}; report in {}",
        scenario.name,
        if passed { "passed" } else { "FAILED (budget missed)" },
        dir.display()
    );
    Ok(passed)
}

/// Counts spurious status transitions: changes beyond `expected` per node
/// (nodes not listed are not counted).
fn spurious(drill: &Drill, expected: &[(usize, u32)]) -> f64 {
    let timeline = drill.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    expected
        .iter()
        .map(|(node, allowed)| f64::from(status_changes(&timeline, *node, drill.converged_at).saturating_sub(*allowed)))
        .sum()
}

fn failed_requests(drill: &Drill) -> u64 {
    drill.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).requests_failed
}

async fn scenario_steps(drill: &mut Drill, name: &str, hold: Duration) -> anyhow::Result<()> {
    let n = drill.cluster.nodes.len();
    let everyone: Vec<usize> = (0..n).collect();
    let last = n - 1;
    let others: Vec<usize> = (0..last).collect();
    let wait = Duration::from_secs(30);
    match name {
        "crash" => {
            drill.event(format!("fault: kill -9 node-{}", last + 1));
            drill.fault_window.0 = drill.t_ms();
            drill.cluster.kill(last).await;
            let fault_at = Instant::now();
            let detection = drill
                .wait_for("survivors report degraded", wait, |s| all(s, &others, |x| x.status == "degraded"))
                .await;
            drill.record_latency("detection_ms", detection.map(|_| fault_at.elapsed()));
            let flip =
                drill.wait_for("survivors not ready", wait, |s| all(s, &others, |x| x.reachable && !x.ready)).await;
            drill.record_latency("readiness_flip_ms", flip.map(|_| fault_at.elapsed()));
            tokio::time::sleep(hold.saturating_sub(fault_at.elapsed())).await;
            drill.event(format!("heal: restart node-{}", last + 1));
            drill.fault_window.1 = drill.t_ms();
            drill.cluster.spawn(last)?;
            let recovery =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &everyone, nominal_and_ready)).await;
            drill.record_latency("recovery_ms", recovery);
            let spurious = spurious(drill, &others.iter().map(|n| (*n, 2)).collect::<Vec<_>>());
            drill.record("spurious_transitions", spurious, "count");
        }
        "churn" => {
            drill.fault_window.0 = drill.t_ms();
            let mut worst = 0f64;
            for node in 0..n {
                drill.event(format!("graceful restart of node-{} (SIGTERM, drain)", node + 1));
                drill.cluster.terminate(node);
                drill.cluster.wait_exit(node, Duration::from_secs(20)).await;
                drill
                    .wait_for(&format!("node-{} seen gone", node + 1), wait, |s| all(s, &[node], |x| !x.reachable))
                    .await;
                drill.cluster.spawn(node)?;
                let took =
                    drill.wait_for("all nominal and ready again", wait, |s| all(s, &everyone, nominal_and_ready)).await;
                worst = worst.max(took.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1000.0));
            }
            drill.record("graceful_rejoin_worst_ms", worst, "ms");
            let graceful_failures = failed_requests(drill);
            drill.record("graceful_failed_requests", graceful_failures as f64, "count");
            let mut worst = 0f64;
            for node in 0..n {
                drill.event(format!("hard restart of node-{} (kill -9)", node + 1));
                drill.cluster.kill(node).await;
                drill
                    .wait_for(&format!("node-{} seen gone", node + 1), wait, |s| all(s, &[node], |x| !x.reachable))
                    .await;
                drill.cluster.spawn(node)?;
                let took =
                    drill.wait_for("all nominal and ready again", wait, |s| all(s, &everyone, nominal_and_ready)).await;
                worst = worst.max(took.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1000.0));
            }
            drill.fault_window.1 = drill.t_ms();
            drill.record("kill_rejoin_worst_ms", worst, "ms");
            let kill_failures = failed_requests(drill) - graceful_failures;
            drill.record("kill_failed_requests", kill_failures as f64, "count");
        }
        "partition" => {
            drill.event(format!("fault: isolate node-{} both ways", last + 1));
            drill.fault_window.0 = drill.t_ms();
            drill.rules(last, serde_json::json!([{ "direction": "both" }])).await?;
            let fault_at = Instant::now();
            let expected_rest = (n - 1) as u64;
            let detection = drill
                .wait_for("each side counts only itself", wait, |s| {
                    all(s, &[last], |x| x.observed == Some(1) && x.status == "degraded")
                        && all(s, &others, |x| x.observed == Some(expected_rest) && x.status == "degraded")
                })
                .await;
            drill.record_latency("detection_ms", detection.map(|_| fault_at.elapsed()));
            let flip =
                drill.wait_for("every node not ready", wait, |s| all(s, &everyone, |x| x.reachable && !x.ready)).await;
            drill.record_latency("readiness_flip_ms", flip.map(|_| fault_at.elapsed()));
            tokio::time::sleep(hold.saturating_sub(fault_at.elapsed())).await;
            drill.event("heal: remove the rules");
            drill.fault_window.1 = drill.t_ms();
            drill.rules(last, serde_json::json!([])).await?;
            let recovery =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &everyone, nominal_and_ready)).await;
            drill.record_latency("recovery_ms", recovery);
            let spurious = spurious(drill, &everyone.iter().map(|n| (*n, 2)).collect::<Vec<_>>());
            drill.record("spurious_transitions", spurious, "count");
        }
        "split" => {
            let minority: Vec<usize> = ((n - (n - 1) / 2)..n).collect();
            let majority: Vec<usize> = (0..(n - (n - 1) / 2)).collect();
            drill.event(format!(
                "fault: split {{{}}} | {{{}}}",
                majority.iter().map(|i| format!("node-{}", i + 1)).collect::<Vec<_>>().join(","),
                minority.iter().map(|i| format!("node-{}", i + 1)).collect::<Vec<_>>().join(",")
            ));
            drill.fault_window.0 = drill.t_ms();
            for node in 0..n {
                let across: Vec<usize> = if minority.contains(&node) { majority.clone() } else { minority.clone() };
                let rules: Vec<serde_json::Value> = across
                    .iter()
                    .map(|peer| serde_json::json!({ "peer": drill.gossip_address(*peer), "direction": "both" }))
                    .collect();
                drill.rules(node, serde_json::Value::Array(rules)).await?;
            }
            let fault_at = Instant::now();
            let (major, minor) = (majority.clone(), minority.clone());
            let detection = drill
                .wait_for("majority ready, minority not", wait, move |s| {
                    all(s, &major, |x| x.ready && x.status == "degraded") && all(s, &minor, |x| x.reachable && !x.ready)
                })
                .await;
            drill.record_latency("detection_ms", detection.map(|_| fault_at.elapsed()));
            tokio::time::sleep(hold.saturating_sub(fault_at.elapsed())).await;
            drill.event("heal: remove the rules");
            drill.fault_window.1 = drill.t_ms();
            for node in 0..n {
                drill.rules(node, serde_json::json!([])).await?;
            }
            let recovery =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &everyone, nominal_and_ready)).await;
            drill.record_latency("recovery_ms", recovery);
            let spurious = spurious(drill, &everyone.iter().map(|n| (*n, 2)).collect::<Vec<_>>());
            drill.record("spurious_transitions", spurious, "count");
        }
        "one-way" => {
            drill.event(format!("fault: node-{} drops everything it receives", last + 1));
            drill.fault_window.0 = drill.t_ms();
            drill.rules(last, serde_json::json!([{ "direction": "inbound" }])).await?;
            let fault_at = Instant::now();
            // SWIM: a member that hears no probe answers none, so its peers
            // count it out too, while it sees nobody.
            let expected_rest = (n - 1) as u64;
            let detection = drill
                .wait_for("the deaf node sees nobody and the others count it out", wait, |s| {
                    all(s, &[last], |x| x.observed == Some(1) && !x.ready)
                        && all(s, &others, |x| x.observed == Some(expected_rest))
                })
                .await;
            drill.record_latency("detection_ms", detection.map(|_| fault_at.elapsed()));
            tokio::time::sleep(hold.saturating_sub(fault_at.elapsed())).await;
            drill.event("heal: remove the rules");
            drill.fault_window.1 = drill.t_ms();
            drill.rules(last, serde_json::json!([])).await?;
            let recovery =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &everyone, nominal_and_ready)).await;
            drill.record_latency("recovery_ms", recovery);
            let spurious = spurious(drill, &everyone.iter().map(|n| (*n, 2)).collect::<Vec<_>>());
            drill.record("spurious_transitions", spurious, "count");
        }
        "flaky-link" => {
            drill.event("fault: 25% loss between node-1 and node-2, both ways");
            drill.fault_window.0 = drill.t_ms();
            let peer = drill.gossip_address(1);
            drill.rules(0, serde_json::json!([{ "peer": peer, "direction": "both", "drop_percent": 25 }])).await?;
            tokio::time::sleep(hold).await;
            drill.event("heal: remove the rules");
            drill.fault_window.1 = drill.t_ms();
            drill.rules(0, serde_json::json!([])).await?;
            let spurious = spurious(drill, &everyone.iter().map(|n| (*n, 0)).collect::<Vec<_>>());
            drill.record("spurious_transitions", spurious, "count");
            let failures = failed_requests(drill);
            drill.record("failed_requests", failures as f64, "count");
        }
        "etcd-outage" => {
            drill.event("fault: stop etcd");
            drill.fault_window.0 = drill.t_ms();
            drill.cluster.etcd.as_mut().expect("etcd scenario").stop().await;
            let fault_at = Instant::now();
            let detection = drill
                .wait_for("every node partitioned", wait, |s| {
                    all(s, &everyone, |x| x.status == "partitioned" && !x.ready)
                })
                .await;
            drill.record_latency("detection_ms", detection.map(|_| fault_at.elapsed()));
            tokio::time::sleep(hold.saturating_sub(fault_at.elapsed())).await;
            drill.event("heal: start etcd again");
            drill.fault_window.1 = drill.t_ms();
            let healed_at = Instant::now();
            drill.cluster.etcd.as_mut().expect("etcd scenario").resume().await?;
            drill.event("etcd healthy again");
            let recovery =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &everyone, nominal_and_ready)).await;
            // From the moment etcd was started, not from when it reported healthy.
            drill.record_latency("recovery_ms", recovery.map(|_| healed_at.elapsed()));
        }
        other => anyhow::bail!("scenario {other} has no steps"),
    }
    Ok(())
}
