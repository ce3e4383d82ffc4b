//! Arlen's accuracy rules on top of foca's SWIM, built on its sans-IO
//! surface (the packets the core sees go by, and the timers foca asks for):
//!
//! - **Probe timeouts follow each peer's round-trip time**: the direct probe
//!   waits at least the configured timeout, longer for a peer whose measured
//!   RTT (smoothed, plus four deviations, as TCP does) needs it.
//! - **Local health** (Lifeguard's LHM): every probe of this node's that
//!   fails and every suspicion about itself raise it, every answered probe
//!   lowers it; a node whose own probes fail is more likely the slow one, so
//!   it waits `(1 + health)` times longer before it suspects or convicts.
//! - **Suspicions scale and need confirmation**: the suspicion timeout grows
//!   with the logarithm of the cluster (a refutation needs about log N gossip
//!   rounds to come back), doubles when no other member could be asked to
//!   confirm (no indirect probe), and a suspect hears of its suspicion at
//!   once and again every period (a ping carrying it), so a live member
//!   refutes within a round trip instead of waiting for gossip to reach it.
//! - **Every verdict is explained**: suspicions, downs and refutations of
//!   this node's own, with the probe outcomes and its own health at the time.
//!
//! foca lacks one hook for this: its probe cycle (timers, the choice of
//! member) is its own, so the per-peer timeout is applied by rewriting the
//! delay of the `SendIndirectProbe` timer foca asks for, and convictions by
//! holding back its `ChangeSuspectToDown` timer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arlen_cluster::{Accusation, AccuserHealth, ProbeEvidence, Reachability, ReachabilityEvidence, Verdict};
use foca::{Header, Incarnation, Message};

use super::identity::GossipId;
use super::GossipTraffic;

/// Verdicts kept for `/clusterz`.
const KEPT_ACCUSATIONS: usize = 32;
/// Local health at most (waits up to 9× longer).
const MAX_LOCAL_HEALTH: u32 = 8;
/// Peers whose round-trip time is remembered at most.
const MAX_RTT_PEERS: usize = 4096;
/// Probes of each member kept for its reachability class.
const OUTCOMES_KEPT: usize = 10;
/// Probes older than this do not count for a class.
const OUTCOME_WINDOW: Duration = Duration::from_secs(60);
/// Probes of a member before it gets a class.
const MIN_PROBES: usize = 3;
/// A member is `slow` from this round trip on, when it is also
/// [`SLOW_FACTOR`] times the others' median.
const SLOW_RTT: Duration = Duration::from_millis(10);
const SLOW_FACTOR: u32 = 4;

/// How long from `then` to `now` (zero when the clock went back).
pub(crate) fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// The probe in flight.
#[derive(Debug)]
struct ProbeLog {
    target: GossipId,
    number: u8,
    sent: SystemTime,
    timeout: Duration,
    acked: bool,
    retried: bool,
    indirect_asked: u32,
    indirect_acked: u32,
}

/// The median of `sorted` without one occurrence of `own` (the member's own
/// round trip, when it has one), in constant time.
fn median_without(sorted: &[Duration], own: Option<Duration>) -> Option<Duration> {
    let Some(own) = own else { return sorted.get(sorted.len() / 2).copied() };
    let others = sorted.len().checked_sub(1).filter(|n| *n > 0)?;
    let at = sorted.partition_point(|d| *d < own);
    let middle = others / 2;
    sorted.get(if middle < at { middle } else { middle + 1 }).copied()
}

/// How one probe of a member ended.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: SystemTime,
    /// Answered before the first timeout.
    first_try: bool,
    /// Answered directly (first or second try).
    acked: bool,
    /// Answered through another member (an indirect ack).
    through_others: bool,
}

/// A smoothed round-trip time and its deviation (RFC 6298).
#[derive(Debug, Clone, Copy)]
struct Rtt {
    smoothed: Duration,
    deviation: Duration,
}

impl Rtt {
    fn sample(previous: Option<Rtt>, sample: Duration) -> Rtt {
        match previous {
            None => Rtt { smoothed: sample, deviation: sample / 2 },
            Some(Rtt { smoothed, deviation }) => {
                let error = smoothed.abs_diff(sample);
                Rtt { smoothed: (smoothed * 7 + sample) / 8, deviation: (deviation * 3 + error) / 4 }
            }
        }
    }
}

