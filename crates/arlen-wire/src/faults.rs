//! The body of `/_arlen/faults` — what `PUT` takes and `GET` answers —
//! in one shape, for the node that serves it and for `arlen up`, the drills
//! and the tests that send it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `PUT /_arlen/faults`: the rules that replace the current ones, and
/// optionally a fault of the gossip task itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsBody {
    pub rules: Vec<FaultRule>,
    /// Crash or stall the gossip task once (rehearses its supervision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_task: Option<TaskFault>,
}

impl FaultsBody {
    /// Rules only.
    pub fn rules(rules: Vec<FaultRule>) -> Self {
        Self { rules, gossip_task: None }
    }
}

/// `GET /_arlen/faults`: the rules in force and what they did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultsDocument {
    pub rules: Vec<FaultRule>,
    pub counters: FaultCounters,
}

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
    /// Drops everything between this node and `peer` (or every peer), one
    /// way or both.
    pub fn cut(peer: Option<SocketAddr>, direction: Direction) -> Self {
        Self { peer, direction, drop_percent: 100, delay_ms: 0 }
    }

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

    /// Whether the rule applies to a message to or from `peer` going `direction`.
    pub fn matches(&self, peer: SocketAddr, direction: Direction) -> bool {
        self.peer.is_none_or(|p| p == peer) && (self.direction == Direction::Both || self.direction == direction)
    }
}

/// A fault of the gossip task itself, taken once by the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFault {
    /// The task panics.
    Crash,
    /// The task stops making progress (awaits forever).
    Stall,
}

/// What happened to messages because of the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    pub dropped_inbound: u64,
    pub dropped_outbound: u64,
    pub delayed_outbound: u64,
}
