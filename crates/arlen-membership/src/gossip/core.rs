//! The sans-IO gossip node: foca plus Arlen's sealing, bounds and identity
//! rules. It is handed datagrams, timer events and commands, and hands back
//! datagrams to send and timers to set; the driver (`driver.rs`) does the IO,
//! and the in-memory tests drive it on a paused clock.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arlen_cluster::HeardClock;
use foca::{Foca, Member, NoCustomBroadcast, Notification, PeriodicParams, Runtime, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng as _;

use super::accuracy::{since, Accuracy, Base};
use super::admission::{JoinBudget, SendCredit, Vouched};
use super::identity::{
    decode_packet, encode_packet, from_legacy, to_legacy, Announced, GossipId, Meta, Packet, WireCodec,
};
use super::seal::{
    extension, Advert, Rejection, ReplayGuard, Sealing, AMPLIFICATION_FACTOR, LAYOUT_3_EXTENSION, MAX_DATAGRAM,
    PROTOCOL_IDENTITY_META, REPLAY_WINDOW,
};
use super::GossipTraffic;
use foca::Codec as _;

/// Members asked to probe a member that did not answer directly.
const INDIRECT_PROBES: usize = 8;

/// Members each gossip round goes to while a large change spreads, and otherwise.
const WIDE_FAN_OUT: usize = 5;
const NARROW_FAN_OUT: usize = 2;

/// How often one kind of rejected datagram is logged at most.
const REJECTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// The protocol settings, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Protocol {
    /// SWIM probe period; also the period of gossip rounds.
    pub interval: Duration,
    /// How long a probe waits for a direct ack before asking others.
    pub probe_timeout: Duration,
    /// How long a suspected member has to refute before it is declared down.
    pub suspicion_timeout: Duration,
    /// How long foca remembers a member that is down.
    pub dead_member_ttl: Duration,
    /// Members known at most (alive, suspect and down), this node included.
    pub max_members: usize,
    /// Joins a minute beyond a burst of `expected_nodes` (see [`JoinBudget`]).
    pub max_joins_per_minute: u32,
    /// The cluster size the dissemination count is tuned for.
    pub expected_nodes: u32,
}

impl Protocol {
    /// The configuration's defaults (100 ms rounds, 40 ms probes, 200 ms
    /// suspicion, 60 s memory of the dead), for tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn defaults(max_members: usize, expected_nodes: u32) -> Self {
        Self {
            interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            suspicion_timeout: Duration::from_millis(200),
            dead_member_ttl: Duration::from_secs(60),
            max_members,
            max_joins_per_minute: 60,
            expected_nodes,
        }
    }

    /// How long a node with live peers may go without an authenticated
    /// answer addressed to it (an ack of its probe, direct or forwarded)
    /// before it stops vouching for them: three probe periods, a probe
    /// timeout and a suspicion timeout. A connected node probes one member
    /// every period whatever the cluster's size, so a healthy node gets an
    /// answer every period (at 1,000 members as at 3; at 10 % loss a period
    /// goes unanswered with p ≈ 0.008, seven in a row with p ≈ 10⁻¹⁵); a node
    /// that gets none for this long is cut off, mute, stranded or paused,
    /// and foca alone would take up to one probe period per member to notice.
    pub(crate) fn vouch_bound(&self) -> Duration {
        self.interval * 3 + self.probe_timeout + self.suspicion_timeout
    }

    /// A gap this long between two calls into the core means the node
    /// itself stalled (paused, throttled, swapped): the driver calls it at
    /// least every period.
    fn stall_gap(&self) -> Duration {
        (self.interval * 4).max(Duration::from_millis(150))
    }

    /// After a stall the node doubts itself this long: a fresh round of
    /// probes and a suspicion timeout, before it convicts anyone.
    fn doubt_period(&self) -> Duration {
        self.suspicion_timeout + self.interval * 2
    }

    fn foca_config(&self, max_packet: usize) -> foca::Config {
        let size = NonZeroU32::new(self.expected_nodes.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut config = foca::Config::new_lan(size);
        config.probe_period = self.interval;
        config.probe_rtt = self
            .probe_timeout
            .min(self.interval.saturating_sub(Duration::from_millis(1)))
            .max(Duration::from_millis(1));
        config.suspect_to_down_after = self.suspicion_timeout.max(Duration::from_millis(1));
        // A down member must be remembered at least as long as a replayed
        // datagram naming it could still be accepted.
        config.remove_down_after = Some(self.dead_member_ttl.max(REPLAY_WINDOW * 2));
        config.max_packet_size = NonZeroUsize::new(max_packet).unwrap_or(NonZeroUsize::MIN);
        config.max_transmissions =
            NonZeroU8::new(config.max_transmissions.get().saturating_mul(2).max(6)).unwrap_or(NonZeroU8::MIN);
        config.notify_down_members = true;
        // Indirect probes are asked for only when the direct probe (and its
        // second try) went unanswered, so more of them cost nothing in a
        // healthy network; under loss each is a four-leg path that fails far
        // more often than a direct one, and a suspicion costs more gossip
        // than all of them (its refutation spreads to every member): 8, not
        // foca's 3. At 10 % loss a probe then ends in a suspicion 7 × 10⁻⁶ of
        // the time (3: 1.5 × 10⁻³; 6: 6 × 10⁻⁵, which at 1,000 members
        // raised 15 to 41 suspicions in 10 s and doubled the bandwidth).
        config.num_indirect_probes = NonZeroUsize::new(INDIRECT_PROBES).unwrap_or(NonZeroUsize::MIN);
        // Gossip rounds send only while there are updates to spread (foca
        // skips empty rounds), and the fan-out sets how fast a cold start or
        // a churn spreads: 5, not 3, brings 1,000 simulated nodes under 5 s
        // (BENCHMARKS.md). It narrows when the backlog is small
        // (`Core::fit_fan_out`).
        let fan_out = NonZeroUsize::new(WIDE_FAN_OUT).unwrap_or(NonZeroUsize::MIN);
        let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
        config.periodic_gossip = Some(PeriodicParams { frequency: self.interval, num_members: fan_out });
        config.periodic_announce = Some(PeriodicParams {
            frequency: (self.interval * 50).max(Duration::from_secs(5)),
            num_members: NonZeroUsize::MIN,
        });
        config.periodic_announce_to_down_members =
            Some(PeriodicParams { frequency: (self.interval * 10).max(Duration::from_secs(1)), num_members: two });
        config
    }
}

/// Alive or suspect: still counted (a suspect has time to refute).
pub(crate) fn is_live(member: &Member<GossipId>) -> bool {
    member.state() != foca::State::Down
}

/// When to (re)announce to the seeds: alone, every two rounds; in a cluster,
/// now and then to one seed that is not a live member (heals split seed
/// groups). Time is measured from the node's start, so the driver (real
/// time) and the simulation (virtual time) run the same schedule.
#[derive(Debug, Clone)]
pub(crate) struct SeedSchedule {
    interval: Duration,
    next_alone: Duration,
    next_outside: Duration,
}

impl SeedSchedule {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, next_alone: Duration::ZERO, next_outside: Duration::ZERO }
    }

    /// The seeds to announce to at `since_start`.
    pub(crate) fn due(&mut self, core: &Core, seeds: &[SocketAddr], since_start: Duration) -> Vec<SocketAddr> {
        let alone = !core.members().any(is_live);
        if alone {
            if since_start >= self.next_alone {
                self.next_alone = since_start + (self.interval * 2).max(Duration::from_millis(100));
                return seeds.to_vec();
            }
            return Vec::new();
        }
        if since_start >= self.next_outside {
            self.next_outside = since_start + (self.interval * 100).max(Duration::from_secs(5));
            let active: HashSet<SocketAddr> = core.members().filter(|m| is_live(m)).map(|m| m.id().addr).collect();
            return seeds.iter().copied().find(|seed| !active.contains(seed)).into_iter().collect();
        }
        Vec::new()
    }
}

