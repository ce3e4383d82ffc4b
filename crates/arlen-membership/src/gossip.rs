//! `gossip`: live membership over UDP gossip between the nodes, on chitchat.
//!
//! Each node gossips its `http_url` and its `state` (`alive`, `left`) under a
//! chitchat id of `(node_id, generation, gossip address)`; the generation is
//! new on every start, so a restarted node replaces its old incarnation. The
//! chitchat cluster id is `cluster.name`, which keeps clusters that share a
//! network apart. Chitchat's phi-accrual detector decides who is alive; an
//! observer task turns chitchat's state into [`MembershipView`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arlen_cluster::{HeardClock, Member, MemberState, MembershipView, SnapshotPublisher, SourceHealth};
use arlen_config::Config;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    Heartbeat, ProtocolVersion,
};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::faults::{FaultRules, FaultyTransport};
use crate::MembershipError;

/// Source name on the wire.
pub const GOSSIP_NAME: &str = "gossip";

const KEY_HTTP_URL: &str = "http_url";
const KEY_STATE: &str = "state";
const STATE_ALIVE: &str = "alive";
const STATE_LEFT: &str = "left";
const STATE_DRAINING: &str = "draining";

/// Upper bound on how long a leaving node waits for its news to spread.
const MAX_LEAVE_WAIT: Duration = Duration::from_millis(600);

pub(crate) fn udp_transport() -> Box<dyn Transport> {
    Box::new(UdpTransport)
}

/// Bytes and messages through the gossip socket.
#[derive(Debug, Default)]
pub struct GossipTraffic {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
}

/// A running gossip source.
pub(crate) struct GossipSource {
    handle: ChitchatHandle,
    observer: JoinHandle<()>,
    stop: watch::Sender<bool>,
    interval: Duration,
    faults: Option<FaultRules>,
    traffic: Arc<GossipTraffic>,
}

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
    pub interval: Duration,
    pub phi_threshold: f64,
    pub dead_member_ttl: Duration,
}

async fn resolve(key: &str, address: &str) -> Result<SocketAddr, MembershipError> {
    let failed = |detail: String| MembershipError::Start { source_name: GOSSIP_NAME, detail };
    let mut found = tokio::net::lookup_host(address)
        .await
        .map_err(|error| failed(format!("cannot resolve {key} {address}: {error}")))?;
    found.next().ok_or_else(|| failed(format!("{key} {address} resolves to no address")))
}

impl GossipSettings {
    pub(crate) async fn from_config(config: &Config) -> Result<Self, MembershipError> {
        let gossip = &config.cluster.membership.gossip;
        let listen = resolve("cluster.gossip.listen", &gossip.listen).await?;
        let advertise = resolve("cluster.gossip.advertise", &gossip.advertise).await?;
        let http_host = if config.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            advertise.ip().to_string()
        } else {
            config.host.clone()
        };
        Ok(Self {
            cluster_name: config.cluster.name.clone(),
            node_id: config.cluster.node_id.clone(),
            generation: new_generation(),
            listen,
            advertise,
            seeds: gossip.seeds.clone(),
            http_url: format!("http://{}:{}", crate::url_host(&http_host), config.port),
            interval: gossip.interval,
            phi_threshold: f64::from(gossip.phi_threshold),
            dead_member_ttl: gossip.dead_member_ttl,
        })
    }
}

