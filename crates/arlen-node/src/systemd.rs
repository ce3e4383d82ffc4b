//! systemd `Type=notify` (sd_notify(3), through the `sd-notify` crate):
//! `READY=1` once the node has started, `STATUS=` with the cluster status
//! whenever it changes, `STOPPING=1` when the drain begins, and `WATCHDOG=1`
//! every half `WatchdogSec` while the runtime runs. The watchdog proves the
//! process's runtime is alive — like `/livez`, it never depends on cluster
//! state. Without `NOTIFY_SOCKET` nothing is sent.

use std::time::Duration;

use arlen_cluster::{Snapshot, SnapshotReader};
use sd_notify::NotifyState;

/// Sends notifications when the service manager asked for them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        Self { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    fn send(self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }

    /// `READY=1` with the first status.
    pub(crate) fn ready(self, snapshot: &Snapshot, now: Duration) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&status(snapshot, now))]);
    }

    /// `STOPPING=1`: the drain has begun.
    pub(crate) fn stopping(self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining: out of rotation, finishing requests")]);
    }

    /// Keeps `STATUS=` current and, when `WatchdogSec` is set, pings the
    /// watchdog at half its period. Runs until the node stops.
    pub(crate) async fn run(self, mut reader: SnapshotReader) {
        if !self.enabled {
            return;
        }
        let watchdog = sd_notify::watchdog_enabled().map(|period| (period / 2).max(Duration::from_millis(10)));
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            let snapshot = reader.current_and_mark_seen();
            let now = status(&snapshot, reader.now().monotonic);
            if now != last && !snapshot.lifecycle.draining {
                self.send(&[NotifyState::Status(&now)]);
                last = now;
            }
            tokio::select! {
                alive = reader.changed() => if !alive { return },
                _ = ping.tick(), if watchdog.is_some() => self.send(&[NotifyState::Watchdog]),
            }
        }
    }
}

/// One line for `systemctl status`: quorum, counts, readiness.
fn status(snapshot: &Snapshot, now: Duration) -> String {
    let quorum = &snapshot.quorum;
    let ready = if snapshot.readiness_at(now).ready { "ready" } else { "not ready" };
    if !snapshot.identity.cluster_enabled {
        return format!("single node; {ready}");
    }
    format!(
        "{}: {} of {} expected observed (policy {}); {ready}",
        quorum.status,
        quorum.observed_nodes,
        quorum.expected_nodes,
        quorum.policy.name()
    )
}
