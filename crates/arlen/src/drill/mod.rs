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

mod balancer;
mod report;
mod sampler;

use crate::cli::Capability;
use arlen_config::Key;
use arlen_wire::faults::{Direction, FaultRule, FaultsBody};
use arlen_wire::states::QuorumStatus;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::{DrillArgs, DrillCommand, DrillRunArgs, UpSource};
use crate::cluster::{ClusterSpec, LocalCluster};
use report::{Event, Report};
use sampler::{NodeState, Shared, Timeline};

/// A drill scenario: a table of steps, run in order by [`run_step`], and the
/// budgets of the figures they record.
struct Scenario {
    name: &'static str,
    about: &'static str,
    /// What it needs of a membership source beyond nodes to kill and
    /// restart: it runs on every source that offers all of it.
    needs: &'static [Capability],
    /// Fewest nodes it needs.
    min_nodes: u16,
    /// Settings of the cluster beyond the drill's own.
    env: &'static [(Key, &'static str)],
    budgets: &'static [Budget],
    steps: &'static [Step],
}

/// A figure's budget for each source it is checked on (sources detect at
/// their own pace); a figure without a budget is only reported.
struct Budget {
    figure: Figure,
    limits: &'static [(UpSource, f64)],
}

const fn budget(figure: Figure, limits: &'static [(UpSource, f64)]) -> Budget {
    Budget { figure, limits }
}

impl Budget {
    fn on(&self, source: UpSource) -> Option<f64> {
        self.limits.iter().find(|(s, _)| *s == source).map(|(_, limit)| *limit)
    }
}

/// The sources a scenario runs on.
fn sources_for(scenario: &Scenario) -> Vec<UpSource> {
    <UpSource as clap::ValueEnum>::value_variants()
        .iter()
        .copied()
        .filter(|source| scenario.needs.iter().all(|need| source.offers().contains(need)))
        .collect()
}

/// A figure a drill records, named once: budgets and steps refer to it by
/// this type, so a budget can never name a figure no step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    Detection,
    ReadinessFlip,
    Recovery,
    SpuriousTransitions,
    FailedRequests,
    GracefulFailedRequests,
    GracefulRejoinWorst,
    KillRejoinWorst,
    KillFailedRequests,
    RejoinWorst,
    Unserved,
    GracefulUnserved,
    KillUnserved,
    PermitsRefused,
}

impl Figure {
    /// The name in reports, `--budget name=value` and `drill list`.
    fn name(self) -> &'static str {
        match self {
            Figure::Detection => "detection_ms",
            Figure::ReadinessFlip => "readiness_flip_ms",
            Figure::Recovery => "recovery_ms",
            Figure::SpuriousTransitions => "spurious_transitions",
            Figure::FailedRequests => "failed_requests",
            Figure::GracefulFailedRequests => "graceful_failed_requests",
            Figure::GracefulRejoinWorst => "graceful_rejoin_worst_ms",
            Figure::KillRejoinWorst => "kill_rejoin_worst_ms",
            Figure::KillFailedRequests => "kill_failed_requests",
            Figure::RejoinWorst => "rejoin_worst_ms",
            Figure::Unserved => "unserved_ms",
            Figure::GracefulUnserved => "graceful_unserved_ms",
            Figure::KillUnserved => "kill_unserved_ms",
            Figure::PermitsRefused => "permits_refused",
        }
    }

    fn unit(self) -> &'static str {
        if self.name().ends_with("_ms") {
            "ms"
        } else {
            "count"
        }
    }
}

impl Step {
    /// The figures this step records.
    #[cfg(test)]
    fn figures(self) -> Vec<Figure> {
        match self {
            Step::Detect { figure, .. } | Step::Recover { figure } | Step::FailedRequests { figure } => vec![figure],
            Step::Spurious { .. } => vec![Figure::SpuriousTransitions],
            Step::RestartEach { worst, failed, unserved, hard } => {
                let mut figures = vec![worst, failed, unserved];
                if !hard {
                    figures.push(Figure::PermitsRefused);
                }
                figures
            }
            Step::Inject(_) | Step::Hold | Step::Heal => Vec::new(),
        }
    }
}

/// Which nodes a step means.
#[derive(Debug, Clone, Copy)]
enum Nodes {
    Everyone,
    /// Everyone but the last node (the one a fault hits).
    Others,
}