/// Milliseconds since the epoch.
pub(crate) fn epoch_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What foca asks of the outside world while it handles one input.
struct Io {
    sealing: Sealing,
    now_ms: u64,
    now: SystemTime,
    /// Probe outcomes, round-trip times, suspicions and verdicts.
    accuracy: Accuracy,
    /// Members foca declared down during the current call.
    downed: Vec<GossipId>,
    /// While handling an unsealed datagram: the bytes its replies may still take.
    reply_budget: Option<usize>,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<GossipId>)>,
    membership_changed: bool,
    amplification_drops: u64,
    /// Datagrams and bytes sent, by what they carry (for the simulation's
    /// bandwidth breakdown; not kept in production builds).
    #[cfg(any(test, feature = "simulation"))]
    sent: std::collections::BTreeMap<&'static str, (u64, u64)>,
    /// This node is leaving: foca going defunct is what was asked for.
    leaving: bool,
    /// foca renewed this node's identity (it was declared down): it must be
    /// connected again at once (see [`Core::after_foca`]).
    rejoined: Option<GossipId>,
    /// Where this node sends unsealed: bytes it may send to each address
    /// that has not proven it receives.
    credit: SendCredit,
    /// What each peer said about itself in its envelopes: the versions it
    /// speaks, its software.
    peers: Peers,
    /// This node's extension block (its software version).
    extension: Vec<u8>,
}

impl Runtime<GossipId> for Io {
    fn notify(&mut self, notification: Notification<'_, GossipId>) {
        self.membership_changed = true;
        match notification {
            Notification::MemberUp(id) => tracing::debug!(node_id = %id.node_id, addr = %id.addr, "gossip member up"),
            Notification::MemberDown(id) => {
                self.downed.push(id.clone());
                tracing::info!(node_id = %id.node_id, addr = %id.addr, "gossip member down")
            }
            Notification::Rename(old, new) => {
                tracing::debug!(node_id = %new.node_id, from_seq = old.seq, to_seq = new.seq, "gossip member renewed")
            }
            Notification::Rejoin(id) => self.rejoined = Some(id.clone()),
            Notification::Defunct if self.leaving => tracing::debug!("gossip left the cluster"),
            Notification::Defunct => tracing::warn!("the cluster declared this node down and it cannot rejoin"),
            Notification::Active | Notification::Idle => {}
        }
    }

    fn send_to(&mut self, to: GossipId, data: &[u8]) {
        let mut kind = "undecodable";
        if let Ok(header) = WireCodec.decode_header(data) {
            self.accuracy.sent(&header, self.now);
            kind = message_kind(&header.message);
        }
        let Some(datagram) = self.frame(to.addr, data) else { return };
        self.count_sent(kind, datagram.len());
        if let Some(budget) = self.reply_budget.as_mut() {
            if datagram.len() > *budget {
                self.amplification_drops += 1;
                return;
            }
            *budget -= datagram.len();
        }
        if !self.sealing.seals() && !self.credit.spend(to.addr, datagram.len(), self.now) {
            self.amplification_drops += 1;
            return;
        }
        self.outbox.push((to.addr, datagram));
    }

    fn submit_after(&mut self, event: Timer<GossipId>, after: Duration) {
        let after = match &event {
            // The direct probe waits as long as this peer's round trips need.
            Timer::SendIndirectProbe { probed_id, .. } => self.accuracy.probe_timeout(probed_id),
            Timer::ChangeSuspectToDown { member_id, incarnation, .. } => {
                self.accuracy.suspect(member_id, *incarnation, self.now);
                after
            }
            _ => after,
        };
        self.timers.push((after, event));
    }
}

/// What each peer said about itself in its envelopes (bounded: cleared when
/// it outgrows twice the member bound).
#[derive(Debug)]
struct Peers {
    adverts: HashMap<SocketAddr, Advert>,
    /// What each member said of itself in a layout-3 identity, by address:
    /// foca keeps the first copy of an identity it learns, which a peer of
    /// an older version relays without it.
    metas: HashMap<SocketAddr, (u64, Meta)>,
    bound: usize,
}

impl Peers {
    fn new(bound: usize) -> Self {
        Self { adverts: HashMap::new(), metas: HashMap::new(), bound: bound.max(16) }
    }

    /// Remembers what the identities of a packet said of their members (a
    /// relayed copy carries the zone but not the software: fields add up
    /// for one incarnation, a newer generation starts afresh).
    fn learn_metas<'a>(&mut self, identities: impl Iterator<Item = &'a GossipId>) {
        for id in identities.filter(|id| id.meta != Meta::default()) {
            let merged = match self.metas.get(&id.addr) {
                Some((generation, _)) if *generation > id.generation => continue,
                Some((generation, known)) if *generation == id.generation => {
                    let merged = Meta {
                        software: id.meta.software.clone().or_else(|| known.software.clone()),
                        zone: id.meta.zone.clone().or_else(|| known.zone.clone()),
                    };
                    if merged == *known {
                        continue;
                    }
                    merged
                }
                _ => id.meta.clone(),
            };
            if self.metas.len() >= self.bound {
                self.metas.clear();
            }
            self.metas.insert(id.addr, (id.generation, merged));
        }
    }

    /// What the member `id` said of itself, as far as this node heard it:
    /// each field from the identity foca keeps, else from another copy.
    fn meta_of(&self, id: &GossipId) -> Meta {
        let learnt = self.metas.get(&id.addr).filter(|(generation, _)| *generation == id.generation).map(|(_, m)| m);
        Meta {
            software: id.meta.software.clone().or_else(|| learnt.and_then(|m| m.software.clone())),
            zone: id.meta.zone.clone().or_else(|| learnt.and_then(|m| m.zone.clone())),
        }
    }

    fn learn(&mut self, addr: SocketAddr, advert: &Advert) {
        if self.adverts.get(&addr) == Some(advert) {
            return;
        }
        if self.adverts.len() >= self.bound {
            self.adverts.clear();
        }
        // A version-1 envelope (hints, retries) of a peer that still says it
        // speaks version 2 keeps its software known; an older binary at the
        // address (a rollback) forgets it.
        let kept = || self.adverts.get(&addr).and_then(|a| a.software.clone()).filter(|_| advert.max_version >= 2);
        let software = advert.software.clone().or_else(kept);
        self.adverts.insert(addr, Advert { max_version: advert.max_version, software });
    }

    /// The highest version this node and the peer at `addr` both speak.
    fn version_for(&self, addr: SocketAddr) -> u8 {
        let theirs = self.adverts.get(&addr).map_or(super::seal::PROTOCOL_UNMARKED, |a| a.max_version);
        theirs.min(super::seal::PROTOCOL_MAX)
    }

    fn software_of(&self, addr: SocketAddr) -> Option<String> {
        self.adverts.get(&addr).and_then(|a| a.software.clone())
    }
}

/// One gossip node's protocol state.
pub(crate) struct Core {
    foca: Foca<GossipId, WireCodec, StdRng, NoCustomBroadcast>,
    /// To start foca afresh (see [`Core::forget_verdicts_of_isolation`]).
    foca_config: foca::Config,
    /// Seeds of every foca this core starts (from the one seed it was given).
    seeds: StdRng,
    io: Io,
    protocol: Protocol,
    max_members: usize,
    heard: HeardClock,
    traffic: Arc<GossipTraffic>,
    last_logged: [Option<Instant>; Rejection::ALL.len()],
    vigil: Vigil,
    /// Sealed datagrams already accepted (each is accepted once).
    replays: ReplayGuard,
    /// Newcomers join at most this fast, and up to a ceiling.
    joins: JoinBudget,
    /// Addresses sealed traffic vouched for (the rollout rule).
    vouched: Vouched,
}

