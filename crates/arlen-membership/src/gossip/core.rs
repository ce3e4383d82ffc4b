//! The sans-IO gossip node: foca plus Arlen's sealing, bounds and identity
//! rules. It is handed datagrams, timer events and commands, and hands back
//! datagrams to send and timers to set; the driver (`driver.rs`) does the IO,
//! and the in-memory tests drive it on a paused clock.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arlen_cluster::HeardClock;
use foca::{Foca, Member, NoCustomBroadcast, Notification, PeriodicParams, Runtime, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng as _;

use super::identity::{identities_in, Announced, GossipId, WireCodec};
use super::seal::{Rejection, Sealing, AMPLIFICATION_FACTOR, REPLAY_WINDOW};
use super::GossipTraffic;

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
            expected_nodes,
        }
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
        // Gossip rounds send only while there are updates to spread (foca
        // skips empty rounds), so the fan-out costs nothing in steady state
        // and sets how fast a cold start or a churn spreads: 5, not 3, brings
        // 1,000 simulated nodes under 5 s (BENCHMARKS.md).
        let fan_out = NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN);
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
    /// While handling an unsealed datagram: the bytes its replies may still take.
    reply_budget: Option<usize>,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<GossipId>)>,
    membership_changed: bool,
    amplification_drops: u64,
    /// This node is leaving: foca going defunct is what was asked for.
    leaving: bool,
}

impl Runtime<GossipId> for Io {
    fn notify(&mut self, notification: Notification<'_, GossipId>) {
        self.membership_changed = true;
        match notification {
            Notification::MemberUp(id) => tracing::debug!(node_id = %id.node_id, addr = %id.addr, "gossip member up"),
            Notification::MemberDown(id) => {
                tracing::info!(node_id = %id.node_id, addr = %id.addr, "gossip member down")
            }
            Notification::Rename(old, new) => {
                tracing::debug!(node_id = %new.node_id, from_seq = old.seq, to_seq = new.seq, "gossip member renewed")
            }
            Notification::Rejoin(id) => {
                tracing::warn!(seq = id.seq, "the cluster declared this node down; rejoined as a renewed identity")
            }
            Notification::Defunct if self.leaving => tracing::debug!("gossip left the cluster"),
            Notification::Defunct => tracing::warn!("the cluster declared this node down and it cannot rejoin"),
            Notification::Active | Notification::Idle => {}
        }
    }

    fn send_to(&mut self, to: GossipId, data: &[u8]) {
        let datagram = self.sealing.seal(data, self.now_ms);
        if let Some(budget) = self.reply_budget.as_mut() {
            if datagram.len() > *budget {
                self.amplification_drops += 1;
                return;
            }
            *budget -= datagram.len();
        }
        self.outbox.push((to.addr, datagram));
    }

    fn submit_after(&mut self, event: Timer<GossipId>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// One gossip node's protocol state.
pub(crate) struct Core {
    foca: Foca<GossipId, WireCodec, StdRng, NoCustomBroadcast>,
    io: Io,
    max_members: usize,
    heard: HeardClock,
    traffic: Arc<GossipTraffic>,
    last_logged: [Option<Instant>; Rejection::ALL.len()],
}

/// What the driver must do after an input.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    pub timers: Vec<(Duration, Timer<GossipId>)>,
    pub membership_changed: bool,
}

impl Core {
    pub(crate) fn new(
        identity: GossipId,
        cluster_name: &str,
        protocol: &Protocol,
        sealing: Sealing,
        seed: u64,
        heard: HeardClock,
        traffic: Arc<GossipTraffic>,
    ) -> Self {
        let config = protocol.foca_config(Sealing::max_packet(cluster_name));
        Self {
            foca: Foca::new(identity, config, StdRng::seed_from_u64(seed), WireCodec),
            io: Io {
                sealing,
                now_ms: 0,
                reply_budget: None,
                outbox: Vec::new(),
                timers: Vec::new(),
                membership_changed: false,
                amplification_drops: 0,
                leaving: false,
            },
            max_members: protocol.max_members.max(1),
            heard,
            traffic,
            last_logged: [None; Rejection::ALL.len()],
        }
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
    #[cfg(feature = "simulation")]
    pub(crate) fn updates_backlog(&self) -> usize {
        self.foca.updates_backlog()
    }

    pub(crate) fn set_sealing(&mut self, sealing: Sealing) {
        self.io.sealing = sealing;
    }

    pub(crate) fn sealing(&self) -> &Sealing {
        &self.io.sealing
    }

    /// Handles one datagram from the network.
    pub(crate) fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: SystemTime) {
        self.io.now_ms = epoch_ms(now);
        if let Err(rejection) = self.accept(datagram, now) {
            self.reject(rejection, from);
        }
        self.count_amplification_drops(from);
    }

