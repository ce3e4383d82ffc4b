//! Sampling every node at a fixed interval, and background traffic that
//! follows readiness like a load balancer would.

use arlen_wire::states::QuorumStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// What one sample of one node said (from one `/readyz` response: its
/// status code and its `X-Arlen-Cluster-*` headers come from one snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    pub reachable: bool,
    pub ready: bool,
    pub status: String,
    pub observed: Option<u64>,
}

impl NodeState {
    fn unreachable() -> Self {
        Self { reachable: false, ready: false, status: UNREACHABLE.to_owned(), observed: None }
    }

    /// Whether the node answered with this cluster status.
    pub fn is(&self, status: QuorumStatus) -> bool {
        self.reachable && self.status == status.as_str()
    }
}

/// `status` of a node that did not answer, and of one whose answer had no status header.
pub const UNREACHABLE: &str = "unreachable";
pub const UNKNOWN: &str = "unknown";

/// A change in one node's state at `t_ms` after the drill started.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub t_ms: u64,
    pub state: NodeState,
}

/// Everything sampled so far.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Per node: the state at each change.
    pub changes: Vec<Vec<Change>>,
    pub samples: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub failures: Vec<String>,
    /// Whether traffic and unserved time count (from convergence until the
    /// cluster is stopped).
    pub counting: bool,
    /// Time, since counting began, during which no node was sampled ready: a
    /// load balancer in front would have answered 503 throughout.
    pub unserved_ms: u64,
    /// Ticks of the traffic generator that found no node ready (each one is
    /// also a failed request).
    pub unserved_ticks: u64,
}

impl Timeline {
    pub fn latest(&self, node: usize) -> Option<&NodeState> {
        self.changes.get(node).and_then(|c| c.last()).map(|c| &c.state)
    }
}

pub type Shared = Arc<Mutex<Timeline>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Timeline> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sample(client: &reqwest::Client, url: &str) -> NodeState {
    match client.get(format!("{url}/readyz")).send().await {
        Ok(response) => {
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            NodeState {
                reachable: true,
                ready: response.status().is_success(),
                status: header(arlen_wire::headers::CLUSTER_STATUS).unwrap_or_else(|| UNKNOWN.to_owned()),
                observed: header(arlen_wire::headers::CLUSTER_OBSERVED_NODES).and_then(|v| v.parse().ok()),
            }
        }
        Err(_) => NodeState::unreachable(),
    }
}

/// Samples every node every `interval` until `stop` is set; bounded by `limit`.
pub async fn run_sampler(urls: Vec<String>, started: Instant, interval: Duration, shared: Shared, limit: Duration) {
    let client = crate::probe::client(Duration::from_millis(400));
    lock(&shared).changes = vec![Vec::new(); urls.len()];
    let mut ticker = tokio::time::interval(interval);
    let mut previous_ms: Option<u64> = None;
    while started.elapsed() < limit {
        ticker.tick().await;
        let states = futures_util::future::join_all(urls.iter().map(|url| sample(&client, url))).await;
        let t_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut timeline = lock(&shared);
        timeline.samples += 1;
        // The time since the previous sample is unserved when this sample
        // found no node ready (the sampling period bounds the error).
        if timeline.counting && !states.iter().any(|s| s.ready) {
            timeline.unserved_ms += previous_ms.map_or(0, |p| t_ms.saturating_sub(p));
        }
        previous_ms = Some(t_ms);
        for (node, state) in states.into_iter().enumerate() {
            if timeline.latest(node) != Some(&state) {
                timeline.changes[node].push(Change { t_ms, state });
            }
        }
    }
}

/// Sends `GET /` round-robin to the nodes last sampled ready, about every
/// `interval`, until `limit`, as a load balancer health-checking `/readyz`
/// would. A failure is a connection error, a 5xx — or a tick that found no
/// node ready, which a load balancer would have answered 503: a drill cannot
/// pass while the whole service is out of rotation.
pub async fn run_traffic(urls: Vec<String>, started: Instant, interval: Duration, shared: Shared, limit: Duration) {
    let client = crate::probe::client(Duration::from_secs(2));
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(interval);
    let mut unserved_since: Option<u128> = None; // the start of a run of ticks with no node ready
    while started.elapsed() < limit {
        ticker.tick().await;
        let (ready, counting): (Vec<usize>, bool) = {
            let timeline = lock(&shared);
            ((0..urls.len()).filter(|n| timeline.latest(*n).is_some_and(|s| s.ready)).collect(), timeline.counting)
        };
        if ready.is_empty() {
            if counting {
                let t_ms = started.elapsed().as_millis();
                let mut timeline = lock(&shared);
                timeline.requests_failed += 1;
                timeline.unserved_ticks += 1;
                if unserved_since.is_none() {
                    timeline.failures.push(format!("t={t_ms} ms: no node ready (a load balancer would answer 503)"));
                    unserved_since = Some(t_ms);
                }
            }
            continue;
        }
        unserved_since = None;
        let node = ready[next % ready.len()];
        next += 1;
        let outcome = client.get(format!("{}/", urls[node])).send().await;
        let t_ms = started.elapsed().as_millis();
        let mut timeline = lock(&shared);
        match outcome {
            Ok(response) if !response.status().is_server_error() => timeline.requests_ok += 1,
            Ok(response) => {
                timeline.requests_failed += 1;
                timeline.failures.push(format!("t={t_ms} ms node-{}: HTTP {}", node + 1, response.status()));
            }
            Err(error) => {
                timeline.requests_failed += 1;
                timeline.failures.push(format!("t={t_ms} ms node-{}: {error}", node + 1));
            }
        }
    }
}