/// A fault and (by [`Step::Heal`]) its undoing.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9 the last node; healed by restarting it.
    Kill,
    /// The last node's gossip cut both ways.
    Isolate,
    /// The last node drops everything it receives.
    Deaf,
    /// A minority and a majority cut from each other.
    Split,
    /// This much loss between node-1 and node-2, both ways.
    Loss(u8),
    /// etcd stopped.
    StopEtcd,
}

/// What the sampled states must show.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Degraded(Nodes),
    NotReady(Nodes),
    Partitioned(Nodes),
    /// The last node counts only itself, the others count all but it.
    Isolated,
    /// The majority side ready (degraded), the minority not ready.
    MajorityOnly,
    /// The deaf node sees nobody and is not ready; the others count it out.
    DeafCountedOut,
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    Inject(Fault),
    /// Wait for `expect`; `figure` is the time since the fault.
    Detect {
        figure: Figure,
        what: &'static str,
        expect: Expect,
    },
    /// Keep the fault until the hold time since it was injected has passed.
    Hold,
    /// Undo the fault.
    Heal,
    /// Wait until every node is nominal and ready; `figure` is the time since the heal.
    Recover {
        figure: Figure,
    },
    /// Status changes since convergence beyond `allowed` per node.
    Spurious {
        nodes: Nodes,
        allowed: u32,
    },
    /// Background requests that failed since the start.
    FailedRequests {
        figure: Figure,
    },
    /// Restart each node in turn (SIGTERM and drain, or kill -9) and wait
    /// nominal; `worst` is the longest rejoin, `failed` the requests that
    /// failed during the step (a tick with no node ready is one), `unserved`
    /// the time no node was ready.
    RestartEach {
        hard: bool,
        worst: Figure,
        failed: Figure,
        unserved: Figure,
    },
}

