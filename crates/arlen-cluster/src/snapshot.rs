//! The immutable snapshot every response is computed from, and the cell that
//! publishes it.
//!
//! A [`Snapshot`] holds everything a response needs: identity, the settings
//! that shape probes, the membership view, lifecycle flags, the quorum verdict
//! and the six cluster header values, precomputed. Writers (membership
//! sources, the server's lifecycle) publish a new snapshot through
//! [`SnapshotPublisher`]; readers take the current one from
//! [`SnapshotReader::current`], which never waits on anything but a brief
//! in-memory lock.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue};
use tokio::sync::watch;

use crate::quorum::{evaluate_quorum, Quorum};

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_enabled: bool,
    pub cluster_name: String,
    pub node_id: String,
    pub worker_pid: u32,
}

/// Settings that shape probe answers and headers; replaceable at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub expected_nodes: u32,
    pub emit_headers: bool,
    pub health_details_enabled: bool,
    pub readiness_requires_startup: bool,
    pub readiness_requires_cluster_quorum: bool,
    pub metrics_enabled: bool,
    pub trace_propagation_enabled: bool,
    pub response_identity_headers_enabled: bool,
    pub session_enabled: bool,
    pub session_secret_configured: bool,
}

/// A member's state as its membership source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    pub const ALL: [MemberState; 4] = [MemberState::Alive, MemberState::Suspect, MemberState::Dead, MemberState::Left];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// One known member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// New on every start of the member's process.
    pub generation: u64,
    pub http_url: Option<String>,
    pub gossip_address: Option<String>,
    pub state: MemberState,
    pub is_self: bool,
}

/// When this node last heard from each member, updated by the membership
/// source between snapshots (hearing a heartbeat is not a membership change,
/// so it does not publish a new snapshot). Two clocks are equal when they are
/// the same clock.
#[derive(Debug, Clone, Default)]
pub struct HeardClock(Arc<std::sync::RwLock<std::collections::HashMap<(String, u64), SystemTime>>>);

impl PartialEq for HeardClock {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for HeardClock {}

impl HeardClock {
    /// Records that `node_id` at `generation` was heard from at `when`.
    pub fn record(&self, node_id: &str, generation: u64, when: SystemTime) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert((node_id.to_owned(), generation), when);
    }

    /// When `node_id` at `generation` was last heard from.
    pub fn last_heard(&self, node_id: &str, generation: u64) -> Option<SystemTime> {
        let map = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(node_id.to_owned(), generation)).copied()
    }

    /// Forgets members for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&str, u64) -> bool) {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|(node_id, generation), _| keep(node_id, *generation));
    }
}

/// How the membership source itself is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHealth {
    pub ok: bool,
    pub detail: String,
    pub last_membership_change: Option<SystemTime>,
}

/// What a membership source currently reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// Source name on the wire: `static_config`, `gossip`, `etcd`, ...
    pub source: &'static str,
    /// Members counted as observed (this node included while it can reach the source).
    pub observed_nodes: u32,
    pub members: Vec<Member>,
    pub health: SourceHealth,
    /// Node ids claimed by more than one live process (each counted once).
    pub duplicate_node_ids: Vec<String>,
    /// Last-heard times of the members, when the source tracks them.
    pub heard: Option<HeardClock>,
}

impl MembershipView {
    /// The view before any source has reported: nothing observed.
    pub fn uninitialised(source: &'static str) -> Self {
        Self {
            source,
            observed_nodes: 0,
            members: Vec::new(),
            health: SourceHealth { ok: false, detail: "not initialised yet".to_owned(), last_membership_change: None },
            duplicate_node_ids: Vec::new(),
            heard: None,
        }
    }
}

/// The node's own lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// Config loaded, listeners bound, membership source initialised.
    pub started: bool,
}

/// The readiness verdict of CONTRACT §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub startup_ok: bool,
    pub quorum_required: bool,
    pub quorum_ok: bool,
}