/// A suspicion this node raised and has not concluded.
#[derive(Debug)]
struct Suspicion {
    id: GossipId,
    incarnation: Incarnation,
    since: SystemTime,
    evidence: ProbeEvidence,
    next_notice: SystemTime,
}

/// The settings the rules scale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Base {
    pub interval: Duration,
    pub probe_timeout: Duration,
    pub suspicion_timeout: Duration,
}

/// What the accuracy rules remember.
#[derive(Debug)]
pub(crate) struct Accuracy {
    base: Base,
    node_id: String,
    probe: Option<ProbeLog>,
    rtt: HashMap<SocketAddr, Rtt>,
    /// Each member's last probes, newest last (for its reachability class).
    outcomes: HashMap<SocketAddr, VecDeque<Outcome>>,
    suspicions: HashMap<SocketAddr, Suspicion>,
    accusations: VecDeque<Accusation>,
    local_health: u32,
    last_stall: Option<SystemTime>,
    traffic: Arc<GossipTraffic>,
}

impl Accuracy {
    pub(crate) fn new(base: Base, node_id: &str, traffic: Arc<GossipTraffic>) -> Self {
        Self {
            base,
            node_id: node_id.to_owned(),
            probe: None,
            rtt: HashMap::new(),
            outcomes: HashMap::new(),
            suspicions: HashMap::new(),
            accusations: VecDeque::new(),
            local_health: 0,
            last_stall: None,
            traffic,
        }
    }

    #[cfg(test)]
    pub(crate) fn local_health(&self) -> u32 {
        self.local_health
    }

    fn raise_health(&mut self) {
        self.local_health = (self.local_health + 1).min(MAX_LOCAL_HEALTH);
    }

    pub(crate) fn stalled(&mut self, now: SystemTime) {
        self.last_stall = Some(now);
        self.raise_health();
    }

    /// A packet this node sends: its probes and indirect probes.
    pub(crate) fn sent(&mut self, header: &Header<GossipId>, now: SystemTime) {
        match &header.message {
            Message::Ping(number) => {
                if let Some(previous) = self.probe.take() {
                    self.conclude_probe(previous);
                }
                self.probe = Some(ProbeLog {
                    target: header.dst.clone(),
                    number: *number,
                    sent: now,
                    timeout: self.base.probe_timeout,
                    acked: false,
                    retried: false,
                    indirect_asked: 0,
                    indirect_acked: 0,
                });
            }
            Message::PingReq { target, .. } => {
                if let Some(probe) = self.probe.as_mut().filter(|p| p.target == *target) {
                    probe.indirect_asked += 1;
                }
            }
            _ => {}
        }
    }

    /// Records how a probe ended (when the next one begins).
    fn conclude_probe(&mut self, probe: ProbeLog) {
        let addr = probe.target.addr;
        if self.outcomes.len() >= MAX_RTT_PEERS && !self.outcomes.contains_key(&addr) {
            self.outcomes.clear();
        }
        let kept = self.outcomes.entry(addr).or_default();
        if kept.len() >= OUTCOMES_KEPT {
            kept.pop_front();
        }
        kept.push_back(Outcome {
            at: probe.sent,
            first_try: probe.acked && !probe.retried,
            acked: probe.acked,
            through_others: probe.indirect_acked > 0,
        });
    }

    /// Every measured peer's smoothed round trip, sorted: what
    /// [`Accuracy::reachability`] compares a member with (made once for all
    /// members, not once each).
    pub(crate) fn sorted_rtts(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.rtt.values().map(|r| r.smoothed).collect();
        all.sort();
        all
    }

