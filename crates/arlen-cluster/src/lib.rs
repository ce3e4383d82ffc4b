//! Arlen cluster core: the quorum model (CONTRACT §2) with quorum policies and
//! hysteresis, and the immutable [`Snapshot`] that the body, status and
//! headers of every response are computed from.
//!
//! **Architecture invariant:** this crate does no IO. It opens no files or
//! sockets and reads no clocks: time comes in through the [`Clock`] its
//! caller supplies.

#![forbid(unsafe_code)]

mod cell;
mod checks;
mod gate;
mod maintenance;
mod membership;
pub mod permits;
mod quorum;
mod snapshot;

pub use cell::{snapshot_channel, SnapshotPublisher, SnapshotReader};
pub use checks::{AppCheck, AppChecks, CheckKind, CheckRun};
pub use gate::{Clock, GateWindows, PendingTransition, QuorumGate, Timestamp};
pub use maintenance::Maintenance;
pub use membership::{
    Accusation, AccuserHealth, HeardClock, Member, MemberState, MembershipView, ProbeEvidence, Reachability,
    ReachabilityBoard, ReachabilityEvidence, SourceHealth, Verdict,
};
pub use quorum::{
    evaluate_quorum, evaluate_quorum_in_zones, evaluate_quorum_with, zone_tolerance, Quorum, QuorumPolicy,
    QuorumStatus, ZoneTolerance,
};
pub use snapshot::{ClusterHeaders, Lifecycle, NodeIdentity, Readiness, RuntimeSettings, Snapshot, UpstreamHealth};
