//! `/_arlen/stop-permits`: may a node be stopped now? For every asker at
//! once (CONTRACT §8). Behind the operations token (`observability.opsToken`):
//!
//! - `GET` lists the permits in force;
//! - `POST` `{"node": "node-2", "holder": "deploy-42", "ttl_seconds": 300}`
//!   grants one (200) only if the cluster keeps quorum with every permit in
//!   force counted as stopped, else 409 with the reason (404: no such
//!   member); the same holder asking again is granted again;
//! - `DELETE /_arlen/stop-permits/<node>` releases it.
//!
//! A permit expires after its TTL and is spent when its node is back (alive
//! under a new generation). Where permits live is the membership source's
//! [`PermitStore`]: an etcd transaction (any node may grant; exact), or this
//! process's memory, where only the lowest-named member alive grants and
//! others answer 421 naming it. A node that cannot vouch for its view
//! (partitioned) grants nothing (503).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arlen_cluster::permits::{decide, in_force, Needs, PermitStore, Refusal, StopPermit};
use arlen_cluster::{MemberState, QuorumStatus, Snapshot};
use arlen_wire::documents::StopPermits;
use axum::body::Body;
use axum::response::Response;
use http::header::{ALLOW, LOCATION};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde::Deserialize;

use crate::endpoints::{json_response, plain};

/// The path of the stop-permit endpoint.
pub const PERMITS_PATH: &str = "/_arlen/stop-permits";

/// The longest a permit may be asked for, and the default.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// A request body is small: bounded before it is parsed.
const MAX_BODY: usize = 4096;

/// Attempts of read-decide-write before answering 503 (each lost attempt
/// means another grant or release landed in between).
const ATTEMPTS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    node: String,
    holder: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

pub(crate) struct PermitsEndpoint {
    token_digest: [u8; 32],
    store: Arc<dyn PermitStore>,
    /// The store is this process's: only the authority grants.
    single_granter: bool,
}

impl std::fmt::Debug for PermitsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitsEndpoint").field("single_granter", &self.single_granter).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn document(permits: Vec<StopPermit>, store: &dyn PermitStore) -> StopPermits {
    StopPermits { permits, guarantee: store.guarantee().to_owned(), granted: None, refused: None }
}

impl PermitsEndpoint {
    pub(crate) fn new(token: &str, store: Arc<dyn PermitStore>, single_granter: bool) -> Self {
        Self { token_digest: crate::ops::digest(token.as_bytes()), store, single_granter }
    }

    /// True when the request is for this endpoint and bears the token.
    pub(crate) fn claims(&self, request: &Request<Body>) -> bool {
        let path = request.uri().path();
        let ours = path == PERMITS_PATH || path.strip_prefix(PERMITS_PATH).is_some_and(|rest| rest.starts_with('/'));
        ours && crate::ops::bears(request.headers(), &self.token_digest)
    }

