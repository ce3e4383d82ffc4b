//! `arlen stop-permit acquire|release|list`: the stop-permit endpoint for
//! scripts. A node that does not grant (421) names the one that does; the
//! request is sent there once.

use std::process::ExitCode;
use std::time::Duration;

use arlen_wire::documents::StopPermits;

use crate::cli::StopPermitCommand;

/// The variable holding the operations token (`observability.opsToken`).
pub const OPS_TOKEN_VARIABLE: &str = "ARLEN_OPS_TOKEN";

const PATH: &str = "/_arlen/stop-permits";

pub fn run(command: StopPermitCommand) -> ExitCode {
    let Some(token) = std::env::var(OPS_TOKEN_VARIABLE).ok().filter(|t| !t.trim().is_empty()) else {
        shout!(
            "arlen stop-permit: set {OPS_TOKEN_VARIABLE} to the cluster's operations token (observability.opsToken)"
        );
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let client = crate::probe::client(Duration::from_secs(10));
        let (url, json) = match &command {
            StopPermitCommand::Acquire { url, json, .. }
            | StopPermitCommand::Release { url, json, .. }
            | StopPermitCommand::List { url, json } => (url.trim_end_matches('/').to_owned(), *json),
        };
        let holder = holder_of(&command);
        let request = |client: &reqwest::Client, base: &str| match &command {
            StopPermitCommand::Acquire { node, ttl_seconds, .. } => client
                .post(format!("{base}{PATH}"))
                .json(&serde_json::json!({ "node": node, "holder": holder, "ttl_seconds": ttl_seconds })),
            StopPermitCommand::Release { node, .. } => client.delete(format!("{base}{PATH}/{node}")),
            StopPermitCommand::List { .. } => client.get(format!("{base}{PATH}")),
        };
        let told = |authority: &str, next: &str| say!("asking {authority} ({next}): it grants stop permits");
        match send(&client, &url, token.trim(), request, told).await {
            Ok((status, body)) => report(status, &body, json, &command),
            Err(error) => {
                shout!("arlen stop-permit: {error}");
                ExitCode::from(3)
            }
        }
    })
}

/// Sends a stop-permit request built by `request` for a node's base URL,
/// with the operations token; a node that does not grant (421) names the
/// one that does, and the request goes there once (`told` hears where).
/// The status and body of the last answer.
pub(crate) async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    mut told: impl FnMut(&str, &str),
) -> Result<(reqwest::StatusCode, String), String> {
    let mut base = url.trim_end_matches('/').to_owned();
    for _ in 0..2 {
        let response = request(client, &base).bearer_auth(token).send().await.map_err(|e| format!("{base}: {e}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::MISDIRECTED_REQUEST {
            return Ok((status, body));
        }
        let named: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(next) = named["url"].as_str().filter(|url| plain_http_url(url)) else {
            return Ok((status, body));
        };
        told(named["authority"].as_str().unwrap_or("?"), next);
        base = next.trim_end_matches('/').to_owned();
    }
    Err("the nodes keep naming another node; is the cluster changing?".to_owned())
}

/// The token goes where a node points only when it is a plain http(s) URL
/// carrying no credentials.
fn plain_http_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !rest.split('/').next().unwrap_or_default().contains('@')
}

fn holder_of(command: &StopPermitCommand) -> String {
    match command {
        StopPermitCommand::Acquire { holder: Some(holder), .. } => holder.clone(),
        _ => default_holder(),
    }
}

fn default_holder() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "somewhere".to_owned(), |h| h.trim().to_owned());
    format!("{user}@{host}")
}

fn report(status: reqwest::StatusCode, body: &str, json: bool, command: &StopPermitCommand) -> ExitCode {
    let Ok(document) = serde_json::from_str::<StopPermits>(body) else {
        shout!("arlen stop-permit: HTTP {status}: {}", body.trim());
        return ExitCode::from(match status.as_u16() {
            400 | 401 | 403 | 404 => 2,
            _ => 3,
        });
    };
    if json {
        say!("{}", body.trim());
    } else {
        match (&document.granted, &document.refused) {
            (Some(permit), _) => say!(
                "granted: {} may be stopped by {} (expires in {} s)",
                permit.node,
                permit.holder,
                permit.expires_unix_ms.saturating_sub(permit.granted_unix_ms) / 1000
            ),
            (None, Some(reason)) => say!("refused: {reason}"),
            (None, None) => {
                if matches!(command, StopPermitCommand::Release { .. }) {
                    say!("released");
                }
            }
        }
        for permit in &document.permits {
            say!("  permit: {} held by {} (granted by {})", permit.node, permit.holder, permit.granted_by);
        }
        say!("  ({})", document.guarantee);
    }
    if status.is_success() {
        ExitCode::SUCCESS
    } else if status == reqwest::StatusCode::NOT_FOUND {
        // No such member, or no such permit: the question was wrong.
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}