/// Arlen's watch over what foca reports: the evidence that peers are talking
/// to this node, the node's own stalls, and its rejoins.
#[derive(Debug)]
struct Vigil {
    /// The first call into the core: silence is measured from here until a
    /// peer has been heard.
    started: Option<SystemTime>,
    /// The last call into the core (stall detection).
    last_call: Option<SystemTime>,
    /// The last authenticated answer (ack, forwarded ack, feed) addressed to
    /// this node's current identity: a round trip with a peer.
    last_evidence: Option<SystemTime>,
    /// After a stall: until then no one is convicted...
    doubt_until: Option<SystemTime>,
    /// ...and until then datagrams (likely queued during the stall) are no
    /// evidence of a live peer.
    quarantine_until: Option<SystemTime>,
    stalls: u64,
    last_stall_log: Option<SystemTime>,
    /// Rejoins: the last one, the backoff before another, how many.
    last_rejoin: Option<SystemTime>,
    rejoin_backoff: Duration,
    rejoins: u64,
    /// Rejoins less than [`REJOIN_CALM`] apart, in a row.
    recent_rejoins: u32,
    /// The first and the last echo of this node's own verdicts, while they
    /// keep coming.
    echoes_since: Option<(SystemTime, SystemTime)>,
    last_rejoin_log: Option<SystemTime>,
    /// Datagrams telling this node it is down that were dropped by the backoff.
    held_back: u64,
    /// When each refused newcomer's address was last told who holds it.
    hints: HashMap<SocketAddr, SystemTime>,
    /// When each sender that addressed an earlier identity of ours was last
    /// told the current one.
    introduced: HashMap<SocketAddr, SystemTime>,
    /// The members of the table an isolation reset forgot, and when: no
    /// newcomers to the join budget while foca would have remembered them.
    forgotten: Option<(HashSet<SocketAddr>, SystemTime)>,
}

/// How long at most a rejoin waits after the previous one.
const MAX_REJOIN_BACKOFF: Duration = Duration::from_secs(1);
/// How long echoes of this node's own verdicts are ignored while they keep
/// coming.
const ECHO_PATIENCE: Duration = Duration::from_secs(1);
/// Rejoins in a row that wait only one probe period.
const FREE_REJOINS: u32 = 3;
/// Rejoins further apart than this reset the backoff.
const REJOIN_CALM: Duration = Duration::from_secs(10);
/// How often a repeated warning (rejoins, stalls) is logged at most.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the driver must do after an input.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    pub timers: Vec<(Duration, Timer<GossipId>)>,
    pub membership_changed: bool,
}

/// The name of a foca message, for counting what is sent.
fn message_kind(message: &foca::Message<GossipId>) -> &'static str {
    use foca::Message;
    match message {
        Message::Ping(_) => "ping",
        Message::Ack(_) => "ack",
        Message::PingReq { .. } => "ping-req",
        Message::IndirectPing { .. } => "indirect ping",
        Message::IndirectAck { .. } => "indirect ack",
        Message::ForwardedAck { .. } => "forwarded ack",
        Message::Gossip => "gossip",
        Message::Announce => "announce",
        Message::Feed => "feed",
        Message::Broadcast => "broadcast",
        Message::TurnUndead => "turn undead",
    }
}

impl Io {
    /// A packet (layout 3) framed for the peer at `to`, in the highest
    /// version both speak: in layout 1 for a peer of version 1 or 2, or when
    /// the extension that says "layout 3" would not fit the datagram. `None`
    /// when it does not transcode (it is not sent then).
    fn frame(&self, to: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let version = self.peers.version_for(to);
        let layout_3 = LAYOUT_3_EXTENSION.len();
        if version >= PROTOCOL_IDENTITY_META && self.sealing.carries_extension(packet.len(), layout_3, version) {
            return Some(self.sealing.seal_for(packet, self.now_ms, version, &LAYOUT_3_EXTENSION));
        }
        match to_legacy(packet) {
            Ok(legacy) => Some(self.sealing.seal_for(&legacy, self.now_ms, version.min(2), &self.extension)),
            Err(error) => {
                tracing::debug!(%error, "gossip packet not framed for a peer of an earlier version");
                None
            }
        }
    }

    #[cfg(any(test, feature = "simulation"))]
    fn count_sent(&mut self, kind: &'static str, bytes: usize) {
        let sent = self.sent.entry(kind).or_default();
        sent.0 += 1;
        sent.1 += bytes as u64;
    }

    #[cfg(not(any(test, feature = "simulation")))]
    fn count_sent(&mut self, _kind: &'static str, _bytes: usize) {}
}

impl Core {
    /// Datagrams and bytes this node sent so far, by what they carry.
    #[cfg(any(test, feature = "simulation"))]
    pub(crate) fn sent_by_kind(&self) -> &std::collections::BTreeMap<&'static str, (u64, u64)> {
        &self.io.sent
    }

    pub(crate) fn new(
        identity: GossipId,
        cluster_name: &str,
        protocol: &Protocol,
        sealing: Sealing,
        seed: u64,
        heard: HeardClock,
        traffic: Arc<GossipTraffic>,
    ) -> Self {
        let me = identity.node_id.clone();
        let config = protocol.foca_config(Sealing::max_packet(cluster_name));
        let mut seeds = StdRng::seed_from_u64(seed);
        let foca_rng = StdRng::seed_from_u64(rand::RngExt::random(&mut seeds));
        let base = Base {
            interval: protocol.interval,
            probe_timeout: protocol.probe_timeout,
            suspicion_timeout: protocol.suspicion_timeout,
        };
        let accuracy = Accuracy::new(base, &me, traffic.clone());
        Self {
            foca: Foca::new(identity, config.clone(), foca_rng, WireCodec),
            foca_config: config,
            seeds,
            io: Io {
                sealing,
                now_ms: 0,
                now: UNIX_EPOCH,
                accuracy,
                downed: Vec::new(),
                reply_budget: None,
                outbox: Vec::new(),
                timers: Vec::new(),
                membership_changed: false,
                amplification_drops: 0,
                #[cfg(any(test, feature = "simulation"))]
                sent: std::collections::BTreeMap::new(),
                leaving: false,
                rejoined: None,
                credit: SendCredit::new(MAX_DATAGRAM, protocol.max_members.max(1).saturating_mul(4)),
                peers: Peers::new(protocol.max_members.max(1).saturating_mul(2)),
                extension: extension(&arlen_config::build::software()),
            },
            protocol: protocol.clone(),
            max_members: protocol.max_members.max(1),
            heard,
            traffic,
            last_logged: [None; Rejection::ALL.len()],
            replays: ReplayGuard::default(),
            joins: JoinBudget::new(protocol.expected_nodes, protocol.max_joins_per_minute),
            vouched: Vouched::new(protocol.max_members.max(1).saturating_mul(2)),
            vigil: Vigil {
                started: None,
                last_call: None,
                last_evidence: None,
                doubt_until: None,
                quarantine_until: None,
                stalls: 0,
                last_stall_log: None,
                last_rejoin: None,
                rejoin_backoff: protocol.interval,
                rejoins: 0,
                recent_rejoins: 0,
                echoes_since: None,
                last_rejoin_log: None,
                held_back: 0,
                hints: HashMap::new(),
                introduced: HashMap::new(),
                forgotten: None,
            },
        }
    }

