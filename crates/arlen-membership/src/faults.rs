//! Fault injection in the gossip transport: drop messages to and/or from
//! chosen peers (one way or both), drop a share of them, or delay them.
//!
//! [`FaultRules`] is the handle an operator (through the HTTP layer) or a
//! test changes at run time; [`FaultyTransport`] wraps the real transport and
//! consults it for every message. The wrapper is only installed when fault
//! injection is enabled, so a production node pays nothing for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Which messages a rule applies to, seen from the node that holds the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Messages this node receives.
    Inbound,
    /// Messages this node sends.
    Outbound,
    Both,
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Gossip address of the peer; absent means every peer.
    #[serde(default)]
    pub peer: Option<SocketAddr>,
    pub direction: Direction,
    /// Share of matching messages dropped, 0..=100.
    #[serde(default = "all")]
    pub drop_percent: u8,
    /// Extra delay before a matching outbound message is sent.
    #[serde(default)]
    pub delay_ms: u64,
}

fn all() -> u8 {
    100
}

impl FaultRule {
    /// Checks the rule's ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.drop_percent > 100 {
            return Err(format!("drop_percent must be 0..100, got {}", self.drop_percent));
        }
        if self.delay_ms > 60_000 {
            return Err(format!("delay_ms must be at most 60000, got {}", self.delay_ms));
        }
        if self.delay_ms > 0 && self.direction == Direction::Inbound {
            return Err("delay_ms applies to outbound messages; use direction outbound or both".to_owned());
        }
        Ok(())
    }

    fn matches(&self, peer: SocketAddr, direction: Direction) -> bool {
        self.peer.is_none_or(|p| p == peer) && (self.direction == Direction::Both || self.direction == direction)
    }
}

/// What happened to messages because of the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounters {
    pub dropped_inbound: u64,
    pub dropped_outbound: u64,
    pub delayed_outbound: u64,
}

/// The live rule set, shared by the transport and whoever controls it.
#[derive(Debug, Clone)]
pub struct FaultRules {
    inner: Arc<RulesInner>,
}

#[derive(Debug)]
struct RulesInner {
    active: AtomicBool,
    rules: RwLock<Vec<FaultRule>>,
    rng: Mutex<StdRng>,
    dropped_inbound: AtomicU64,
    dropped_outbound: AtomicU64,
    delayed_outbound: AtomicU64,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

impl Default for FaultRules {
    fn default() -> Self {
        Self::with_seed(rand::random())
    }
}

impl FaultRules {
    /// Rules whose random drops follow `seed`, so a run can be repeated.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            inner: Arc::new(RulesInner {
                active: AtomicBool::new(false),
                rules: RwLock::new(Vec::new()),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                dropped_inbound: AtomicU64::new(0),
                dropped_outbound: AtomicU64::new(0),
                delayed_outbound: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces every rule (after checking them all).
    pub fn replace(&self, rules: Vec<FaultRule>) -> Result<(), String> {
        for (index, rule) in rules.iter().enumerate() {
            rule.validate().map_err(|error| format!("rules[{index}]: {error}"))?;
        }
        let mut current = self.inner.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.active.store(!rules.is_empty(), Ordering::Release);
        *current = rules;
        Ok(())
    }