    /// How `member` answers this node's probes, over its recent probes (at
    /// least [`MIN_PROBES`] within [`OUTCOME_WINDOW`]): `one_way` when its
    /// last three direct probes failed while others reached it, `slow` when
    /// its round trip is at least [`SLOW_RTT`] and [`SLOW_FACTOR`] times the
    /// other members' median, `lossy` when a quarter or more of its probes
    /// (two at least) needed a second try or failed, else `ok`.
    /// `sorted_rtts` is [`Accuracy::sorted_rtts`].
    pub(crate) fn reachability(
        &self,
        member: &GossipId,
        heard_ms_ago: Option<u64>,
        now: SystemTime,
        sorted_rtts: &[Duration],
    ) -> Option<(Reachability, ReachabilityEvidence)> {
        let outcomes: Vec<Outcome> =
            self.outcomes.get(&member.addr)?.iter().filter(|o| since(now, o.at) <= OUTCOME_WINDOW).copied().collect();
        if outcomes.len() < MIN_PROBES {
            return None;
        }
        let count =
            |keep: &dyn Fn(&Outcome) -> bool| u32::try_from(outcomes.iter().filter(|o| keep(o)).count()).unwrap_or(0);
        let probes = u32::try_from(outcomes.len()).unwrap_or(u32::MAX);
        let first_try_failed = count(&|o| !o.first_try);
        let direct_failed = count(&|o| !o.acked);
        let answered_through_others = count(&|o| !o.acked && o.through_others);
        let rtt = self.rtt.get(&member.addr).map(|r| r.smoothed);
        let others_median = median_without(sorted_rtts, rtt);
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        let recent = &outcomes[outcomes.len() - MIN_PROBES..];
        let one_way = recent.iter().all(|o| !o.acked && o.through_others);
        let slow = rtt.is_some_and(|rtt| rtt >= SLOW_RTT && others_median.is_none_or(|m| rtt >= m * SLOW_FACTOR));
        let lossy = first_try_failed >= 2 && first_try_failed * 4 >= probes;
        let name = &member.node_id;
        let (class, explanation) = if one_way {
            let heard = match heard_ms_ago {
                Some(ago) if ago <= 2_000 => format!(
                    "; {name} was heard from {ago} ms ago, so it reaches this node and this node does not reach it"
                ),
                _ => format!("; nothing was heard from {name} directly either"),
            };
            (
                Reachability::OneWay,
                format!(
                    "the last {MIN_PROBES} direct probes of {name} got no answer while other members reached it: the direct path is cut, in one direction at least{heard}"
                ),
            )
        } else if slow {
            let others = others_median.map_or_else(
                || "no other member to compare".to_owned(),
                |m| format!("{} ms for the other members", ms(m)),
            );
            (Reachability::Slow, format!("{name}'s round trip is {} ms against {others}", rtt.map_or(0.0, ms)))
        } else if lossy {
            (
                Reachability::Lossy,
                format!("{first_try_failed} of the last {probes} probes of {name} needed a second try or failed ({direct_failed} got no direct answer)"),
            )
        } else {
            (
                Reachability::Ok,
                format!("{name} answered {} of the last {probes} probes at the first try", probes - first_try_failed),
            )
        };
        let evidence = ReachabilityEvidence {
            probes,
            first_try_failed,
            direct_failed,
            answered_through_others,
            rtt_ms: rtt.map(ms),
            others_rtt_ms: others_median.map(ms),
            heard_ms_ago,
            explanation,
        };
        Some((class, evidence))
    }

    /// A packet this node accepted: acks of its probe, suspicions of itself.
    pub(crate) fn received(&mut self, header: &Header<GossipId>, suspects_us: bool, now: SystemTime) {
        if suspects_us {
            self.raise_health();
        }
        let Some(probe) = self.probe.as_mut() else { return };
        match &header.message {
            Message::Ack(number) if header.src.addr == probe.target.addr && *number == probe.number && !probe.acked => {
                probe.acked = true;
                let sample = since(now, probe.sent);
                let addr = probe.target.addr;
                if self.rtt.len() >= MAX_RTT_PEERS && !self.rtt.contains_key(&addr) {
                    self.rtt.clear();
                }
                let previous = self.rtt.get(&addr).copied();
                self.rtt.insert(addr, Rtt::sample(previous, sample));
                self.local_health = self.local_health.saturating_sub(1);
            }
            Message::ForwardedAck { origin, .. } if origin.addr == probe.target.addr => probe.indirect_acked += 1,
            _ => {}
        }
    }

    /// The probe of `target` has had no ack by its timeout: the number to
    /// ping it again with (a second direct try, once per probe) and how long
    /// to wait for that ack before foca asks others — the peer's measured
    /// round trip (smoothed + 4 deviations, at least 2 ms), inside the period.
    pub(crate) fn retry(&mut self, target: &GossipId) -> Option<(u8, Duration)> {
        let measured = self.rtt.get(&target.addr).map_or(self.base.probe_timeout / 2, |r| r.smoothed + r.deviation * 4);
        let probe = self.probe.as_mut().filter(|p| p.target == *target && !p.acked && !p.retried)?;
        probe.retried = true;
        let room = (self.base.interval * 9 / 10).saturating_sub(probe.timeout);
        let wait = measured.max(Duration::from_millis(2)).min(room);
        if wait.is_zero() {
            return None;
        }
        Some((probe.number, wait))
    }

