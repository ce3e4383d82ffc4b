//! What this build of the runtime is: its version and the commit it was
//! built from. Members tell each other (gossip, etcd records), `/clusterz`
//! lists it per member, `arlen triage` finds mixed versions, and `/metrics`
//! has `arlen_build_info`.

/// The runtime's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit it was built from, 12 hex digits; empty outside a git checkout.
pub const GIT_SHA: &str = env!("ARLEN_GIT_SHA");

/// `VERSION+GIT_SHA`, or `VERSION` without a commit: what members gossip.
pub fn software() -> String {
    if GIT_SHA.is_empty() {
        VERSION.to_owned()
    } else {
        format!("{VERSION}+{GIT_SHA}")
    }
}
