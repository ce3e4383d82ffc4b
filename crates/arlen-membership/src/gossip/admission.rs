//! Who may enter a node's member table, and how much it may send to whom —
//! the bounds on what one key holder, or an outsider during a key rollout,
//! can do (see `ARCHITECTURE.md`, "Gossip trust"):
//!
//! - [`JoinBudget`]: members join at most as fast as a token bucket allows
//!   (a burst of `expectedNodes`, then `maxJoinsPerMinute`), and never beyond
//!   [`HEADROOM`] × `expectedNodes` live members. A newcomer beyond either is
//!   held back — stripped from the packet that names it, so foca neither
//!   counts nor probes it — and enters when there is room (a real member
//!   keeps announcing itself; a flood of fakes stays out).
//! - [`Vouched`]: while unsealed datagrams are accepted beside sealed ones
//!   (`unsealedTraffic = accept`), they come only from members that sealed
//!   traffic vouched for, and carry only "alive" news about known members:
//!   they can never add a member nor evict one.
//! - [`SendCredit`]: where this node sends unsealed, it sends an address that
//!   has not proven it receives (by answering a probe) no more bytes than it
//!   received from it, plus one datagram: a forged member at somebody
//!   else's address draws one ping per node, not a stream of them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Live members allowed at most, as a multiple of `expectedNodes` (and at
/// least `expectedNodes` + [`MIN_SPARE`]): room for a rolling upgrade's
/// surge, not for a flood.
pub(crate) const HEADROOM: usize = 2;
const MIN_SPARE: usize = 2;

/// The join token bucket and the live-member ceiling.
#[derive(Debug)]
pub(crate) struct JoinBudget {
    tokens: f64,
    burst: f64,
    per_second: f64,
    ceiling: usize,
    refilled: Option<SystemTime>,
    /// Newcomers held back so far.
    pub(crate) held_back: u64,
}

impl JoinBudget {
    pub(crate) fn new(expected_nodes: u32, max_joins_per_minute: u32) -> Self {
        let expected = usize::try_from(expected_nodes.max(1)).unwrap_or(usize::MAX);
        let burst = f64::from(expected_nodes.max(8));
        Self {
            tokens: burst,
            burst,
            per_second: f64::from(max_joins_per_minute.max(1)) / 60.0,
            ceiling: expected.saturating_mul(HEADROOM).max(expected.saturating_add(MIN_SPARE)),
            refilled: None,
            held_back: 0,
        }
    }

