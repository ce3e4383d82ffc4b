//! Many gossip nodes in one process (feature `simulation`): the real
//! protocol core of every node — sealing, the identity codec, foca's SWIM,
//! the seed schedule the driver runs — on an in-memory network with latency
//! and loss, driven by a discrete-event loop on a virtual clock. No sockets,
//! no sleeping: a simulated minute of a thousand nodes takes as long as its
//! protocol work. Used by `arlen-bench`'s `gossip-sim` to measure
//! convergence, detection, healing, false suspicions, bandwidth and CPU as
//! the cluster grows.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arlen_cluster::HeardClock;
use foca::Timer;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::gossip::core::{is_live, Core, Protocol, SeedSchedule};
use crate::gossip::identity::{Announced, GossipId};
use crate::gossip::seal::{Sealing, UnsealedTraffic};
use crate::gossip::GossipTraffic;

/// How a simulated cluster is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Seal every datagram (XChaCha20-Poly1305), as production does.
    pub sealed: bool,
    /// Probability that a datagram is lost, 0.0..1.0.
    pub loss: f64,
    pub seed: u64,
    /// `cluster.gossip.intervalMs` and friends (the defaults: 50, 20, 200 ms).
    pub interval: Duration,
    pub probe_timeout: Duration,
    pub suspicion_timeout: Duration,
    /// `cluster.gossip.maxMembers`.
    pub max_members: usize,
    /// One-way delay of a datagram: `latency` plus up to `jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    /// How many of the first nodes are the others' seeds.
    pub seeds: usize,
}

impl SimConfig {
    /// The production defaults for `nodes` nodes on a LAN-like network.
    pub fn defaults(nodes: usize) -> Self {
        Self {
            nodes,
            sealed: true,
            loss: 0.0,
            seed: 1,
            interval: Duration::from_millis(50),
            probe_timeout: Duration::from_millis(20),
            suspicion_timeout: Duration::from_millis(200),
            max_members: 1024,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(300),
            seeds: 3,
        }
    }
}

enum Event {
    Deliver { to: usize, from: SocketAddr, datagram: Vec<u8> },
    Timer { node: usize, incarnation: u32, timer: Timer<GossipId> },
    Tick { node: usize, incarnation: u32 },
}

struct Node {
    core: Core,
    schedule: SeedSchedule,
    started: Duration,
    up: bool,
    /// Bumped on every restart: events of an earlier life are ignored.
    incarnation: u32,
}

/// A simulated cluster.
pub struct Simulation {
    config: SimConfig,
    nodes: Vec<Node>,
    addresses: HashMap<SocketAddr, usize>,
    seeds: Vec<SocketAddr>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    sequence: u64,
    now: Duration,
    rng: StdRng,
    /// Datagrams between these two sides are dropped (a partition).
    cut: Option<HashSet<usize>>,
    /// Bytes and datagrams sent, and wall time spent in protocol work.
    pub bytes_sent: u64,
    pub datagrams_sent: u64,
    pub busy: Duration,
}

const CLUSTER: &str = "sim";
const KEY: [u8; 32] = [9; 32];

fn address(index: usize) -> SocketAddr {
    let n = u32::try_from(index).unwrap_or(u32::MAX) + 1;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | n), 7946))
}

