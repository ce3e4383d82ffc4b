//! `gossip`: live membership over UDP between the nodes — SWIM on foca.
//!
//! Each node is a foca member whose identity ([`identity::GossipId`]) carries
//! its node id, generation (new on every start), gossip address, HTTP URL and
//! announced state (`alive`, `draining`, `left`). SWIM probes decide who is
//! alive: a member that misses a probe and the indirect probes is suspected,
//! gets `cluster.gossip.suspicionTimeoutMs` to refute (by renewing its
//! incarnation), then is down. A restart at the same address replaces the
//! old incarnation (a later generation wins the address).
//!
//! Layers, outside in: the supervised task and the socket (`driver.rs`), the
//! datagram seal and its bounds (`seal.rs`), the sans-IO protocol core
//! (`core.rs`: foca plus Arlen's rules), the bounded wire identity
//! (`identity.rs`). The [`Observer`] turns the core's members into
//! [`MembershipView`]s. Nothing outside this module imports foca.

mod accuracy;
mod admission;
pub(crate) mod core;
mod driver;
pub(crate) mod identity;
pub(crate) mod seal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arlen_cluster::{
    HeardClock, Member, MemberState, MembershipView, Reachability, ReachabilityBoard, SnapshotPublisher, SourceHealth,
};
use arlen_config::{Config, UnsealedTrafficSetting};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::core::{Core, Protocol};
use self::driver::{Command, Supervised};
use self::identity::{Announced, GossipId};
pub use self::seal::Rejection;
use self::seal::{Sealing, UnsealedTraffic};
use crate::faults::{FaultRules, FaultyNetwork};
pub(crate) use crate::transport::{Network, Udp};
use crate::MembershipError;

/// Source name on the wire.
pub const GOSSIP_NAME: &str = "gossip";

/// How often seed names are resolved again.
const SEED_RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// The metric (without `_total`) that counts refused datagrams by reason;
/// the rejection warning names it.
pub(crate) const REJECTED_DATAGRAMS: &str = "arlen_gossip_rejected_datagrams";

/// Bytes and messages through the gossip socket, and datagrams refused.
#[derive(Debug, Default)]
pub struct GossipTraffic {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Times this node noticed it had stalled (paused, starved of CPU).
    pub stalls: AtomicU64,
    /// Times this node rejoined under a renewed identity after the cluster
    /// declared it down (or took the generation after its predecessor).
    pub rejoins: AtomicU64,
    /// Times this node, alone, heard again from a member it had declared
    /// down and forgot the verdicts of its isolation.
    pub isolation_resets: AtomicU64,
    /// This node's own verdicts: members it suspected (a probe failed),
    /// suspicions refuted in time (false suspicions), members it declared down.
    pub suspicions: AtomicU64,
    pub refutations: AtomicU64,
    pub downs: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    /// Times a member entered each reachability class in this node's eyes.
    reachability_changes: [AtomicU64; Reachability::ALL.len()],
}

impl GossipTraffic {
    /// Datagrams dropped for `reason` so far.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Times a member entered `class` (in [`Reachability::ALL`]'s order).
    pub fn reachability_changes(&self, class: Reachability) -> u64 {
        let index = Reachability::ALL.iter().position(|c| *c == class).unwrap_or(0);
        self.reachability_changes[index].load(Ordering::Relaxed)
    }