    /// How long the direct probe of `target` waits before asking others:
    /// at least the configured timeout, longer for a peer whose round trips
    /// need it, times `1 + local health`, and always inside the period.
    pub(crate) fn probe_timeout(&mut self, target: &GossipId) -> Duration {
        let measured = self.rtt.get(&target.addr).map_or(Duration::ZERO, |r| r.smoothed + r.deviation * 4);
        let ceiling = (self.base.interval * 9 / 10).max(Duration::from_millis(1));
        let timeout = (self.base.probe_timeout.max(measured) * (1 + self.local_health)).min(ceiling);
        if let Some(probe) = self.probe.as_mut().filter(|p| p.target == *target) {
            probe.timeout = timeout;
        }
        timeout
    }

    /// foca suspects `member` after this node's probe of it failed.
    pub(crate) fn suspect(&mut self, member: &GossipId, incarnation: Incarnation, now: SystemTime) {
        // foca suspects a suspect again each time it probes it: the
        // suspicion keeps its start.
        if self.suspicions.get(&member.addr).is_some_and(|s| s.id == *member && s.incarnation == incarnation) {
            return;
        }
        let evidence = match self.probe.as_ref().filter(|p| p.target.addr == member.addr) {
            Some(probe) => ProbeEvidence {
                direct_failed: !probe.acked,
                probe_timeout_ms: u64::try_from(probe.timeout.as_millis()).unwrap_or(u64::MAX),
                indirect_asked: probe.indirect_asked,
                indirect_acked: probe.indirect_acked,
            },
            None => ProbeEvidence::default(),
        };
        self.raise_health();
        self.traffic.suspicions.fetch_add(1, Ordering::Relaxed);
        self.record(member, Verdict::Suspect, evidence, now);
        self.suspicions
            .insert(member.addr, Suspicion { id: member.clone(), incarnation, since: now, evidence, next_notice: now });
    }

    /// How long a suspicion of `member` must last before it may become a
    /// conviction, in a cluster of `members`: the configured timeout, times
    /// `max(1, log10(members))`, times two when no other member could be
    /// asked to confirm it, times `1 + local health / 2` (one failed probe
    /// of a crashed peer does not slow its detection; a node whose probes
    /// keep failing waits longer).
    pub(crate) fn required(&self, member: &GossipId, members: usize) -> Duration {
        let scale = (members.max(1) as f64).log10().max(1.0);
        let unconfirmed = self
            .suspicions
            .get(&member.addr)
            .is_some_and(|s| s.evidence.direct_failed && s.evidence.indirect_asked == 0);
        let factor = scale * if unconfirmed { 2.0 } else { 1.0 } * f64::from(1 + self.local_health / 2);
        self.base.suspicion_timeout.mul_f64(factor)
    }

    /// When this node's suspicion of `member` began.
    pub(crate) fn suspected_since(&self, member: &GossipId) -> Option<SystemTime> {
        self.suspicions.get(&member.addr).filter(|s| s.id == *member).map(|s| s.since)
    }

    /// foca handled the conviction timer of `member`: down, or refuted
    /// (unless another member's verdict made it down first: nothing then).
    pub(crate) fn conclude(&mut self, member: &GossipId, down: bool, down_already: bool, now: SystemTime) {
        let Some(suspicion) = self.suspicions.remove(&member.addr) else { return };
        if down_already && !down {
            return;
        }
        if down {
            self.traffic.downs.fetch_add(1, Ordering::Relaxed);
            self.record(member, Verdict::Down, suspicion.evidence, now);
        } else {
            self.traffic.refutations.fetch_add(1, Ordering::Relaxed);
            self.record(member, Verdict::Refuted, suspicion.evidence, now);
        }
    }

    /// The identity changed or foca started afresh: its timers are void, so
    /// are the suspicions waiting on them.
    pub(crate) fn reset(&mut self) {
        self.suspicions.clear();
        self.probe = None;
    }