/// Milliseconds since the epoch: new on every start, and larger for a later one.
fn new_generation() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GossipSource {
    pub(crate) async fn start(
        config: &Config,
        publisher: SnapshotPublisher,
        transport: Box<dyn Transport>,
    ) -> Result<Self, MembershipError> {
        let settings = GossipSettings::from_config(config).await?;
        // The fault wrapper is only installed when fault injection is on.
        let faults = config.cluster.fault_injection_enabled.then(FaultRules::default);
        Self::start_with(settings, publisher, transport, faults).await
    }

    pub(crate) async fn start_with(
        settings: GossipSettings,
        publisher: SnapshotPublisher,
        transport: Box<dyn Transport>,
        faults: Option<FaultRules>,
    ) -> Result<Self, MembershipError> {
        let traffic = Arc::new(GossipTraffic::default());
        let counting: Box<dyn Transport> = Box::new(CountingTransport { inner: transport, traffic: traffic.clone() });
        let transport: Box<dyn Transport> = match &faults {
            Some(rules) => Box::new(FaultyTransport::new(counting, rules.clone())),
            None => counting,
        };
        let chitchat_id = ChitchatId::new(settings.node_id.clone(), settings.generation, settings.advertise);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: settings.cluster_name.clone(),
            gossip_interval: settings.interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: settings.phi_threshold,
                // A short window adapts to the real heartbeat interval quickly.
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10),
                // Prior for the mean interval of a new member: one gossip round.
                initial_interval: settings.interval,
                dead_node_grace_period: settings.dead_member_ttl,
            },
            marked_for_deletion_grace_period: settings.dead_member_ttl,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial =
            vec![(KEY_HTTP_URL.to_owned(), settings.http_url.clone()), (KEY_STATE.to_owned(), STATE_ALIVE.to_owned())];
        let handle = spawn_chitchat(chitchat_config, initial, transport.as_ref()).await.map_err(|error| {
            MembershipError::Start {
                source_name: GOSSIP_NAME,
                detail: format!("cannot open the gossip socket on {}: {error:#}", settings.listen),
            }
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let chitchat = handle.chitchat();
        let mut observer = Observer::new(&settings);
        // Publish the first view before returning: the node is "initialised".
        publisher.set_membership(observer.observe(&*chitchat.lock().await, SystemTime::now()));
        let observer = tokio::spawn(observe_loop(observer, chitchat, publisher, settings.interval, stop_rx));
        tracing::info!(
            listen = %settings.listen,
            advertise = %settings.advertise,
            seeds = ?settings.seeds,
            generation = settings.generation,
            "gossip membership started"
        );
        Ok(Self { handle, observer, stop, interval: settings.interval, faults, traffic })
    }

    pub(crate) fn fault_rules(&self) -> Option<FaultRules> {
        self.faults.clone()
    }

    /// Stops without announcing anything, as a crash would (for tests).
    #[cfg(test)]
    pub(crate) async fn crash(self) {
        self.observer.abort();
        self.handle.abort();
        // Resolves once the server task is gone and its socket released.
        let _ = self.handle.termination_watcher().await;
    }

    pub(crate) fn traffic(&self) -> Arc<GossipTraffic> {
        self.traffic.clone()
    }

    /// Marks this node `draining`: peers stop counting it at once.
    pub(crate) async fn announce_draining(&self) {
        self.handle.with_chitchat(|chitchat| chitchat.self_node_state().set(KEY_STATE, STATE_DRAINING)).await;
    }

    /// Marks this node `left`, gives gossip a few rounds to carry it, stops.
    pub(crate) async fn leave(self) {
        self.handle.with_chitchat(|chitchat| chitchat.self_node_state().set(KEY_STATE, STATE_LEFT)).await;
        tokio::time::sleep((self.interval * 3).min(MAX_LEAVE_WAIT)).await;
        let _ = self.stop.send(true);
        let _ = self.observer.await;
        if let Err(error) = self.handle.shutdown().await {
            tracing::warn!(%error, "gossip did not shut down cleanly");
        }
        tracing::info!("left the gossip cluster");
    }
}

async fn observe_loop(
    mut observer: Observer,
    chitchat: Arc<Mutex<Chitchat>>,
    publisher: SnapshotPublisher,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut live_changes = chitchat.lock().await.live_nodes_watcher();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = live_changes.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let view = observer.observe(&*chitchat.lock().await, SystemTime::now());
        publisher.set_membership(view);
    }
}

/// One node as chitchat knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    pub node_id: String,
    pub generation: u64,
    pub gossip_address: SocketAddr,
    pub http_url: Option<String>,
    pub state: Option<String>,
    pub heartbeat: Heartbeat,
    pub live: bool,
    pub is_self: bool,
}

fn observations(chitchat: &Chitchat) -> Vec<Observation> {
    let live: BTreeSet<&ChitchatId> = chitchat.live_nodes().collect();
    let self_id = chitchat.self_chitchat_id();
    chitchat
        .node_states()
        .iter()
        .map(|(id, state)| Observation {
            node_id: id.node_id.to_string(),
            generation: id.generation_id,
            gossip_address: id.gossip_advertise_addr,
            http_url: state.get(KEY_HTTP_URL).map(str::to_owned),
            state: state.get(KEY_STATE).map(str::to_owned),
            heartbeat: state.heartbeat(),
            live: live.contains(id),
            is_self: id == self_id,
        })
        .collect()
}