    fn count_reachability_change(&self, class: Reachability) {
        let index = Reachability::ALL.iter().position(|c| *c == class).unwrap_or(0);
        self.reachability_changes[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one; returns the new total.
    fn count_rejection(&self, reason: Rejection) -> u64 {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// How often the reachability board is refreshed.
const REACHABILITY_REFRESH: Duration = Duration::from_millis(200);

/// What the gossip source needs from the configuration, resolved.
#[derive(Debug, Clone)]
pub(crate) struct GossipSettings {
    pub cluster_name: String,
    pub node_id: String,
    pub generation: u64,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub http_url: String,
    /// `cluster.zone`, told to every peer in this node's identity.
    pub zone: Option<String>,
    pub protocol: Protocol,
    pub keys: Vec<[u8; 32]>,
    pub unsealed: UnsealedTraffic,
    /// Seeds foca's random choices (whom to probe, whom to gossip to): from
    /// the operating system in production, from a test's printed seed in the
    /// tests so that a seed reproduces a run.
    pub rng_seed: u64,
}

async fn resolve(key: &str, address: &str) -> Result<SocketAddr, MembershipError> {
    let failed = |detail: String| MembershipError::Start { source_name: GOSSIP_NAME, detail };
    let mut found = tokio::net::lookup_host(address)
        .await
        .map_err(|error| failed(format!("cannot resolve {key} {address}: {error}")))?;
    found.next().ok_or_else(|| failed(format!("{key} {address} resolves to no address")))
}

fn unsealed_traffic(setting: UnsealedTrafficSetting) -> UnsealedTraffic {
    match setting {
        UnsealedTrafficSetting::Refuse => UnsealedTraffic::Refuse,
        UnsealedTrafficSetting::Accept => UnsealedTraffic::Accept,
        UnsealedTrafficSetting::Send => UnsealedTraffic::Send,
    }
}

impl GossipSettings {
    pub(crate) async fn from_config(config: &Config) -> Result<Self, MembershipError> {
        let gossip = &config.cluster.membership.gossip;
        let listen = resolve(arlen_config::Key::ClusterGossipListen.name(), &gossip.listen).await?;
        let advertise = resolve(arlen_config::Key::ClusterGossipAdvertise.name(), &gossip.advertise).await?;
        let http_host = if config.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            advertise.ip().to_string()
        } else {
            config.host.clone()
        };
        Ok(Self {
            cluster_name: config.cluster.name.clone(),
            node_id: config.cluster.node_id.clone(),
            generation: crate::new_generation(),
            listen,
            advertise,
            seeds: gossip.seeds.clone(),
            http_url: crate::node_url(&http_host, config.port),
            zone: config.cluster.zone.clone(),
            protocol: Protocol {
                interval: gossip.interval,
                probe_timeout: gossip.probe_timeout,
                suspicion_timeout: gossip.suspicion_timeout,
                dead_member_ttl: gossip.dead_member_ttl,
                max_members: gossip.max_members,
                max_joins_per_minute: gossip.max_joins_per_minute,
                expected_nodes: config.cluster.expected_nodes,
            },
            keys: gossip.keys.bytes().to_vec(),
            unsealed: unsealed_traffic(gossip.unsealed_traffic),
            rng_seed: rand::random(),
        })
    }

    fn identity(&self) -> GossipId {
        GossipId {
            node_id: self.node_id.clone(),
            generation: self.generation,
            seq: 0,
            addr: self.advertise,
            http_url: self.http_url.clone(),
            state: Announced::Alive,
            meta: identity::Meta { software: Some(arlen_config::build::software()), zone: self.zone.clone() },
        }
    }

    fn sealing(&self) -> Sealing {
        Sealing::new(&self.cluster_name, &self.keys, self.unsealed)
    }

    fn core(&self, identity: GossipId, sealing: Sealing, heard: HeardClock, traffic: Arc<GossipTraffic>) -> Core {
        // A restarted task draws other choices than the run it replaces.
        let seed = self.rng_seed ^ u64::from(identity.seq).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if let Some(warning) = sealing.rollout_warning() {
            tracing::warn!("{warning}");
        }
        Core::new(identity, &self.cluster_name, &self.protocol, sealing, seed, heard, traffic)
    }
}

/// The wall clock in milliseconds since the epoch.
#[cfg(feature = "forge")]
pub(crate) fn epoch_ms_now() -> u64 {
    self::core::epoch_ms(SystemTime::now())
}

/// Resolves seed names (IP literals resolve at once).
async fn resolve_seeds(seeds: &[String]) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(mut found) => resolved.extend(found.next()),
            Err(error) => tracing::warn!(%seed, %error, "cannot resolve gossip seed"),
        }
    }
    resolved
}