    /// Suspects to tell of their suspicion now (once a period each), with
    /// the incarnation suspected; by address, so the notices go out in the
    /// same order every run (a map's order is the process's own).
    pub(crate) fn notices_due(&mut self, now: SystemTime) -> Vec<(GossipId, Incarnation)> {
        let interval = self.base.interval;
        let mut due: Vec<(GossipId, Incarnation)> = self
            .suspicions
            .values_mut()
            .filter(|s| s.next_notice <= now)
            .map(|s| {
                s.next_notice = now + interval;
                (s.id.clone(), s.incarnation)
            })
            .collect();
        due.sort_unstable_by_key(|(id, _)| id.addr);
        due
    }

    fn record(&mut self, member: &GossipId, verdict: Verdict, evidence: ProbeEvidence, now: SystemTime) {
        if self.accusations.len() >= KEPT_ACCUSATIONS {
            self.accusations.pop_front();
        }
        let stalled_ms_ago = self.last_stall.map(|at| u64::try_from(since(now, at).as_millis()).unwrap_or(u64::MAX));
        let mut accusation = Accusation {
            accused: member.node_id.clone(),
            accused_generation: member.generation,
            accuser: self.node_id.clone(),
            verdict,
            at: now,
            evidence,
            accuser_health: AccuserHealth { local_health: self.local_health, stalled_ms_ago },
            explanation: String::new(),
        };
        accusation.explanation = accusation.compose();
        self.accusations.push_back(accusation);
    }

