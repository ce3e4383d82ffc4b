//! The application's own checks ("my database is down, take me out of
//! rotation"), as the snapshot holds them: each check's last result and a
//! hysteresis gate with the same windows and rules as quorum's, so a check
//! that fails for less than `quorumLossGraceMs` does not flap readiness, and
//! one that recovers counts again after `quorumRecoveryStableMs`.
//!
//! Readiness checks gate `/readyz`; liveness checks gate `/livez` (opt-in:
//! a failing liveness check gets the process restarted). Neither ever
//! depends on cluster state. The checks themselves run elsewhere, off the
//! request path (`arlen_http::checks`); this module is pure.

use std::time::{Duration, SystemTime};

use crate::gate::{GateWindows, QuorumGate, Timestamp};

/// What a check gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// `/readyz`: failing takes the node out of rotation.
    Readiness,
    /// `/livez`: failing gets the process restarted. Use sparingly.
    Liveness,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Readiness => "readiness",
            Self::Liveness => "liveness",
        }
    }
}

/// One run of a check: healthy or not, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    pub name: String,
    pub kind: CheckKind,
    pub healthy: bool,
    pub detail: String,
}

/// A check as the snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCheck {
    pub name: String,
    pub kind: CheckKind,
    /// Whether a run has finished yet.
    pub checked: bool,
    /// The last run's own verdict and detail (before hysteresis).
    pub last_healthy: bool,
    pub detail: String,
    /// When the last run finished.
    pub last_run: Option<SystemTime>,
    /// The verdict the probes use, after hysteresis.
    pub gate: QuorumGate,
}

impl AppCheck {
    /// A check registered but not run yet: a readiness check fails closed
    /// (the node is not ready before its dependency has been seen), a
    /// liveness check passes (a process is not restarted for a check it has
    /// not run).
    pub fn registered(name: String, kind: CheckKind, now: Timestamp) -> Self {
        let healthy = kind == CheckKind::Liveness;
        Self {
            name,
            kind,
            checked: false,
            last_healthy: healthy,
            detail: "not checked yet".to_owned(),
            last_run: None,
            gate: QuorumGate::new(healthy, now),
        }
    }

    /// After `run` at `now`: the gate advanced with quorum's windows. The
    /// first run decides at once (no window: nothing was known before).
    pub fn after(&self, run: &CheckRun, now: Timestamp, windows: GateWindows) -> Self {
        let gate =
            if self.checked { self.gate.advance(run.healthy, now, windows) } else { QuorumGate::new(run.healthy, now) };
        Self {
            name: self.name.clone(),
            kind: self.kind,
            checked: true,
            last_healthy: run.healthy,
            detail: run.detail.clone(),
            last_run: Some(now.wall),
            gate,
        }
    }

    /// The verdict at monotonic time `now` (a due transition counts).
    pub fn healthy_at(&self, now: Duration) -> bool {
        self.gate.met_at(now)
    }
}

/// The checks of a snapshot, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppChecks(pub Vec<AppCheck>);

impl AppChecks {
    /// With `check` added (or replaced, by name).
    pub fn with(&self, check: AppCheck) -> Self {
        let mut checks = self.0.clone();
        match checks.binary_search_by(|c| c.name.as_str().cmp(&check.name)) {
            Ok(i) => checks[i] = check,
            Err(i) => checks.insert(i, check),
        }
        Self(checks)
    }

    pub fn get(&self, name: &str) -> Option<&AppCheck> {
        self.0.iter().find(|c| c.name == name)
    }

    pub fn of_kind(&self, kind: CheckKind) -> impl Iterator<Item = &AppCheck> {
        self.0.iter().filter(move |c| c.kind == kind)
    }

    /// Every check of `kind` passes at `now`.
    pub fn all_healthy(&self, kind: CheckKind, now: Duration) -> bool {
        self.of_kind(kind).all(|c| c.healthy_at(now))
    }

    /// Whether a pending transition of some gate is due at `now` (the
    /// publisher then settles it).
    pub fn any_due(&self, now: Timestamp) -> bool {
        self.0.iter().any(|c| c.gate.settle(now) != c.gate)
    }

    /// Every gate settled at `now`.
    pub fn settled(&self, now: Timestamp) -> Self {
        Self(self.0.iter().map(|c| AppCheck { gate: c.gate.settle(now), ..c.clone() }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp { monotonic: Duration::from_millis(ms), wall: SystemTime::UNIX_EPOCH + Duration::from_millis(ms) }
    }

    fn run(healthy: bool) -> CheckRun {
        CheckRun { name: "db".into(), kind: CheckKind::Readiness, healthy, detail: String::new() }
    }

    #[test]
    fn a_readiness_check_fails_closed_until_its_first_run_and_a_liveness_check_does_not() {
        let ready = AppCheck::registered("db".into(), CheckKind::Readiness, at(0));
        assert!(!ready.healthy_at(at(0).monotonic) && !ready.checked);
        let live = AppCheck::registered("loop".into(), CheckKind::Liveness, at(0));
        assert!(live.healthy_at(at(0).monotonic));
        // The first run decides at once, whatever the windows.
        let windows = GateWindows { loss_grace: Duration::from_secs(2), recovery_stable: Duration::from_secs(2) };
        assert!(ready.after(&run(true), at(10), windows).healthy_at(at(10).monotonic));
    }

    #[test]
    fn a_failure_shorter_than_the_grace_does_not_count_and_a_longer_one_does() {
        let windows =
            GateWindows { loss_grace: Duration::from_millis(500), recovery_stable: Duration::from_millis(300) };
        let check = AppCheck::registered("db".into(), CheckKind::Readiness, at(0)).after(&run(true), at(0), windows);
        let failing = check.after(&run(false), at(100), windows);
        assert!(failing.healthy_at(at(599).monotonic), "within the grace");
        let blip_over = failing.after(&run(true), at(400), windows);
        assert!(blip_over.healthy_at(at(1000).monotonic), "the blip cancelled the transition");
        let failed = failing.after(&run(false), at(700), windows);
        assert!(!failed.healthy_at(at(700).monotonic), "failing since 100, grace 500");
        let recovering = failed.after(&run(true), at(800), windows);
        assert!(!recovering.healthy_at(at(1099).monotonic) && recovering.healthy_at(at(1100).monotonic));
        assert_eq!(recovering.detail, "");
        assert!(recovering.last_healthy);
    }

    #[test]
    fn checks_stay_sorted_and_are_replaced_by_name() {
        let now = at(0);
        let checks = AppChecks::default()
            .with(AppCheck::registered("queue".into(), CheckKind::Readiness, now))
            .with(AppCheck::registered("db".into(), CheckKind::Readiness, now))
            .with(AppCheck::registered("loop".into(), CheckKind::Liveness, now));
        let names: Vec<&str> = checks.0.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "loop", "queue"]);
        assert!(!checks.all_healthy(CheckKind::Readiness, now.monotonic));
        assert!(checks.all_healthy(CheckKind::Liveness, now.monotonic));
        let db = checks.get("db").unwrap().after(&run(true), now, GateWindows::default());
        let queue = checks.get("queue").unwrap().after(&run(true), now, GateWindows::default());
        let checks = checks.with(db).with(queue);
        assert_eq!(checks.0.len(), 3);
        assert!(checks.all_healthy(CheckKind::Readiness, now.monotonic));
    }
}