/// Names of the six cluster headers, with the contract's capitalisation.
/// (The `http` crate stores names lower-case; the server writes them in
/// title case, which gives exactly these spellings on the HTTP/1.1 wire.)
pub const CLUSTER_HEADER_NAMES: [&str; 6] = [
    "X-Arlen-Cluster",
    "X-Arlen-Node",
    "X-Arlen-Worker-Pid",
    "X-Arlen-Cluster-Status",
    "X-Arlen-Cluster-Observed-Nodes",
    "X-Arlen-Cluster-Expected-Nodes",
];

/// The six header values of one snapshot, ready to copy into a response.
#[derive(Debug, Clone)]
pub struct ClusterHeaders {
    pairs: [(HeaderName, HeaderValue); 6],
}

impl ClusterHeaders {
    fn new(identity: &NodeIdentity, quorum: &Quorum) -> Self {
        let values = [
            header_value(&identity.cluster_name),
            header_value(&identity.node_id),
            HeaderValue::from(identity.worker_pid),
            HeaderValue::from_static(quorum.status.as_str()),
            HeaderValue::from(quorum.observed_nodes),
            HeaderValue::from(quorum.expected_nodes),
        ];
        let pairs = std::array::from_fn(|i| (HeaderName::from_static(lowercase_static(i)), values[i].clone()));
        Self { pairs }
    }

    /// A copy whose values share no buffers with `self`, so that cloning them
    /// on one thread does not contend with another thread's clones.
    fn deep_copy(&self) -> Self {
        let pairs = self.pairs.clone().map(|(name, value)| {
            let value = HeaderValue::from_bytes(value.as_bytes()).expect("copied from a valid header value");
            (name, value)
        });
        Self { pairs }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.pairs.iter().map(|(name, value)| (name, value))
    }
}

fn lowercase_static(index: usize) -> &'static str {
    [
        "x-arlen-cluster",
        "x-arlen-node",
        "x-arlen-worker-pid",
        "x-arlen-cluster-status",
        "x-arlen-cluster-observed-nodes",
        "x-arlen-cluster-expected-nodes",
    ][index]
}

/// A header value for free text: characters a header cannot carry become `_`.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let cleaned: String = text.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '_' }).collect();
        HeaderValue::from_str(&cleaned).expect("visible ASCII is a valid header value")
    })
}

/// Everything a response needs, at one moment. Immutable once published.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one with every published change.
    pub generation: u64,
    pub identity: Arc<NodeIdentity>,
    pub settings: Arc<RuntimeSettings>,
    pub membership: Arc<MembershipView>,
    pub lifecycle: Lifecycle,
    pub quorum: Quorum,
    /// `Some` when `cluster.enabled && cluster.emitHeaders`.
    pub headers: Option<Arc<ClusterHeaders>>,
    /// How many times the quorum status changed since start.
    pub status_transitions: u64,
    /// How many membership views with a different membership were published.
    pub membership_changes: u64,
}

impl Snapshot {
    fn build(
        generation: u64,
        identity: Arc<NodeIdentity>,
        settings: Arc<RuntimeSettings>,
        membership: Arc<MembershipView>,
        lifecycle: Lifecycle,
    ) -> Self {
        let quorum = evaluate_quorum(identity.cluster_enabled, settings.expected_nodes, membership.observed_nodes);
        let headers = (identity.cluster_enabled && settings.emit_headers)
            .then(|| Arc::new(ClusterHeaders::new(&identity, &quorum)));
        Self {
            generation,
            identity,
            settings,
            membership,
            lifecycle,
            quorum,
            headers,
            status_transitions: 0,
            membership_changes: 0,
        }
    }

    /// A copy for one thread's cache: the same values, with header buffers of
    /// its own.
    fn thread_copy(&self) -> Self {
        Self { headers: self.headers.as_ref().map(|h| Arc::new(h.deep_copy())), ..self.clone() }
    }