    /// Every entry point starts here: the clock for sealing, and the node's
    /// own stalls. A gap longer than [`Protocol::stall_gap`] since the last
    /// call means this node was not running (SIGSTOP, a VM pause, CPU
    /// throttling): it doubts itself before it accuses anyone, and what
    /// arrives right after waking (queued during the stall) is no evidence
    /// that anyone is alive now.
    fn enter(&mut self, now: SystemTime) {
        self.io.now_ms = epoch_ms(now);
        self.io.now = now;
        let vigil = &mut self.vigil;
        vigil.started.get_or_insert(now);
        if let Some(last) = vigil.last_call {
            let gap = since(now, last);
            if gap > self.protocol.stall_gap() {
                vigil.stalls += 1;
                self.traffic.stalls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                vigil.doubt_until = Some(now + self.protocol.doubt_period());
                vigil.quarantine_until = Some(now + self.protocol.interval);
                self.io.accuracy.stalled(now);
                if vigil.last_stall_log.is_none_or(|at| since(now, at) >= REPEAT_LOG_EVERY) {
                    vigil.last_stall_log = Some(now);
                    tracing::warn!(
                        stalled_ms = gap.as_millis() as u64,
                        stalls = vigil.stalls,
                        "this node stalled (paused or starved of CPU); it convicts no one until a fresh round of probes"
                    );
                }
            }
        }
        vigil.last_call = Some(now);
    }

    /// Called every probe period by the driver, whatever else happens, so
    /// the core notices its own stalls and its silence.
    pub(crate) fn tick(&mut self, now: SystemTime) {
        self.enter(now);
        self.send_notices();
        self.fit_fan_out();
    }

    /// Gossip rounds go to [`WIDE_FAN_OUT`] members while a large change is
    /// spreading (a cold start, a churn: the backlog holds updates about a
    /// quarter of the members or more), to [`NARROW_FAN_OUT`] otherwise. A
    /// round is sent whenever the backlog is not empty, and under loss it
    /// never is (suspicions and refutations come and go): a wide fan-out
    /// for a trickle of updates tripled the bandwidth of a lossy network.
    fn fit_fan_out(&mut self) {
        let members = self.foca.num_members().max(1);
        let wide = self.foca.updates_backlog() * 4 >= members;
        let fan_out = if wide { WIDE_FAN_OUT } else { NARROW_FAN_OUT };
        let current = self.foca_config.periodic_gossip.as_ref().map(|p| p.num_members.get());
        if current == Some(fan_out) {
            return;
        }
        if let Some(periodic) = self.foca_config.periodic_gossip.as_mut() {
            periodic.num_members = NonZeroUsize::new(fan_out).unwrap_or(NonZeroUsize::MIN);
        }
        if let Err(error) = self.foca.set_config(self.foca_config.clone()) {
            tracing::debug!(%error, "gossip fan-out not changed");
        }
    }

    /// Tells each member this node suspects of its suspicion, at once and
    /// once a period after: a ping carrying it, so that a live member
    /// refutes (its incarnation goes up) and its ack carries the refutation
    /// straight back, in one round trip, instead of waiting for gossip to
    /// reach it and come back — at 1,000 members that takes longer than the
    /// suspicion timeout, and a lost datagram made a live member dead.
    fn send_notices(&mut self) {
        for (suspect, incarnation) in self.io.accuracy.notices_due(self.io.now) {
            let header = foca::Header {
                src: self.foca.identity().clone(),
                src_incarnation: 0,
                dst: suspect.clone(),
                message: foca::Message::Ping(0),
            };
            let notice = foca::Member::new(suspect.clone(), incarnation, foca::State::Suspect);
            match encode_packet(&header, &[notice]) {
                Ok(packet) => {
                    let Some(datagram) = self.io.frame(suspect.addr, &packet) else { continue };
                    self.io.count_sent("suspicion notice", datagram.len());
                    self.io.outbox.push((suspect.addr, datagram));
                }
                Err(error) => tracing::debug!(%error, "suspicion notice not encoded"),
            }
        }
    }

    /// This node's recent verdicts, with their evidence.
    pub(crate) fn accusations(&self) -> Vec<arlen_cluster::Accusation> {
        self.io.accuracy.accusations()
    }

    /// How long no peer has been heard talking to this node (since its start
    /// until one has).
    pub(crate) fn silence(&self, now: SystemTime) -> Duration {
        self.vigil.last_evidence.or(self.vigil.started).map_or(Duration::ZERO, |at| since(now, at))
    }

    /// The silence beyond which this node stops vouching for its peers.
    pub(crate) fn vouch_bound(&self) -> Duration {
        self.protocol.vouch_bound()
    }

    /// Whether the node vouches for the members foca counts live: one of
    /// them answered it within the bound, or there are none. A node that has
    /// never had an answer vouches for no one — a restart refused by its
    /// peers learns their identities from the refusals, and counting them
    /// made it ready while they did not count it.
    pub(crate) fn vouches(&self, now: SystemTime) -> bool {
        let answered = self.vigil.last_evidence.is_some_and(|at| since(now, at) <= self.vouch_bound());
        answered || !self.members().any(is_live)
    }

    fn doubting(&self, now: SystemTime) -> Option<Duration> {
        self.vigil.doubt_until.and_then(|until| until.duration_since(now).ok()).filter(|d| !d.is_zero())
    }

    /// After every foca call: a renewed identity is connected at once.
    ///
    /// foca's `change_identity` (reached from a rejoin after `TurnUndead`,
    /// and from [`Core::announce_state`]) resets the connection state to
    /// disconnected and voids every timer; foca connects again only when a
    /// datagram addressed to the *new* identity arrives. Until then the node
    /// would neither probe nor suspect anyone while its table still lists
    /// everyone alive — a node cut off right after a rejoin stayed "nominal"
    /// for a whole partition. Applying no updates runs foca's own
    /// connection-state adjustment, which starts the probe cycle again.
    fn after_foca(&mut self, now: SystemTime) {
        let Some(renewed) = self.io.rejoined.take() else { return };
        self.io.accuracy.reset();
        if let Err(error) = self.foca.apply_many(std::iter::empty(), false, &mut self.io) {
            tracing::warn!(%error, "gossip could not reconnect after renewing its identity");
        }
        let vigil = &mut self.vigil;
        vigil.rejoins += 1;
        self.traffic.rejoins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        vigil.recent_rejoins = match vigil.last_rejoin {
            Some(at) if since(now, at) < REJOIN_CALM => vigil.recent_rejoins.saturating_add(1),
            _ => 1,
        };
        // A few rejoins in a row are normal (a flapping link); beyond that
        // the backoff doubles up to its bound.
        let doublings = vigil.recent_rejoins.saturating_sub(FREE_REJOINS).min(16);
        vigil.rejoin_backoff = (self.protocol.interval * 2u32.pow(doublings)).min(MAX_REJOIN_BACKOFF);
        vigil.last_rejoin = Some(now);
        // The evidence watchdog runs on: a rejoin is no evidence that anyone
        // answers (a node paused long enough to be declared down rejoins the
        // moment it wakes, before any peer has answered it).
        if vigil.last_rejoin_log.is_none_or(|at| since(now, at) >= REPEAT_LOG_EVERY) {
            vigil.last_rejoin_log = Some(now);
            tracing::warn!(
                seq = renewed.seq,
                generation = renewed.generation,
                rejoins = vigil.rejoins,
                held_back = vigil.held_back,
                "the cluster declared this node down; rejoined as a renewed identity (logged at most every 10 s)"
            );
        }
    }

