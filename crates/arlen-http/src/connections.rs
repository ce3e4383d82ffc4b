//! What the node's connections may hold, so that no crowd of clients can keep
//! a probe out:
//!
//! - **Descriptors.** The process's `RLIMIT_NOFILE` (its soft limit raised to
//!   the hard one at start, [`raise_descriptor_limit`]) is a budget every
//!   connection, tunnel and upstream connection is accounted against
//!   ([`Descriptors`]). Application connections stop before the last
//!   [`Descriptors::reserve`]; that reserve answers probes (over-limit
//!   connections) and the admin listener, and a small margin is left for
//!   the node's own sockets and files.
//! - **Sessions**, per listener, and the **eviction** of idle connections:
//!   when a newcomer finds no session or no descriptor, the oldest connection
//!   with no request in flight is closed to make room (nginx does the same
//!   with idle keep-alive connections). Idle HTTP/1.1 keep-alive, a request
//!   head that never completes and an HTTP/2 connection that sent only its
//!   preface are all idle.
//! - **Shares** of the node-wide `/clusterz` waits and event streams: a
//!   connection holds at most [`PER_CONNECTION_SLOTS`] of each, and a peer
//!   (a non-loopback address: behind a proxy every client is the proxy's
//!   address) at most [`PER_PEER_SLOTS`], so two HTTP/2 connections cannot
//!   take them all.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

/// `/clusterz` waits (and, apart, event streams) one connection may hold.
pub const PER_CONNECTION_SLOTS: usize = 8;
/// `/clusterz` waits (and, apart, event streams) one peer address may hold.
pub const PER_PEER_SLOTS: usize = 16;

/// Descriptors kept for the node's own sockets and files, never given to
/// connections: the gossip socket, etcd, log files, the upstream health
/// check, the epoll instance, up to [`UPSTREAM_IDLE_POOL`] idle upstream
/// connections.
const MARGIN: usize = 32 + UPSTREAM_IDLE_POOL;
/// A connection is closed to make room only after it has been idle this
/// long: one that was just accepted has its first request on the way.
const EVICTABLE_AFTER: std::time::Duration = std::time::Duration::from_millis(50);
/// Idle keep-alive connections the sidecar keeps to its upstream at most.
/// With fewer than the requests usually in flight, most upstream
/// connections are opened and closed per request (HTTP/2 clients with many
/// streams made that plain: `BENCHMARKS.md`, HTTP/2 measured); 64 is what
/// nginx's `keepalive 64` keeps in the same benchmark.
pub const UPSTREAM_IDLE_POOL: usize = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (what servers commonly
/// do at start) and returns the limit now in force.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Which share of the descriptor budget a claim may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Application traffic: stops before the reserve.
    Application,
    /// Probes and the admin listener: may use the reserve.
    Reserve,
}

/// The process's descriptor budget (see the module documentation).
#[derive(Debug)]
pub struct Descriptors {
    limit: usize,
    reserve: usize,
    in_use: AtomicUsize,
}

impl Descriptors {
    /// A budget of `limit` descriptors of which `base` are open already.
    pub fn new(limit: usize, base: usize) -> Self {
        let reserve = (limit / 8).clamp(32, 1024);
        Self { limit, reserve, in_use: AtomicUsize::new(base) }
    }

    /// The process-wide budget, measured once: the soft limit in force, and
    /// the descriptors open at the first call.
    pub fn global() -> &'static Descriptors {
        static GLOBAL: OnceLock<Descriptors> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft);
            let open = std::fs::read_dir("/proc/self/fd").map_or(16, Iterator::count);
            Descriptors::new(usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 24), open)
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Descriptors application traffic may not take.
    pub fn reserve(&self) -> usize {
        self.reserve
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes `count` descriptors if the claim's share has room.
    pub fn take(&'static self, count: usize, claim: Claim) -> Option<DescriptorGuard> {
        let ceiling = match claim {
            Claim::Application => self.limit.saturating_sub(self.reserve + MARGIN),
            Claim::Reserve => self.limit.saturating_sub(MARGIN),
        };
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used + count <= ceiling).then_some(used + count))
            .ok()
            .map(|_| DescriptorGuard { descriptors: self, count })
    }
}

/// Descriptors taken from [`Descriptors`]; given back on drop.
#[derive(Debug)]
pub struct DescriptorGuard {
    descriptors: &'static Descriptors,
    count: usize,
}