    /// The readiness verdict: startup and quorum gates of CONTRACT §3.1.
    pub fn readiness(&self) -> Readiness {
        let startup_ok = !self.settings.readiness_requires_startup || self.lifecycle.started;
        let quorum_required = self.settings.readiness_requires_cluster_quorum && self.identity.cluster_enabled;
        let quorum_ok = self.quorum.met || !quorum_required;
        Readiness { ready: startup_ok && quorum_ok, startup_ok, quorum_required, quorum_ok }
    }
}

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

/// What readers check on the request path: the generation of the newest
/// snapshot, so a thread can keep using its cached copy while it is current.
#[derive(Debug)]
struct CellState {
    id: u64,
    generation: AtomicU64,
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
) -> (SnapshotPublisher, SnapshotReader) {
    let first = Snapshot::build(1, Arc::new(identity), Arc::new(settings), Arc::new(membership), Lifecycle::default());
    let (sender, receiver) = watch::channel(Arc::new(first));
    let cell = Arc::new(CellState { id: NEXT_CELL_ID.fetch_add(1, Ordering::Relaxed), generation: AtomicU64::new(1) });
    (SnapshotPublisher { sender: Arc::new(sender), cell: cell.clone() }, SnapshotReader { receiver, cell })
}

impl SnapshotPublisher {
    fn publish(&self, change: impl FnOnce(&Snapshot) -> Option<Snapshot>) {
        self.sender.send_if_modified(|current| match change(current) {
            Some(next) => {
                // Under the channel's write lock: readers that see this
                // generation find the new snapshot in the channel.
                self.cell.generation.store(next.generation, Ordering::Release);
                *current = Arc::new(next);
                true
            }
            None => false,
        });
    }

    fn rebuild(
        current: &Snapshot,
        settings: Option<RuntimeSettings>,
        membership: Option<MembershipView>,
        lifecycle: Lifecycle,
    ) -> Option<Snapshot> {
        let settings_changed = settings.as_ref().is_some_and(|s| *s != *current.settings);
        let membership_changed = membership.as_ref().is_some_and(|m| *m != *current.membership);
        if !settings_changed && !membership_changed && lifecycle == current.lifecycle {
            return None;
        }
        let mut next = Snapshot::build(
            current.generation + 1,
            current.identity.clone(),
            settings.map_or_else(|| current.settings.clone(), Arc::new),
            membership.map_or_else(|| current.membership.clone(), Arc::new),
            lifecycle,
        );
        next.status_transitions = current.status_transitions + u64::from(next.quorum.status != current.quorum.status);
        let membership_changed = next.membership.members != current.membership.members
            || next.membership.observed_nodes != current.membership.observed_nodes;
        next.membership_changes = current.membership_changes + u64::from(membership_changed);
        Some(next)
    }

    /// Replaces the membership view (a no-op when nothing changed).
    pub fn set_membership(&self, view: MembershipView) {
        self.publish(|current| Self::rebuild(current, None, Some(view), current.lifecycle));
    }

    /// Replaces the runtime settings (a no-op when nothing changed).
    pub fn set_settings(&self, settings: RuntimeSettings) {
        self.publish(|current| Self::rebuild(current, Some(settings), None, current.lifecycle));
    }

    /// Records that the node has finished starting.
    pub fn mark_started(&self) {
        self.publish(|current| Self::rebuild(current, None, None, Lifecycle { started: true }));
    }

    /// A reader of this cell.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader { receiver: self.sender.subscribe(), cell: self.cell.clone() }
    }
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
mod tests {
    use super::*;
    use crate::QuorumStatus;

    fn identity() -> NodeIdentity {
        NodeIdentity { cluster_enabled: true, cluster_name: "alpha".into(), node_id: "node-a".into(), worker_pid: 42 }
    }

    fn settings(expected: u32) -> RuntimeSettings {
        RuntimeSettings {
            expected_nodes: expected,
            emit_headers: true,
            health_details_enabled: true,
            readiness_requires_startup: false,
            readiness_requires_cluster_quorum: true,
            metrics_enabled: true,
            trace_propagation_enabled: true,
            response_identity_headers_enabled: true,
            session_enabled: false,
            session_secret_configured: false,
        }
    }

