//! The application's own checks: "my database is down, take me out of
//! rotation" (readiness), or, sparingly, "restart me" (liveness).
//!
//! A [`Check`] is a name and an async function returning healthy or
//! unhealthy with a detail. Each runs on a task of its own, every
//! `interval`, bounded by `timeout` (a hung check is a failed check, and a
//! probe never waits for it: probes read the last result from the
//! snapshot), a panic inside it is a failed run. Results go into the
//! snapshot with quorum's hysteresis windows (`arlen_cluster::AppCheck`),
//! and from there into `/readyz` or `/livez` (text, JSON, `verbose`,
//! `exclude=`, `/readyz/<name>`), `/clusterz` and `/metrics`
//! (`arlen_check_up{check,kind}`).
//!
//! ```
//! use std::time::Duration;
//! use arlen_http::checks::Check;
//!
//! let database = Check::readiness("database", || async {
//!     // e.g. `SELECT 1` on a pool; Err takes the node out of rotation.
//!     Ok::<_, String>("SELECT 1 answered".to_owned())
//! })
//! .unwrap()
//! .interval(Duration::from_secs(2))
//! .timeout(Duration::from_millis(500));
//! assert_eq!(database.name(), "database");
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arlen_cluster::{AppCheck, CheckKind, CheckRun, SnapshotPublisher, Timestamp};
use futures_util::FutureExt as _;

/// What one run of a check returns: `Ok(detail)` healthy, `Err(detail)` not.
pub type CheckResult = Result<String, String>;

type RunFn = dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync;

/// Names the runtime's own checks use: an application check cannot take one.
pub use arlen_config::RESERVED_CHECK_NAMES as RESERVED_NAMES;

/// Why a check cannot be registered: its name (1 to 64 of a-z, 0-9, `_`
/// and `-`, as it appears in paths; not one of [`RESERVED_NAMES`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(pub String);

/// One of the application's checks.
#[derive(Clone)]
pub struct Check {
    name: String,
    kind: CheckKind,
    interval: Duration,
    timeout: Duration,
    run: Arc<RunFn>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Every check's default period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Every check's default bound on one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);

impl Check {
    /// A readiness check: while it fails (after the hysteresis windows),
    /// `/readyz` answers 503. It fails until its first run has passed.
    pub fn readiness<F, Fut, D, E>(name: &str, run: F) -> Result<Self, CheckError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, E>> + Send + 'static,
        D: Into<String>,
        E: Into<String>,
    {
        Self::new(name, CheckKind::Readiness, run)
    }

    /// A liveness check: while it fails, `/livez` answers 503 — and a
    /// Kubernetes liveness probe restarts the container. Only for a state
    /// the process cannot leave by itself (a deadlocked worker); never for a
    /// dependency (a database that is down does not come back by restarting
    /// every node that uses it: that is a readiness check).
    pub fn liveness<F, Fut, D, E>(name: &str, run: F) -> Result<Self, CheckError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, E>> + Send + 'static,
        D: Into<String>,
        E: Into<String>,
    {
        Self::new(name, CheckKind::Liveness, run)
    }

    fn new<F, Fut, D, E>(name: &str, kind: CheckKind, run: F) -> Result<Self, CheckError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, E>> + Send + 'static,
        D: Into<String>,
        E: Into<String>,
    {
        validate_name(name)?;
        let run: Arc<RunFn> = Arc::new(move || {
            let fut = run();
            Box::pin(async move { fut.await.map(Into::into).map_err(Into::into) })
        });
        Ok(Self { name: name.to_owned(), kind, interval: DEFAULT_INTERVAL, timeout: DEFAULT_TIMEOUT, run })
    }

    /// How often it runs (default 1 s; at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long one run may take before it counts as failed (default
    /// 800 ms; at least 1 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> CheckKind {
        self.kind
    }

    /// One run, bounded: a timeout or a panic is a failure with its reason.
    pub async fn run_once(&self) -> CheckResult {
        let run = std::panic::AssertUnwindSafe((self.run)()).catch_unwind();
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err("the check panicked".to_owned()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Registers the check in the snapshot (not run yet) and runs it on a
    /// task of its own, publishing each result, until the returned handle
    /// is aborted (dropping a `JoinHandle` does not stop a task).
    pub fn spawn(self, publisher: SnapshotPublisher) -> tokio::task::JoinHandle<()> {
        publisher.register_check(&self.name, self.kind);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<bool> = None;
            loop {
                ticker.tick().await;
                let result = self.run_once().await;
                let healthy = result.is_ok();
                let detail = match result {
                    Ok(detail) | Err(detail) => detail,
                };
                if last != Some(healthy) {
                    if healthy {
                        tracing::info!(check = %self.name, kind = self.kind.as_str(), %detail, "check healthy");
                    } else {
                        tracing::warn!(check = %self.name, kind = self.kind.as_str(), %detail, "check failing");
                    }
                    last = Some(healthy);
                }
                publisher.record_check(CheckRun { name: self.name.clone(), kind: self.kind, healthy, detail });
            }
        })
    }
}

fn validate_name(name: &str) -> Result<(), CheckError> {
    arlen_config::check_name_problem(name).map_or(Ok(()), |problem| Err(CheckError(problem)))
}

/// A check as the documents show it, judged at `now`; its detail only
/// with `full_details` (an application's message may name hosts).
pub(crate) fn section(check: &AppCheck, now: Timestamp, full_details: bool) -> arlen_wire::documents::AppCheckSection {
    let gate = check.gate.settle(now);
    arlen_wire::documents::AppCheckSection {
        ok: gate.met,
        kind: check.kind.as_str().into(),
        detail: if full_details { check.detail.clone() } else { crate::documents::RESTRICTED.to_owned() },
        checked: check.checked,
        last_ok: check.last_healthy,
        since_utc: crate::endpoints::timestamp_utc(gate.since.wall),
        pending: gate.pending.map(|p| arlen_wire::documents::PendingSection {
            met: p.to_met,
            effective_at_utc: crate::endpoints::timestamp_utc(p.effective_at.wall),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_safe_and_never_the_runtime_s() {
        assert!(Check::readiness("db-main_2", || async { Ok::<_, String>("") }).is_ok());
        for bad in ["", "DB", "a/b", "with space", &"x".repeat(65)] {
            let error = Check::readiness(bad, || async { Ok::<_, String>("") }).unwrap_err();
            assert!(error.0.contains("use 1 to 64 of a-z"), "{error}");
        }
        let error = Check::liveness("upstream", || async { Ok::<_, String>("") }).unwrap_err();
        assert!(error.0.contains("runtime's own"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_fails_by_its_timeout_and_a_panic_is_a_failure() {
        let hung = Check::readiness("hung", std::future::pending::<Result<String, String>>)
            .unwrap()
            .timeout(Duration::from_millis(300));
        assert_eq!(hung.run_once().await, Err("no answer within 300 ms".to_owned()));
        let panics = Check::readiness("panics", || async {
            if true {
                panic!("boom");
            }
            Ok::<String, String>(String::new())
        })
        .unwrap();
        assert_eq!(panics.run_once().await, Err("the check panicked".to_owned()));
        let fine = Check::liveness("fine", || async { Ok::<_, &str>("yes") }).unwrap();
        assert_eq!(fine.run_once().await, Ok("yes".to_owned()));
    }
}
