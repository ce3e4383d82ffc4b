//! Reading a node's state over HTTP: `/readyz` (JSON) and `/clusterz`.
//! Shared by `arlen up` and the tools that watch a cluster.

use std::time::Duration;

use arlen_http::documents::ClusterDocument;

/// What one node said, or that it did not answer.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub reachable: bool,
    pub ready: Option<bool>,
    pub clusterz: Option<ClusterDocument>,
}

impl NodeReport {
    pub fn status(&self) -> &str {
        self.clusterz.as_ref().map_or("-", |doc| doc.cluster.quorum.status.as_str())
    }

    pub fn observed(&self) -> Option<u32> {
        self.clusterz.as_ref().map(|doc| doc.cluster.observed_nodes)
    }

    pub fn expected(&self) -> Option<u32> {
        self.clusterz.as_ref().map(|doc| doc.cluster.expected_nodes)
    }

    /// Ids of the members this node reports alive.
    pub fn alive_members(&self) -> Vec<String> {
        self.clusterz.as_ref().map(|doc| doc.alive_members().map(str::to_owned).collect()).unwrap_or_default()
    }
}

/// An HTTP client with short timeouts, for polling nodes.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(2).build().expect("http client")
}

/// The variable holding the bearer token that shows member details
/// (`observability.detailsToken`) to the operator's tools.
pub const DETAILS_TOKEN_VARIABLE: &str = "ARLEN_DETAILS_TOKEN";

/// `Authorization: Bearer <token>` from [`DETAILS_TOKEN_VARIABLE`], when it is
/// set (marked sensitive, never printed). Sent only to the reserved endpoints,
/// never to an application path.
pub fn details_authorization() -> Option<reqwest::header::HeaderValue> {
    let token = std::env::var(DETAILS_TOKEN_VARIABLE).ok().filter(|t| !t.trim().is_empty())?;
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Reads `/clusterz` and `/readyz` of the node at `url`.
pub async fn probe(client: &reqwest::Client, url: &str) -> NodeReport {
    let base = url.trim_end_matches('/');
    let clusterz = client.get(format!("{base}/clusterz")).send().await;
    let clusterz = match clusterz {
        Ok(response) => response.json::<ClusterDocument>().await.ok(),
        Err(_) => None,
    };
    let ready = client.get(format!("{base}/readyz")).send().await.map(|response| response.status().is_success()).ok();
    match (clusterz, ready) {
        (Some(clusterz), Some(ready)) => NodeReport { reachable: true, ready: Some(ready), clusterz: Some(clusterz) },
        _ => NodeReport { reachable: false, ready: None, clusterz: None },
    }
}
