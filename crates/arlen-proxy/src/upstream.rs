//! The sidecar's connections to its one upstream: a pool fitted to a single
//! origin on hyper's HTTP/1 connection API (`hyper::client::conn::http1`).
//!
//! hyper-util's pooled client is built for any number of origins: every
//! request hashes its pool key (SipHash), walks a map and a list, and
//! crosses two extra channels. One upstream needs none of that: the idle
//! senders are a stack behind a mutex held for a push or a pop. A sender is
//! checked out for a request and put back when its response body has ended
//! (one whose connection closed is dropped), so a slow response never holds
//! up the next request; idle connections older than [`IDLE_TIMEOUT`] are
//! closed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not get a response head from the upstream.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(String),
    /// The connection failed while the request was sent or the head read.
    Request(hyper::Error),
}

/// The idle connections to the upstream, newest last.
pub(crate) struct UpstreamPool {
    authority: String,
    connect_timeout: Duration,
    read_buffer: usize,
    max_idle: usize,
    idle: Mutex<Vec<(SendRequest<Body>, Instant)>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool").field("authority", &self.authority).finish_non_exhaustive()
    }
}

/// A checked-out connection: given back to the pool when dropped (at the
/// end of its response's body).
pub(crate) struct Lease {
    sender: Option<SendRequest<Body>>,
    pool: Arc<UpstreamPool>,
}

impl Lease {
    /// The connection is not given back (it was upgraded: a tunnel's now).
    pub(crate) fn discard(mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.give_back(sender);
        }
    }
}

impl UpstreamPool {
    pub(crate) fn new(authority: String, connect_timeout: Duration, read_buffer: usize, max_idle: usize) -> Self {
        Self { authority, connect_timeout, read_buffer, max_idle, idle: Mutex::new(Vec::new()) }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(SendRequest<Body>, Instant)>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    /// An idle connection, the newest first. The stack is in the order the
    /// connections came back, so those past the timeout are at its bottom:
    /// found by a binary search against one reading of the clock (not one
    /// per idle connection) and closed; a closed one met on the way is dropped.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.idle();
        let stale = idle.partition_point(|(_, since)| now.saturating_duration_since(*since) >= IDLE_TIMEOUT);
        idle.drain(..stale);
        while let Some((sender, _)) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| SendError::Connect(format!("connecting to {} timed out", self.authority)))?
            .map_err(|error| SendError::Connect(format!("{}: {error}", self.authority)))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(self.read_buffer)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| SendError::Connect(format!("{}: {error}", self.authority)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `request` (origin-form target, `Host` set) on an idle
    /// connection or a new one; the lease goes back to the pool when
    /// dropped, which the caller does at the end of the response's body.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        // A connection given back as its response ended may need a moment
        // to take the next request; one that closed meanwhile is replaced.
        let mut sender = match self.checkout() {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let response = sender.send_request(request).await.map_err(SendError::Request)?;
        Ok((response, Lease { sender: Some(sender), pool: self.clone() }))
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// One upstream connection serves request after request (the lease goes
    /// back at the body's end), and a second one is opened only while the
    /// first is busy.
    #[tokio::test]
    async fn connections_are_reused_and_opened_only_when_busy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Body::from("hello")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let pool = Arc::new(UpstreamPool::new(address.to_string(), Duration::from_secs(1), 64 * 1024, 4));
        let request = || Request::builder().uri("/").header("host", "x").body(Body::empty()).unwrap();
        for _ in 0..5 {
            let (response, lease) = pool.send(request()).await.map_err(|e| format!("{e:?}")).unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
            drop(lease);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection for five requests in turn");
        // Two at once: the first is still leased, so a second connection opens.
        let (first, first_lease) = pool.send(request()).await.map_err(|e| format!("{e:?}")).unwrap();
        let (second, second_lease) = pool.send(request()).await.map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        for (response, lease) in [(first, first_lease), (second, second_lease)] {
            let _ = response.into_body().collect().await.unwrap();
            drop(lease);
        }
        assert_eq!(pool.idle_count(), 2, "both back in the pool");
        // Nobody listening: a connect error, named.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let nowhere = Arc::new(UpstreamPool::new(gone.to_string(), Duration::from_secs(1), 64 * 1024, 4));
        assert!(matches!(nowhere.send(request()).await, Err(SendError::Connect(_))));
    }
}
