//! The server: binding, the accept loop, HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c) on one port (hyper-util's auto connection builder), the
//! session limit and graceful shutdown (HTTP/1.1: `Connection: close`;
//! HTTP/2: GOAWAY, streams in flight finish).
//!
//! Header names are case-insensitive. On HTTP/1.1 response header names are
//! written in title case by default (`X-Arlen-Cluster-Status`, the contract's
//! spelling; `http.titleCaseHeaders`), with stock hyper's writer; HTTP/2 sends
//! them lower-case, as it must.

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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt as _};

use crate::runtime::Runtime;

/// Settings of the server itself (taken from [`Config`]).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub connection_timeout: Duration,
    pub max_sessions: usize,
    /// Hard cap on the request head hyper will buffer (the precise 414/431
    /// answers come from the runtime layer, with cluster headers).
    pub max_head_bytes: usize,
    pub graceful_timeout: Duration,
    /// HTTP/1.1 response header names in title case (HTTP/2 is always lower-case).
    pub title_case_headers: bool,
    /// Put the client's address in each request's extensions ([`PeerAddr`]),
    /// for an inner service that needs it (the sidecar's `X-Forwarded-For`).
    pub expose_peer_addr: bool,
}

/// The address of the client a request came from (present when
/// [`ServerSettings::expose_peer_addr`] is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl ServerSettings {
    pub fn from_config(config: &Config) -> Self {
        let limits = &config.request_limits;
        Self {
            connection_timeout: config.connection_timeout,
            max_sessions: config.max_concurrent_http_sessions.max(1),
            max_head_bytes: limits.max_request_line_bytes.saturating_add(limits.max_header_bytes).saturating_add(1024),
            graceful_timeout: config.shutdown.graceful_timeout,
            title_case_headers: config.title_case_headers,
            expose_peer_addr: config.proxy.is_some(),
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

/// One builder for both protocols: a connection that starts with the HTTP/2
/// preface is served as HTTP/2, any other as HTTP/1.1.
fn connection_builder(settings: &ServerSettings, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.connection_timeout)
        .title_case_headers(settings.title_case_headers)
        .max_buf_size(settings.max_head_bytes.max(8192) + 8192)
        .keep_alive(keep_alive);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_head_bytes).unwrap_or(u32::MAX));
    builder
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
    let builder = connection_builder(&settings, true);
    let closing_builder = connection_builder(&settings, false);
    // Over the session limit a connection gets one answer, and little time.
    let busy_settings = ServerSettings { connection_timeout: OVER_LIMIT_HEAD_DEADLINE, ..settings.clone() };
    let busy_builder = connection_builder(&busy_settings, false);
    let sessions = Arc::new(Semaphore::new(settings.max_sessions));
    let graceful = GracefulShutdown::new();
    let serve_one = |stream: tokio::net::TcpStream, peer: SocketAddr, builder: &auto::Builder<TokioExecutor>| {
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(FirstBytesDeadline::new(stream, settings.connection_timeout));
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let expose = settings.expose_peer_addr;
                let service = service.clone().map_request(move |mut request: http::Request<Incoming>| {
                    if expose {
                        request.extensions_mut().insert(PeerAddr(peer));
                    }
                    request.map(Body::new)
                });
                let connection =
                    builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::debug!(%peer, limit = settings.max_sessions, "session limit reached; probes only, 503 otherwise");
                let busy =
                    runtime.busy_service().map_request(|request: http::Request<Incoming>| request.map(Body::new));
                // The head must come at once; the one answer (a probe, a capped
                // /clusterz wait, or 503) ends the connection.
                let io = TokioIo::new(FirstBytesDeadline::new(io.into_inner().into_stream(), OVER_LIMIT_HEAD_DEADLINE));
                let connection = busy_builder.serve_connection(io, TowerToHyperService::new(busy)).into_owned();
                let limit = crate::endpoints::MAX_WAIT + OVER_LIMIT_HEAD_DEADLINE;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, connection).await;
                });
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

/// How long a connection over the session limit has to send its request head.
const OVER_LIMIT_HEAD_DEADLINE: Duration = Duration::from_secs(2);

/// How long, after the listener closes, idle kept-alive connections stay open
/// so a request already on its way is answered (with `Connection: close`).
const CLOSING_LINGER: Duration = Duration::from_secs(1);

/// The client's first bytes (enough to tell HTTP/1.1 from the HTTP/2 preface)
/// must arrive within the connection timeout: until the protocol is known no
/// HTTP-level timeout applies, so a silent connection would otherwise hold its
/// session for ever. Afterwards reads pass straight through.
struct FirstBytesDeadline {
    stream: tokio::net::TcpStream,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    seen: usize,
}

/// Bytes after which HTTP/1.1 and HTTP/2 (whose preface is this long) are told apart.
const PREFACE_BYTES: usize = 24;

impl FirstBytesDeadline {
    fn new(stream: tokio::net::TcpStream, limit: Duration) -> Self {
        Self { stream, deadline: Some(Box::pin(tokio::time::sleep(limit))), seen: 0 }
    }

    fn into_stream(self) -> tokio::net::TcpStream {
        self.stream
    }
}

impl tokio::io::AsyncRead for FirstBytesDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.seen += buf.filled().len() - before;
                if self.seen >= PREFACE_BYTES || buf.filled().len() == before {
                    self.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the connection timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for FirstBytesDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