/// Turns chitchat's state into membership views, remembering what it needs
/// between rounds (heartbeats seen, the last membership, when it changed).
pub(crate) struct Observer {
    listen: SocketAddr,
    advertise: SocketAddr,
    heard: HeardClock,
    heartbeats: HashMap<(String, u64), Heartbeat>,
    last_membership: Vec<(String, u64, MemberState)>,
    last_change: Option<SystemTime>,
    reported_duplicates: BTreeSet<String>,
}

impl Observer {
    pub(crate) fn new(settings: &GossipSettings) -> Self {
        Self {
            listen: settings.listen,
            advertise: settings.advertise,
            heard: HeardClock::default(),
            heartbeats: HashMap::new(),
            last_membership: Vec::new(),
            last_change: None,
            reported_duplicates: BTreeSet::new(),
        }
    }

    fn observe(&mut self, chitchat: &Chitchat, now: SystemTime) -> MembershipView {
        self.view_of(observations(chitchat), now)
    }

    pub(crate) fn view_of(&mut self, observed: Vec<Observation>, now: SystemTime) -> MembershipView {
        for o in observed.iter().filter(|o| !o.is_self) {
            let key = (o.node_id.clone(), o.generation);
            if self.heartbeats.get(&key) != Some(&o.heartbeat) {
                self.heartbeats.insert(key, o.heartbeat);
                self.heard.record(&o.node_id, o.generation, now);
            }
        }
        let known: BTreeSet<(String, u64)> = observed.iter().map(|o| (o.node_id.clone(), o.generation)).collect();
        self.heartbeats.retain(|key, _| known.contains(key));
        self.heard.retain(|node_id, generation| known.contains(&(node_id.to_owned(), generation)));

        // A newer live generation at the same gossip address is a restart: it
        // replaces the old incarnation. At another address it may be a second
        // process, so both stay visible (reported below, counted once).
        let mut newest_live: HashMap<(&str, SocketAddr), u64> = HashMap::new();
        for o in observed.iter().filter(|o| o.live || o.is_self) {
            let newest = newest_live.entry((o.node_id.as_str(), o.gossip_address)).or_insert(o.generation);
            *newest = (*newest).max(o.generation);
        }
        let mut members: Vec<Member> = observed
            .iter()
            .map(|o| {
                let announced = o.state.as_deref();
                let replaced = newest_live
                    .get(&(o.node_id.as_str(), o.gossip_address))
                    .is_some_and(|newest| *newest > o.generation);
                let state = match (announced, o.is_self || o.live, replaced) {
                    (Some(STATE_LEFT), _, _) => MemberState::Left,
                    (_, true, true) | (_, false, _) => MemberState::Dead,
                    (Some(STATE_DRAINING), true, false) => MemberState::Draining,
                    (_, true, false) => MemberState::Alive,
                };
                Member {
                    node_id: o.node_id.clone(),
                    generation: o.generation,
                    http_url: o.http_url.clone(),
                    gossip_address: Some(o.gossip_address.to_string()),
                    state,
                    is_self: o.is_self,
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
        MembershipView {
            source: GOSSIP_NAME,
            observed_nodes,
            members,
            health: SourceHealth {
                ok: duplicate_node_ids.is_empty(),
                detail,
                last_membership_change: self.last_change,
            },
            duplicate_node_ids,
            heard: Some(self.heard.clone()),
        }
    }
}

/// Counts bytes and messages through a transport's sockets.
struct CountingTransport {
    inner: Box<dyn Transport>,
    traffic: Arc<GossipTraffic>,
}

#[async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.inner.open(listen_addr).await?;
        Ok(Box::new(CountingSocket { inner, traffic: self.traffic.clone() }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    traffic: Arc<GossipTraffic>,
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let outcome = self.inner.send(to, envelope).await?;
        self.traffic.bytes_sent.fetch_add(outcome.num_bytes_sent as u64, Ordering::Relaxed);
        self.traffic.messages_sent.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        self.traffic.bytes_received.fetch_add(outcome.num_bytes_received as u64, Ordering::Relaxed);
        self.traffic.messages_received.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }
}

#[cfg(test)]
pub(crate) mod tests;
