//! Hysteresis for the quorum verdict that readiness acts on.
//!
//! A loss of quorum takes effect after `loss_grace`; a recovery after quorum
//! has held for `recovery_stable`. A blip shorter than the window cancels the
//! pending transition. With both windows zero the gate follows the raw verdict
//! at once (the contract's behaviour). Pure: time is passed in.

use std::time::{Duration, SystemTime};

/// A moment on both clocks: monotonic (for arithmetic) and wall (for display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Time since the clock's origin; only compared with the same clock.
    pub monotonic: Duration,
    pub wall: SystemTime,
}

impl Timestamp {
    pub fn after(self, delay: Duration) -> Self {
        Self { monotonic: self.monotonic + delay, wall: self.wall + delay }
    }
}

/// Where the time comes from. The core reads no clocks; the runtime supplies one.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// The hysteresis windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateWindows {
    pub loss_grace: Duration,
    pub recovery_stable: Duration,
}

/// A transition waiting for its window to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingTransition {
    pub to_met: bool,
    pub effective_at: Timestamp,
}

/// The gated quorum verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumGate {
    /// The verdict readiness uses (as of `since`).
    pub met: bool,
    pub since: Timestamp,
    pub pending: Option<PendingTransition>,
}

impl QuorumGate {
    pub fn new(raw_met: bool, now: Timestamp) -> Self {
        Self { met: raw_met, since: now, pending: None }
    }

    /// The gate after observing `raw_met` at `now`.
    pub fn advance(self, raw_met: bool, now: Timestamp, windows: GateWindows) -> Self {
        let mut gate = self.settle(now);
        if raw_met == gate.met {
            gate.pending = None;
            return gate;
        }
        if gate.pending.is_some() {
            return gate;
        }
        let delay = if raw_met { windows.recovery_stable } else { windows.loss_grace };
        if delay.is_zero() {
            return Self { met: raw_met, since: now, pending: None };
        }
        gate.pending = Some(PendingTransition { to_met: raw_met, effective_at: now.after(delay) });
        gate
    }

    /// Applies a pending transition whose time has come.
    pub fn settle(self, now: Timestamp) -> Self {
        match self.pending {
            Some(p) if p.effective_at.monotonic <= now.monotonic => {
                Self { met: p.to_met, since: p.effective_at, pending: None }
            }
            _ => self,
        }
    }

    /// The verdict at `now` (a due pending transition counts as applied).
    pub fn met_at(&self, now: Duration) -> bool {
        match self.pending {
            Some(p) if p.effective_at.monotonic <= now => p.to_met,
            _ => self.met,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp { monotonic: Duration::from_millis(ms), wall: SystemTime::UNIX_EPOCH + Duration::from_millis(ms) }
    }

    const WINDOWS: GateWindows =
        GateWindows { loss_grace: Duration::from_millis(1000), recovery_stable: Duration::from_millis(500) };

    #[test]
    fn zero_windows_follow_the_raw_verdict() {
        let gate = QuorumGate::new(true, at(0)).advance(false, at(10), GateWindows::default());
        assert_eq!((gate.met, gate.since, gate.pending), (false, at(10), None));
    }

    #[test]
    fn a_blip_shorter_than_the_grace_never_flips() {
        let gate = QuorumGate::new(true, at(0)).advance(false, at(100), WINDOWS);
        assert!(gate.met && gate.met_at(Duration::from_millis(900)));
        assert_eq!(gate.pending.unwrap().effective_at, at(1100));
        let gate = gate.advance(true, at(600), WINDOWS);
        assert_eq!((gate.met, gate.pending, gate.since), (true, None, at(0)));
    }

    #[test]
    fn a_long_loss_flips_at_the_end_of_the_grace() {
        let gate = QuorumGate::new(true, at(0)).advance(false, at(100), WINDOWS);
        assert!(!gate.met_at(Duration::from_millis(1100)));
        let gate = gate.advance(false, at(1500), WINDOWS);
        assert_eq!((gate.met, gate.since, gate.pending), (false, at(1100), None));
        // Recovery must hold for 500 ms.
        let gate = gate.advance(true, at(2000), WINDOWS);
        assert!(!gate.met && gate.met_at(Duration::from_millis(2500)));
        let gate = gate.settle(at(2600));
        assert_eq!((gate.met, gate.since), (true, at(2500)));
    }

    #[test]
    fn recovery_interrupted_starts_over() {
        let gate = QuorumGate::new(false, at(0)).advance(true, at(0), WINDOWS);
        let gate = gate.advance(false, at(300), WINDOWS).advance(true, at(400), WINDOWS);
        assert_eq!(gate.pending.unwrap().effective_at, at(900));
    }
}