    fn accept(&mut self, datagram: &[u8], now: SystemTime) -> Result<(), Rejection> {
        let opened = self.io.sealing.open(datagram, self.io.now_ms)?;
        let (sender, named) = identities_in(&opened.packet).map_err(|error| {
            tracing::debug!(%error, "gossip packet refused");
            Rejection::Undecodable
        })?;
        if self.foca.iter_membership_state().len() + 1 >= self.max_members {
            let mut known: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
            known.insert(self.foca.identity().addr);
            if std::iter::once(&sender).chain(&named).any(|id| !known.contains(&id.addr)) {
                return Err(Rejection::MemberLimit);
            }
        }
        self.io.reply_budget = (!opened.sealed).then(|| datagram.len() * AMPLIFICATION_FACTOR);
        let handled = self.foca.handle_data(&opened.packet, &mut self.io);
        self.io.reply_budget = None;
        match handled {
            Ok(()) => {
                self.heard.record(&sender.node_id, sender.generation, now);
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, "foca refused a gossip packet");
                Err(Rejection::Undecodable)
            }
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
                "gossip datagram dropped (further drops for this reason are counted in aln_gossip_rejected_datagrams_total and logged at most every 10 s)"
            );
        }
    }

    pub(crate) fn handle_timer(&mut self, timer: Timer<GossipId>, now: SystemTime) {
        self.io.now_ms = epoch_ms(now);
        if let Err(error) = self.foca.handle_timer(timer, &mut self.io) {
            tracing::debug!(%error, "gossip timer");
        }
    }

    /// Asks the node at `seed` to let this node in.
    pub(crate) fn announce(&mut self, seed: SocketAddr, now: SystemTime) {
        if seed == self.foca.identity().addr {
            return;
        }
        self.io.now_ms = epoch_ms(now);
        if let Err(error) = self.foca.announce(GossipId::seed(seed), &mut self.io) {
            tracing::debug!(%error, %seed, "gossip announce");
        }
    }

    /// Says something new about this node: a renewed identity that replaces
    /// the old one everywhere.
    pub(crate) fn announce_state(&mut self, state: Announced, now: SystemTime) {
        self.io.now_ms = epoch_ms(now);
        let Some(renewed) = self.foca.identity().with_state(state) else {
            tracing::warn!("gossip identity cannot be renewed any more; restart the node");
            return;
        };
        if let Err(error) = self.foca.change_identity(renewed, &mut self.io) {
            tracing::warn!(%error, "gossip could not announce this node's state");
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
mod tests {
    use foca::{Codec as _, Header, Message};
    use proptest::prelude::*;

    use super::*;
    use crate::gossip::seal::UnsealedTraffic;

    const KEY: [u8; 32] = [3; 32];

    fn id(port: u16) -> GossipId {
        GossipId {
            node_id: format!("node-{port}"),
            generation: 1,
            seq: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http_url: "http://127.0.0.1:1".to_owned(),
            state: Announced::Alive,
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
        // An unpadded unsealed announce (honest nodes pad theirs to a third of the maximum).
        let packet = announce_packet();
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