/// A running gossip source.
pub(crate) struct GossipSource {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    resolver: JoinHandle<()>,
    faults: Option<FaultRules>,
    traffic: Arc<GossipTraffic>,
    sealing: Arc<Mutex<Sealing>>,
    cluster_name: String,
    fatal: watch::Receiver<Option<String>>,
}

impl GossipSource {
    pub(crate) async fn start(
        config: &Config,
        publisher: SnapshotPublisher,
        network: Arc<dyn Network>,
    ) -> Result<Self, MembershipError> {
        let settings = GossipSettings::from_config(config).await?;
        // The fault wrapper is only installed when fault injection is on.
        let faults = config.cluster.fault_injection_enabled.then(FaultRules::default);
        Self::start_with(settings, publisher, network, faults).await
    }

    pub(crate) async fn start_with(
        settings: GossipSettings,
        publisher: SnapshotPublisher,
        network: Arc<dyn Network>,
        faults: Option<FaultRules>,
    ) -> Result<Self, MembershipError> {
        let network: Arc<dyn Network> = match &faults {
            Some(rules) => Arc::new(FaultyNetwork::new(network, rules.clone())),
            None => network,
        };
        let transport = network.bind(settings.listen).await.map_err(|error| MembershipError::Start {
            source_name: GOSSIP_NAME,
            detail: format!("cannot open the gossip socket on {}: {error}", settings.listen),
        })?;
        let traffic = Arc::new(GossipTraffic::default());
        let sealing = settings.sealing();
        let mut observer = Observer::new(&settings);
        let core = settings.core(settings.identity(), sealing.clone(), observer.heard(), traffic.clone());
        // Publish the first view before returning: the node is "initialised".
        publisher.set_membership(observer.view_of(&core, driver::wall_now()));

        let (seeds_tx, seeds) = watch::channel(resolve_seeds(&settings.seeds).await);
        let names = settings.seeds.clone();
        let resolver = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SEED_RESOLVE_EVERY).await;
                if seeds_tx.send(resolve_seeds(&names).await).is_err() {
                    return;
                }
            }
        });
        let (commands, commands_rx) = mpsc::channel(16);
        let (fatal_tx, fatal) = watch::channel(None);
        let shared_sealing = Arc::new(Mutex::new(sealing));
        tracing::info!(
            listen = %settings.listen,
            advertise = %settings.advertise,
            seeds = ?settings.seeds,
            generation = settings.generation,
            sealed = core.sealing().seals(),
            "gossip membership started"
        );
        let cluster_name = settings.cluster_name.clone();
        let supervised = Supervised {
            settings,
            network,
            publisher,
            observer,
            faults: faults.clone(),
            traffic: traffic.clone(),
            seeds,
            sealing: shared_sealing.clone(),
        };
        let task = tokio::spawn(supervised.run(core, transport, commands_rx, fatal_tx));
        Ok(Self { commands, task, resolver, faults, traffic, sealing: shared_sealing, cluster_name, fatal })
    }

    #[cfg(test)]
    pub(crate) fn traffic(&self) -> Arc<GossipTraffic> {
        self.traffic.clone()
    }

    /// Stops without announcing anything, as a crash would (for tests).
    #[cfg(test)]
    pub(crate) async fn crash(self) {
        self.task.abort();
        self.resolver.abort();
        let _ = self.task.await;
    }
}

/// Reads one gossip traffic counter.
type ReadTraffic = fn(&GossipTraffic) -> u64;