const NOMINAL_AGAIN: Step = Step::Recover { figure: Figure::Recovery };
const NO_FLAPPING: Step = Step::Spurious { nodes: Nodes::Everyone, allowed: 2 };

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "crash",
        about: "kill -9 one node, then restart it",
        needs: &[],
        min_nodes: 2,
        env: &[],
        budgets: &[
            budget(Figure::Detection, &[(UpSource::Gossip, 1500.0), (UpSource::Etcd, 4000.0)]),
            budget(Figure::ReadinessFlip, &[(UpSource::Gossip, 1500.0), (UpSource::Etcd, 4000.0)]),
            budget(Figure::Recovery, &[(UpSource::Gossip, 3000.0), (UpSource::Etcd, 6000.0)]),
            budget(Figure::SpuriousTransitions, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
        ],
        steps: &[
            Step::Inject(Fault::Kill),
            Step::Detect { figure: Figure::Detection, what: "survivors report degraded", expect: Expect::Degraded(Nodes::Others) },
            Step::Detect { figure: Figure::ReadinessFlip, what: "survivors not ready", expect: Expect::NotReady(Nodes::Others) },
            Step::Hold,
            Step::Heal,
            NOMINAL_AGAIN,
            Step::Spurious { nodes: Nodes::Others, allowed: 2 },
        ],
    },
    Scenario {
        name: "churn",
        about: "restart every node in turn: gracefully (SIGTERM, drained), then with kill -9",
        needs: &[],
        min_nodes: 2,
        env: &[],
        budgets: &[
            budget(Figure::GracefulFailedRequests, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
            budget(Figure::GracefulUnserved, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
            budget(Figure::GracefulRejoinWorst, &[(UpSource::Gossip, 5000.0), (UpSource::Etcd, 8000.0)]),
            budget(Figure::KillRejoinWorst, &[(UpSource::Gossip, 6000.0), (UpSource::Etcd, 10000.0)]),
        ],
        steps: &[
            Step::RestartEach {
                hard: false,
                worst: Figure::GracefulRejoinWorst,
                failed: Figure::GracefulFailedRequests,
                unserved: Figure::GracefulUnserved,
            },
            Step::RestartEach {
                hard: true,
                worst: Figure::KillRejoinWorst,
                failed: Figure::KillFailedRequests,
                unserved: Figure::KillUnserved,
            },
        ],
    },
    Scenario {
        name: "rolling-restart",
        about: "a rolling deploy: each node in turn gets SIGTERM, drains, restarts and rejoins before the next; not one background request may fail",
        needs: &[],
        min_nodes: 2,
        env: &[],
        budgets: &[
            budget(Figure::FailedRequests, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
            budget(Figure::Unserved, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
            budget(Figure::PermitsRefused, &[(UpSource::Gossip, 0.0), (UpSource::Etcd, 0.0)]),
            budget(Figure::RejoinWorst, &[(UpSource::Gossip, 5000.0), (UpSource::Etcd, 8000.0)]),
        ],
        steps: &[Step::RestartEach {
            hard: false,
            worst: Figure::RejoinWorst,
            failed: Figure::FailedRequests,
            unserved: Figure::Unserved,
        }],
    },
    Scenario {
        name: "partition",
        about: "isolate one node both ways for a while, then heal",
        needs: &[Capability::FaultRules],
        min_nodes: 2,
        env: &[],
        budgets: &[
            budget(Figure::Detection, &[(UpSource::Gossip, 1500.0)]),
            budget(Figure::ReadinessFlip, &[(UpSource::Gossip, 1500.0)]),
            budget(Figure::Recovery, &[(UpSource::Gossip, 3000.0)]),
            budget(Figure::SpuriousTransitions, &[(UpSource::Gossip, 0.0)]),
        ],
        steps: &[
            Step::Inject(Fault::Isolate),
            Step::Detect { figure: Figure::Detection, what: "each side counts only itself", expect: Expect::Isolated },
            Step::Detect { figure: Figure::ReadinessFlip, what: "every node not ready", expect: Expect::NotReady(Nodes::Everyone) },
            Step::Hold,
            Step::Heal,
            NOMINAL_AGAIN,
            NO_FLAPPING,
        ],
    },
    Scenario {
        name: "split",
        about: "cut the cluster into a minority and a majority (quorumPolicy=majority): only the majority stays ready",
        needs: &[Capability::FaultRules],
        min_nodes: 3,
        env: &[(Key::ClusterQuorumPolicy, "majority")],
        budgets: &[
            budget(Figure::Detection, &[(UpSource::Gossip, 1500.0)]),
            budget(Figure::Recovery, &[(UpSource::Gossip, 3000.0)]),
            budget(Figure::SpuriousTransitions, &[(UpSource::Gossip, 0.0)]),
        ],
        steps: &[
            Step::Inject(Fault::Split),
            Step::Detect { figure: Figure::Detection, what: "majority ready, minority not", expect: Expect::MajorityOnly },
            Step::Hold,
            Step::Heal,
            NOMINAL_AGAIN,
            NO_FLAPPING,
        ],
    },
    Scenario {
        name: "one-way",
        about: "one node can send but not receive: it sees nobody, and the others count it out (it cannot answer their probes)",
        needs: &[Capability::FaultRules],
        min_nodes: 2,
        env: &[],
        budgets: &[
            budget(Figure::Detection, &[(UpSource::Gossip, 1500.0)]),
            budget(Figure::Recovery, &[(UpSource::Gossip, 3000.0)]),
            budget(Figure::SpuriousTransitions, &[(UpSource::Gossip, 0.0)]),
        ],
        steps: &[
            Step::Inject(Fault::Deaf),
            Step::Detect {
                figure: Figure::Detection,
                what: "the deaf node sees nobody and the others count it out",
                expect: Expect::DeafCountedOut,
            },
            Step::Hold,
            Step::Heal,
            NOMINAL_AGAIN,
            NO_FLAPPING,
        ],
    },
    Scenario {
        name: "flaky-link",
        about: "25% loss between two nodes for a while: no status change is the expected outcome",
        needs: &[Capability::FaultRules],
        min_nodes: 3,
        env: &[],
        budgets: &[budget(Figure::SpuriousTransitions, &[(UpSource::Gossip, 0.0)]), budget(Figure::FailedRequests, &[(UpSource::Gossip, 0.0)])],
        steps: &[
            Step::Inject(Fault::Loss(25)),
            Step::Hold,
            Step::Heal,
            Step::Spurious { nodes: Nodes::Everyone, allowed: 0 },
            Step::FailedRequests { figure: Figure::FailedRequests },
        ],
    },
    Scenario {
        name: "etcd-outage",
        about: "stop etcd: every node partitioned within the lease TTL + 1 s; start it again: nominal without restarts",
        needs: &[Capability::Store],
        min_nodes: 2,
        env: &[],
        budgets: &[budget(Figure::Detection, &[(UpSource::Etcd, 4000.0)]), budget(Figure::Recovery, &[(UpSource::Etcd, 10000.0)])],
        steps: &[
            Step::Inject(Fault::StopEtcd),
            Step::Detect { figure: Figure::Detection, what: "every node partitioned", expect: Expect::Partitioned(Nodes::Everyone) },
            Step::Hold,
            Step::Heal,
            NOMINAL_AGAIN,
        ],
    },
];

pub fn run(args: DrillArgs) -> ExitCode {
    match args.command {
        DrillCommand::List { json: true } => {
            let scenarios: Vec<serde_json::Value> = SCENARIOS
                .iter()
                .map(|s| {
                    let budgets: Vec<serde_json::Value> = s
                        .budgets
                        .iter()
                        .map(|b| {
                            serde_json::json!({
                                "figure": b.figure.name(),
                                "gossip": b.on(UpSource::Gossip),
                                "etcd": b.on(UpSource::Etcd),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "scenario": s.name,
                        "sources": sources_for(s).iter().map(|source| source.name()).collect::<Vec<_>>(),
                        "about": s.about,
                        "budgets": budgets,
                    })
                })
                .collect();
            say!("{}", serde_json::to_string_pretty(&serde_json::json!({ "scenarios": scenarios })).expect("json"));
            ExitCode::SUCCESS
        }
        DrillCommand::List { json: false } => {
            say!("{:<12} {:<12} about", "SCENARIO", "SOURCES");
            for s in SCENARIOS {
                let sources = sources_for(s).iter().map(|source| source.name()).collect::<Vec<_>>().join(",");
                say!("{:<12} {:<12} {}", s.name, sources, s.about);
                let budgets: Vec<String> = s
                    .budgets
                    .iter()
                    .map(|b| match (b.on(UpSource::Gossip), b.on(UpSource::Etcd)) {
                        (Some(g), Some(e)) if g != e => format!("{} ≤ {g} (etcd {e})", b.figure.name()),
                        (Some(v), _) | (None, Some(v)) => format!("{} ≤ {v}", b.figure.name()),
                        (None, None) => b.figure.name().to_owned(),
                    })
                    .collect();
                say!("{:<25} budgets: {}", "", budgets.join(", "));
            }
            ExitCode::SUCCESS
        }
        DrillCommand::Run(run_args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(run_drill(run_args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(error) => {
                    shout!("arlen drill: {error:#}");
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
    /// Each fault's window (a restart of one node is one), ms after the start.
    fault_windows: Vec<(u64, u64)>,
    converged_at: u64,
    /// The fault in place, and when it was injected and healed.
    fault: Option<Fault>,
    fault_at: Option<Instant>,
    healed_at: Option<Instant>,
}

impl Drill {
    fn t_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn event(&mut self, what: impl Into<String>) {
        let what = what.into();
        let t_ms = self.t_ms();
        say!("[{:>6.2}s] {what}", t_ms as f64 / 1000.0);
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

    fn record(&mut self, figure: Figure, value: f64) {
        self.figures.insert(figure.name().to_owned(), (value, figure.unit()));
    }

    /// Records a latency figure; `None` (the state was never reached) is
    /// recorded as infinite and fails any budget.
    fn record_latency(&mut self, figure: Figure, took: Option<Duration>) {
        let value = took.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1000.0);
        self.record(figure, value);
    }

    async fn rules(&mut self, node: usize, rules: Vec<FaultRule>) -> anyhow::Result<()> {
        let url = format!("{}/_arlen/faults", self.cluster.nodes[node].url);
        let request =
            if rules.is_empty() { self.http.delete(&url) } else { self.http.put(&url).json(&FaultsBody::rules(rules)) };
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

    /// Asks another node for a permit to stop `node`, as a deploy script
    /// would (`/_arlen/stop-permits`, following a 421 to the granting node):
    /// `Err` with the reason when refused.
    async fn stop_permit(&mut self, node: usize) -> anyhow::Result<Result<(), String>> {
        let name = self.cluster.nodes[node].id.clone();
        let base = self.cluster.nodes[(node + 1) % self.cluster.nodes.len()].url.clone();
        let request = |client: &reqwest::Client, base: &str| {
            client
                .post(format!("{base}/_arlen/stop-permits"))
                .json(&serde_json::json!({ "node": name, "holder": "arlen drill", "ttl_seconds": 120 }))
        };
        let (status, body) = crate::stop_permit::send(&self.http, &base, &self.token, request, |_, _| {})
            .await
            .map_err(|error| anyhow::anyhow!("stop permit for {name}: {error}"))?;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match status.as_u16() {
            200 => Ok(Ok(())),
            409 => Ok(Err(body["refused"].as_str().unwrap_or("refused").to_owned())),
            other => anyhow::bail!("stop permit for {name}: HTTP {other}: {body}"),
        }
    }

    fn gossip_address(&self, node: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.cluster.nodes[node].port))
    }
}

fn all(states: &[Option<NodeState>], nodes: &[usize], check: impl Fn(&NodeState) -> bool) -> bool {
    nodes.iter().all(|n| states.get(*n).and_then(Option::as_ref).is_some_and(&check))
}

fn nominal_and_ready(s: &NodeState) -> bool {
    s.is(QuorumStatus::Nominal) && s.ready
}

fn parse_budgets(overrides: &[String], scenario: &Scenario, source: UpSource) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut budgets: BTreeMap<String, f64> =
        scenario.budgets.iter().filter_map(|b| Some((b.figure.name().to_owned(), b.on(source)?))).collect();
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

/// `--set key=value`: configuration keys for every node, as variables;
/// every problem at once (an unknown key with its closest name, a value the
/// key refuses).
fn parse_settings(settings: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut variables = Vec::new();
    let mut problems = Vec::new();
    for entry in settings {
        let Some((name, value)) = entry.split_once('=') else {
            problems.push(format!("--set {entry:?}: expected key=value, e.g. cluster.quorumPolicy=majority"));
            continue;
        };
        match arlen_config::find_key(name.trim()) {
            Some(spec) => variables.push((spec.variable(), value.trim().to_owned())),
            None => problems.push(match arlen_config::closest_key(name.trim()) {
                Some(close) => format!("--set {entry:?}: unknown key {name:?}; did you mean {}?", close.key),
                None => format!("--set {entry:?}: unknown key {name:?} (`arlen config` lists them)"),
            }),
        }
    }
    if problems.is_empty() && !variables.is_empty() {
        let pairs: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(errors) = arlen_config::Config::from_map(std::path::Path::new("/nonexistent"), &pairs) {
            problems.push(format!("--set: {errors}"));
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(variables)
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
    anyhow::ensure!(
        sources_for(scenario).contains(&args.source),
        "scenario {} does not apply to the {} source (it needs {:?}; the source offers {:?})",
        scenario.name,
        args.source.name(),
        scenario.needs,
        args.source.offers()
    );
    let budgets = parse_budgets(&args.budget, scenario, args.source)?;
    let nodes = args.nodes.max(scenario.min_nodes);
    let token = format!("{:032x}", rand::random::<u128>());
    let mut env = vec![
        (Key::ClusterFaultInjectionEnabled.variable(), "1".to_owned()),
        (Key::ObservabilityOpsToken.variable(), token.clone()),
        (Key::ShutdownDrainDelaySeconds.variable(), "1".to_owned()),
        (Key::LogLevel.variable(), "info".to_owned()),
    ];
    env.extend(scenario.env.iter().map(|(key, value)| (key.variable(), (*value).to_owned())));
    env.extend(parse_settings(&args.set)?);
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
    say!("drill {}: {} — {nodes} nodes, {} source", scenario.name, scenario.about, args.source.name());
    if let Some(note) = spec.rolling_restart_note() {
        say!("  {note}");
    }
    let cluster = LocalCluster::start(spec).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let haproxy = match args.via {
        Some(crate::cli::Via::Haproxy) => Some(balancer::Haproxy::start(&ports, &cluster.log_dir).await?),
        None => None,
    };
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
    let traffic = (!args.no_traffic).then(|| {
        let tick = Duration::from_millis(20);
        match &haproxy {
            Some(haproxy) => {
                tokio::spawn(balancer::run_traffic(haproxy.url.clone(), started, tick, shared.clone(), limit))
            }
            None => tokio::spawn(sampler::run_traffic(urls, started, tick, shared.clone(), limit)),
        }
    });
    let mut drill = Drill {
        cluster,
        started,
        shared: shared.clone(),
        events: Vec::new(),
        token,
        http: crate::probe::client(Duration::from_secs(2)),
        figures: BTreeMap::new(),
        fault_windows: Vec::new(),
        converged_at: 0,
        fault: None,
        fault_at: None,
        healed_at: None,
    };
    drill.event(format!("started {nodes} nodes; logs in {}", drill.cluster.log_dir.display()));
    if let Some(haproxy) = &haproxy {
        drill.event(format!("traffic through haproxy at {} (health checks on /readyz every 100 ms)", haproxy.url));
    }
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
            counting(&drill, true);
            run_steps(&mut drill, scenario.steps, Duration::from_millis(args.hold_ms)).await
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    counting(&drill, false);
    sampler.abort();
    if let Some(traffic) = traffic {
        traffic.abort();
    }
    drop(haproxy);
    drill.event("stopping the cluster");
    drill.cluster.stop_all(|_, _| {}).await;
    outcome?;

    let timeline = std::mem::take(&mut *shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let outcome = Outcome { scenario, source: args.source.name(), nodes, node_ids, budgets, timeline };
    finish(drill, outcome, args.report)
}

/// What a finished run hands to its report.
struct Outcome {
    scenario: &'static Scenario,
    source: &'static str,
    nodes: u16,
    node_ids: Vec<String>,
    budgets: BTreeMap<String, f64>,
    timeline: Timeline,
}

/// Judges the figures against their budgets, writes the report and prints
/// the summary; true when every budget held.
fn finish(drill: Drill, outcome: Outcome, report_dir: Option<PathBuf>) -> anyhow::Result<bool> {
    let Outcome { scenario, source, nodes, node_ids, budgets, timeline } = outcome;
    let figures: Vec<report::Figure> = drill
        .figures
        .iter()
        .map(|(name, (value, unit))| {
            let budget = budgets.get(name).copied();
            report::Figure {
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
        source: source.to_owned(),
        nodes: nodes as usize,
        passed,
        figures,
        events: drill.events,
        fault_windows_ms: drill.fault_windows,
        duration_ms,
        node_ids,
        timeline: timeline.changes,
        samples: timeline.samples,
        requests_ok: timeline.requests_ok,
        requests_failed: timeline.requests_failed,
        unserved_ms: timeline.unserved_ms,
        unserved_ticks: timeline.unserved_ticks,
        failures: timeline.failures,
    };
    let dir = report_dir.unwrap_or_else(|| {
        PathBuf::from("drill-reports").join(format!(
            "{}-{}",
            scenario.name,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        ))
    });
    report::write_all(&report, &dir)?;
    say!();
    for f in &report.figures {
        let budget = f.budget.map_or(String::new(), |b| format!(" (budget {b})"));
        say!(
            "  {:<28} {:>8.0} {}{budget}{}",
            f.name,
            f.value,
            f.unit,
            if f.within_budget { "" } else { "  OVER BUDGET" }
        );
    }
    say!(
        "  background traffic: {} ok, {} failed ({} ticks with no node ready; no node ready for {} ms)",
        report.requests_ok,
        report.requests_failed,
        report.unserved_ticks,
        report.unserved_ms
    );
    say!(
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

fn unserved_ms(drill: &Drill) -> u64 {
    drill.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unserved_ms
}

/// From convergence on, traffic and unserved time count (or, at the end, stop counting).
fn counting(drill: &Drill, on: bool) {
    drill.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).counting = on;
}

/// The node sets of a cluster of `n`.
struct Layout {
    everyone: Vec<usize>,
    last: usize,
    others: Vec<usize>,
    majority: Vec<usize>,
    minority: Vec<usize>,
}

impl Layout {
    fn new(n: usize) -> Self {
        let majority_size = n - (n - 1) / 2;
        Self {
            everyone: (0..n).collect(),
            last: n - 1,
            others: (0..n - 1).collect(),
            majority: (0..majority_size).collect(),
            minority: (majority_size..n).collect(),
        }
    }

    fn nodes(&self, which: Nodes) -> Vec<usize> {
        match which {
            Nodes::Everyone => self.everyone.clone(),
            Nodes::Others => self.others.clone(),
        }
    }

    fn holds(&self, expect: Expect, s: &[Option<NodeState>]) -> bool {
        let rest = self.others.len() as u64;
        match expect {
            Expect::Degraded(which) => all(s, &self.nodes(which), |x| x.is(QuorumStatus::Degraded)),
            Expect::NotReady(which) => all(s, &self.nodes(which), |x| x.reachable && !x.ready),
            Expect::Partitioned(which) => all(s, &self.nodes(which), |x| x.is(QuorumStatus::Partitioned) && !x.ready),
            Expect::Isolated => {
                all(s, &[self.last], |x| x.observed == Some(1) && x.is(QuorumStatus::Degraded))
                    && all(s, &self.others, |x| x.observed == Some(rest) && x.is(QuorumStatus::Degraded))
            }
            Expect::MajorityOnly => {
                all(s, &self.majority, |x| x.ready && x.is(QuorumStatus::Degraded))
                    && all(s, &self.minority, |x| x.reachable && !x.ready)
            }
            // SWIM: a member that hears no probe answers none, so its peers
            // count it out too, while it sees nobody.
            Expect::DeafCountedOut => {
                all(s, &[self.last], |x| x.observed == Some(1) && !x.ready)
                    && all(s, &self.others, |x| x.observed == Some(rest))
            }
        }
    }
}

fn node_list(nodes: &[usize]) -> String {
    nodes.iter().map(|i| format!("node-{}", i + 1)).collect::<Vec<_>>().join(",")
}

async fn run_steps(drill: &mut Drill, steps: &[Step], hold: Duration) -> anyhow::Result<()> {
    let layout = Layout::new(drill.cluster.nodes.len());
    for step in steps {
        run_step(drill, &layout, *step, hold).await?;
    }
    Ok(())
}

/// One step; each kind is one arm.
async fn run_step(drill: &mut Drill, layout: &Layout, step: Step, hold: Duration) -> anyhow::Result<()> {
    let wait = Duration::from_secs(30);
    match step {
        Step::Inject(fault) => {
            let t_ms = drill.t_ms();
            drill.fault_windows.push((t_ms, t_ms));
            inject(drill, layout, fault).await?;
            drill.fault = Some(fault);
            drill.fault_at = Some(Instant::now());
        }
        Step::Detect { figure, what, expect } => {
            let fault_at = drill.fault_at.unwrap_or_else(Instant::now);
            let seen = drill.wait_for(what, wait, |s| layout.holds(expect, s)).await;
            drill.record_latency(figure, seen.map(|_| fault_at.elapsed()));
        }
        Step::Hold => {
            let since = drill.fault_at.map_or(Duration::ZERO, |t| t.elapsed());
            tokio::time::sleep(hold.saturating_sub(since)).await;
        }
        Step::Heal => {
            let t_ms = drill.t_ms();
            if let Some(window) = drill.fault_windows.last_mut() {
                window.1 = t_ms;
            }
            drill.healed_at = Some(Instant::now());
            if let Some(fault) = drill.fault.take() {
                heal(drill, layout, fault).await?;
            }
        }
        Step::Recover { figure } => {
            let healed_at = drill.healed_at.unwrap_or_else(Instant::now);
            let recovered =
                drill.wait_for("all nominal and ready", wait, |s| all(s, &layout.everyone, nominal_and_ready)).await;
            drill.record_latency(figure, recovered.map(|_| healed_at.elapsed()));
        }
        Step::Spurious { nodes, allowed } => {
            let expected: Vec<(usize, u32)> = layout.nodes(nodes).into_iter().map(|n| (n, allowed)).collect();
            let count = spurious(drill, &expected);
            drill.record(Figure::SpuriousTransitions, count);
        }
        Step::FailedRequests { figure } => {
            let failures = failed_requests(drill);
            drill.record(figure, failures as f64);
        }
        Step::RestartEach { hard, worst, failed, unserved } => {
            let failed_before = failed_requests(drill);
            let unserved_before = unserved_ms(drill);
            let mut longest = 0f64;
            let mut refused = 0u32;
            for node in layout.everyone.clone() {
                let from = drill.t_ms();
                if !hard {
                    // As a deploy script would: a stop permit first. A refusal
                    // is counted, and the restart goes on to show its cost.
                    match drill.stop_permit(node).await? {
                        Ok(()) => drill.event(format!("stop permit granted for node-{}", node + 1)),
                        Err(reason) => {
                            refused += 1;
                            drill.event(format!("stop permit REFUSED for node-{}: {reason}", node + 1));
                        }
                    }
                }
                if hard {
                    drill.event(format!("hard restart of node-{} (kill -9)", node + 1));
                    drill.cluster.kill(node).await;
                } else {
                    drill.event(format!("graceful restart of node-{} (SIGTERM, drain)", node + 1));
                    drill.cluster.terminate(node);
                    drill.cluster.wait_exit(node, Duration::from_secs(20)).await;
                }
                drill
                    .wait_for(&format!("node-{} seen gone", node + 1), wait, |s| all(s, &[node], |x| !x.reachable))
                    .await;
                drill.cluster.spawn(node)?;
                let took = drill
                    .wait_for("all nominal and ready again", wait, |s| all(s, &layout.everyone, nominal_and_ready))
                    .await;
                longest = longest.max(took.map_or(f64::INFINITY, |t| t.as_secs_f64() * 1000.0));
                let to = drill.t_ms();
                drill.fault_windows.push((from, to));
            }
            drill.record(worst, longest);
            let failures = failed_requests(drill) - failed_before;
            drill.record(failed, failures as f64);
            let gap = unserved_ms(drill) - unserved_before;
            drill.record(unserved, gap as f64);
            if !hard {
                drill.record(Figure::PermitsRefused, f64::from(refused));
            }
        }
    }
    Ok(())
}

async fn inject(drill: &mut Drill, layout: &Layout, fault: Fault) -> anyhow::Result<()> {
    let last = layout.last;
    match fault {
        Fault::Kill => {
            drill.event(format!("fault: kill -9 node-{}", last + 1));
            drill.cluster.kill(last).await;
        }
        Fault::Isolate => {
            drill.event(format!("fault: isolate node-{} both ways", last + 1));
            drill.rules(last, vec![FaultRule::cut(None, Direction::Both)]).await?;
        }
        Fault::Deaf => {
            drill.event(format!("fault: node-{} drops everything it receives", last + 1));
            drill.rules(last, vec![FaultRule::cut(None, Direction::Inbound)]).await?;
        }
        Fault::Split => {
            drill.event(format!(
                "fault: split {{{}}} | {{{}}}",
                node_list(&layout.majority),
                node_list(&layout.minority)
            ));
            for node in layout.everyone.clone() {
                let across = if layout.minority.contains(&node) { &layout.majority } else { &layout.minority };
                let rules: Vec<FaultRule> = across
                    .iter()
                    .map(|peer| FaultRule::cut(Some(drill.gossip_address(*peer)), Direction::Both))
                    .collect();
                drill.rules(node, rules).await?;
            }
        }
        Fault::Loss(percent) => {
            drill.event(format!("fault: {percent}% loss between node-1 and node-2, both ways"));
            let peer = drill.gossip_address(1);
            drill
                .rules(0, vec![FaultRule { drop_percent: percent, ..FaultRule::cut(Some(peer), Direction::Both) }])
                .await?;
        }
        Fault::StopEtcd => {
            drill.event("fault: stop etcd");
            drill.cluster.etcd.as_mut().ok_or_else(|| anyhow::anyhow!("no etcd in this cluster"))?.stop().await;
        }
    }
    Ok(())
}

async fn heal(drill: &mut Drill, layout: &Layout, fault: Fault) -> anyhow::Result<()> {
    match fault {
        Fault::Kill => {
            drill.event(format!("heal: restart node-{}", layout.last + 1));
            drill.cluster.spawn(layout.last)?;
        }
        Fault::Isolate | Fault::Deaf => {
            drill.event("heal: remove the rules");
            drill.rules(layout.last, Vec::new()).await?;
        }
        Fault::Split => {
            drill.event("heal: remove the rules");
            for node in layout.everyone.clone() {
                drill.rules(node, Vec::new()).await?;
            }
        }
        Fault::Loss(_) => {
            drill.event("heal: remove the rules");
            drill.rules(0, Vec::new()).await?;
        }
        Fault::StopEtcd => {
            drill.event("heal: start etcd again");
            drill.cluster.etcd.as_mut().ok_or_else(|| anyhow::anyhow!("no etcd in this cluster"))?.resume().await?;
            drill.event("etcd healthy again");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget on a figure its scenario never records would never be checked.
    #[test]
    fn every_budget_is_on_a_figure_its_scenario_records() {
        for scenario in SCENARIOS {
            let recorded: Vec<Figure> = scenario.steps.iter().flat_map(|step| step.figures()).collect();
            for budget in scenario.budgets {
                assert!(
                    recorded.contains(&budget.figure),
                    "scenario {}: a budget on {} that no step records",
                    scenario.name,
                    budget.figure.name()
                );
            }
        }
    }
}