    /// Removes every rule.
    pub fn heal(&self) {
        let _ = self.replace(Vec::new());
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.inner.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn counters(&self) -> FaultCounters {
        FaultCounters {
            dropped_inbound: self.inner.dropped_inbound.load(Ordering::Relaxed),
            dropped_outbound: self.inner.dropped_outbound.load(Ordering::Relaxed),
            delayed_outbound: self.inner.delayed_outbound.load(Ordering::Relaxed),
        }
    }

    fn verdict(&self, peer: SocketAddr, direction: Direction) -> Verdict {
        if !self.inner.active.load(Ordering::Acquire) {
            return Verdict::Pass;
        }
        let rules = self.inner.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut delay = Duration::ZERO;
        for rule in rules.iter().filter(|rule| rule.matches(peer, direction)) {
            let dropped = match rule.drop_percent {
                0 => false,
                100.. => true,
                share => {
                    let mut rng = self.inner.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    rng.random_range(0..100u8) < share
                }
            };
            if dropped {
                let counter = match direction {
                    Direction::Inbound => &self.inner.dropped_inbound,
                    _ => &self.inner.dropped_outbound,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Verdict::Drop;
            }
            delay = delay.max(Duration::from_millis(rule.delay_ms));
        }
        if delay.is_zero() {
            Verdict::Pass
        } else {
            self.inner.delayed_outbound.fetch_add(1, Ordering::Relaxed);
            Verdict::Delay(delay)
        }
    }
}

/// A transport that applies [`FaultRules`] to every message of another.
pub struct FaultyTransport {
    inner: Box<dyn Transport>,
    rules: FaultRules,
}

impl FaultyTransport {
    pub fn new(inner: Box<dyn Transport>, rules: FaultRules) -> Self {
        Self { inner, rules }
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.inner.open(listen_addr).await?;
        let local_addr = socket.local_addr()?;
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox_rx) = mpsc::channel(1024);
        tokio::spawn(pump(socket, outbox_rx, inbox_tx));
        Ok(Box::new(FaultySocket { local_addr, rules: self.rules.clone(), outbox: outbox_tx, inbox: inbox_rx }))
    }
}

/// Owns the real socket: sends what the outbox holds, forwards what arrives.
/// Ends when the faulty socket is dropped.
async fn pump(
    mut socket: Box<dyn Socket>,
    mut outbox: mpsc::UnboundedReceiver<(SocketAddr, ChitchatEnvelope)>,
    inbox: mpsc::Sender<anyhow::Result<RecvOutcome>>,
) {
    loop {
        tokio::select! {
            outgoing = outbox.recv() => match outgoing {
                Some((to, envelope)) => {
                    if let Err(error) = socket.send(to, envelope).await {
                        tracing::debug!(%to, %error, "gossip send failed");
                    }
                }
                None => return,
            },
            // Chitchat's sockets are cancel-safe on recv (its own server selects on it).
            incoming = socket.recv() => {
                let fatal = incoming.is_err();
                if inbox.send(incoming).await.is_err() || fatal {
                    return;
                }
            }
        }
    }
}

struct FaultySocket {
    local_addr: SocketAddr,
    rules: FaultRules,
    outbox: mpsc::UnboundedSender<(SocketAddr, ChitchatEnvelope)>,
    inbox: mpsc::Receiver<anyhow::Result<RecvOutcome>>,
}

#[async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        match self.rules.verdict(to, Direction::Outbound) {
            Verdict::Pass => {
                self.outbox.send((to, envelope)).map_err(|_| anyhow::anyhow!("gossip socket closed"))?;
            }
            Verdict::Drop => {}
            Verdict::Delay(delay) => {
                let outbox = self.outbox.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = outbox.send((to, envelope));
                });
            }
        }
        // Bytes are counted where they really leave (the socket below).
        Ok(SendOutcome { num_bytes_sent: 0 })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = self.inbox.recv().await.ok_or_else(|| anyhow::anyhow!("gossip socket closed"))??;
            if self.rules.verdict(outcome.from_addr, Direction::Inbound) != Verdict::Drop {
                return Ok(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rules_match_peer_and_direction() {
        let rules = FaultRules::with_seed(7);
        assert_eq!(rules.verdict(addr(1), Direction::Outbound), Verdict::Pass);
        rules
            .replace(vec![
                FaultRule { peer: Some(addr(1)), direction: Direction::Inbound, drop_percent: 100, delay_ms: 0 },
                FaultRule { peer: None, direction: Direction::Outbound, drop_percent: 0, delay_ms: 50 },
            ])
            .unwrap();
        assert_eq!(rules.verdict(addr(1), Direction::Inbound), Verdict::Drop);
        assert_eq!(rules.verdict(addr(2), Direction::Inbound), Verdict::Pass);
        assert_eq!(rules.verdict(addr(1), Direction::Outbound), Verdict::Delay(Duration::from_millis(50)));
        assert_eq!(rules.counters(), FaultCounters { dropped_inbound: 1, dropped_outbound: 0, delayed_outbound: 1 });
        rules.heal();
        assert_eq!(rules.verdict(addr(1), Direction::Inbound), Verdict::Pass);
    }

    #[test]
    fn percentage_drops_follow_the_seed() {
        let run = |seed| {
            let rules = FaultRules::with_seed(seed);
            rules
                .replace(vec![FaultRule { peer: None, direction: Direction::Both, drop_percent: 25, delay_ms: 0 }])
                .unwrap();
            (0..1000).map(|_| rules.verdict(addr(1), Direction::Inbound) == Verdict::Drop).collect::<Vec<_>>()
        };
        let first = run(42);
        assert_eq!(first, run(42), "same seed, same drops");
        let dropped = first.iter().filter(|d| **d).count();
        assert!((180..320).contains(&dropped), "about 25% dropped, got {dropped}");
    }

    #[test]
    fn invalid_rules_are_refused_whole() {
        let rules = FaultRules::with_seed(1);
        let error = rules
            .replace(vec![
                FaultRule { peer: None, direction: Direction::Both, drop_percent: 100, delay_ms: 0 },
                FaultRule { peer: None, direction: Direction::Inbound, drop_percent: 0, delay_ms: 10 },
            ])
            .unwrap_err();
        assert!(error.starts_with("rules[1]: delay_ms applies to outbound"), "{error}");
        assert!(rules.list().is_empty());
    }
}
