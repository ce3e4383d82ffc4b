//! Sidecar mode: `arlen serve --upstream URL` in front of any HTTP
//! application. Every request the runtime does not answer itself (the
//! reserved endpoints come first) is forwarded to the upstream by [`Proxy`]:
//! pooled keep-alive connections (a pool fitted to the one upstream on
//! hyper's HTTP/1 connection API, `upstream.rs`), bodies streamed both
//! ways, hop-by-hop headers removed, the forwarding headers the runtime's own
//! and the path normalised ([`forwarding`]), the runtime's `traceparent` sent
//! on, `Upgrade` (WebSocket) passed through — never `Upgrade: h2c`, which
//! would turn the connection into a tunnel past the runtime.
//! The runtime puts the cluster, identity and trace headers on every answer,
//! the upstream's own 4xx and 5xx included. A connect failure is a `502`, a
//! response head that does not arrive in time a `504`, each with
//! `X-Arlen-Upstream-Error` naming why — never a hang.
//!
//! [`watch_upstream`] checks the upstream's health (a health path, or a TCP
//! connect) and publishes it into the snapshot, so `/readyz` fails while the
//! upstream does (`/livez` never does).

#![forbid(unsafe_code)]

mod configured_checks;
mod forwarding;
mod health;

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arlen_config::ProxyConfig;
use arlen_http::connections::{Claim, Descriptors, HoldUntilDone, UPSTREAM_IDLE_POOL};
use arlen_http::trace::RequestIds;
use arlen_http::PeerAddr;
use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

mod upstream;

pub use configured_checks::configured_checks;
pub use health::{unchecked, watch_upstream};

/// Bytes read ahead from the upstream per connection at most.
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// Names why the sidecar answered instead of the upstream.
pub const X_ARLEN_UPSTREAM_ERROR: HeaderName = HeaderName::from_static(arlen_wire::headers::UPSTREAM_ERROR);

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), and
/// the settings of an h2c upgrade (never forwarded either).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HTTP2_SETTINGS,
];

/// The reverse proxy: a tower service, cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Proxy {
    pool: Arc<upstream::UpstreamPool>,
    upstream: Uri,
    response_timeout: Duration,
    tunnel_idle_timeout: Duration,
    forwarding: Arc<forwarding::Forwarding>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("upstream", &self.upstream).finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(config: &ProxyConfig) -> Self {
        let upstream: Uri = config.upstream.parse().expect("proxy.upstream is validated as http://host:port");
        let authority = upstream.authority().map_or_else(String::new, |a| a.as_str().to_owned());
        // UPSTREAM_READ_BUFFER: what one response may have buffered from the
        // upstream while its client does not read (the rest waits in the
        // upstream's socket).
        let pool = Arc::new(upstream::UpstreamPool::new(
            authority,
            config.connect_timeout,
            UPSTREAM_READ_BUFFER,
            UPSTREAM_IDLE_POOL,
        ));
        let forwarding = Arc::new(forwarding::Forwarding::new(config.trusted_proxies.clone()));
        Self {
            pool,
            upstream,
            response_timeout: config.response_timeout,
            tunnel_idle_timeout: config.tunnel_idle_timeout,
            forwarding,
        }
    }

    /// A router that sends every request to the upstream (the runtime's
    /// reserved endpoints are answered before it is reached).
    pub fn router(config: &ProxyConfig) -> axum::Router {
        axum::Router::new().fallback_service(Self::new(config))
    }

    async fn forward(self, mut request: Request<Body>) -> Response {
        let upgrade = wants_upgrade(request.headers());
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let path = match forwarding::normalise_path(parts.uri.path()) {
            Ok(path) => path,
            Err(bad) => return failure(StatusCode::BAD_REQUEST, "bad_target", bad.explanation()),
        };
        // Origin form on the upstream connection; the client's `Host` goes on
        // (the upstream's authority when it sent none). A target already in
        // origin form with a normal path (the usual case) goes as it came.
        let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
        if !(origin_form && matches!(path, Cow::Borrowed(_))) {
            let target = match parts.uri.query() {
                Some(query) => Cow::Owned(format!("{path}?{query}")),
                None => path,
            };
            parts.uri = match Uri::builder().path_and_query(target.as_ref()).build() {
                Ok(uri) => uri,
                Err(_) => {
                    return failure(StatusCode::BAD_REQUEST, "bad_target", "the request target cannot be forwarded")
                }
            };
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = self.upstream.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        parts.version = http::Version::HTTP_11;
        let peer = parts.extensions.get::<PeerAddr>().map(|peer| peer.0.ip());
        let ids = parts.extensions.get::<RequestIds>();
        let traceparent = ids.and_then(RequestIds::traceparent).cloned();
        let request_id = ids.and_then(RequestIds::request_id).cloned();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        self.forwarding.apply(&mut parts.headers, peer);
        if let Some(traceparent) = traceparent {
            parts.headers.insert(arlen_http::trace::TRACEPARENT, traceparent);
        }
        // The application logs under the id the client gets back.
        if let Some(request_id) = request_id {
            parts.headers.insert(arlen_http::trace::X_REQUEST_ID, request_id);
        }
        // The upstream connection this request takes (given back with the
        // response's end); a tunnel takes both of its sides for its life.
        let descriptors = Descriptors::global();
        let Some(upstream_descriptor) = descriptors.take(1, Claim::Application) else {
            return failure(StatusCode::SERVICE_UNAVAILABLE, "descriptor_limit", "the node has no descriptor to spare");
        };
        let tunnel_descriptors = if client_side.is_some() {
            let Some(guard) = descriptors.take(1, Claim::Application) else {
                return failure(StatusCode::SERVICE_UNAVAILABLE, "descriptor_limit", "no descriptor for a tunnel");
            };
            Some(guard)
        } else {
            None
        };
        let outgoing = Request::from_parts(parts, body);
        let answered = tokio::time::timeout(self.response_timeout, self.pool.send(outgoing)).await;
        let (mut response, lease) = match answered {
            Err(_) => {
                return failure(StatusCode::GATEWAY_TIMEOUT, "timeout", "the upstream did not answer in time");
            }
            Ok(Err(upstream::SendError::Connect(error))) => {
                tracing::warn!(upstream = %self.upstream, %error, "cannot connect to the upstream");
                return failure(StatusCode::BAD_GATEWAY, "connect_failed", "the upstream cannot be reached");
            }
            Ok(Err(upstream::SendError::Request(error))) => {
                if is_body_limit(&error) {
                    return failure(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body too large");
                }
                tracing::warn!(upstream = %self.upstream, %error, "the upstream request failed");
                return failure(StatusCode::BAD_GATEWAY, "upstream_failed", "the upstream failed to answer");
            }
            Ok(Ok(answered)) => answered,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The upgraded connection is the tunnel's, never the pool's.
            lease.discard();
            if let (Some(client_side), Some(client_descriptor)) = (client_side, tunnel_descriptors) {
                let upstream_side = hyper::upgrade::on(&mut response);
                let idle_timeout = self.tunnel_idle_timeout;
                tokio::spawn(async move {
                    let _descriptors = (upstream_descriptor, client_descriptor);
                    match tokio::try_join!(client_side, upstream_side) {
                        Ok((client, upstream)) => tunnel(client, upstream, idle_timeout).await,
                        Err(error) => tracing::debug!(%error, "upgrade failed"),
                    }
                });
            }
            return response.map(|_| Body::empty());
        }
        strip_hop_by_hop(response.headers_mut(), false);
        // The descriptor and the connection go back at the body's end.
        response.map(|body| Body::new(HoldUntilDone::new(body, Some((upstream_descriptor, lease)))))
    }
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.forward(request).await) })
    }
}

