//! Fault injection in the gossip transport: drop datagrams to and/or from
//! chosen peers (one way or both), drop a share of them, or delay them; and
//! crash or stall the gossip task itself (to rehearse its supervision).
//!
//! [`FaultRules`] is the handle an operator (through the HTTP layer) or a
//! test changes at run time; [`FaultyNetwork`] wraps the real sockets and
//! consults it for every datagram (sealed bytes, as they cross the wire). The wrapper is only installed when fault
//! injection is enabled, so a production node pays nothing for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::transport::{Network, Transport};

pub use arlen_wire::faults::{Direction, FaultCounters, FaultRule, TaskFault};

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
    task_fault: Mutex<Option<TaskFault>>,
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
                task_fault: Mutex::new(None),
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

    /// Makes the gossip task crash or stall the next time it looks.
    pub fn inject_task_fault(&self, fault: TaskFault) {
        *self.inner.task_fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
    }

    pub(crate) fn take_task_fault(&self) -> Option<TaskFault> {
        self.inner.task_fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
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

/// A network whose sockets apply [`FaultRules`] to every datagram.
pub(crate) struct FaultyNetwork {
    inner: Arc<dyn Network>,
    rules: FaultRules,
}

impl FaultyNetwork {
    pub(crate) fn new(inner: Arc<dyn Network>, rules: FaultRules) -> Self {
        Self { inner, rules }
    }
}

#[async_trait]
impl Network for FaultyNetwork {
    async fn bind(&self, listen: SocketAddr) -> std::io::Result<Arc<dyn Transport>> {
        let inner = self.inner.bind(listen).await?;
        Ok(Arc::new(FaultyTransport { inner, rules: self.rules.clone() }))
    }
}

struct FaultyTransport {
    inner: Arc<dyn Transport>,
    rules: FaultRules,
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.inner.recv_from(buf).await?;
            if self.rules.verdict(from, Direction::Inbound) != Verdict::Drop {
                return Ok((len, from));
            }
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.inner.try_recv_from(buf)?;
            if self.rules.verdict(from, Direction::Inbound) != Verdict::Drop {
                return Some((len, from));
            }
        }
    }

    fn send_to(&self, to: SocketAddr, datagram: &[u8]) {
        match self.rules.verdict(to, Direction::Outbound) {
            Verdict::Pass => self.inner.send_to(to, datagram),
            Verdict::Drop => {}
            Verdict::Delay(delay) => {
                let inner = self.inner.clone();
                let datagram = datagram.to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.send_to(to, &datagram);
                });
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