#[async_trait::async_trait]
impl crate::Source for GossipSource {
    fn name(&self) -> &'static str {
        GOSSIP_NAME
    }

    fn counters(&self) -> Vec<crate::SourceCounter> {
        use std::sync::atomic::Ordering::Relaxed;
        let plain: [(&'static str, &'static str, ReadTraffic); 10] = [
            ("arlen_gossip_sent_bytes", "gossip bytes sent", |t| t.bytes_sent.load(Relaxed)),
            ("arlen_gossip_received_bytes", "gossip bytes received", |t| t.bytes_received.load(Relaxed)),
            ("arlen_gossip_sent_messages", "gossip messages sent", |t| t.messages_sent.load(Relaxed)),
            ("arlen_gossip_received_messages", "gossip messages received", |t| t.messages_received.load(Relaxed)),
            ("arlen_gossip_suspicions", "members this node suspected (its probe failed)", |t| {
                t.suspicions.load(Relaxed)
            }),
            ("arlen_gossip_refutations", "suspicions of this node's refuted in time (false suspicions)", |t| {
                t.refutations.load(Relaxed)
            }),
            ("arlen_gossip_downs", "members this node declared down", |t| t.downs.load(Relaxed)),
            (
                "arlen_gossip_rejoins",
                "times this node rejoined under a renewed identity after being declared down",
                |t| t.rejoins.load(Relaxed),
            ),
            ("arlen_gossip_stalls", "times this node noticed it had stalled (paused, starved of CPU)", |t| {
                t.stalls.load(Relaxed)
            }),
            (
                "arlen_gossip_isolation_resets",
                "times this node, cut off alone, forgot the verdicts of its isolation on hearing from the cluster",
                |t| t.isolation_resets.load(Relaxed),
            ),
        ];
        let mut counters: Vec<crate::SourceCounter> = plain
            .into_iter()
            .map(|(name, help, read)| {
                let traffic = self.traffic.clone();
                crate::SourceCounter { name, help, read: crate::CounterRead::Plain(Box::new(move || read(&traffic))) }
            })
            .collect();
        let traffic = self.traffic.clone();
        counters.push(crate::SourceCounter::by_label(
            "arlen_gossip_reachability_changes",
            "times a member entered a reachability class in this node's eyes (gray failures: one_way, lossy, slow)",
            "class",
            Reachability::ALL,
            Reachability::as_str,
            move |class| traffic.reachability_changes(class),
        ));
        let traffic = self.traffic.clone();
        counters.push(crate::SourceCounter::by_reason(
            REJECTED_DATAGRAMS,
            "gossip datagrams dropped before they could change anything, by reason",
            &Rejection::ALL,
            Rejection::label,
            move |reason| traffic.rejected(reason),
        ));
        counters
    }

    fn fault_rules(&self) -> Option<FaultRules> {
        self.faults.clone()
    }

    /// Resolves with the reason when gossip cannot be kept running.
    async fn failed(&self) -> String {
        crate::supervise::gave_up(&self.fatal).await
    }

    /// Applies reloadable settings: the keys and the unsealed-traffic switch.
    async fn reload(&self, config: &Config) {
        let gossip = &config.cluster.membership.gossip;
        let sealing = Sealing::new(&self.cluster_name, gossip.keys.bytes(), unsealed_traffic(gossip.unsealed_traffic));
        *self.sealing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sealing.clone();
        let _ = self.commands.send(Command::Reseal(sealing)).await;
    }

    /// Marks this node `draining`: peers stop counting it at once.
    async fn announce_draining(&self) {
        crate::supervise::ask(
            &self.commands,
            |done| Command::Announce(Announced::Draining, done),
            Duration::from_secs(2),
        )
        .await;
    }

    /// Marks this node `left`, gives gossip a few rounds to carry it, stops.
    async fn leave(self: Box<Self>) {
        let this = *self;
        crate::supervise::ask(&this.commands, Command::Leave, Duration::from_secs(2)).await;
        drop(this.commands);
        this.resolver.abort();
        if tokio::time::timeout(Duration::from_secs(2), this.task).await.is_err() {
            tracing::warn!("gossip did not shut down in time");
        }
        tracing::info!("left the gossip cluster");
    }
}

