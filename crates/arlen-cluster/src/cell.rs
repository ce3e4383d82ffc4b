//! The cell that publishes snapshots, and the readers that take them.
//!
//! Writers (membership sources, the server's lifecycle, configuration reload)
//! publish through [`SnapshotPublisher`]; request handlers read with
//! [`SnapshotReader::current`], which never waits on anything but a brief
//! in-memory lock and usually not even that (a per-thread cache).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::checks::{AppCheck, AppChecks, CheckKind, CheckRun};
use crate::gate::{Clock, Timestamp};
use crate::membership::MembershipView;
use crate::snapshot::{Lifecycle, MembershipConfirmed, NodeIdentity, RuntimeSettings, Snapshot, UpstreamHealth};

/// Publishes snapshots. Cloneable; every writer holds one.
#[derive(Debug, Clone)]
pub struct SnapshotPublisher {
    sender: Arc<watch::Sender<Arc<Snapshot>>>,
    cell: Arc<CellState>,
}

/// Reads the current snapshot, and can wait for the next one.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    receiver: watch::Receiver<Arc<Snapshot>>,
    cell: Arc<CellState>,
}

/// Shared by writers and readers: the clock, and the generation of the newest
/// snapshot, so a thread can keep using its cached copy while it is current.
#[derive(Debug)]
struct CellState {
    id: u64,
    generation: AtomicU64,
    clock: Arc<dyn Clock>,
    /// When the membership source last confirmed its view (changed or not).
    confirmed: Arc<MembershipConfirmed>,
}

static NEXT_CELL_ID: AtomicU64 = AtomicU64::new(1);

/// Cached snapshots per thread, keyed by cell: `(cell id, snapshot)`.
/// Requests on one thread clone that thread's `Arc`, so the hot path touches
/// no reference count shared with other threads.
const THREAD_CACHE_CELLS: usize = 8;
thread_local! {
    static THREAD_CACHE: RefCell<Vec<(u64, Arc<Snapshot>)>> = const { RefCell::new(Vec::new()) };
}

/// Creates the cell with generation 1, holding the given parts.
pub fn snapshot_channel(
    identity: NodeIdentity,
    settings: RuntimeSettings,
    membership: MembershipView,
    clock: Arc<dyn Clock>,
) -> (SnapshotPublisher, SnapshotReader) {
    let first = Snapshot::build(
        1,
        Arc::new(identity),
        Arc::new(settings),
        Arc::new(membership),
        Lifecycle::default(),
        None,
        clock.now(),
    );
    let confirmed = first.membership_confirmed.clone();
    confirmed.set(clock.now().monotonic);
    let (sender, receiver) = watch::channel(Arc::new(first));
    let cell = Arc::new(CellState {
        id: NEXT_CELL_ID.fetch_add(1, Ordering::Relaxed),
        generation: AtomicU64::new(1),
        clock,
        confirmed,
    });
    (SnapshotPublisher { sender: Arc::new(sender), cell: cell.clone() }, SnapshotReader { receiver, cell })
}

/// How a publish changes the lifecycle, applied under the write lock.
type LifecycleChange = fn(Lifecycle, Timestamp) -> Lifecycle;

/// What a publish changes.
#[derive(Default)]
struct Change {
    settings: Option<RuntimeSettings>,
    membership: Option<MembershipView>,
    lifecycle: Option<LifecycleChange>,
    upstream: Option<UpstreamHealth>,
    check: Option<CheckChange>,
}

/// A change to the application's checks.
enum CheckChange {
    Register(String, CheckKind),
    Run(CheckRun),
}

impl SnapshotPublisher {
    /// Builds the next snapshot under the channel's write lock, so concurrent
    /// writers never lose each other's changes; publishes only if something
    /// (including the gate) changed.
    fn publish(&self, change: Change) {
        let now = self.cell.clock.now();
        if change.membership.is_some() {
            // Confirmed even when nothing changed (no new snapshot then).
            self.cell.confirmed.set(now.monotonic);
        }
        self.sender.send_if_modified(|current| {
            let settings = change.settings.filter(|s| *s != *current.settings);
            let membership = change.membership.filter(|m| *m != *current.membership);
            let lifecycle = change.lifecycle.map_or(current.lifecycle, |apply| apply(current.lifecycle, now));
            let mut next = Snapshot::build(
                current.generation + 1,
                current.identity.clone(),
                settings.map_or_else(|| current.settings.clone(), Arc::new),
                membership.map_or_else(|| current.membership.clone(), Arc::new),
                lifecycle,
                Some(current.gate),
                now,
            );
            next.membership_confirmed = current.membership_confirmed.clone();
            next.upstream = match change.upstream {
                Some(upstream) if current.upstream.as_deref() != Some(&upstream) => Some(Arc::new(upstream)),
                _ => current.upstream.clone(),
            };
            next.checks = next_checks(&current.checks, change.check.as_ref(), now, next.settings.gate_windows)
                .map_or_else(|| current.checks.clone(), Arc::new);
            let unchanged = Arc::ptr_eq(&next.settings, &current.settings)
                && Arc::ptr_eq(&next.membership, &current.membership)
                && Arc::ptr_eq(&next.checks, &current.checks)
                && next.upstream.as_ref().map(Arc::as_ptr) == current.upstream.as_ref().map(Arc::as_ptr)
                && next.lifecycle == current.lifecycle
                && next.gate == current.gate;
            if unchanged {
                return false;
            }
            next.status_transitions =
                current.status_transitions + u64::from(next.quorum.status != current.quorum.status);
            let membership_changed = next.membership.members != current.membership.members
                || next.membership.observed_nodes != current.membership.observed_nodes;
            next.membership_changes = current.membership_changes + u64::from(membership_changed);
            // Under the channel's write lock: readers that see this
            // generation find the new snapshot in the channel.
            self.cell.generation.store(next.generation, Ordering::Release);
            *current = Arc::new(next);
            true
        });
    }

