//! The gossip task: owns the socket and the timers, feeds the sans-IO
//! [`Core`], publishes views — and the supervisor that notices when it dies
//! or stops making progress, fails closed, and restarts it.

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arlen_cluster::SnapshotPublisher;
use foca::Timer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::core::{Core, Output, SeedSchedule};
use super::identity::{Announced, GossipId};
use super::seal::{Sealing, MAX_DATAGRAM};
use super::{GossipSettings, GossipTraffic, Observer, GOSSIP_NAME};
use crate::faults::{FaultRules, TaskFault};
use crate::supervise::{Failures, Progress, Supervisor};
use crate::transport::{Network, Transport};

/// Datagrams read from the socket before due timers fire, at most: acks
/// that arrived while the task was busy or paused are seen before the probe
/// they answer times out, and a flood cannot hold the timers back.
const DRAIN_BEFORE_TIMERS: usize = 64;

/// The wall clock the protocol core runs on. Under the tests' paused tokio
/// clock it follows virtual time (so stalls and silences are measured in the
/// time the test advances); in production it is the system's wall clock,
/// which sealing timestamps must follow.
pub(crate) fn wall_now() -> SystemTime {
    #[cfg(test)]
    {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<(SystemTime, std::time::Instant)> = OnceLock::new();
        // tokio's paused clock starts where std's was when the runtime
        // started; virtual time is what it has advanced since.
        let (wall, instant) = *ORIGIN.get_or_init(|| (SystemTime::now(), Instant::now().into_std()));
        wall + Instant::now().into_std().saturating_duration_since(instant)
    }
    #[cfg(not(test))]
    SystemTime::now()
}

/// What the source asks of the running task.
pub(crate) enum Command {
    Announce(Announced, oneshot::Sender<()>),
    Leave(oneshot::Sender<()>),
    Reseal(Sealing),
}

/// Timers foca asked for, by deadline.
#[derive(Default)]
struct Timers {
    due: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    events: HashMap<u64, Timer<GossipId>>,
    next_id: u64,
}

impl Timers {
    fn add(&mut self, after: Duration, timer: Timer<GossipId>) {
        self.next_id += 1;
        self.due.push(std::cmp::Reverse((Instant::now() + after, self.next_id)));
        self.events.insert(self.next_id, timer);
    }

    async fn wait(&self) {
        match self.due.peek() {
            Some(std::cmp::Reverse((at, _))) => tokio::time::sleep_until(*at).await,
            None => std::future::pending().await,
        }
    }

    fn pop_due(&mut self) -> Vec<Timer<GossipId>> {
        let now = Instant::now();
        let mut fired = Vec::new();
        while let Some(std::cmp::Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            fired.extend(self.events.remove(&id));
        }
        fired
    }
}

/// How a run of the task ended.
enum Ended {
    /// The node left the cluster, or the source was dropped.
    Stopped,
    Failed(String),
}

struct Driver<'a> {
    core: Core,
    transport: Arc<dyn Transport>,
    settings: &'a GossipSettings,
    observer: &'a mut Observer,
    publisher: &'a SnapshotPublisher,
    progress: &'a Progress,
    faults: Option<&'a FaultRules>,
    traffic: &'a GossipTraffic,
    seeds: watch::Receiver<Vec<SocketAddr>>,
    timers: Timers,
    schedule: SeedSchedule,
    started: Instant,
    leaving_until: Option<(Instant, oneshot::Sender<()>)>,
}