/// One member as the core knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    pub node_id: String,
    pub generation: u64,
    pub gossip_address: SocketAddr,
    pub http_url: String,
    pub state: Announced,
    pub live: bool,
    pub is_self: bool,
    /// What the member said its software is (in its identity, or in a
    /// version-2 envelope).
    pub software: Option<String>,
    /// The member's zone, from its identity.
    pub zone: Option<String>,
}

fn observations(core: &Core) -> Vec<Observation> {
    let observation = |id: &GossipId, live: bool, is_self: bool| {
        let meta = core.meta_of(id);
        Observation {
            node_id: id.node_id.clone(),
            generation: id.generation,
            gossip_address: id.addr,
            http_url: id.http_url.clone(),
            state: id.state,
            live,
            is_self,
            software: meta.software.or_else(|| core.software_of(id.addr)),
            zone: meta.zone,
        }
    };
    let own = core.identity().addr;
    std::iter::once(observation(core.identity(), true, true))
        // An earlier incarnation of this very node is not a peer.
        .chain(core.members().filter(|m| m.id().addr != own).map(|m| observation(m.id(), core::is_live(m), false)))
        .collect()
}

/// This node has heard no peer for longer than it may vouch for them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unheard {
    pub silence: Duration,
    pub bound: Duration,
}

/// Turns the core's members into membership views, remembering what it
/// needs between rounds (when members went down, the last membership, when
/// it changed).
pub(crate) struct Observer {
    listen: SocketAddr,
    advertise: SocketAddr,
    dead_member_ttl: Duration,
    heard: HeardClock,
    reachability: ReachabilityBoard,
    /// When the board was last refreshed.
    reachability_at: Option<SystemTime>,
    down_since: HashMap<(SocketAddr, u64), SystemTime>,
    last_membership: Vec<(String, u64, MemberState)>,
    last_change: Option<SystemTime>,
    reported_duplicates: BTreeSet<String>,
}

impl Observer {
    pub(crate) fn new(settings: &GossipSettings) -> Self {
        Self {
            listen: settings.listen,
            advertise: settings.advertise,
            dead_member_ttl: settings.protocol.dead_member_ttl,
            heard: HeardClock::default(),
            reachability: ReachabilityBoard::default(),
            reachability_at: None,
            down_since: HashMap::new(),
            last_membership: Vec::new(),
            last_change: None,
            reported_duplicates: BTreeSet::new(),
        }
    }

    pub(crate) fn heard(&self) -> HeardClock {
        self.heard.clone()
    }

    fn view_of(&mut self, core: &Core, now: SystemTime) -> MembershipView {
        let silence = core.silence(now);
        let unheard = (!core.vouches(now)).then_some(Unheard { silence, bound: core.vouch_bound() });
        let mut view = self.view_from(observations(core), now, unheard);
        view.fresh_for = Some(core.vouch_bound());
        view.accusations = core.accusations();
        // Classes move at the pace of probes: refreshed five times a second,
        // not at every period (a class per member is work at 1,000 members).
        let due = self.reachability_at.is_none_or(|at| accuracy::since(now, at) >= REACHABILITY_REFRESH);
        if due {
            self.reachability_at = Some(now);
            for (node_id, class) in self.reachability.replace(core.reachability(now)) {
                if class != Reachability::Ok {
                    tracing::info!(%node_id, class = class.as_str(), "gossip member reachability changed");
                }
                core.traffic().count_reachability_change(class);
            }
        }
        if let Some(warning) = core.sealing().rollout_warning() {
            view.health.detail.push_str("; ");
            view.health.detail.push_str(warning);
        }
        if core.held_back() > 0 {
            view.health.detail.push_str(&format!(
                "; {} newcomers held back by the join budget (cluster.gossip.maxJoinsPerMinute, at most twice expectedNodes live)",
                core.held_back()
            ));
        }
        view
    }

