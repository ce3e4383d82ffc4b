//! Wires the gossip transport's fault rules to `/_arlen/faults`.

use std::sync::Arc;

use arlen_config::Config;
use arlen_http::ops::FaultControl;
use arlen_http::Runtime;
use arlen_membership::{FaultRules, RunningSource};
use arlen_wire::faults::{FaultsBody, FaultsDocument};

struct RulesControl(FaultRules);

impl FaultControl for RulesControl {
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(FaultsDocument { rules: self.0.list(), counters: self.0.counters() }).unwrap_or_default()
    }

    fn replace(&self, body: &[u8]) -> Result<(), String> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        let parsed: FaultsBody = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| format!("bad fault rules at {}: {}", error.path(), error.inner()))?;
        self.0.replace(parsed.rules)?;
        if let Some(fault) = parsed.gossip_task {
            tracing::warn!(?fault, "gossip task fault injected");
            self.0.inject_task_fault(fault);
        }
        Ok(())
    }

    fn heal(&self) {
        self.0.heal();
    }
}

/// Enables the endpoint when the configuration asks for it and it can work.
pub(crate) fn enable_fault_endpoint(config: &Config, runtime: &Runtime, membership: &RunningSource) {
    if !config.cluster.fault_injection_enabled {
        return;
    }
    let token = &config.observability.ops_token;
    match (membership.fault_rules(), token.is_empty()) {
        (None, _) => tracing::warn!(
            source = membership.name(),
            "cluster.faultInjection.enabled only applies to the gossip membership source; /_arlen/faults stays off"
        ),
        (Some(_), true) => {
            tracing::warn!("cluster.faultInjection.enabled without observability.opsToken: /_arlen/faults stays off")
        }
        (Some(rules), false) => {
            runtime.enable_fault_endpoint(token.clone(), Arc::new(RulesControl(rules)));
            tracing::warn!("fault injection is on: /_arlen/faults accepts rules from holders of the operations token");
        }
    }
}

/// Enables `/_arlen/stop-permits` when an operations token is set: permits
/// in the source's shared store (etcd: a transaction), else in this node's
/// memory with one member granting for all.
pub(crate) fn enable_stop_permits(config: &Config, runtime: &Runtime, membership: &RunningSource) {
    let token = &config.observability.ops_token;
    if token.is_empty() || !config.cluster.enabled {
        return;
    }
    let (store, single_granter): (Arc<dyn arlen_cluster::permits::PermitStore>, bool) = match membership.permit_store()
    {
        Some(shared) => (shared, false),
        None => (Arc::new(arlen_cluster::permits::LocalPermits::default()), true),
    };
    tracing::info!(
        guarantee = store.guarantee(),
        "stop permits at /_arlen/stop-permits for holders of the operations token"
    );
    runtime.enable_stop_permits(token, store, single_granter);
}