    /// Records what the upstream health check found (a no-op when nothing changed).
    pub fn set_upstream(&self, upstream: UpstreamHealth) {
        self.publish(Change { upstream: Some(upstream), ..Change::default() });
    }

    /// Adds one of the application's checks, not run yet (a readiness check
    /// fails closed until its first run).
    pub fn register_check(&self, name: &str, kind: CheckKind) {
        self.publish(Change { check: Some(CheckChange::Register(name.to_owned(), kind)), ..Change::default() });
    }

    /// Records a run of one of the application's checks.
    pub fn record_check(&self, run: CheckRun) {
        self.publish(Change { check: Some(CheckChange::Run(run)), ..Change::default() });
    }

    /// Replaces the membership view (a no-op when nothing changed).
    pub fn set_membership(&self, view: MembershipView) {
        self.publish(Change { membership: Some(view), ..Change::default() });
    }

    /// Replaces the runtime settings (a no-op when nothing changed).
    pub fn set_settings(&self, settings: RuntimeSettings) {
        self.publish(Change { settings: Some(settings), ..Change::default() });
    }

    /// Records that the node has finished starting.
    pub fn mark_started(&self) {
        let started: LifecycleChange = |lifecycle, _| Lifecycle { started: true, ..lifecycle };
        self.publish(Change { lifecycle: Some(started), ..Change::default() });
    }

    /// Takes the node out of rotation for shutdown.
    pub fn mark_draining(&self) {
        let draining: LifecycleChange = |lifecycle, now| {
            let since = lifecycle.draining_since.unwrap_or(now.wall);
            Lifecycle { draining: true, draining_since: Some(since), ..lifecycle }
        };
        self.publish(Change { lifecycle: Some(draining), ..Change::default() });
    }

    /// Applies hysteresis transitions whose time has come (publishes only if
    /// one did).
    pub fn refresh(&self) {
        self.publish(Change::default());
    }

    /// A reader of this cell.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader { receiver: self.sender.subscribe(), cell: self.cell.clone() }
    }
}

/// The checks after `change` at `now` (due hysteresis transitions settled),
/// or `None` when nothing about them changed.
fn next_checks(
    current: &AppChecks,
    change: Option<&CheckChange>,
    now: Timestamp,
    windows: crate::gate::GateWindows,
) -> Option<AppChecks> {
    let settled = current.any_due(now).then(|| current.settled(now));
    let base = settled.as_ref().unwrap_or(current);
    let changed = match change {
        Some(CheckChange::Register(name, kind)) if base.get(name).is_none() => {
            Some(base.with(AppCheck::registered(name.clone(), *kind, now)))
        }
        Some(CheckChange::Run(run)) => {
            let check =
                base.get(&run.name).cloned().unwrap_or_else(|| AppCheck::registered(run.name.clone(), run.kind, now));
            let next = check.after(run, now, windows);
            // A run that changes nothing but its time is not a new snapshot.
            let same =
                next.last_healthy == check.last_healthy && next.detail == check.detail && next.gate == check.gate;
            (!same || !check.checked).then(|| base.with(next))
        }
        _ => None,
    };
    changed.or(settled)
}

impl SnapshotReader {
    /// The current snapshot. Never waits on IO: usually one atomic load and a
    /// clone of this thread's cached `Arc`; after a change, one brief read of
    /// the channel.
    pub fn current(&self) -> Arc<Snapshot> {
        let generation = self.cell.generation.load(Ordering::Acquire);
        THREAD_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((_, snapshot)) = cache.iter().find(|(id, _)| *id == self.cell.id) {
                if snapshot.generation == generation {
                    return snapshot.clone();
                }
            }
            let fresh = Arc::new(self.receiver.borrow().thread_copy());
            cache.retain(|(id, _)| *id != self.cell.id);
            if cache.len() >= THREAD_CACHE_CELLS {
                cache.remove(0);
            }
            cache.push((self.cell.id, fresh.clone()));
            fresh
        })
    }

    /// The cell's clock: the time readiness is judged at.
    pub fn now(&self) -> Timestamp {
        self.cell.clock.now()
    }

    /// Waits until a snapshot newer than the one last seen by this reader is
    /// published. Returns `false` when every publisher is gone.
    pub async fn changed(&mut self) -> bool {
        self.receiver.changed().await.is_ok()
    }

    /// Marks the current snapshot as seen and returns it.
    pub fn current_and_mark_seen(&mut self) -> Arc<Snapshot> {
        self.receiver.borrow_and_update().clone()
    }
}

#[cfg(test)]
mod tests;