impl Driver<'_> {
    async fn run(&mut self, commands: &mut mpsc::Receiver<Command>) -> Ended {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tick = tokio::time::interval(self.settings.protocol.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut receive_errors = 0u32;
        self.announce_to_seeds();
        self.flush();
        loop {
            self.progress.beat();
            match self.faults.and_then(FaultRules::take_task_fault) {
                Some(TaskFault::Crash) => panic!("gossip task crashed by a fault rule"),
                Some(TaskFault::Stall) => {
                    tracing::warn!("gossip task stalled by a fault rule");
                    std::future::pending::<()>().await;
                }
                None => {}
            }
            if let Some((until, _)) = &self.leaving_until {
                if Instant::now() >= *until {
                    if let Some((_, done)) = self.leaving_until.take() {
                        let _ = done.send(());
                    }
                    return Ended::Stopped;
                }
            }
            let mut publish = false;
            let mut acknowledge = None;
            // Biased: the branches are polled in order, so a run under the
            // paused clock is the same every time (a test's seed reproduces it).
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None => return Ended::Stopped,
                    Some(command) => {
                        acknowledge = self.command(command);
                        publish = true;
                    }
                },
                () = self.timers.wait() => {
                    for _ in 0..DRAIN_BEFORE_TIMERS {
                        let Some((len, from)) = self.transport.try_recv_from(&mut buf) else { break };
                        self.receive(from, &buf[..len]);
                    }
                    for timer in self.timers.pop_due() {
                        self.core.handle_timer(timer, wall_now());
                    }
                }
                received = self.transport.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        receive_errors = 0;
                        self.receive(from, &buf[..len]);
                    }
                    Err(error) => {
                        receive_errors += 1;
                        tracing::debug!(%error, "gossip receive");
                        if receive_errors >= 100 {
                            return Ended::Failed(format!("the gossip socket keeps failing: {error}"));
                        }
                    }
                },
                _ = tick.tick() => {
                    self.core.tick(wall_now());
                    self.maybe_announce_to_seeds();
                    publish = true;
                }
            }
            publish |= self.flush();
            if publish {
                self.publisher.set_membership(self.observer.view_of(&self.core, wall_now()));
            }
            // Acknowledged once the node's own view shows the change.
            if let Some(done) = acknowledge {
                let _ = done.send(());
            }
        }
    }

    fn receive(&mut self, from: SocketAddr, datagram: &[u8]) {
        self.traffic.bytes_received.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        self.traffic.messages_received.fetch_add(1, Ordering::Relaxed);
        self.core.handle_datagram(from, &datagram[..datagram.len().min(MAX_DATAGRAM + 1)], wall_now());
    }

    /// Applies a command; returns what to acknowledge once it is published.
    fn command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        let now = wall_now();
        match command {
            Command::Announce(state, done) => {
                self.core.announce_state(state, now);
                Some(done)
            }
            Command::Leave(done) => {
                self.core.leave(now);
                let linger = (self.settings.protocol.interval * 3).min(Duration::from_millis(600));
                self.leaving_until = Some((Instant::now() + linger, done));
                None
            }
            Command::Reseal(sealing) => {
                tracing::info!(keys = ?sealing, "gossip keys reloaded");
                self.core.set_sealing(sealing);
                None
            }
        }
    }

    /// Sends what the core produced and sets its timers; true when membership changed.
    fn flush(&mut self) -> bool {
        let Output { datagrams, timers, membership_changed } = self.core.take_output();
        for (to, datagram) in datagrams {
            self.traffic.bytes_sent.fetch_add(datagram.len() as u64, Ordering::Relaxed);
            self.traffic.messages_sent.fetch_add(1, Ordering::Relaxed);
            self.transport.send_to(to, &datagram);
        }
        for (after, timer) in timers {
            self.timers.add(after, timer);
        }
        membership_changed
    }

    fn announce_to_seeds(&mut self) {
        let seeds = self.seeds.borrow().clone();
        for seed in seeds {
            self.core.announce(seed, wall_now());
        }
    }

    /// Announces to the seeds the schedule says are due.
    fn maybe_announce_to_seeds(&mut self) {
        let seeds = self.seeds.borrow().clone();
        for seed in self.schedule.due(&self.core, &seeds, self.started.elapsed()) {
            self.core.announce(seed, wall_now());
        }
    }
}

/// What the supervisor needs to (re)start the task.
pub(crate) struct Supervised {
    pub settings: GossipSettings,
    pub network: Arc<dyn Network>,
    pub publisher: SnapshotPublisher,
    pub observer: Observer,
    pub faults: Option<FaultRules>,
    pub traffic: Arc<GossipTraffic>,
    pub seeds: watch::Receiver<Vec<SocketAddr>>,
    /// The keys in force (reloads change them), for restarts.
    pub sealing: Arc<std::sync::Mutex<Sealing>>,
}

/// How long the task may make no progress before it counts as stuck.
pub(crate) fn stall_limit(interval: Duration) -> Duration {
    (interval * 10).max(Duration::from_secs(1))
}

impl Supervised {
    /// Runs the gossip task until the node leaves; restarts it when it dies
    /// or stalls, reporting `partitioned` meanwhile. Sends the reason on
    /// `fatal` when it cannot be kept running.
    pub(crate) async fn run(
        mut self,
        first: Core,
        first_transport: Arc<dyn Transport>,
        mut commands: mpsc::Receiver<Command>,
        fatal: watch::Sender<Option<String>>,
    ) {
        let progress = Progress::default();
        let mut next = Some((first, first_transport));
        let mut supervisor = Supervisor {
            source: GOSSIP_NAME,
            task: "gossip task",
            publisher: self.publisher.clone(),
            failures: Failures::default(),
            fatal,
        };
        let mut seq = 0u32;
        loop {
            let (core, transport) = match next.take() {
                Some(started) => started,
                None => match self.restart(&mut seq).await {
                    Ok(started) => started,
                    Err(error) => {
                        if !supervisor.failed(&format!("gossip could not be restarted: {error}")).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            seq = core.identity().seq;
            let mut driver = Driver {
                core,
                transport,
                settings: &self.settings,
                observer: &mut self.observer,
                publisher: &self.publisher,
                progress: &progress,
                faults: self.faults.as_ref(),
                traffic: &self.traffic,
                seeds: self.seeds.clone(),
                timers: Timers::default(),
                schedule: SeedSchedule::new(self.settings.protocol.interval),
                started: Instant::now(),
                leaving_until: None,
            };
            let limit = stall_limit(self.settings.protocol.interval);
            let ended = supervisor.attempt(&progress, limit, driver.run(&mut commands)).await;
            drop(driver);
            let reason = match ended {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Failed(reason)) | Err(reason) => reason,
            };
            if !supervisor.failed(&reason).await {
                return;
            }
        }
    }

    async fn restart(&self, seq: &mut u32) -> std::io::Result<(Core, Arc<dyn Transport>)> {
        let transport = self.network.bind(self.settings.listen).await?;
        *seq = seq.saturating_add(1);
        let mut identity = self.settings.identity();
        identity.seq = *seq;
        let sealing = self.sealing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let core = self.settings.core(identity, sealing, self.observer.heard(), self.traffic.clone());
        tracing::info!(seq = *seq, "gossip task restarted");
        Ok((core, transport))
    }
}