/// Copies both ways until either side ends or neither sends a byte for
/// `idle_timeout`.
async fn tunnel(client: hyper::upgrade::Upgraded, upstream: hyper::upgrade::Upgraded, idle_timeout: Duration) {
    let activity = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let (mut client, mut upstream) = (
        Active { io: TokioIo::new(client), activity: activity.clone(), started },
        Active { io: TokioIo::new(upstream), activity: activity.clone(), started },
    );
    let copying = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copying);
    loop {
        let last = Duration::from_millis(activity.load(std::sync::atomic::Ordering::Relaxed));
        let idle_until = started + last + idle_timeout;
        tokio::select! {
            ended = copying.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "upgraded connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                let now = Duration::from_millis(activity.load(std::sync::atomic::Ordering::Relaxed));
                if now == last {
                    tracing::debug!(idle_seconds = idle_timeout.as_secs(), "upgraded connection idle; closed");
                    return;
                }
            }
        }
    }
}

/// An upgraded side that notes when bytes last moved through it.
struct Active<T> {
    io: T,
    activity: Arc<std::sync::atomic::AtomicU64>,
    started: tokio::time::Instant,
}

impl<T> Active<T> {
    fn moved(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Active<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `Connection: upgrade` with an `Upgrade` header (WebSocket and the like);
/// never h2c: an upgrade to HTTP/2 would carry every later request of the
/// connection past the runtime (no limits, no cluster headers).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    let h2c = headers.get_all(header::UPGRADE).iter().any(|value| {
        value.to_str().map_or(true, |v| v.split(',').any(|protocol| protocol.trim().eq_ignore_ascii_case("h2c")))
    });
    headers.contains_key(header::UPGRADE)
        && !h2c
        && headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().is_ok_and(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
        })
}

/// Removes hop-by-hop headers and those the `Connection` header names; an
/// upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Usually there is none: one pass over the names (cheap comparisons of
    // standard names) spares a hash lookup per hop-by-hop name.
    let present = headers.keys().any(|name| HOP_BY_HOP.contains(name) || name == header::UPGRADE);
    if !present {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The request body went past `requestLimits.maxBodyBytes` while streaming.
fn is_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The sidecar's own answer when the upstream could not give one.
fn failure(status: StatusCode, reason: &'static str, text: &str) -> Response {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(X_ARLEN_UPSTREAM_ERROR, HeaderValue::from_static(reason));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, false);
        for gone in ["connection", "x-secret-hop", "keep-alive", "transfer-encoding"] {
            assert!(!headers.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers[header::HOST], "shop.example");
    }

    #[test]
    fn an_h2c_upgrade_is_never_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, HTTP2-Settings"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(HTTP2_SETTINGS, HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"));
        assert!(!wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn an_upgrade_keeps_its_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }
}