    pub(crate) fn accusations(&self) -> Vec<Accusation> {
        self.accusations.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::core::tests::id;

    fn base() -> Base {
        Base {
            interval: Duration::from_millis(50),
            probe_timeout: Duration::from_millis(20),
            suspicion_timeout: Duration::from_millis(200),
        }
    }

    fn header(src: u16, dst: u16, message: Message<GossipId>) -> Header<GossipId> {
        Header { src: id(src), src_incarnation: 0, dst: id(dst), message }
    }

    #[test]
    fn probe_timeouts_follow_the_peers_round_trip_and_the_nodes_own_health() {
        let mut accuracy = Accuracy::new(base(), "node-1", Arc::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        // A slow peer: 30 ms round trips.
        for round in 0..8u32 {
            let sent = t0 + Duration::from_millis(50) * round;
            accuracy.sent(&header(1, 2, Message::Ping(round as u8)), sent);
            accuracy.received(&header(2, 1, Message::Ack(round as u8)), false, sent + Duration::from_millis(30));
        }
        let slow = accuracy.probe_timeout(&id(2));
        assert!(slow >= Duration::from_millis(30) && slow <= Duration::from_millis(45), "{slow:?}");
        assert_eq!(
            accuracy.probe_timeout(&id(3)),
            Duration::from_millis(20),
            "an unmeasured peer: the configured timeout"
        );
        // The node's own probes fail: it waits longer, never past the period.
        accuracy.suspect(&id(3), 0, t0);
        accuracy.suspect(&id(4), 0, t0);
        assert_eq!(accuracy.local_health(), 2);
        assert_eq!(accuracy.probe_timeout(&id(3)), Duration::from_millis(45));
        // Answered probes bring it back.
        accuracy.sent(&header(1, 2, Message::Ping(9)), t0);
        accuracy.received(&header(2, 1, Message::Ack(9)), false, t0);
        assert_eq!(accuracy.local_health(), 1);
    }

    #[test]
    fn suspicions_scale_with_the_cluster_confirmation_and_health_and_are_explained() {
        let mut accuracy = Accuracy::new(base(), "node-1", Arc::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        accuracy.sent(&header(1, 2, Message::Ping(1)), t0);
        accuracy.sent(&header(1, 3, Message::PingReq { target: id(2), probe_number: 1 }), t0);
        accuracy.sent(&header(1, 4, Message::PingReq { target: id(2), probe_number: 1 }), t0);
        accuracy.suspect(&id(2), 0, t0 + Duration::from_millis(50));
        // Local health 1 now: 200 ms × 1 (3 members); × 3 at 1,000 members.
        assert_eq!(accuracy.required(&id(2), 3), Duration::from_millis(200));
        assert_eq!(accuracy.required(&id(2), 1000), Duration::from_millis(600));
        accuracy.conclude(&id(2), true, false, t0 + Duration::from_millis(500));
        let verdicts: Vec<_> = accuracy.accusations().iter().map(|a| a.verdict).collect();
        assert_eq!(verdicts, [Verdict::Suspect, Verdict::Down]);
        let down = &accuracy.accusations()[1];
        assert_eq!(
            down.explain(),
            "node-1 declared node-2 down: its direct probe timed out after 20 ms and 0 of 2 indirect probes answered; \
             node-1 itself was unwell (local health 1)"
        );
        // Nobody to ask: the suspicion needs twice as long (and local health
        // 2 now doubles it again).
        accuracy.sent(&header(1, 5, Message::Ping(2)), t0);
        accuracy.suspect(&id(5), 0, t0);
        assert_eq!(accuracy.required(&id(5), 3), Duration::from_millis(800));
        assert_eq!(accuracy.notices_due(t0).len(), 1, "the suspect is told at once");
        assert!(accuracy.notices_due(t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(accuracy.notices_due(t0 + Duration::from_millis(50)).len(), 1, "and again each period");
    }

    /// Probes of three peers: one answering at once (ok), one answering
    /// only through others (one_way), one answering late (slow), and one
    /// that needs second tries (lossy); each class comes with its evidence.
    #[test]
    fn gray_failures_are_named_from_probe_outcomes() {
        let mut accuracy = Accuracy::new(base(), "node-1", Arc::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ms = Duration::from_millis;
        let mut at = t0;
        for round in 0..6u8 {
            // Peer 2: answers in 1 ms.
            accuracy.sent(&header(1, 2, Message::Ping(round)), at);
            accuracy.received(&header(2, 1, Message::Ack(round)), false, at + ms(1));
            at += ms(50);
            // Peer 3: no direct answer; another member forwards its ack.
            accuracy.sent(&header(1, 3, Message::Ping(round)), at);
            let _ = accuracy.retry(&id(3));
            accuracy.sent(&header(1, 4, Message::PingReq { target: id(3), probe_number: round }), at);
            let forwarded = Message::ForwardedAck { origin: id(3), probe_number: round };
            accuracy.received(&header(4, 1, forwarded), false, at + ms(5));
            at += ms(50);
            // Peer 5: answers in 40 ms.
            accuracy.sent(&header(1, 5, Message::Ping(round)), at);
            accuracy.received(&header(5, 1, Message::Ack(round)), false, at + ms(40));
            at += ms(50);
            // Peer 6: every other probe needs its second try.
            accuracy.sent(&header(1, 6, Message::Ping(round)), at);
            if round % 2 == 0 {
                let _ = accuracy.retry(&id(6));
            }
            accuracy.received(&header(6, 1, Message::Ack(round)), false, at + ms(1));
            at += ms(50);
        }
        accuracy.sent(&header(1, 2, Message::Ping(99)), at);
        let sorted = accuracy.sorted_rtts();
        let class =
            |port: u16, heard: Option<u64>| accuracy.reachability(&id(port), heard, at, &sorted).map(|(c, _)| c);
        assert_eq!(class(2, None), Some(Reachability::Ok));
        assert_eq!(class(3, Some(20)), Some(Reachability::OneWay));
        assert_eq!(class(5, None), Some(Reachability::Slow));
        assert_eq!(class(6, None), Some(Reachability::Lossy));
        let (_, evidence) = accuracy.reachability(&id(3), Some(20), at, &sorted).unwrap();
        assert_eq!((evidence.probes, evidence.direct_failed, evidence.answered_through_others), (6, 6, 6));
        assert!(
            evidence.explanation.contains("heard from 20 ms ago, so it reaches this node"),
            "{}",
            evidence.explanation
        );
        let (_, evidence) = accuracy.reachability(&id(5), None, at, &sorted).unwrap();
        assert!(evidence.explanation.starts_with("node-5's round trip is 40 ms against"), "{}", evidence.explanation);
        // Too few probes, or too old: no class.
        assert_eq!(class(7, None), None);
        assert_eq!(accuracy.reachability(&id(2), None, at + Duration::from_secs(120), &sorted).map(|(c, _)| c), None);
        // The others' median, without the member's own round trip.
        let ms = Duration::from_millis;
        assert_eq!(median_without(&[ms(1), ms(2), ms(40)], Some(ms(40))), Some(ms(2)));
        assert_eq!(median_without(&[ms(1), ms(2), ms(40)], Some(ms(1))), Some(ms(40)));
        assert_eq!(median_without(&[ms(1), ms(40)], Some(ms(40))), Some(ms(1)));
        assert_eq!(median_without(&[ms(40)], Some(ms(40))), None);
        assert_eq!(median_without(&[ms(1), ms(2)], None), Some(ms(2)));
    }
}
