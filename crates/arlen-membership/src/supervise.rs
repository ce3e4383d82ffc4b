//! What every membership source's supervisor shares: fail closed while a
//! task is down, notice a task that stops making progress, restart with a
//! backoff, and give up (so the process exits and its own supervisor
//! restarts it) after too many failures in a row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arlen_cluster::{MembershipView, SnapshotPublisher, SourceHealth};
use tokio::time::Instant;

/// Failures allowed within [`FAILURE_WINDOW`] before the source gives up.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Publishes the view of a source that can vouch for nobody: `observed_nodes
/// = 0` (the quorum model says `partitioned`) and an unhealthy source.
pub(crate) fn fail_closed(publisher: &SnapshotPublisher, source: &'static str, reason: &str) {
    publisher.set_membership(MembershipView {
        source,
        observed_nodes: 0,
        members: Vec::new(),
        health: SourceHealth { ok: false, detail: reason.to_owned(), last_membership_change: Some(SystemTime::now()) },
        duplicate_node_ids: Vec::new(),
        heard: None,
        fresh_for: None,
        accusations: Vec::new(),
        reachability: None,
    });
}

/// Recent failures of one supervised task.
#[derive(Debug, Default)]
pub(crate) struct Failures(Vec<Instant>);

impl Failures {
    /// Records a failure; true when there have been too many to go on.
    pub(crate) fn record(&mut self) -> bool {
        self.0.push(Instant::now());
        self.0.retain(|at| at.elapsed() < FAILURE_WINDOW);
        self.0.len() > MAX_FAILURES
    }

    /// How long to wait before the next restart.
    pub(crate) fn backoff(&self) -> Duration {
        Duration::from_millis(100 << self.0.len().min(5))
    }

    pub(crate) fn give_up_reason(&self, task: &str) -> String {
        format!("the {task} failed {} times within {FAILURE_WINDOW:?}; giving up", self.0.len())
    }
}

/// A counter a task bumps as it goes, so its supervisor can tell a live task
/// from a stuck one.
#[derive(Debug, Default)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    pub(crate) fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves when the counter has not moved for `limit`.
    pub(crate) async fn stalled(&self, limit: Duration) -> String {
        let mut seen = self.0.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(limit / 4).await;
            let now = self.0.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= limit {
                return format!("made no progress for {:?}", since.elapsed());
            }
        }
    }
}

/// Resolves with the reason once a supervisor has given up (it sends the
/// reason on its `fatal` channel); never, if it does not.
pub(crate) async fn gave_up(fatal: &tokio::sync::watch::Receiver<Option<String>>) -> String {
    let mut fatal = fatal.clone();
    let reason = fatal.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// One supervised task of a source: its name for the log, where its view
/// goes, its failure history and the channel on which it gives up. Every
/// source's supervisor loop is `attempt`, then `failed` until it says stop.
pub(crate) struct Supervisor {
    pub(crate) source: &'static str,
    /// "gossip task", "etcd task".
    pub(crate) task: &'static str,
    pub(crate) publisher: SnapshotPublisher,
    pub(crate) failures: Failures,
    pub(crate) fatal: tokio::sync::watch::Sender<Option<String>>,
}

impl Supervisor {
    /// Runs one attempt of the task, watched for a panic and for a stall
    /// (no progress for `stall_limit`): its output, or why it failed.
    pub(crate) async fn attempt<F: std::future::Future>(
        &self,
        progress: &Progress,
        stall_limit: Duration,
        work: F,
    ) -> Result<F::Output, String> {
        use futures_util::FutureExt as _;
        tokio::select! {
            outcome = std::panic::AssertUnwindSafe(work).catch_unwind() => {
                outcome.map_err(|panic| format!("the {} panicked: {}", self.task, panic_message(&*panic)))
            }
            stalled = progress.stalled(stall_limit) => Err(format!("the {} {stalled}", self.task)),
        }
    }

    /// After a failed attempt: the node reports `partitioned`, the failure is
    /// counted, and either the backoff is waited out (`true`: try again) or,
    /// after too many, the reason goes to `fatal` (`false`: stop).
    pub(crate) async fn failed(&mut self, reason: &str) -> bool {
        tracing::error!(%reason, source = self.source, "membership task failed; this node reports partitioned until it is restarted");
        fail_closed(&self.publisher, self.source, reason);
        if self.failures.record() {
            let reason = self.failures.give_up_reason(self.task);
            tracing::error!(%reason, "membership cannot be kept running; the process exits so that its supervisor restarts it");
            let _ = self.fatal.send(Some(reason));
            return false;
        }
        tokio::time::sleep(self.failures.backoff()).await;
        true
    }
}

/// Sends a source's task a command that answers when done, and waits for
/// the answer at most `patience` (the node's lifecycle must not hang on a
/// task that is stuck): the command handle every source shares.
pub(crate) async fn ask<C>(
    commands: &tokio::sync::mpsc::Sender<C>,
    command: impl FnOnce(tokio::sync::oneshot::Sender<()>) -> C,
    patience: Duration,
) {
    let (done, answered) = tokio::sync::oneshot::channel();
    if commands.send(command(done)).await.is_ok() {
        let _ = tokio::time::timeout(patience, answered).await;
    }
}