    fn view(observed: u32) -> MembershipView {
        MembershipView {
            source: "static_config",
            observed_nodes: observed,
            members: Vec::new(),
            health: SourceHealth { ok: true, detail: "static".into(), last_membership_change: None },
            duplicate_node_ids: Vec::new(),
            heard: None,
        }
    }

    #[test]
    fn every_change_bumps_the_generation_and_no_change_does_not() {
        let (publisher, reader) = snapshot_channel(identity(), settings(3), view(3));
        assert_eq!(reader.current().generation, 1);
        publisher.set_membership(view(2));
        assert_eq!(reader.current().generation, 2);
        publisher.set_membership(view(2));
        assert_eq!(reader.current().generation, 2, "identical view publishes nothing");
        publisher.mark_started();
        publisher.mark_started();
        assert_eq!(reader.current().generation, 3);
        publisher.set_settings(settings(2));
        let snapshot = reader.current();
        assert_eq!(snapshot.generation, 4);
        assert_eq!(snapshot.quorum.status, QuorumStatus::Nominal);
        // 3/3 nominal → 2/3 degraded → (expected 2) nominal: two transitions, one membership change.
        assert_eq!((snapshot.status_transitions, snapshot.membership_changes), (2, 1));
    }

    #[test]
    fn headers_body_and_readiness_come_from_one_snapshot() {
        let (publisher, reader) = snapshot_channel(identity(), settings(3), view(3));
        let before = reader.current();
        publisher.set_membership(view(2));
        let after = reader.current();
        let header = |s: &Snapshot, name: &str| {
            s.headers.as_ref().unwrap().iter().find(|(n, _)| n.as_str() == name).unwrap().1.clone()
        };
        assert_eq!(header(&before, "x-arlen-cluster-status"), "nominal");
        assert!(before.readiness().ready);
        assert_eq!(header(&after, "x-arlen-cluster-status"), "degraded");
        assert_eq!(header(&after, "x-arlen-cluster-observed-nodes"), "2");
        assert!(!after.readiness().ready);
        assert_eq!(header(&after, "x-arlen-worker-pid"), "42");
    }

    #[test]
    fn headers_need_both_flags() {
        let mut off = settings(1);
        off.emit_headers = false;
        let (_, reader) = snapshot_channel(identity(), off, view(1));
        assert!(reader.current().headers.is_none());
        let (_, reader) = snapshot_channel(NodeIdentity { cluster_enabled: false, ..identity() }, settings(1), view(1));
        assert!(reader.current().headers.is_none());
    }

    #[test]
    fn readiness_gates() {
        let mut s = settings(3);
        s.readiness_requires_startup = true;
        let (publisher, reader) = snapshot_channel(identity(), s, view(3));
        let r = reader.current().readiness();
        assert_eq!((r.ready, r.startup_ok, r.quorum_ok), (false, false, true));
        publisher.mark_started();
        assert!(reader.current().readiness().ready);
        publisher.set_membership(view(0));
        let r = reader.current().readiness();
        assert_eq!((r.ready, r.quorum_required, r.quorum_ok), (false, true, false));
    }

    #[test]
    fn unprintable_names_still_make_valid_headers() {
        let id = NodeIdentity { cluster_name: "a\u{7}b".into(), ..identity() };
        let (_, reader) = snapshot_channel(id, settings(1), view(1));
        let snapshot = reader.current();
        let (_, value) = snapshot.headers.as_ref().unwrap().iter().next().unwrap();
        assert_eq!(value, "a_b");
    }

    #[tokio::test]
    async fn readers_wake_on_change() {
        let (publisher, mut reader) = snapshot_channel(identity(), settings(3), view(3));
        reader.current_and_mark_seen();
        let waiter = tokio::spawn(async move {
            assert!(reader.changed().await);
            reader.current().quorum.observed_nodes
        });
        publisher.set_membership(view(1));
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
