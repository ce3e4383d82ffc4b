//! The HTTP/1.1 server: binding, the accept loop, the session limit and
//! graceful shutdown.
//!
//! The cluster headers go on the wire as the snapshot's pre-rendered lines,
//! in the contract's exact spellings (`X-Arlen-Cluster-Status`), at the cost
//! of one copy: each connection gets a `hyper::ext::RawHeaderLinesSlot` (from
//! our patched hyper — vendor/README.md), reachable by the runtime layer
//! through a task-local while the connection's task runs. Other response
//! header names are written in title case; hyper would otherwise write them
//! lower-case.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arlen_config::Config;
use axum::body::Body;
use axum::response::Response;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::ext::RawHeaderLinesSlot;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt as _};

use crate::runtime::{Runtime, CONNECTION_SLOT};

/// Settings of the server itself (taken from [`Config`]).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub connection_timeout: Duration,
    pub max_sessions: usize,
    /// Hard cap on the request head hyper will buffer (the precise 414/431
    /// answers come from the runtime layer, with cluster headers).
    pub max_head_bytes: usize,
    pub graceful_timeout: Duration,
}

impl ServerSettings {
    pub fn from_config(config: &Config) -> Self {
        let limits = &config.request_limits;
        Self {
            connection_timeout: config.connection_timeout,
            max_sessions: config.max_concurrent_http_sessions.max(1),
            max_head_bytes: limits.max_request_line_bytes.saturating_add(limits.max_header_bytes).saturating_add(1024),
            graceful_timeout: config.shutdown.graceful_timeout,
        }
    }
}

/// Binds the HTTP listener as configured (`host`, `port`, `listenBacklog`,
/// `enableReusePort`).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let address = resolve(&config.host, config.port)?;
    bind_address(address, config.listen_backlog, config.enable_reuse_port)
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("host {host:?} resolves to no address")))
}

/// Binds a TCP listener with the given backlog and `SO_REUSEPORT` setting.
pub fn bind_address(address: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

fn connection_builder(settings: &ServerSettings) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.connection_timeout)
        .title_case_headers(true)
        .max_header_size(settings.max_head_bytes)
        .max_buf_size(settings.max_head_bytes.max(8192) + 8192)
        .keep_alive(true);
    builder
}

/// A builder for one connection, and the slot from which that connection's
/// response heads take the runtime's header lines; the connection's task runs
/// inside [`CONNECTION_SLOT`] holding the same slot.
fn with_slot(
    builder: &hyper::server::conn::http1::Builder,
) -> (hyper::server::conn::http1::Builder, RawHeaderLinesSlot) {
    let slot = RawHeaderLinesSlot::new();
    let mut builder = builder.clone();
    builder.raw_header_lines_slot(slot.clone());
    (builder, slot)
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (up to `graceful_timeout`) and
/// returns.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    runtime: Runtime,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<http::Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = connection_builder(&settings);
    let mut closing_builder = connection_builder(&settings);
    closing_builder.keep_alive(false);
    let sessions = Arc::new(Semaphore::new(settings.max_sessions));
    let graceful = GracefulShutdown::new();
    let serve_one = |stream: tokio::net::TcpStream, peer: SocketAddr, builder: &hyper::server::conn::http1::Builder| {
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = service.clone().map_request(|request: http::Request<Incoming>| request.map(Body::new));
                let (builder, slot) = with_slot(builder);
                let connection = graceful.watch(builder.serve_connection(io, TowerToHyperService::new(service)));
                tokio::spawn(CONNECTION_SLOT.scope(slot, async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    drop(permit);
                }));
            }
            Err(_) => {
                tracing::warn!(%peer, limit = settings.max_sessions, "session limit reached; answering 503");
                let runtime = runtime.clone();
                let busy = tower::service_fn(move |request: http::Request<Incoming>| {
                    let response = runtime.busy_response(request.headers());
                    async move { Ok::<_, Infallible>(response) }
                });
                let (builder, slot) = with_slot(&closing_builder);
                let connection = builder.serve_connection(io, TowerToHyperService::new(busy));
                tokio::spawn(CONNECTION_SLOT.scope(slot, async move {
                    let _ = connection.await;
                }));
            }
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly and keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_one(stream, peer, &builder);
    }
    // Connections the kernel already completed are in the accept backlog: serve
    // them (one request each) rather than let closing the socket reset them.
    while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
        serve_one(stream, peer, &closing_builder);
    }
    drop(listener);
    tracing::info!(
        timeout_seconds = settings.graceful_timeout.as_secs(),
        "stopped accepting; finishing in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + settings.graceful_timeout;
    // For a moment, requests still arriving on kept-alive connections are
    // answered, with `Connection: close`, instead of racing a closing socket.
    runtime.set_closing();
    let linger_until = tokio::time::Instant::now() + CLOSING_LINGER.min(settings.graceful_timeout);
    while graceful.count() > 0 && tokio::time::Instant::now() < linger_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("graceful timeout elapsed with connections still open; closing them");
        }
    }
    Ok(())
}

/// How long, after the listener closes, idle kept-alive connections stay open
/// so a request already on its way is answered (with `Connection: close`).
const CLOSING_LINGER: Duration = Duration::from_secs(1);
