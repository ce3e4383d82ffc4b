//! Arlen cluster core: the quorum model (CONTRACT §2) and the immutable
//! [`Snapshot`] that the body, status and headers of every response are
//! computed from.
//!
//! **Architecture invariant:** this crate does no IO. It opens no files or
//! sockets and reads no clocks; membership sources and the HTTP layer bring
//! time and the outside world to it.

#![forbid(unsafe_code)]

mod quorum;
mod snapshot;

pub use quorum::{evaluate_quorum, Quorum, QuorumStatus};
pub use snapshot::{
    snapshot_channel, ClusterHeaders, HeardClock, Lifecycle, Member, MemberState, MembershipView, NodeIdentity,
    Readiness, RuntimeSettings, Snapshot, SnapshotPublisher, SnapshotReader, SourceHealth, CLUSTER_HEADER_NAMES,
};