    pub(crate) fn view_from(
        &mut self,
        mut observed: Vec<Observation>,
        now: SystemTime,
        unheard: Option<Unheard>,
    ) -> MembershipView {
        // Down members stay listed (as dead or left) for the TTL.
        let down: BTreeSet<(SocketAddr, u64)> =
            observed.iter().filter(|o| !o.live).map(|o| (o.gossip_address, o.generation)).collect();
        self.down_since.retain(|key, _| down.contains(key));
        for key in &down {
            self.down_since.entry(*key).or_insert(now);
        }
        let ttl = self.dead_member_ttl;
        let down_since = &self.down_since;
        observed.retain(|o| {
            o.live
                || down_since
                    .get(&(o.gossip_address, o.generation))
                    .is_none_or(|since| now.duration_since(*since).unwrap_or_default() < ttl)
        });
        let known: BTreeSet<(String, u64)> = observed.iter().map(|o| (o.node_id.clone(), o.generation)).collect();
        self.heard.retain(|node_id, generation| known.contains(&(node_id.to_owned(), generation)));

        let mut members: Vec<Member> = observed
            .iter()
            .map(|o| {
                let state = match (o.state, o.live) {
                    (Announced::Left, _) => MemberState::Left,
                    (_, false) => MemberState::Dead,
                    (Announced::Draining, true) => MemberState::Draining,
                    // Not heard from anyone for too long: not vouched for.
                    (Announced::Alive, true) if unheard.is_some() && !o.is_self => MemberState::Suspect,
                    (Announced::Alive, true) => MemberState::Alive,
                };
                Member {
                    node_id: o.node_id.clone(),
                    generation: o.generation,
                    http_url: Some(o.http_url.clone()),
                    gossip_address: Some(o.gossip_address.to_string()),
                    state,
                    is_self: o.is_self,
                    software: o.software.clone(),
                    zone: o.zone.clone(),
                }
            })
            .collect();
        members.sort_by(|a, b| (&a.node_id, a.generation).cmp(&(&b.node_id, b.generation)));

        // Two live processes with one node id: report, count once.
        let mut alive_addresses: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for m in members.iter().filter(|m| m.state == MemberState::Alive) {
            alive_addresses.entry(&m.node_id).or_default().insert(m.gossip_address.as_deref().unwrap_or(""));
        }
        let duplicate_node_ids: Vec<String> = alive_addresses
            .iter()
            .filter(|(_, addresses)| addresses.len() > 1)
            .map(|(id, _)| (*id).to_owned())
            .collect();
        for id in &duplicate_node_ids {
            if self.reported_duplicates.insert(id.clone()) {
                tracing::error!(node_id = %id, addresses = ?alive_addresses[id.as_str()], "two live processes claim one node id");
            }
        }
        self.reported_duplicates.retain(|id| duplicate_node_ids.contains(id));
        let observed_nodes = u32::try_from(alive_addresses.len()).unwrap_or(u32::MAX);

        let membership: Vec<(String, u64, MemberState)> =
            members.iter().map(|m| (m.node_id.clone(), m.generation, m.state)).collect();
        if membership != self.last_membership {
            self.last_membership = membership;
            self.last_change = Some(now);
        }
        let mut detail = format!(
            "gossip on {} advertising {}; {observed_nodes} alive of {} known",
            self.listen,
            self.advertise,
            members.len()
        );
        if !duplicate_node_ids.is_empty() {
            detail.push_str(&format!("; duplicate node ids: {}", duplicate_node_ids.join(", ")));
        }
        if let Some(Unheard { silence, bound }) = unheard {
            detail.push_str(&format!(
                "; heard from no member for {} ms (bound {} ms): counting only itself until one answers",
                silence.as_millis(),
                bound.as_millis()
            ));
        }
        MembershipView {
            source: GOSSIP_NAME,
            observed_nodes,
            members,
            fresh_for: None,
            accusations: Vec::new(),
            health: SourceHealth {
                ok: duplicate_node_ids.is_empty() && unheard.is_none(),
                detail,
                last_membership_change: self.last_change,
            },
            duplicate_node_ids,
            heard: Some(self.heard.clone()),
            reachability: Some(self.reachability.clone()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