    pub(crate) async fn answer(&self, request: Request<Body>, snapshot: &Snapshot) -> Response {
        let members = &snapshot.membership.members;
        if snapshot.quorum.status == QuorumStatus::Partitioned || !snapshot.membership.health.ok {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node cannot vouch for its view of the cluster (partitioned): it grants nothing; ask another\n",
            );
        }
        if self.single_granter {
            let authority =
                members.iter().filter(|m| m.state == MemberState::Alive).min_by(|a, b| a.node_id.cmp(&b.node_id));
            if let Some(authority) = authority.filter(|m| m.node_id != snapshot.identity.node_id) {
                let body = serde_json::json!({
                    "error": "misdirected",
                    "detail": format!("stop permits are granted by {}, the lowest-named member alive", authority.node_id),
                    "authority": authority.node_id,
                    "url": authority.http_url,
                });
                let mut response = json_response(StatusCode::MISDIRECTED_REQUEST, &body);
                if let Some(url) = &authority.http_url {
                    let target = format!("{}{}", url.trim_end_matches('/'), request.uri().path());
                    if let Ok(value) = HeaderValue::from_str(&target) {
                        response.headers_mut().insert(LOCATION, value);
                    }
                }
                return response;
            }
        }
        let path = request.uri().path().to_owned();
        let node_in_path =
            path.strip_prefix(PERMITS_PATH).and_then(|rest| rest.strip_prefix('/')).filter(|n| !n.is_empty());
        match (request.method().clone(), node_in_path) {
            (Method::GET | Method::HEAD, None) => match self.store.read().await {
                Ok((permits, _)) => {
                    json_response(StatusCode::OK, &document(in_force(permits, members, now_ms()), &*self.store))
                }
                Err(error) => unavailable(&error),
            },
            (Method::POST, None) => {
                let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(error) => return plain(StatusCode::BAD_REQUEST, format!("cannot read the body: {error}\n")),
                };
                let ask: Ask = match serde_json::from_slice(&body) {
                    Ok(ask) => ask,
                    Err(error) => {
                        return plain(
                            StatusCode::BAD_REQUEST,
                            format!("body: {error} (expected {{\"node\": …, \"holder\": …, \"ttl_seconds\": …}})\n"),
                        );
                    }
                };
                if let Some(problem) = ask_problem(&ask) {
                    return plain(StatusCode::BAD_REQUEST, format!("{problem}\n"));
                }
                self.acquire(ask, snapshot).await
            }
            (Method::DELETE, Some(node)) => self.release(node, snapshot).await,
            _ => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                let allow = if node_in_path.is_some() { "DELETE" } else { "GET, POST" };
                response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
                response
            }
        }
    }

    async fn acquire(&self, ask: Ask, snapshot: &Snapshot) -> Response {
        let ttl = ask.ttl_seconds.map_or(DEFAULT_TTL, Duration::from_secs);
        let changed = self
            .change(snapshot, |permits, now| {
                let needs = Needs::from(&snapshot.quorum);
                let generation = decide(&snapshot.membership.members, needs, &permits, &ask.node, &ask.holder)
                    .map_err(|refusal| {
                        let status = if matches!(refusal, Refusal::UnknownNode(_)) {
                            StatusCode::NOT_FOUND
                        } else {
                            StatusCode::CONFLICT
                        };
                        let mut answer = document(permits.clone(), &*self.store);
                        answer.refused = Some(refusal.to_string());
                        Box::new(json_response(status, &answer))
                    })?;
                let permit = StopPermit {
                    node: ask.node.clone(),
                    holder: ask.holder.clone(),
                    generation,
                    granted_unix_ms: now,
                    expires_unix_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                    granted_by: snapshot.identity.node_id.clone(),
                };
                let mut next: Vec<StopPermit> = permits.into_iter().filter(|p| p.node != ask.node).collect();
                next.push(permit.clone());
                Ok((next, permit))
            })
            .await;
        match changed {
            Ok((next, permit)) => {
                tracing::warn!(node = %permit.node, holder = %permit.holder, ttl_seconds = ttl.as_secs(), "stop permit granted");
                let mut answer = document(next, &*self.store);
                answer.granted = Some(permit);
                json_response(StatusCode::OK, &answer)
            }
            Err(response) => *response,
        }
    }

    async fn release(&self, node: &str, snapshot: &Snapshot) -> Response {
        let changed = self
            .change(snapshot, |permits, _| {
                if !permits.iter().any(|p| p.node == node) {
                    let mut answer = document(permits, &*self.store);
                    answer.refused = Some(format!("no permit to stop {node} is in force"));
                    return Err(Box::new(json_response(StatusCode::NOT_FOUND, &answer)));
                }
                Ok((permits.into_iter().filter(|p| p.node != node).collect(), ()))
            })
            .await;
        match changed {
            Ok((next, ())) => {
                tracing::warn!(node, "stop permit released");
                json_response(StatusCode::OK, &document(next, &*self.store))
            }
            Err(response) => *response,
        }
    }

    /// Read, decide, write only if nobody wrote in between (the store's
    /// compare-and-set), again on a lost race: `step` gets the permits in
    /// force and the time, and gives the next permits (or the answer that
    /// ends it, boxed). The permits written and what `step` made, or the answer.
    async fn change<T>(
        &self,
        snapshot: &Snapshot,
        mut step: impl FnMut(Vec<StopPermit>, u64) -> Result<(Vec<StopPermit>, T), Box<Response>>,
    ) -> Result<(Vec<StopPermit>, T), Box<Response>> {
        let unavailable = |error: &str| Box::new(unavailable(error));
        for _ in 0..ATTEMPTS {
            let (permits, version) = self.store.read().await.map_err(|error| unavailable(&error))?;
            let now = now_ms();
            let (next, made) = step(in_force(permits, &snapshot.membership.members, now), now)?;
            if self.store.write(version, next.clone()).await.map_err(|error| unavailable(&error))? {
                return Ok((next, made));
            }
        }
        Err(unavailable("too many concurrent changes to the permits; try again"))
    }
}

fn unavailable(error: &str) -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, format!("the permit store cannot answer: {error}\n"))
}

/// What is wrong with a request, naming the field.
fn ask_problem(ask: &Ask) -> Option<String> {
    let printable = |s: &str| s.chars().all(|c| !c.is_control());
    if ask.node.is_empty() || ask.node.len() > 128 || !printable(&ask.node) {
        return Some("node: 1 to 128 printable characters".to_owned());
    }
    if ask.holder.trim().is_empty() || ask.holder.len() > 128 || !printable(&ask.holder) {
        return Some("holder: who asks (a job, a script, an operator), 1 to 128 printable characters".to_owned());
    }
    match ask.ttl_seconds {
        Some(0) => Some("ttl_seconds: at least 1".to_owned()),
        Some(ttl) if ttl > MAX_TTL.as_secs() => Some(format!("ttl_seconds: at most {}", MAX_TTL.as_secs())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let ask = |node: &str, holder: &str, ttl: Option<u64>| Ask {
            node: node.into(),
            holder: holder.into(),
            ttl_seconds: ttl,
        };
        assert_eq!(ask_problem(&ask("node-1", "deploy", Some(60))), None);
        assert!(ask_problem(&ask("", "deploy", None)).unwrap().starts_with("node:"));
        assert!(ask_problem(&ask("node-1", " ", None)).unwrap().starts_with("holder:"));
        assert!(ask_problem(&ask("node-1", "a\u{7}", None)).unwrap().starts_with("holder:"));
        assert!(ask_problem(&ask("node-1", "x", Some(0))).unwrap().starts_with("ttl_seconds"));
        assert!(ask_problem(&ask("node-1", "x", Some(3601))).unwrap().contains("at most 3600"));
        assert!(
            serde_json::from_str::<Ask>(r#"{"node":"a","holder":"b","force":true}"#).is_err(),
            "unknown fields refused"
        );
    }
}
