//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Arlen: cluster-aware health, readiness and status for HTTP services.
///
/// Start with `arlen serve` to run one node, then try
/// `curl -i http://127.0.0.1:3000/readyz`. Configuration comes from
/// `config/app.{plist,toml,json}`, `config/environments/<env>.<ext>` and
/// `ARLEN_*` variables; `arlen config` shows the result and where each value
/// came from.
#[derive(Debug, Parser)]
#[command(name = "arlen", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node: the reserved endpoints (/healthz, /livez, /readyz,
    /// /clusterz, /metrics), cluster headers on every response, and a demo
    /// route at `/`.
    ///
    /// Stops gracefully on SIGTERM or Ctrl-C: stops accepting, lets requests in
    /// flight finish (shutdown.gracefulTimeoutSeconds), exits 0. Exits 2 on a
    /// configuration error, before binding any socket.
    Serve(ServeArgs),
    /// Start a local cluster: N `arlen serve` nodes on loopback wired by
    /// gossip (or a throwaway etcd), their URLs, and a live status table until
    /// Ctrl-C (which stops every node gracefully). Kill a node from another terminal
    /// (`kill -9 <pid>`) and watch the others turn `degraded`.
    Up(UpArgs),
    /// Diagnose a running cluster: for each node, readiness JSON, /clusterz and
    /// the X-Arlen-* headers of sampled requests, then findings in plain words
    /// (who sees whom, unreachable nodes, quorum required but unmet, headers
    /// that contradict /clusterz). Give one URL and the others are found from
    /// its members. Exit status: 0 nominal, 1 degraded, 2 partitioned or
    /// disagreeing views, 3 some node unreachable.
    Triage(TriageArgs),
    /// Rehearse failures on a real local cluster: crashes, churn, partitions,
    /// one-way and flaky links, etcd outages. Measures detection, readiness
    /// flip and recovery against budgets, counts spurious transitions and
    /// failed requests of background traffic, and writes report.json,
    /// report.md and timeline.svg. Exits 1 when a budget is missed.
    Drill(DrillArgs),
    /// Stop permits, for scripts and operators: `acquire NODE` asks a node of
    /// the cluster whether NODE may be stopped now (granted only if quorum
    /// holds with every permit in force counted as stopped), `release NODE`
    /// gives it back, `list` shows them. The operations token comes from
    /// ARLEN_OPS_TOKEN. Exit status: 0 granted (or done), 1 refused, 2 a
    /// usage error (no token, no such node or permit), 3 no node answered.
    #[command(subcommand)]
    StopPermit(StopPermitCommand),
    /// Gossip keys: `arlen gossip keygen` prints a fresh key for
    /// `cluster.gossip.keys` (or one line of `cluster.gossip.keysFile`).
    #[command(subcommand)]
    Gossip(GossipCommand),
    /// Print the effective configuration, each value with its source
    /// (default, file with line, variable or flag). Secrets are masked.
    /// Exits 2 and lists every error when the configuration is invalid.
    Config(ConfigArgs),
    /// Print shell completions for `arlen` on standard output:
    /// `arlen completions bash > /etc/bash_completion.d/arlen` (also zsh,
    /// fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) on standard output:
    /// `arlen man > /usr/local/share/man/man1/arlen.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum GossipCommand {
    /// Print a fresh random 32-byte key, base64, on standard output. Nothing
    /// else is printed, so `arlen gossip keygen > keys` or a Kubernetes
    /// `--from-literal=key=$(arlen gossip keygen)` works as it is.
    Keygen,
}

/// Where the configuration lives.
#[derive(Debug, Args)]
pub struct Location {
    /// Environment name; selects config/environments/<env>.<ext>
    /// [default: $ARLEN_ENV, else development]
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Directory that holds config/ [default: $ARLEN_APP_ROOT, else the current directory]
    #[arg(long, value_name = "DIR")]
    pub app_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (beats `host` in files and $ARLEN_HOST)
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Port to listen on, 1-65535 (beats `port` in files and $ARLEN_PORT)
    #[arg(long, value_name = "P")]
    pub port: Option<String>,
    /// Sidecar mode: forward every request that is not a reserved endpoint
    /// to this HTTP application, e.g. http://127.0.0.1:8080 (beats
    /// `proxy.upstream` and $ARLEN_PROXY_UPSTREAM)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub location: Location,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// A load balancer `arlen drill run --via` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// haproxy on PATH (Debian's package)
    Haproxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpSource {
    Gossip,
    Etcd,
}

/// What a membership source offers a local cluster and its drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Its transport takes fault rules (`/_arlen/faults`): links can be cut.
    FaultRules,
    /// It depends on a store that the local cluster runs (and a drill can stop).
    Store,
}