    /// Whether one more member may join now, with `live` members (this node
    /// included) counted already. Takes a token when it may.
    pub(crate) fn admit(&mut self, live: usize, now: SystemTime) -> bool {
        if let Some(last) = self.refilled {
            let elapsed = now.duration_since(last).unwrap_or_default().as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.refilled = Some(now);
        if live >= self.ceiling || self.tokens < 1.0 {
            self.held_back += 1;
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    #[cfg(test)]
    pub(crate) fn ceiling(&self) -> usize {
        self.ceiling
    }
}

/// Addresses that sealed traffic vouched for: senders of sealed datagrams
/// and the members they named (bounded: cleared to the current members when
/// it outgrows [`Vouched::new`]'s bound).
#[derive(Debug)]
pub(crate) struct Vouched {
    addresses: HashSet<SocketAddr>,
    bound: usize,
}

impl Vouched {
    pub(crate) fn new(bound: usize) -> Self {
        Self { addresses: HashSet::new(), bound: bound.max(16) }
    }

    pub(crate) fn vouch(&mut self, address: SocketAddr) {
        if self.addresses.len() >= self.bound {
            self.addresses.clear();
        }
        self.addresses.insert(address);
    }

    /// Everything known now counts as vouched for: when the node turns to
    /// accepting unsealed traffic beside sealed, what it learnt under the
    /// earlier rule is what the operator accepted.
    pub(crate) fn adopt(&mut self, addresses: impl IntoIterator<Item = SocketAddr>) {
        self.addresses.clear();
        self.addresses.extend(addresses);
    }

    pub(crate) fn contains(&self, address: &SocketAddr) -> bool {
        self.addresses.contains(address)
    }
}

/// Per-address byte credit for unsealed sends (see the module documentation).
#[derive(Debug)]
pub(crate) struct SendCredit {
    /// Bytes this node may still send to an address that has not proven it receives.
    credit: HashMap<SocketAddr, usize>,
    /// Addresses that answered a probe of this node.
    proven: HashMap<SocketAddr, SystemTime>,
    /// The configured seeds: the operator vouches that they receive.
    seeds: HashSet<SocketAddr>,
    /// A datagram: what any address gets before it sent anything.
    initial: usize,
    bound: usize,
}

/// How long an address stays proven after its last answer.
const PROVEN_FOR: Duration = Duration::from_secs(300);

impl SendCredit {
    pub(crate) fn new(initial: usize, bound: usize) -> Self {
        Self { credit: HashMap::new(), proven: HashMap::new(), seeds: HashSet::new(), initial, bound: bound.max(16) }
    }

    /// A configured seed: sent to without credit.
    pub(crate) fn seed(&mut self, address: SocketAddr) {
        if self.seeds.len() < self.bound {
            self.seeds.insert(address);
        }
    }

    /// `bytes` arrived from `from`.
    pub(crate) fn received(&mut self, from: SocketAddr, bytes: usize) {
        if self.credit.len() >= self.bound {
            self.credit.clear();
        }
        let credit = self.credit.entry(from).or_insert(self.initial);
        *credit = credit.saturating_add(bytes).min(self.initial.saturating_mul(64));
    }

    /// `from` answered a probe this node sent it.
    pub(crate) fn proven(&mut self, from: SocketAddr, now: SystemTime) {
        if self.proven.len() >= self.bound {
            self.proven.retain(|_, at| now.duration_since(*at).unwrap_or_default() < PROVEN_FOR);
            if self.proven.len() >= self.bound {
                self.proven.clear();
            }
        }
        self.proven.insert(from, now);
    }

    /// Whether `bytes` may go to `to` now; spends the credit when they may.
    pub(crate) fn spend(&mut self, to: SocketAddr, bytes: usize, now: SystemTime) -> bool {
        if self.seeds.contains(&to)
            || self.proven.get(&to).is_some_and(|at| now.duration_since(*at).unwrap_or_default() < PROVEN_FOR)
        {
            return true;
        }
        if self.credit.len() >= self.bound && !self.credit.contains_key(&to) {
            self.credit.clear();
        }
        let credit = self.credit.entry(to).or_insert(self.initial);
        if *credit < bytes {
            return false;
        }
        *credit -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn joins_are_a_burst_then_a_rate_and_never_beyond_the_ceiling() {
        let mut budget = JoinBudget::new(10, 60);
        assert_eq!(budget.ceiling(), 20);
        let admitted = (0..15).filter(|i| budget.admit(1 + i, T0)).count();
        assert_eq!(admitted, 10, "a burst of expectedNodes");
        assert!(!budget.admit(11, T0 + Duration::from_millis(500)), "half a token after half a second");
        assert!(budget.admit(11, T0 + Duration::from_secs(1)), "one a second at 60 a minute");
        let later = T0 + Duration::from_secs(3600);
        assert!(!budget.admit(20, later), "never beyond twice expectedNodes");
        assert!(budget.admit(19, later));
        assert_eq!(budget.held_back, 7);
        assert_eq!(JoinBudget::new(1, 60).ceiling(), 3, "at least two spare");
    }

    #[test]
    fn unproven_addresses_get_what_they_sent_and_one_datagram() {
        let a: SocketAddr = "192.0.2.1:7946".parse().unwrap();
        let mut credit = SendCredit::new(466, 1024);
        assert!(credit.spend(a, 466, T0), "one datagram to anyone");
        assert!(!credit.spend(a, 466, T0), "then nothing unasked");
        credit.received(a, 466);
        assert!(credit.spend(a, 466, T0), "as much as it sent");
        assert!(!credit.spend(a, 1, T0));
        credit.proven(a, T0);
        assert!((0..100).all(|_| credit.spend(a, 1400, T0)), "an address that answered a probe is proven");
        assert!(!credit.spend(a, 1400, T0 + PROVEN_FOR + Duration::from_secs(1)), "for a while");
        let seed: SocketAddr = "192.0.2.2:7946".parse().unwrap();
        credit.seed(seed);
        assert!((0..10).all(|_| credit.spend(seed, 1400, T0)), "configured seeds are the operator's word");
    }

    #[test]
    fn vouching_is_bounded_and_adopts_what_is_known() {
        let mut vouched = Vouched::new(16);
        let address = |i: u16| SocketAddr::from(([127, 0, 0, 1], 1000 + i));
        for i in 0..20 {
            vouched.vouch(address(i));
        }
        assert!(vouched.contains(&address(19)) && !vouched.contains(&address(0)), "cleared when full");
        vouched.adopt([address(0)]);
        assert!(vouched.contains(&address(0)) && !vouched.contains(&address(19)));
    }
}