    /// Marks the identity change just made by Arlen (not by foca) as a rejoin.
    fn renewed_by_us(&mut self) {
        self.io.rejoined = Some(self.foca.identity().clone());
    }

    pub(crate) fn identity(&self) -> &GossipId {
        self.foca.identity()
    }

    /// Every member foca knows (alive, suspect and down), this node excluded.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member<GossipId>> {
        self.foca.iter_membership_state()
    }

    /// Membership updates still waiting to be gossiped (each is sent up to
    /// `max_transmissions` times).
    #[cfg(any(test, feature = "simulation"))]
    pub(crate) fn updates_backlog(&self) -> usize {
        self.foca.updates_backlog()
    }

    pub(crate) fn set_sealing(&mut self, sealing: Sealing) {
        if sealing.restricts_unsealed() && !self.io.sealing.restricts_unsealed() {
            // What was learnt under the earlier rule is what the operator accepted.
            let known: Vec<SocketAddr> = self.members().map(|m| m.id().addr).collect();
            self.vouched.adopt(known.into_iter().chain([self.foca.identity().addr]));
        }
        if let Some(warning) = sealing.rollout_warning() {
            tracing::warn!("{warning}");
        }
        self.io.sealing = sealing;
    }

    /// The software version a peer at `addr` said it runs, if it did.
    pub(crate) fn software_of(&self, addr: SocketAddr) -> Option<String> {
        self.io.peers.software_of(addr)
    }

    /// The counters this core keeps.
    pub(crate) fn traffic(&self) -> &GossipTraffic {
        &self.traffic
    }

    /// How each live member answers this node's probes (gray failures
    /// named), for those probed enough to tell.
    pub(crate) fn reachability(
        &self,
        now: SystemTime,
    ) -> Vec<((String, u64), (arlen_cluster::Reachability, arlen_cluster::ReachabilityEvidence))> {
        let own = self.foca.identity().addr;
        let sorted = self.io.accuracy.sorted_rtts();
        self.foca
            .iter_members()
            .filter(|m| is_live(m) && m.id().addr != own)
            .filter_map(|m| {
                let id = m.id();
                let heard = self.heard.last_heard(&id.node_id, id.generation);
                let heard_ms_ago = heard.map(|at| u64::try_from(since(now, at).as_millis()).unwrap_or(u64::MAX));
                let class = self.io.accuracy.reachability(id, heard_ms_ago, now, &sorted)?;
                Some(((id.node_id.clone(), id.generation), class))
            })
            .collect()
    }

    /// What the member `id` said of itself (software, zone), from its
    /// identity or, where an older peer relayed it without, from another
    /// copy of it this node heard.
    pub(crate) fn meta_of(&self, id: &GossipId) -> Meta {
        self.io.peers.meta_of(id)
    }

    /// Newcomers held back by the join budget so far.
    pub(crate) fn held_back(&self) -> u64 {
        self.joins.held_back
    }

    pub(crate) fn sealing(&self) -> &Sealing {
        &self.io.sealing
    }

    /// Handles one datagram from the network.
    pub(crate) fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: SystemTime) {
        self.enter(now);
        if let Err(rejection) = self.accept(from, datagram, now) {
            self.reject(rejection, from);
        }
        self.count_amplification_drops(from);
        self.after_foca(now);
    }

    fn accept(&mut self, from: SocketAddr, datagram: &[u8], now: SystemTime) -> Result<(), Rejection> {
        let mut opened = self.io.sealing.open(datagram, self.io.now_ms)?;
        if let Some(stamp) = opened.stamp {
            self.replays.admit(stamp, self.io.now_ms)?;
        }
        if opened.layout < 3 {
            // A peer of version 1 or 2: its identities say nothing of themselves.
            opened.packet = from_legacy(&opened.packet).map_err(|error| {
                tracing::debug!(%error, "gossip packet refused");
                Rejection::Undecodable
            })?;
        }
        let mut packet = decode_packet(&opened.packet).map_err(|error| {
            tracing::debug!(%error, "gossip packet refused");
            Rejection::Undecodable
        })?;
        // A generation is milliseconds since the epoch at a start: one beyond
        // this node's clock plus the replay window is forged or from a clock
        // that sealing would refuse anyway. Refused, it can never hold an
        // address that a real restart needs.
        let latest = self.io.now_ms.saturating_add(u64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(u64::MAX));
        if packet.identities().any(|id| id.generation > latest) {
            return Err(Rejection::FutureGeneration);
        }
        if self.foca.iter_membership_state().len() + 1 >= self.max_members {
            let mut known: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
            known.insert(self.foca.identity().addr);
            if packet.identities().any(|id| !known.contains(&id.addr)) {
                return Err(Rejection::MemberLimit);
            }
        }
        let admitted = self.admit(&mut packet, opened.sealed(), now)?;
        self.io.peers.learn(packet.header.src.addr, &opened.advert);
        self.io.peers.learn_metas(packet.identities());
        let bytes: &[u8] = admitted.as_deref().unwrap_or(&opened.packet);
        if !opened.sealed() {
            self.io.credit.received(from, datagram.len());
        }
        self.forget_verdicts_of_isolation(&packet.header.src, now);
        let to_us = packet.header.dst == *self.foca.identity();
        // Unsealed datagrams get no unsolicited answer where the cluster
        // seals (the same rule as for hints).
        let answerable = opened.sealed() || !self.io.sealing.seals();
        if !to_us && answerable && packet.header.message != foca::Message::Announce {
            self.introduce_to(&packet.header, now);
        }
        if packet.header.message == foca::Message::TurnUndead && !self.rejoin_due(&packet.header.src, to_us, now) {
            return Ok(());
        }
        self.io.reply_budget = (!opened.sealed()).then(|| datagram.len() * AMPLIFICATION_FACTOR);
        let handled = self.foca.handle_data(bytes, &mut self.io);
        self.io.reply_budget = None;
        match handled {
            Ok(()) => {
                let sender = &packet.header.src;
                self.heard.record(&sender.node_id, sender.generation, now);
                let own = self.foca.identity();
                let suspects_us = packet.members.iter().any(|m| m.id() == own && m.state() == foca::State::Suspect);
                self.io.accuracy.received(&packet.header, suspects_us, now);
                let quarantined = self.vigil.quarantine_until.is_some_and(|until| now < until);
                // Evidence is an answer to something this node sent (an ack of
                // its probe, direct or forwarded, a feed answering its
                // announce): a round trip. A ping or gossip only shows that
                // the node hears the cluster — a node whose outbound is cut
                // ("mute") hears everyone and is counted out by all.
                let answer = matches!(
                    packet.header.message,
                    foca::Message::Ack(_) | foca::Message::ForwardedAck { .. } | foca::Message::Feed
                );
                if to_us && answer && !quarantined {
                    self.vigil.last_evidence = Some(now);
                }
                if to_us && answer {
                    self.io.credit.proven(from, now);
                }
                self.follow_predecessor(&packet, now);
                if answerable {
                    self.hint_newcomer(from, &packet.header.src);
                }
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, "foca refused a gossip packet");
                Err(Rejection::Undecodable)
            }
        }
    }

    /// Applies the admission rules of `admission.rs` to a decoded packet:
    /// newcomers beyond the join budget are held back, and unsealed traffic
    /// beside sealed (`unsealedTraffic = accept`) comes only from vouched
    /// members and carries only "alive" news of known ones. Returns the
    /// packet re-encoded when something was stripped from it.
    fn admit(&mut self, packet: &mut Packet, sealed: bool, now: SystemTime) -> Result<Option<Vec<u8>>, Rejection> {
        let restricted = !sealed && self.io.sealing.restricts_unsealed();
        // Unsealed beside sealed: only from a member sealed traffic vouched
        // for, under the very identity this node knows (a renewal — draining,
        // leaving — would replace it), and never telling this node it is down.
        let known_identity = |core: &Self, id: &GossipId| core.members().any(|m| m.id() == id);
        if restricted
            && (!self.vouched.contains(&packet.header.src.addr)
                || !known_identity(self, &packet.header.src)
                || packet.header.message == foca::Message::TurnUndead)
        {
            return Err(Rejection::Unvouched);
        }
        let known_ids: HashSet<GossipId> =
            if restricted { self.members().map(|m| m.id().clone()).collect() } else { HashSet::new() };
        let mut known: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
        known.insert(self.foca.identity().addr);
        // Members an isolation reset forgot were admitted once: they come
        // back at once, not at the join rate (for as long as foca would have
        // remembered them had they been down).
        if self.vigil.forgotten.as_ref().is_some_and(|(_, at)| since(now, *at) >= self.protocol.dead_member_ttl) {
            self.vigil.forgotten = None;
        }
        let forgotten = self.vigil.forgotten.as_ref().map(|(addresses, _)| addresses);
        let newcomer = |known: &HashSet<SocketAddr>, address: &SocketAddr| {
            !known.contains(address) && !forgotten.is_some_and(|f| f.contains(address))
        };
        let mut live = 1 + self.members().filter(|m| is_live(m)).count();
        if newcomer(&known, &packet.header.src.addr) {
            if !self.joins.admit(live, now) {
                return Err(Rejection::HeldBack);
            }
            known.insert(packet.header.src.addr);
            live += 1;
        }
        let before = packet.members.len();
        let mut admitted_here: HashSet<SocketAddr> = HashSet::new();
        let joins = &mut self.joins;
        packet.members.retain(|member| {
            let address = member.id().addr;
            let newcomer = newcomer(&known, &address) && !admitted_here.contains(&address);
            if restricted && (newcomer || member.state() != foca::State::Alive || !known_ids.contains(member.id())) {
                return false;
            }
            if newcomer && member.state() != foca::State::Down {
                if !joins.admit(live, now) {
                    return false;
                }
                admitted_here.insert(address);
                live += 1;
            }
            true
        });
        if sealed {
            self.vouched.vouch(packet.header.src.addr);
            for member in &packet.members {
                self.vouched.vouch(member.id().addr);
            }
        }
        if packet.members.len() == before {
            return Ok(None);
        }
        encode_packet(&packet.header, &packet.members).map(Some).map_err(|error| {
            tracing::debug!(%error, "gossip packet not re-encoded");
            Rejection::Undecodable
        })
    }

    /// Whether echoes (see [`Core::rejoin_due`]) have kept coming for longer
    /// than [`ECHO_PATIENCE`]: then both sides believe they are the majority
    /// (a wrong `expectedNodes`, an even split), and this side rejoins too
    /// rather than wait for ever.
    fn echoes_persist(&mut self, now: SystemTime) -> bool {
        let vigil = &mut self.vigil;
        let first = match vigil.echoes_since {
            Some((first, last)) if since(now, last) < ECHO_PATIENCE => first,
            _ => now,
        };
        vigil.echoes_since = Some((first, now));
        since(now, first) >= ECHO_PATIENCE
    }

    /// Whether this node and the members it vouches for are more than half
    /// of the expected cluster.
    fn on_majority_side(&self, now: SystemTime) -> bool {
        let live = if self.vouches(now) { 1 + self.members().filter(|m| is_live(m)).count() } else { 1 };
        live * 2 > usize::try_from(self.protocol.expected_nodes).unwrap_or(usize::MAX)
    }

    /// A node that counts no live member (or has heard no one for longer than
    /// it may vouch for them) and hears from one it declared down
    /// was most likely the one cut off: its verdicts of that time say only
    /// that it could reach nobody. Left to foca, it would refuse the healthy
    /// majority (`TurnUndead`) and spread its `Down` verdicts on the replies,
    /// and every healthy node would have to rejoin under a renewed identity
    /// — each heal of one isolated node shook the whole cluster. Instead it
    /// forgets them: foca starts afresh with this node's identity and an
    /// empty table, before anything of the old view is sent.
    fn forget_verdicts_of_isolation(&mut self, sender: &GossipId, now: SystemTime) {
        if self.vouches(now) && self.foca.iter_membership_state().any(is_live) {
            return;
        }
        let declared_down = self
            .foca
            .iter_membership_state()
            .any(|m| m.id().addr == sender.addr && m.state() == foca::State::Down && !sender.supersedes(m.id()));
        if !declared_down {
            return;
        }
        tracing::info!(
            peer = %sender.node_id,
            "heard again from a member declared down while this node could reach no one; forgetting the verdicts of its isolation"
        );
        let forgotten: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
        self.vigil.forgotten = Some((forgotten, now));
        let rng = StdRng::seed_from_u64(rand::RngExt::random(&mut self.seeds));
        let identity = self.foca.identity().clone();
        self.foca = Foca::new(identity, self.foca_config.clone(), rng, WireCodec);
        self.io.accuracy.reset();
        self.traffic.isolation_resets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// foca ignores a packet addressed to an earlier identity of this node:
    /// its sender has not learnt of the renewal. When two nodes renew at
    /// once (a heal), each keeps addressing the other's old identity and
    /// neither hears the other until a third node tells them — cut off
    /// together right then, they would convict each other. Announcing to
    /// the sender makes it learn this node's identity at once (at most once
    /// a period per sender).
    fn introduce_to(&mut self, header: &foca::Header<GossipId>, now: SystemTime) {
        let own = self.foca.identity();
        if header.dst.addr != own.addr || !own.supersedes(&header.dst) {
            return;
        }
        let sender = header.src.clone();
        if self.vigil.introduced.get(&sender.addr).is_some_and(|at| since(now, *at) < self.protocol.interval) {
            return;
        }
        if self.vigil.introduced.len() >= 256 {
            self.vigil.introduced.clear();
        }
        self.vigil.introduced.insert(sender.addr, now);
        if let Err(error) = self.foca.announce(sender, &mut self.io) {
            tracing::debug!(%error, "gossip introduction");
        }
    }

    /// Whether a `TurnUndead` may make this node rejoin now. One about an
    /// earlier identity of ours (in flight across a rejoin) is stale. On the
    /// majority side, one from a member this node holds down is the echo of
    /// its own verdict (foca answers a down member's datagrams with
    /// `TurnUndead`, both ways): after a heal, the side that was cut off and
    /// the healthy majority would each make the other rejoin. The minority
    /// honours it and rejoins (a node that was cut off alone has forgotten
    /// its verdicts by then, [`Core::forget_verdicts_of_isolation`]); the
    /// majority ignores it and stays as it is. One about the current identity waits out the rejoin backoff, so a
    /// node that the cluster keeps refusing renews itself a few times a
    /// second at most, not thousands.
    fn rejoin_due(&mut self, sender: &GossipId, to_us: bool, now: SystemTime) -> bool {
        let held_down = self.foca.iter_membership_state().any(|m| m.id() == sender && m.state() == foca::State::Down);
        let echo = held_down && self.on_majority_side(now) && !self.echoes_persist(now);
        let due = to_us && !echo && self.vigil.last_rejoin.is_none_or(|at| since(now, at) >= self.vigil.rejoin_backoff);
        if !due {
            self.vigil.held_back += 1;
        }
        due
    }

    /// A packet that names an earlier incarnation at this node's address
    /// ranking above this one (its wall clock was ahead of ours: an NTP step
    /// or a VM restored from a snapshot between the two starts) would keep
    /// this node out until the cluster forgets it. A restart must supersede
    /// its predecessor: take the generation right after it.
    fn follow_predecessor(&mut self, packet: &Packet, now: SystemTime) {
        let own = self.foca.identity().clone();
        let Some(predecessor) = packet
            .members
            .iter()
            .map(Member::id)
            .filter(|id| id.addr == own.addr && id.supersedes(&own))
            .max_by_key(|id| id.generation)
        else {
            return;
        };
        let Some(successor) = own.succeeding(predecessor) else { return };
        tracing::warn!(
            predecessor_generation = predecessor.generation,
            own_generation = own.generation,
            generation = successor.generation,
            "an earlier incarnation at this address ranks above this one (the clock went back across a restart); taking the generation after it"
        );
        if let Err(error) = self.foca.change_identity(successor, &mut self.io) {
            tracing::warn!(%error, "gossip could not take the generation after its predecessor");
            return;
        }
        self.renewed_by_us();
        self.after_foca(now);
    }

    /// A sender whose address is held by a down member that ranks above it
    /// is refused by foca (`TurnUndead`) for as long as the down member is
    /// remembered. When that sender is a restart whose clock went back, it
    /// cannot know what to supersede: tell it, with a standard foca gossip
    /// message naming the down holder (at most once a period per address,
    /// and, where the cluster seals, only to sealed traffic).
    fn hint_newcomer(&mut self, from: SocketAddr, sender: &GossipId) {
        let Some(holder) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == sender.addr && m.id() != sender)
            .filter(|m| m.state() == foca::State::Down && m.id().supersedes(sender))
            .cloned()
        else {
            return;
        };
        let now = self.io.now;
        if self.vigil.hints.get(&sender.addr).is_some_and(|at| since(now, *at) < self.protocol.interval) {
            return;
        }
        if self.vigil.hints.len() >= 256 {
            self.vigil.hints.clear();
        }
        self.vigil.hints.insert(sender.addr, now);
        let header = foca::Header {
            src: self.foca.identity().clone(),
            src_incarnation: 0,
            dst: sender.clone(),
            message: foca::Message::Gossip,
        };
        match encode_packet(&header, &[Member::down(holder.id().clone())]) {
            Ok(packet) => {
                if let Some(datagram) = self.io.frame(from, &packet) {
                    self.io.count_sent("down hint", datagram.len());
                    self.io.outbox.push((from, datagram));
                }
            }
            Err(error) => tracing::debug!(%error, "gossip hint not encoded"),
        }
    }

    fn count_amplification_drops(&mut self, from: SocketAddr) {
        for _ in 0..std::mem::take(&mut self.io.amplification_drops) {
            self.reject(Rejection::Amplification, from);
        }
    }

    /// Counts a rejected datagram and warns about it, at most once per
    /// [`REJECTION_LOG_EVERY`] for each reason.
    pub(crate) fn reject(&mut self, rejection: Rejection, from: SocketAddr) {
        let total = self.traffic.count_rejection(rejection);
        let slot = &mut self.last_logged[rejection.index()];
        if slot.is_none_or(|at| at.elapsed() >= REJECTION_LOG_EVERY) {
            *slot = Some(Instant::now());
            tracing::warn!(
                reason = rejection.label(),
                %from,
                total,
                counted_in = super::REJECTED_DATAGRAMS,
                "gossip datagram dropped (further drops for this reason are counted, by reason, in the metric counted_in names, and logged at most every 10 s)"
            );
        }
    }

    pub(crate) fn handle_timer(&mut self, timer: Timer<GossipId>, now: SystemTime) {
        self.enter(now);
        // A node that just woke from a stall doubts itself: its probes timed
        // out while it was not running, not necessarily the peer. Convictions
        // wait until a fresh round of probes had its chance (the member stays
        // suspect, and a live one refutes meanwhile).
        let convicting = match &timer {
            Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
            _ => None,
        };
        if let Some(member) = &convicting {
            if let Some(remaining) = self.doubting(now) {
                self.io.timers.push((remaining, timer));
                return;
            }
            // The suspicion lasts as long as the cluster's size and its
            // confirmation require (see `accuracy.rs`), and may have begun
            // later than foca's timer thinks (after a refutation, a new one).
            if let Some(since) = self.io.accuracy.suspected_since(member) {
                let members = 1 + self.members().filter(|m| is_live(m)).count();
                let required = self.io.accuracy.required(member, members);
                let elapsed = now.duration_since(since).unwrap_or_default();
                if elapsed < required {
                    self.io.timers.push((required - elapsed, timer));
                    return;
                }
            }
        }
        // The direct probe had no ack in time: besides foca's indirect probes,
        // ping the member once more directly. One lost datagram of four no
        // longer makes a suspicion (at 10 % loss, 0.19 → 0.04 of probes fail
        // directly), and a suspicion costs far more gossip than a ping.
        // foca's indirect probes wait for it: when the second try is answered
        // they are not sent at all (each is four datagrams, and under loss
        // most direct failures are one lost datagram).
        if let Timer::SendIndirectProbe { probed_id, .. } = &timer {
            if let Some((number, wait)) = self.io.accuracy.retry(probed_id) {
                let header = foca::Header {
                    src: self.foca.identity().clone(),
                    src_incarnation: 0,
                    dst: probed_id.clone(),
                    message: foca::Message::Ping(number),
                };
                if let Some(datagram) = encode_packet(&header, &[]).ok().and_then(|p| self.io.frame(probed_id.addr, &p))
                {
                    self.io.count_sent("ping retry", datagram.len());
                    self.io.outbox.push((probed_id.addr, datagram));
                    self.io.timers.push((wait, timer));
                    return;
                }
            }
        }
        self.io.downed.clear();
        if let Err(error) = self.foca.handle_timer(timer, &mut self.io) {
            tracing::debug!(%error, "gossip timer");
        }
        if let Some(member) = convicting {
            let down = self.io.downed.contains(&member);
            let down_already = self.members().any(|m| m.id() == &member && m.state() == foca::State::Down);
            self.io.accuracy.conclude(&member, down, down_already, now);
        }
        self.after_foca(now);
    }

    /// Asks the node at `seed` to let this node in.
    pub(crate) fn announce(&mut self, seed: SocketAddr, now: SystemTime) {
        self.enter(now);
        if seed == self.foca.identity().addr {
            return;
        }
        self.io.credit.seed(seed);
        if let Err(error) = self.foca.announce(GossipId::seed(seed), &mut self.io) {
            tracing::debug!(%error, %seed, "gossip announce");
        }
        self.after_foca(now);
    }

    /// Says something new about this node: a renewed identity that replaces
    /// the old one everywhere.
    pub(crate) fn announce_state(&mut self, state: Announced, now: SystemTime) {
        self.enter(now);
        let Some(renewed) = self.foca.identity().with_state(state) else {
            tracing::warn!("gossip identity cannot be renewed any more; restart the node");
            return;
        };
        if let Err(error) = self.foca.change_identity(renewed, &mut self.io) {
            tracing::warn!(%error, "gossip could not announce this node's state");
            return;
        }
        if state != Announced::Left {
            // Connected again at once, as after a rejoin (see `after_foca`).
            if let Err(error) = self.foca.apply_many(std::iter::empty(), false, &mut self.io) {
                tracing::warn!(%error, "gossip could not reconnect after announcing its state");
            }
        }
    }

    /// Announces `left` and tells a few members this node is gone.
    pub(crate) fn leave(&mut self, now: SystemTime) {
        self.announce_state(Announced::Left, now);
        self.io.leaving = true;
        if let Err(error) = self.foca.leave_cluster(&mut self.io) {
            tracing::debug!(%error, "gossip leave");
        }
    }

    /// Takes what foca asked for since the last call.
    pub(crate) fn take_output(&mut self) -> Output {
        Output {
            datagrams: std::mem::take(&mut self.io.outbox),
            timers: std::mem::take(&mut self.io.timers),
            membership_changed: std::mem::take(&mut self.io.membership_changed),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use foca::{Codec as _, Header, Message};
    use proptest::prelude::*;

    use super::*;
    use crate::gossip::seal::UnsealedTraffic;

    const KEY: [u8; 32] = [3; 32];

    /// A member at 127.0.0.1:`port` named `node-<port>` (for the core's tests and its neighbours').
    pub(crate) fn id(port: u16) -> GossipId {
        GossipId {
            node_id: format!("node-{port}"),
            generation: 1,
            seq: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http_url: "http://127.0.0.1:1".to_owned(),
            state: Announced::Alive,
            meta: Meta::default(),
        }
    }

    fn protocol() -> Protocol {
        Protocol::defaults(16, 3)
    }

    fn core() -> Core {
        let sealing = Sealing::new("alpha", &[KEY], UnsealedTraffic::Accept);
        Core::new(id(1), "alpha", &protocol(), sealing, 7, HeardClock::default(), Arc::default())
    }

    /// A real announce packet from another member, to mutate.
    fn announce_packet() -> Vec<u8> {
        let header =
            Header { src: id(2), src_incarnation: 0, dst: GossipId::seed(id(1).addr), message: Message::Announce };
        let mut packet = Vec::new();
        WireCodec.encode_header(&header, &mut packet).unwrap();
        packet
    }

    /// A peer of version 2 (the release before layout 3): it is answered in
    /// layout 1 in a version-2 envelope, and its own layout-1 packets are
    /// understood; a version-3 peer is answered in layout 3, and what each
    /// says of itself shows.
    #[test]
    fn peers_of_version_2_and_3_are_each_answered_in_their_layout() {
        let sealing = Sealing::new("alpha", &[KEY], UnsealedTraffic::Refuse);
        let now = SystemTime::now();
        let told = Meta { software: Some("9.9.9+new".to_owned()), zone: Some("zone-a".to_owned()) };
        let mut core = Core::new(
            GossipId { meta: told.clone(), ..id(1) },
            "alpha",
            &protocol(),
            sealing.clone(),
            7,
            HeardClock::default(),
            Arc::default(),
        );
        // Version 2: layout 1, its software in the envelope, a marker naming 1..=2.
        let mut nonce = [3u8; 24];
        nonce[..4].copy_from_slice(&super::super::seal::marker_of(1, 2));
        let old = to_legacy(&announce_packet()).unwrap();
        let datagram = sealing.seal_with_nonce(&old, epoch_ms(now), 2, &extension("1.0.0+old"), nonce);
        core.handle_datagram(id(2).addr, &datagram, now);
        let replies = core.take_output().datagrams;
        assert!(!replies.is_empty(), "the announce is answered");
        for (_, reply) in &replies {
            let opened = sealing.open(reply, epoch_ms(now)).unwrap();
            assert_eq!((reply[3], opened.layout), (3, 1), "a version-2 envelope (kind 3) around layout 1");
            let packet = decode_packet(&from_legacy(&opened.packet).unwrap()).unwrap();
            assert_eq!(packet.header.src, id(1));
        }
        assert_eq!(core.software_of(id(2).addr).as_deref(), Some("1.0.0+old"));
        assert_eq!(core.meta_of(&id(2)), Meta::default(), "layout 1 says nothing of the member");

        // Version 3: its identity says what it is; answered in layout 3.
        let peer = GossipId {
            meta: Meta { software: Some("9.9.9+new".to_owned()), zone: Some("zone-b".to_owned()) },
            ..id(3)
        };
        let header = Header {
            src: peer.clone(),
            src_incarnation: 0,
            dst: GossipId::seed(id(1).addr),
            message: Message::Announce,
        };
        let mut packet = Vec::new();
        WireCodec.encode_header(&header, &mut packet).unwrap();
        let later = now + Duration::from_secs(1);
        core.handle_datagram(id(3).addr, &sealing.seal(&packet, epoch_ms(later)), later);
        let replies = core.take_output().datagrams;
        assert!(!replies.is_empty(), "the announce is answered");
        for (_, reply) in &replies {
            let opened = sealing.open(reply, epoch_ms(later)).unwrap();
            assert_eq!(opened.layout, 3);
            assert_eq!(decode_packet(&opened.packet).unwrap().header.src.meta, told);
        }
        assert_eq!(core.meta_of(&id(3)).zone.as_deref(), Some("zone-b"));
    }

    #[test]
    fn an_authentic_announce_adds_the_member() {
        let mut core = core();
        let sealing = Sealing::new("alpha", &[KEY], UnsealedTraffic::Refuse);
        core.handle_datagram(
            id(2).addr,
            &sealing.seal(&announce_packet(), epoch_ms(SystemTime::now())),
            SystemTime::now(),
        );
        assert_eq!(core.members().filter(|m| is_live(m)).count(), 1);
        assert!(!core.take_output().datagrams.is_empty(), "the announce is answered");
    }

    #[test]
    fn replies_to_small_unsealed_datagrams_are_bounded() {
        let open = Sealing::new("alpha", &[], UnsealedTraffic::Refuse);
        let traffic: Arc<GossipTraffic> = Arc::default();
        let mut core = Core::new(id(1), "alpha", &protocol(), open, 7, HeardClock::default(), traffic.clone());
        // An unpadded unsealed announce (honest nodes pad theirs to a third
        // of the maximum); without a marker it is version 1, so layout 1.
        let packet = to_legacy(&announce_packet()).unwrap();
        let mut datagram = b"ARL\x01\x05alpha".to_vec();
        datagram.extend_from_slice(&u16::try_from(packet.len()).unwrap().to_be_bytes());
        datagram.extend_from_slice(&packet);
        assert!(datagram.len() * AMPLIFICATION_FACTOR < super::super::seal::MIN_UNSEALED);
        core.handle_datagram(id(2).addr, &datagram, SystemTime::now());
        let sent: usize = core.take_output().datagrams.iter().map(|(_, d)| d.len()).sum();
        assert!(sent <= datagram.len() * AMPLIFICATION_FACTOR, "{sent} bytes answered {} bytes", datagram.len());
        assert_eq!(traffic.rejected(Rejection::Amplification), 1, "the withheld reply is counted");
    }

    proptest! {
        /// Authenticated bytes that are not a packet, and mutated real packets,
        /// sealed or not: the core refuses or applies them, never panics, and
        /// never holds more members than its bound.
        #[test]
        fn authenticated_garbage_never_panics_the_core(
            payload in proptest::collection::vec(any::<u8>(), 0..1300),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            sealed in any::<bool>(),
        ) {
            let mut core = core();
            let sealing = Sealing::new("alpha", &[KEY], if sealed { UnsealedTraffic::Refuse } else { UnsealedTraffic::Send });
            let now = SystemTime::now();
            core.handle_datagram(id(9).addr, &sealing.seal(&payload, epoch_ms(now)), now);
            let mut mutated = announce_packet();
            for (at, value) in flips {
                let len = mutated.len();
                mutated[at % len] = value;
            }
            core.handle_datagram(id(2).addr, &sealing.seal(&mutated, epoch_ms(now)), now);
            prop_assert!(core.members().count() <= 16);
        }
    }
}
