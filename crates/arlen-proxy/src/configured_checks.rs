//! The application's checks from configuration (`checks.readiness`,
//! `checks.liveness`), for applications in any language: a `GET` on the
//! upstream (or any `http://` URL) that must answer 2xx, or a command that
//! must exit 0. Each becomes an [`arlen_http::checks::Check`], run like a
//! check registered from Rust.

use arlen_cluster::CheckKind;
use arlen_config::{CheckTarget, ChecksConfig, ConfiguredCheck};
use arlen_http::checks::{Check, CheckResult};
use axum::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// At most this much of a command's output is kept as the check's detail.
const DETAIL_BYTES: usize = 512;

/// Every configured check, ready to run. `upstream` is `proxy.upstream`
/// (the loader refuses a `/path` target without one).
pub fn configured_checks(config: &ChecksConfig, upstream: Option<&str>) -> Vec<Check> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let kinds = [(CheckKind::Readiness, &config.readiness), (CheckKind::Liveness, &config.liveness)];
    kinds
        .into_iter()
        .flat_map(|(kind, checks)| checks.iter().map(move |check| (kind, check)))
        .filter_map(|(kind, check)| {
            let made = one(check, kind, upstream, client.clone());
            if let Err(error) = &made {
                tracing::error!(%error, "configured check not run");
            }
            made.ok().map(|c| c.interval(config.interval).timeout(config.timeout))
        })
        .collect()
}

fn one(
    check: &ConfiguredCheck,
    kind: CheckKind,
    upstream: Option<&str>,
    client: Client<HttpConnector, Body>,
) -> Result<Check, arlen_http::checks::CheckError> {
    let run = match &check.target {
        CheckTarget::UpstreamPath(path) => Target::Get(format!("{}{path}", upstream.unwrap_or_default())),
        CheckTarget::Url(url) => Target::Get(url.clone()),
        CheckTarget::Command(command) => Target::Command(command.clone()),
    };
    let run = move || {
        let (run, client) = (run.clone(), client.clone());
        async move { run.once(&client).await }
    };
    match kind {
        CheckKind::Readiness => Check::readiness(&check.name, run),
        CheckKind::Liveness => Check::liveness(&check.name, run),
    }
}

#[derive(Debug, Clone)]
enum Target {
    Get(String),
    Command(String),
}

impl Target {
    async fn once(&self, client: &Client<HttpConnector, Body>) -> CheckResult {
        match self {
            Target::Get(url) => {
                let uri: http::Uri = url.parse().map_err(|error| format!("bad URL {url}: {error}"))?;
                let response = client.get(uri).await.map_err(|error| format!("GET {url} failed: {error}"))?;
                let status = response.status();
                if status.is_success() {
                    Ok(format!("GET {url} answered {status}"))
                } else {
                    Err(format!("GET {url} answered {status}"))
                }
            }
            Target::Command(command) => {
                // Killed when the check's timeout drops this future.
                let output = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|error| format!("cannot run `{command}`: {error}"))?;
                let said = tail(&output.stdout, &output.stderr);
                match output.status.code() {
                    Some(0) => Ok(if said.is_empty() { format!("`{command}` exited 0") } else { said }),
                    Some(code) => Err(format!(
                        "`{command}` exited {code}{}",
                        if said.is_empty() { String::new() } else { format!(": {said}") }
                    )),
                    None => Err(format!("`{command}` was killed by a signal")),
                }
            }
        }
    }
}

/// The end of what a command said (stderr first, where failures go),
/// bounded, on one line.
fn tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) { stderr } else { stdout };
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(DETAIL_BYTES)..]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(readiness: &str) -> ChecksConfig {
        ChecksConfig {
            readiness: arlen_config::parse_checks(readiness).unwrap(),
            liveness: Vec::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn a_command_check_passes_on_exit_0_fails_with_what_it_said_and_is_killed_at_the_timeout() {
        let checks =
            configured_checks(&config("ok=exec:echo fine, bad=exec:echo broken >&2; exit 3, slow=exec:sleep 5"), None);
        assert_eq!(checks.len(), 3);
        assert_eq!(checks[0].run_once().await, Ok("fine".to_owned()));
        assert_eq!(checks[1].run_once().await, Err("`echo broken >&2; exit 3` exited 3: broken".to_owned()));
        let started = std::time::Instant::now();
        assert_eq!(checks[2].run_once().await, Err("no answer within 500 ms".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_http_check_wants_2xx() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new()
                .route("/up", axum::routing::get(|| async { "up" }))
                .route("/down", axum::routing::get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }));
            axum::serve(listener, app).await.unwrap();
        });
        let upstream = format!("http://{address}");
        let checks = configured_checks(&config(&format!("up=/up, down={upstream}/down")), Some(&upstream));
        assert_eq!(checks[0].run_once().await, Ok(format!("GET {upstream}/up answered 200 OK")));
        assert_eq!(checks[1].run_once().await, Err(format!("GET {upstream}/down answered 503 Service Unavailable")));
    }
}