impl Drop for DescriptorGuard {
    fn drop(&mut self) {
        self.descriptors.in_use.fetch_sub(self.count, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` until it has been read to its end (or dropped).
    pub struct HoldUntilDone<B, G> {
        #[pin]
        body: B,
        guard: Option<G>,
    }
}

impl<B, G> HoldUntilDone<B, G> {
    pub fn new(body: B, guard: Option<G>) -> Self {
        Self { body, guard }
    }
}

impl<B: http_body::Body, G> http_body::Body for HoldUntilDone<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// One accepted connection, as the registry sees it.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// Requests whose response has not been written completely.
    active: AtomicUsize,
    /// Milliseconds since `epoch` of the last request start or end.
    last_change_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last write the client's socket took.
    last_write_ms: AtomicU64,
    epoch: Instant,
    /// What the connection holds; taken out when it is evicted (or ends).
    holdings: Mutex<Option<Holdings>>,
    evicted: AtomicBool,
    close: Notify,
    /// The connection spoke the HTTP/2 preface.
    pub(crate) h2: AtomicBool,
    /// Waits and event streams held over this connection.
    pub(crate) share: ConnectionShare,
    /// Counts this connection if it is cut as a slow reader.
    pub(crate) slow_readers: Counter,
}

#[derive(Debug)]
struct Holdings {
    _descriptor: DescriptorGuard,
    _session: Option<SessionGuard>,
}

impl Tracked {
    fn new(holdings: Holdings, peer: Option<Arc<PeerShare>>, slow_readers: Counter) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            holdings: Mutex::new(Some(holdings)),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
            h2: AtomicBool::new(false),
            share: ConnectionShare::new(peer),
            slow_readers,
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_change_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// The client's socket took bytes.
    pub(crate) fn wrote(&self) {
        self.last_write_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// How long since the client's socket last took bytes (or the last
    /// request began, whichever is later).
    pub(crate) fn silent_for(&self) -> std::time::Duration {
        let last = self.last_write_ms.load(Ordering::Relaxed).max(self.last_change_ms.load(Ordering::Relaxed));
        std::time::Duration::from_millis(self.elapsed_ms().saturating_sub(last))
    }

    /// A request began; the returned guard ends it (kept until its response
    /// body has been written).
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        // Idle time counts from a request's end (`idle_for` is zero while
        // one is in flight); only HTTP/2's stuck-stream rule reads the start.
        if self.h2.load(Ordering::Relaxed) {
            self.touch();
        }
        RequestGuard { tracked: self.clone() }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// How long the connection has had no request in flight (zero while it has one).
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        if !self.is_idle() {
            return std::time::Duration::ZERO;
        }
        let last = std::time::Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Resolves when the connection was evicted to make room for another.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.close.notified();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn evict(&self) -> bool {
        if self.idle_for() < EVICTABLE_AFTER || self.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.holdings.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.close.notify_waiters();
        true
    }
}

/// Ends a request of a [`Tracked`] connection on drop.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    tracked: Arc<Tracked>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.tracked.touch();
        self.tracked.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct SessionGuard {
    sessions: Arc<AtomicUsize>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How an accepted connection is served.
pub(crate) enum Admission {
    /// A session: the application and everything else.
    Session(Arc<Tracked>),
    /// Over the limit: one answer, probes by their own rules, 503 otherwise.
    OverLimit(Arc<Tracked>),
    /// No descriptor left even in the reserve, and nothing idle to close.
    Refused,
}

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Registry {
    max_sessions: usize,
    sessions: Arc<AtomicUsize>,
    /// Session claims: the service listener's stop before the reserve, the
    /// admin listener's may use it.
    claim: Claim,
    descriptors: &'static Descriptors,
    /// Every connection, oldest first (dead entries are pruned as it grows).
    connections: Mutex<VecDeque<Weak<Tracked>>>,
    peers: Arc<PeerShares>,
    counters: ConnectionCounters,
}

/// What the registries count, in `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounters {
    /// Idle connections closed to make room.
    pub evictions: Counter,
    /// Connections closed at once for want of a descriptor.
    pub refusals: Counter,
    /// Connections cut because the client took no byte within the write timeout.
    pub slow_readers: Counter,
}

impl Registry {
    pub(crate) fn new(
        max_sessions: usize,
        claim: Claim,
        descriptors: &'static Descriptors,
        counters: ConnectionCounters,
    ) -> Self {
        Self {
            max_sessions: max_sessions.max(1),
            sessions: Arc::new(AtomicUsize::new(0)),
            claim,
            descriptors,
            connections: Mutex::new(VecDeque::new()),
            peers: Arc::new(PeerShares::default()),
            counters,
        }
    }

    /// Decides how a connection from `peer` is served, closing an idle one
    /// if that makes room.
    pub(crate) fn admit(&self, peer: IpAddr) -> Admission {
        let peer_share = (!peer.is_loopback()).then(|| self.peers.clone().of(peer));
        for attempt in 0..2 {
            if let Some(holdings) = self.session() {
                return Admission::Session(self.register(holdings, peer_share));
            }
            if attempt == 0 && !self.evict_one() {
                break;
            }
        }
        for attempt in 0..2 {
            if let Some(descriptor) = self.descriptors.take(1, Claim::Reserve) {
                let holdings = Holdings { _descriptor: descriptor, _session: None };
                return Admission::OverLimit(self.register(holdings, peer_share));
            }
            if attempt == 0 && !self.evict_one() {
                break;
            }
        }
        self.counters.refusals.inc();
        Admission::Refused
    }

    fn session(&self) -> Option<Holdings> {
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_sessions).then_some(n + 1))
            .ok()?;
        let session = SessionGuard { sessions: self.sessions.clone() };
        let descriptor = self.descriptors.take(1, self.claim)?;
        Some(Holdings { _descriptor: descriptor, _session: Some(session) })
    }

    fn register(&self, holdings: Holdings, peer: Option<Arc<PeerShare>>) -> Arc<Tracked> {
        let tracked = Tracked::new(holdings, peer, self.counters.slow_readers.clone());
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        if connections.len() >= 64 && connections.len() >= 2 * self.live_estimate() {
            connections.retain(|weak| weak.strong_count() > 0);
        }
        connections.push_back(Arc::downgrade(&tracked));
        tracked
    }

    fn live_estimate(&self) -> usize {
        self.sessions.load(Ordering::Relaxed).max(self.descriptors.in_use())
    }

    /// Closes the oldest connection with no request in flight.
    fn evict_one(&self) -> bool {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        let mut index = 0;
        while index < connections.len() {
            match connections[index].upgrade() {
                None => {
                    connections.remove(index);
                }
                Some(tracked) if tracked.evict() => {
                    connections.remove(index);
                    self.counters.evictions.inc();
                    tracing::debug!("closed the oldest idle connection to make room");
                    return true;
                }
                Some(_) => index += 1,
            }
        }
        false
    }

    /// Sessions in use (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// What one connection holds of the node-wide waits and event streams.
#[derive(Debug)]
pub(crate) struct ConnectionShare {
    held: [AtomicUsize; 2],
    peer: Option<Arc<PeerShare>>,
}

/// The node-wide slots a connection's share is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A `/clusterz` wait.
    Wait = 0,
    /// An event stream.
    Stream = 1,
}

impl ConnectionShare {
    fn new(peer: Option<Arc<PeerShare>>) -> Self {
        Self { held: [AtomicUsize::new(0), AtomicUsize::new(0)], peer }
    }
}

/// One slot of a connection's (and its peer's) share; given back on drop.
#[derive(Debug)]
pub struct ShareGuard {
    tracked: Arc<Tracked>,
    peer: Option<Arc<PeerShare>>,
    slot: Slot,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        self.tracked.share.held[self.slot as usize].fetch_sub(1, Ordering::AcqRel);
        if let Some(peer) = &self.peer {
            peer.held[self.slot as usize].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The connection a request came over, in the request's extensions: the
/// reserved endpoints take their shares of waits and streams from it.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(pub(crate) Arc<Tracked>);

impl ConnectionHandle {
    /// Takes one `slot` for this connection and its peer, if their shares have room.
    pub fn take(&self, slot: Slot) -> Option<ShareGuard> {
        let tracked = &self.0;
        let index = slot as usize;
        let bump = |counter: &AtomicUsize, limit: usize| {
            counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
        };
        if !bump(&tracked.share.held[index], PER_CONNECTION_SLOTS) {
            return None;
        }
        let peer = tracked.share.peer.clone();
        if let Some(peer) = &peer {
            if !bump(&peer.held[index], PER_PEER_SLOTS) {
                tracked.share.held[index].fetch_sub(1, Ordering::AcqRel);
                return None;
            }
        }
        Some(ShareGuard { tracked: tracked.clone(), peer, slot })
    }
}

/// One peer address's share; forgotten when no connection of it is left.
#[derive(Debug)]
pub(crate) struct PeerShare {
    address: IpAddr,
    held: [AtomicUsize; 2],
    shares: Weak<PeerShares>,
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        if let Some(shares) = self.shares.upgrade() {
            let mut map = shares.map.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&self.address).is_some_and(|weak| weak.strong_count() == 0) {
                map.remove(&self.address);
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct PeerShares {
    map: Mutex<HashMap<IpAddr, Weak<PeerShare>>>,
}

impl PeerShares {
    fn of(self: Arc<Self>, address: IpAddr) -> Arc<PeerShare> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(share) = map.get(&address).and_then(Weak::upgrade) {
            return share;
        }
        let share = Arc::new(PeerShare {
            address,
            held: [AtomicUsize::new(0), AtomicUsize::new(0)],
            shares: Arc::downgrade(&self),
        });
        map.insert(address, Arc::downgrade(&share));
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> &'static Descriptors {
        Box::leak(Box::new(Descriptors::new(limit, 0)))
    }

    #[test]
    fn application_claims_stop_before_the_reserve_and_probes_use_it() {
        let descriptors = budget(1024);
        let application = descriptors.limit() - descriptors.reserve() - MARGIN;
        let held: Vec<_> = (0..application).map(|_| descriptors.take(1, Claim::Application).unwrap()).collect();
        assert!(descriptors.take(1, Claim::Application).is_none(), "the reserve is not application traffic's");
        let reserve: Vec<_> =
            (0..descriptors.reserve()).map(|_| descriptors.take(1, Claim::Reserve).unwrap()).collect();
        assert!(descriptors.take(1, Claim::Reserve).is_none(), "the margin is the node's own");
        drop(held);
        drop(reserve);
        assert_eq!(descriptors.in_use(), 0, "everything is given back");
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_idle_connection_never_a_busy_one() {
        let registry = Registry::new(2, Claim::Application, budget(1024), Default::default());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let Admission::Session(first) = registry.admit(peer) else { panic!("first") };
        let Admission::Session(second) = registry.admit(peer) else { panic!("second") };
        let _busy = first.begin();
        assert!(matches!(registry.admit(peer), Admission::OverLimit(_)), "a connection just accepted is not idle yet");
        std::thread::sleep(EVICTABLE_AFTER);
        let Admission::Session(third) = registry.admit(peer) else { panic!("third") };
        assert!(second.evicted.load(Ordering::Acquire), "the idle one made room");
        assert!(!first.evicted.load(Ordering::Acquire), "a request in flight is never cut");
        assert_eq!(registry.sessions(), 2);
        let _also_busy = third.begin();
        // Everything busy: the fourth is served over the limit (probes only).
        assert!(matches!(registry.admit(peer), Admission::OverLimit(_)));
        assert_eq!(registry.counters.evictions.get(), 1);
    }

    #[test]
    fn a_connection_and_a_peer_hold_a_bounded_share_of_waits() {
        let registry = Registry::new(64, Claim::Application, budget(1024), Default::default());
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let connections: Vec<ConnectionHandle> = (0..3)
            .map(|_| match registry.admit(far) {
                Admission::Session(tracked) => ConnectionHandle(tracked),
                _ => panic!("session"),
            })
            .collect();
        let first: Vec<_> = (0..PER_CONNECTION_SLOTS).map(|_| connections[0].take(Slot::Wait).unwrap()).collect();
        assert!(connections[0].take(Slot::Wait).is_none(), "one connection's share");
        assert!(connections[0].take(Slot::Stream).is_some(), "streams are counted apart");
        let second: Vec<_> =
            (0..PER_PEER_SLOTS - PER_CONNECTION_SLOTS).map(|_| connections[1].take(Slot::Wait).unwrap()).collect();
        assert!(connections[2].take(Slot::Wait).is_none(), "one peer's share, over any number of connections");
        drop(first);
        assert!(connections[2].take(Slot::Wait).is_some(), "given back on drop");
        drop(second);
        let local = match registry.admit("127.0.0.1".parse().unwrap()) {
            Admission::Session(tracked) => ConnectionHandle(tracked),
            _ => panic!("session"),
        };
        assert!(local.0.share.peer.is_none(), "loopback peers are not one client");
    }
}