impl UpSource {
    /// What the source offers (asked, not assumed from its name elsewhere).
    pub fn offers(self) -> &'static [Capability] {
        match self {
            UpSource::Gossip => &[Capability::FaultRules],
            UpSource::Etcd => &[Capability::Store],
        }
    }

    /// The source's wire name.
    pub fn name(self) -> &'static str {
        match self {
            UpSource::Gossip => arlen_membership::GOSSIP_NAME,
            UpSource::Etcd => arlen_membership::ETCD_NAME,
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// HTTP port of the first node; node i uses base+i-1 for HTTP (TCP) and gossip (UDP)
    #[arg(long, value_name = "P", default_value_t = 3000)]
    pub base_port: u16,
    /// cluster.expectedNodes of every node [default: --nodes]
    #[arg(long, value_name = "N")]
    pub expected: Option<u16>,
    /// The quorum policy of every node: all, majority or a number
    #[arg(long, value_name = "POLICY", default_value = "majority", value_parser = quorum_policy)]
    pub quorum_policy: String,
    /// Let /readyz answer 200 even while quorum is not met (by default a node
    /// leaves rotation when its cluster loses quorum)
    #[arg(long)]
    pub no_quorum_gate: bool,
    /// Readiness requires quorum (the default now; kept for old scripts)
    #[arg(long, hide = true)]
    pub quorum_required: bool,
    /// Cluster name
    #[arg(long, default_value = "local")]
    pub cluster: String,
    /// Membership source: gossip between the nodes, or a throwaway
    /// single-member etcd that `arlen up` starts (needs the `etcd` binary)
    #[arg(long, value_enum, default_value_t = UpSource::Gossip)]
    pub source: UpSource,
    /// Table refresh period in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub refresh_ms: u64,
}

/// `--quorum-policy`, checked with the configuration's own rule.
fn quorum_policy(text: &str) -> Result<String, String> {
    arlen_config::QuorumPolicySetting::parse(text).map(|policy| policy.name())
}

#[derive(Debug, Args)]
pub struct TriageArgs {
    /// Node URLs (http://host:port); the rest are discovered from /clusterz members
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Print JSON for automation
    #[arg(long)]
    pub json: bool,
    /// Refresh in place until Ctrl-C
    #[arg(long)]
    pub watch: bool,
    /// Requests sampled per node for their X-Arlen-* headers
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub samples: u32,
    /// Path of the sampled requests (live traffic)
    #[arg(long, value_name = "P", default_value = "/")]
    pub path: String,
    /// Refresh period of --watch, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Per-request timeout, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Discovery reads at most this many nodes (members beyond are not followed)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_nodes: usize,
    /// One round of discovery and reading ends after this long, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 15000)]
    pub deadline_ms: u64,
    /// Only ask whether NODE (a node id or URL) may stop now without the
    /// cluster losing quorum: exit 0 yes, 1 no (with the reason), 3 not found
    /// or not answering
    #[arg(long, value_name = "NODE", conflicts_with_all = ["watch", "json"])]
    pub can_stop: Option<String>,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: DrillCommand,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// List the scenarios and their default budgets
    List {
        /// Print JSON (scenario, sources, about, budgets per source) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run one scenario
    Run(DrillRunArgs),
}

#[derive(Debug, Args)]
pub struct DrillRunArgs {
    /// Scenario name (see `arlen drill list`)
    pub scenario: String,
    /// How many nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Membership source of the cluster
    #[arg(long, value_enum, default_value_t = UpSource::Gossip)]
    pub source: UpSource,
    /// HTTP port of the first node; node i uses base+i-1 for HTTP (TCP) and
    /// gossip (UDP) [default: free ports anywhere]
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Where to write report.json, report.md and timeline.svg
    /// [default: drill-reports/<scenario>-<time>]
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Override a budget, e.g. --budget detection_ms=1000 (repeatable)
    #[arg(long, value_name = "NAME=VALUE")]
    pub budget: Vec<String>,
    /// How long a fault is held before it is healed, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub hold_ms: u64,
    /// Sampling period of every node, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub sample_ms: u64,
    /// Do not run background traffic
    #[arg(long)]
    pub no_traffic: bool,
    /// Send the background traffic through a real load balancer started for
    /// the drill (haproxy, health-checking /readyz): failed requests are what
    /// its clients saw
    #[arg(long, value_enum, value_name = "BALANCER")]
    pub via: Option<Via>,
    /// A configuration key for every node, e.g. --set cluster.quorumPolicy=majority
    /// or --set cluster.quorumLossGraceMs=10000 (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum StopPermitCommand {
    /// Ask for a permit to stop NODE
    Acquire {
        /// The node to stop (its node id)
        node: String,
        /// A node of the cluster to ask (any: a node that does not grant names the one that does)
        #[arg(long, value_name = "URL")]
        url: String,
        /// Who asks, shown to others (default: user@host)
        #[arg(long)]
        holder: Option<String>,
        /// How long the permit lasts unless released or spent (1..3600)
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        ttl_seconds: u64,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Give back the permit to stop NODE
    Release {
        node: String,
        #[arg(long, value_name = "URL")]
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// The permits in force
    List {
        #[arg(long, value_name = "URL")]
        url: String,
        #[arg(long)]
        json: bool,
    },
}
