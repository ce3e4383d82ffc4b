//! Operations endpoints under `/_arlen/`. Today: `/_arlen/faults`, the
//! fault-injection rules of the gossip transport, for drills.
//!
//! The endpoint exists only when the node enabled it (fault injection on and
//! an operations token set), and answers only requests that carry
//! `Authorization: Bearer <token>` (SHA-256 digests compared in constant
//! time, so neither the token's bytes nor its length leak). Any other
//! request goes to the application as if the path were not reserved, so a
//! production node shows no trace of it.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::header::{ALLOW, AUTHORIZATION};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;

use crate::endpoints::{json_response, plain};

/// The path of the fault-rules endpoint.
pub const FAULTS_PATH: &str = "/_arlen/faults";

/// What the fault endpoint controls (implemented over the gossip transport's rules).
pub trait FaultControl: Send + Sync + 'static {
    /// The current rules and counters, as JSON.
    fn describe(&self) -> serde_json::Value;
    /// Replaces every rule from a JSON body; the error names the field.
    fn replace(&self, body: &[u8]) -> Result<(), String>;
    /// Removes every rule.
    fn heal(&self);
}

pub(crate) struct Ops {
    token_digest: [u8; 32],
    faults: Arc<dyn FaultControl>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Compares two digests in time that does not depend on their contents.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// Whether `headers` carry `Authorization: Bearer <token>` for the token
/// whose digest is `token_digest` (compared without leaking length or bytes).
pub(crate) fn bears(headers: &http::HeaderMap, token_digest: &[u8; 32]) -> bool {
    let presented =
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    constant_time_eq(&digest(presented.trim().as_bytes()), token_digest)
}

impl Ops {
    pub(crate) fn new(token: String, faults: Arc<dyn FaultControl>) -> Self {
        Self { token_digest: digest(token.as_bytes()), faults }
    }

    /// True when the request is for an operations endpoint and is authorised.
    pub(crate) fn claims(&self, request: &Request<Body>) -> bool {
        let path = request.uri().path();
        if path != FAULTS_PATH && path != "/_arlen/faults/" {
            return false;
        }
        bears(request.headers(), &self.token_digest)
    }

    pub(crate) async fn answer(&self, request: Request<Body>, max_body: usize) -> Response {
        match *request.method() {
            Method::GET | Method::HEAD => json_response(StatusCode::OK, &self.faults.describe()),
            Method::DELETE => {
                self.faults.heal();
                tracing::warn!("fault rules removed");
                json_response(StatusCode::OK, &self.faults.describe())
            }
            Method::PUT => {
                let body = match http_body_util::Limited::new(request.into_body(), max_body).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(error) => return plain(StatusCode::BAD_REQUEST, format!("cannot read the body: {error}\n")),
                };
                match self.faults.replace(&body) {
                    Ok(()) => {
                        tracing::warn!(rules = %self.faults.describe()["rules"], "fault rules replaced");
                        json_response(StatusCode::OK, &self.faults.describe())
                    }
                    Err(error) => plain(StatusCode::BAD_REQUEST, format!("{error}\n")),
                }
            }
            _ => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, PUT, DELETE"));
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_without_regard_to_length() {
        let token = digest(b"0123456789abcdef0123456789abcdef");
        assert!(constant_time_eq(&digest(b"0123456789abcdef0123456789abcdef"), &token));
        assert!(!constant_time_eq(&digest(b"0123456789abcdef0123456789abcdeF"), &token));
        assert!(!constant_time_eq(&digest(b"0123456789abcdef0123456789abcdef0"), &token));
        assert!(!constant_time_eq(&digest(b""), &token));
    }
}
