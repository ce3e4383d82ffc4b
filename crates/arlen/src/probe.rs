//! Reading a node's state over HTTP: `/readyz` (JSON) and `/clusterz`.
//! Shared by `arlen up` and the tools that watch a cluster.

use std::time::Duration;

use serde_json::Value;

/// What one node said, or that it did not answer.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub reachable: bool,
    pub ready: Option<bool>,
    pub clusterz: Option<Value>,
}

impl NodeReport {
    pub fn status(&self) -> &str {
        self.cluster_field(&["quorum", "status"]).and_then(Value::as_str).unwrap_or("-")
    }

    pub fn observed(&self) -> Option<u64> {
        self.cluster_field(&["observed_nodes"]).and_then(Value::as_u64)
    }

    pub fn expected(&self) -> Option<u64> {
        self.cluster_field(&["expected_nodes"]).and_then(Value::as_u64)
    }

    /// Ids of the members this node reports alive.
    pub fn alive_members(&self) -> Vec<String> {
        self.cluster_field(&["members"])
            .and_then(Value::as_array)
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["state"] == "alive")
                    .filter_map(|m| m["node_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cluster_field(&self, path: &[&str]) -> Option<&Value> {
        let mut value = self.clusterz.as_ref()?.get("cluster")?;
        for key in path {
            value = value.get(key)?;
        }
        Some(value)
    }
}

/// An HTTP client with short timeouts, for polling nodes.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(2).build().expect("http client")
}

/// Reads `/clusterz` and `/readyz` of the node at `url`.
pub async fn probe(client: &reqwest::Client, url: &str) -> NodeReport {
    let base = url.trim_end_matches('/');
    let clusterz = client.get(format!("{base}/clusterz")).send().await;
    let clusterz = match clusterz {
        Ok(response) => response.json::<Value>().await.ok(),
        Err(_) => None,
    };
    let ready = client.get(format!("{base}/readyz")).send().await.map(|response| response.status().is_success()).ok();
    match (clusterz, ready) {
        (Some(clusterz), Some(ready)) => NodeReport { reachable: true, ready: Some(ready), clusterz: Some(clusterz) },
        _ => NodeReport { reachable: false, ready: None, clusterz: None },
    }
}
