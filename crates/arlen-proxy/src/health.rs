//! The upstream health check: a `GET` of `proxy.healthPath` (2xx is healthy)
//! or, without one, a TCP connect, every `proxy.healthIntervalMs`, each
//! bounded by `proxy.healthTimeoutMs`. What it finds goes into the snapshot
//! (`/readyz`'s `upstream` check, `/clusterz`, `arlen_upstream_up`); a change is
//! logged.

use std::time::SystemTime;

use arlen_cluster::{SnapshotPublisher, UpstreamHealth};
use arlen_config::ProxyConfig;
use axum::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What is checked: the health URL, or `host:port` for a TCP connect.
fn target(config: &ProxyConfig) -> String {
    if config.health_path.is_empty() {
        config.upstream.trim_start_matches("http://").to_owned()
    } else {
        format!("{}{}", config.upstream, config.health_path)
    }
}

/// The state before the first check: unhealthy, nothing is known yet.
pub fn unchecked(config: &ProxyConfig) -> UpstreamHealth {
    UpstreamHealth { target: target(config), ok: false, detail: "not checked yet".to_owned(), since: SystemTime::now() }
}

/// Checks the upstream for ever, publishing each verdict. Runs until the task
/// is dropped.
pub async fn watch_upstream(config: ProxyConfig, publisher: SnapshotPublisher) {
    let target = target(&config);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.health_timeout));
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let mut last: Option<bool> = None;
    let mut since = SystemTime::now();
    let mut ticker = tokio::time::interval(config.health_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let verdict = tokio::time::timeout(config.health_timeout, check(&client, &config, &target)).await;
        let (ok, detail) = match verdict {
            Ok(Ok(detail)) => (true, detail),
            Ok(Err(detail)) => (false, detail),
            Err(_) => (false, format!("no answer within {} ms", config.health_timeout.as_millis())),
        };
        if last != Some(ok) {
            since = SystemTime::now();
            if ok {
                tracing::info!(upstream = %target, %detail, "upstream healthy");
            } else {
                tracing::warn!(upstream = %target, %detail, "upstream unhealthy: /readyz fails until it answers");
            }
            last = Some(ok);
        }
        publisher.set_upstream(UpstreamHealth { target: target.clone(), ok, detail, since });
    }
}

async fn check(client: &Client<HttpConnector, Body>, config: &ProxyConfig, target: &str) -> Result<String, String> {
    if config.health_path.is_empty() {
        return tokio::net::TcpStream::connect(target)
            .await
            .map(|_| "TCP connect succeeded".to_owned())
            .map_err(|error| format!("TCP connect failed: {error}"));
    }
    let uri: http::Uri = target.parse().map_err(|error| format!("bad health URL {target}: {error}"))?;
    let response = client.get(uri).await.map_err(|error| format!("GET failed: {error}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("GET {} answered {status}", config.health_path))
    } else {
        Err(format!("GET {} answered {status}", config.health_path))
    }
}