impl Simulation {
    /// Every node starts at a random moment of the first protocol period and
    /// announces to the seeds.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let addresses = (0..config.nodes).map(|i| (address(i), i)).collect();
        let seeds = (0..config.seeds.min(config.nodes)).map(address).collect();
        let mut simulation = Self {
            nodes: Vec::with_capacity(config.nodes),
            addresses,
            seeds,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            sequence: 0,
            now: Duration::ZERO,
            rng: StdRng::seed_from_u64(rng.random()),
            cut: None,
            bytes_sent: 0,
            datagrams_sent: 0,
            busy: Duration::ZERO,
            config,
        };
        for index in 0..simulation.config.nodes {
            let core = simulation.new_core(index, 0);
            simulation.nodes.push(Node {
                core,
                schedule: SeedSchedule::new(simulation.config.interval),
                started: Duration::ZERO,
                up: true,
                incarnation: 0,
            });
            let offset = Duration::from_micros(rng.random_range(0..simulation.config.interval.as_micros() as u64));
            simulation.schedule(offset, Event::Tick { node: index, incarnation: 0 });
        }
        simulation
    }

    fn new_core(&self, index: usize, seq: u32) -> Core {
        let identity = GossipId {
            node_id: format!("node-{}", index + 1),
            generation: 1_780_000_000_000 + u64::try_from(index).unwrap_or(0) + u64::from(seq) * 1_000_000,
            seq: 0,
            addr: address(index),
            http_url: format!("http://{}:8080", address(index).ip()),
            state: Announced::Alive,
        };
        let protocol = Protocol {
            interval: self.config.interval,
            probe_timeout: self.config.probe_timeout,
            suspicion_timeout: self.config.suspicion_timeout,
            dead_member_ttl: Duration::from_secs(60),
            max_members: self.config.max_members,
            expected_nodes: u32::try_from(self.config.nodes).unwrap_or(u32::MAX),
        };
        let keys: &[[u8; 32]] = if self.config.sealed { &[KEY] } else { &[] };
        let sealing = Sealing::new(CLUSTER, keys, UnsealedTraffic::Refuse);
        let seed = self.config.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(seq);
        Core::new(
            identity,
            CLUSTER,
            &protocol,
            sealing,
            seed,
            HeardClock::default(),
            Arc::new(GossipTraffic::default()),
        )
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        let at = u64::try_from((self.now + after).as_nanos()).unwrap_or(u64::MAX);
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence)));
        self.events.insert(self.sequence, event);
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_780_000_000) + self.now
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sends what node `index` asked for and arms its timers.
    fn flush(&mut self, index: usize) {
        let output = self.nodes[index].core.take_output();
        let incarnation = self.nodes[index].incarnation;
        let from = address(index);
        for (after, timer) in output.timers {
            self.schedule(after, Event::Timer { node: index, incarnation, timer });
        }
        for (to, datagram) in output.datagrams {
            self.bytes_sent += datagram.len() as u64;
            self.datagrams_sent += 1;
            let Some(&target) = self.addresses.get(&to) else { continue };
            if self.rng.random::<f64>() < self.config.loss {
                continue;
            }
            if self.cut.as_ref().is_some_and(|side| side.contains(&index) != side.contains(&target)) {
                continue;
            }
            let jitter = self.config.jitter.as_micros() as u64;
            let delay = self.config.latency
                + Duration::from_micros(if jitter == 0 { 0 } else { self.rng.random_range(0..jitter) });
            self.schedule(delay, Event::Deliver { to: target, from, datagram });
        }
    }

    /// Runs events until virtual time `until`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        let started = Instant::now();
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if Duration::from_nanos(at) > until {
                break;
            }
            self.queue.pop();
            self.now = Duration::from_nanos(at);
            let Some(event) = self.events.remove(&id) else { continue };
            let wall = self.wall();
            match event {
                Event::Deliver { to, from, datagram } => {
                    if !self.nodes[to].up {
                        continue;
                    }
                    self.nodes[to].core.handle_datagram(from, &datagram, wall);
                    self.flush(to);
                }
                Event::Timer { node, incarnation, timer } => {
                    if !self.nodes[node].up || self.nodes[node].incarnation != incarnation {
                        continue;
                    }
                    self.nodes[node].core.handle_timer(timer, wall);
                    self.flush(node);
                }
                Event::Tick { node, incarnation } => {
                    if !self.nodes[node].up || self.nodes[node].incarnation != incarnation {
                        continue;
                    }
                    let since = self.now.saturating_sub(self.nodes[node].started);
                    let seeds = self.seeds.clone();
                    let due = {
                        let n = &mut self.nodes[node];
                        n.schedule.due(&n.core, &seeds, since)
                    };
                    for seed in due {
                        self.nodes[node].core.announce(seed, wall);
                    }
                    self.flush(node);
                    self.schedule(self.config.interval, Event::Tick { node, incarnation });
                }
            }
        }
        self.now = until;
        self.busy += started.elapsed();
    }

    /// Runs until `done` holds (checked every `every` of virtual time) or
    /// `limit` passes; the virtual time it took.
    pub fn run_until(&mut self, limit: Duration, every: Duration, done: impl Fn(&Self) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.run_for(every);
        }
        done(self).then(|| self.now - start)
    }

    /// Node `index` stops at once (kill -9): it sends and receives nothing more.
    pub fn crash(&mut self, index: usize) {
        self.nodes[index].up = false;
    }

    /// Node `index` starts again with a new generation and announces to the seeds.
    pub fn restart(&mut self, index: usize) {
        let incarnation = self.nodes[index].incarnation + 1;
        let core = self.new_core(index, incarnation);
        self.nodes[index] =
            Node { core, schedule: SeedSchedule::new(self.config.interval), started: self.now, up: true, incarnation };
        self.schedule(Duration::ZERO, Event::Tick { node: index, incarnation });
    }

    /// Cuts `side` off from the rest (both ways); `None` heals.
    pub fn partition(&mut self, side: Option<HashSet<usize>>) {
        self.cut = side;
    }

    pub fn is_up(&self, index: usize) -> bool {
        self.nodes[index].up
    }

    /// Node ids node `index` counts alive (itself excluded).
    pub fn live_members(&self, index: usize) -> usize {
        self.nodes[index].core.members().filter(|m| is_live(m)).count()
    }

    /// Whether `observer` counts node `member` alive (suspect counts: SWIM
    /// has not declared it down yet).
    pub fn sees_live(&self, observer: usize, member: usize) -> bool {
        let addr = address(member);
        self.nodes[observer].core.members().any(|m| m.id().addr == addr && is_live(m))
    }

    /// `(suspect, down)` pairs in `observer`'s view among the members in `up`.
    pub fn doubts(&self, observer: usize, up: &HashSet<SocketAddr>) -> (usize, usize) {
        let mut suspect = 0;
        let mut down = 0;
        for member in self.nodes[observer].core.members() {
            if !up.contains(&member.id().addr) {
                continue;
            }
            match member.state() {
                foca::State::Suspect => suspect += 1,
                foca::State::Down => down += 1,
                foca::State::Alive => {}
            }
        }
        (suspect, down)
    }

    /// The most membership updates any node that is up still has to gossip:
    /// 0 once a cold start's joins (or a change) have been spread in full.
    pub fn max_backlog(&self) -> usize {
        self.nodes.iter().filter(|n| n.up).map(|n| n.core.updates_backlog()).max().unwrap_or(0)
    }

    /// Addresses of the nodes that are up.
    pub fn up_addresses(&self) -> HashSet<SocketAddr> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].up).map(address).collect()
    }

    /// Every node that is up counts every other node that is up, and only those.
    pub fn converged(&self) -> bool {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].up).collect();
        up.iter().all(|i| self.live_members(*i) == up.len() - 1)
    }
}
