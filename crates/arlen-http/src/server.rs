//! The server: binding, the accept loop, HTTP/1.1 and HTTP/2 with prior
//! knowledge (h2c) on one port (hyper-util's auto connection builder), the
//! session limit and graceful shutdown (HTTP/1.1: `Connection: close`;
//! HTTP/2: GOAWAY, streams in flight finish).
//!
//! Lifetimes and budgets (what [`crate::connections`] accounts): each
//! accepted connection is admitted to a session, served over the limit (one
//! answer: probes by their own rules), or refused when not even the
//! descriptor reserve has room — after the oldest idle connection was closed
//! to make room. HTTP/1.1 and HTTP/2 share the deadlines: the first bytes
//! and each head within the head timeout, idleness within the connection
//! timeout (HTTP/2: no stream open), every write taken by the client's socket
//! within the write timeout; an HTTP/2 connection with streams open but
//! nothing written for [`MAX_WAIT`](crate::endpoints::MAX_WAIT) plus the
//! connection timeout is closed too. HTTP/2 streams are bounded in number
//! and in the memory each may buffer.
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
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt as _};

use crate::connections::{Admission, Claim, ConnectionHandle, Descriptors, Registry, Tracked};
use crate::runtime::{Listener, Runtime};

/// Settings of the server itself (taken from [`Config`]).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub connection_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub head_timeout: Duration,
    /// A write the client's socket does not take for this long cuts the connection.
    pub write_timeout: Duration,
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
    /// Which listener this is (the over-limit answers follow its rules).
    pub listener: Listener,
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
            head_timeout: config.head_timeout,
            write_timeout: config.write_timeout,
            max_sessions: config.max_concurrent_http_sessions.max(1),
            max_head_bytes: limits.max_request_line_bytes.saturating_add(limits.max_header_bytes).saturating_add(1024),
            graceful_timeout: config.shutdown.graceful_timeout,
            title_case_headers: config.title_case_headers,
            expose_peer_addr: config.proxy.is_some(),
            listener: Listener::Service,
        }
    }

    /// The admin listener's settings: its own small session limit, so that
    /// application traffic and the service port's abusers cannot reach it.
    pub fn admin(config: &Config) -> Self {
        Self {
            max_sessions: ADMIN_SESSIONS,
            expose_peer_addr: false,
            listener: Listener::Admin,
            ..Self::from_config(config)
        }
    }
}

/// Sessions of the admin listener (probes, scrapes and operators).
pub const ADMIN_SESSIONS: usize = 64;

/// Binds the HTTP listener as configured (`host`, `port`, `listenBacklog`,
/// `enableReusePort`).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let address = resolve(&config.host, config.port)?;
    bind_address(address, config.listen_backlog, config.enable_reuse_port)
}

/// Binds the admin listener (`admin.listen`), if one is configured.
pub fn bind_admin(config: &Config) -> Option<io::Result<TcpListener>> {
    let address = config.admin_listen.as_deref()?;
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    Some(resolve(host, port).and_then(|address| bind_address(address, config.listen_backlog, false)))
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
        // Idle keep-alive connections are closed by `lapsed`, slow heads by
        // `FirstBytesDeadline`: no timer per request.
        .header_read_timeout(None)
        .title_case_headers(settings.title_case_headers)
        .max_buf_size(settings.max_head_bytes.max(8192) + 8192)
        .keep_alive(keep_alive);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_head_bytes).unwrap_or(u32::MAX))
        // What one connection may hold: streams, and per stream what is
        // buffered towards a client that grants no window.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_SEND_BUFFER)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // A peer that no longer answers PINGs is gone.
        .keep_alive_interval(settings.connection_timeout)
        .keep_alive_timeout(settings.head_timeout.max(Duration::from_secs(1)));
    builder
}

/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 32;
/// Bytes of a response buffered for one stream the client grants no window.
const H2_SEND_BUFFER: usize = 16 * 1024;
/// Bytes of a request body a client may send one stream before it is read.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// The same for all streams of a connection.
const H2_CONNECTION_WINDOW: u32 = 512 * 1024;

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
    runtime.start();
    let builder = connection_builder(&settings, true);
    let closing_builder = connection_builder(&settings, false);
    // Over the session limit a connection gets one answer, and little time.
    let busy_settings = ServerSettings { connection_timeout: OVER_LIMIT_HEAD_DEADLINE, ..settings.clone() };
    let busy_builder = connection_builder(&busy_settings, false);
    let claim = if settings.listener == Listener::Admin { Claim::Reserve } else { Claim::Application };
    let counters = runtime.metrics().connection_counters();
    let registry = Arc::new(Registry::new(settings.max_sessions, claim, Descriptors::global(), counters));
    let open = OpenConnections::default();
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let serve_one = |stream: tokio::net::TcpStream, peer: SocketAddr, builder: &auto::Builder<TokioExecutor>| {
        let _ = stream.set_nodelay(true);
        let tracked = match registry.admit(peer.ip()) {
            Admission::Session(tracked) => tracked,
            Admission::OverLimit(tracked) => {
                return serve_over_limit(stream, peer, tracked, &runtime, &settings, &busy_builder);
            }
            Admission::Refused => {
                tracing::debug!(%peer, "no descriptor left, not even in the reserve; connection closed");
                return;
            }
        };
        let io = TokioIo::new(FirstBytesDeadline::new(stream, &settings, tracked.clone()));
        let expose = settings.expose_peer_addr;
        let handle = ConnectionHandle(tracked.clone());
        let service = service.clone().map_request(move |mut request: http::Request<Incoming>| {
            if expose {
                request.extensions_mut().insert(PeerAddr(peer));
            }
            // Only the reserved endpoints take a share of the connection's
            // waits and streams: an application request inserts nothing.
            if crate::endpoints::match_reserved(request.uri().path()).is_some() {
                request.extensions_mut().insert(handle.clone());
            }
            request.map(Body::new)
        });
        let service = Tracking { inner: service, tracked: tracked.clone() };
        let connection = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)).into_owned();
        let lifetime = Lifetime { tracked, peer, idle_timeout: settings.connection_timeout, open: open.enter() };
        tokio::spawn(lifetime.run(connection, closing_rx.clone()));
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
    finish_in_flight(&runtime, &settings, &open, closing_tx).await;
    Ok(())
}

/// After the listener closed: linger so requests already on their way are
/// answered (with `Connection: close`), then tell every connection to close
/// (GOAWAY on HTTP/2) and wait for them, up to the graceful timeout.
async fn finish_in_flight(
    runtime: &Runtime,
    settings: &ServerSettings,
    open: &OpenConnections,
    closing: tokio::sync::watch::Sender<bool>,
) {
    tracing::info!(
        timeout_seconds = settings.graceful_timeout.as_secs(),
        "stopped accepting; finishing in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + settings.graceful_timeout;
    // For a moment, requests still arriving on kept-alive connections are
    // answered, with `Connection: close`, instead of racing a closing socket.
    runtime.set_closing();
    let linger_until = tokio::time::Instant::now() + CLOSING_LINGER.min(settings.graceful_timeout);
    while open.count() > 0 && tokio::time::Instant::now() < linger_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = closing.send(true);
    tokio::select! {
        () = open.all_closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("graceful timeout elapsed with connections still open; closing them");
        }
    }
}

/// What ends a session's connection besides the connection itself: its
/// eviction, HTTP/2 idleness or a stuck stream, and the listener closing.
struct Lifetime {
    tracked: Arc<Tracked>,
    peer: SocketAddr,
    idle_timeout: Duration,
    open: OpenGuard,
}

impl Lifetime {
    async fn run<C>(self, connection: C, mut closing: tokio::sync::watch::Receiver<bool>)
    where
        C: hyper_util::server::graceful::GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let Lifetime { tracked, peer, idle_timeout, open } = self;
        tokio::pin!(connection);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = tracked.evicted() => return,
            stuck = lapsed(&tracked, idle_timeout) => if stuck {
                tracing::debug!(%peer, "HTTP/2 streams open with nothing written; connection closed");
                return;
            },
            _ = closing.wait_for(|closing| *closing) => {}
        }
        // Idle (either protocol), or the listener closing: GOAWAY (HTTP/1.1: no more
        // keep-alive), and what is in flight finishes. An idle connection has
        // nothing in flight: a peer that does not close its side at once is
        // not waited for.
        connection.as_mut().graceful_shutdown();
        if tracked.is_idle() && !*closing.borrow() {
            let _ = tokio::time::timeout(IDLE_GOAWAY_GRACE, connection).await;
        } else {
            let _ = connection.await;
        }
        drop(open);
    }
}

/// A connection over the session limit: one answer (a probe, a capped
/// `/clusterz` wait, or 503), its head within [`OVER_LIMIT_HEAD_DEADLINE`],
/// and closed when it has sent no request by then (an HTTP/2 preface alone
/// included).
fn serve_over_limit(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tracked: Arc<Tracked>,
    runtime: &Runtime,
    settings: &ServerSettings,
    busy_builder: &auto::Builder<TokioExecutor>,
) {
    tracing::debug!(%peer, limit = settings.max_sessions, "session limit reached; probes only, 503 otherwise");
    // The first request starts a graceful shutdown (HTTP/1.1: no keep-alive;
    // HTTP/2: GOAWAY, so no second stream), which lets that answer finish.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first = Arc::new(std::sync::Mutex::new(Some(first_tx)));
    let handle = ConnectionHandle(tracked.clone());
    let busy = runtime.busy_service(settings.listener).map_request(move |mut request: http::Request<Incoming>| {
        if let Some(tx) = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = tx.send(());
        }
        request.extensions_mut().insert(handle.clone());
        request.map(Body::new)
    });
    let busy = Tracking { inner: busy, tracked: tracked.clone() };
    let deadline = OVER_LIMIT_HEAD_DEADLINE.min(settings.head_timeout);
    let io_settings = ServerSettings { connection_timeout: deadline, head_timeout: deadline, ..settings.clone() };
    let io = TokioIo::new(FirstBytesDeadline::new(stream, &io_settings, tracked.clone()));
    let connection = busy_builder.serve_connection(io, TowerToHyperService::new(busy)).into_owned();
    let limit = tokio::time::Instant::now() + crate::endpoints::MAX_WAIT + OVER_LIMIT_HEAD_DEADLINE;
    tokio::spawn(async move {
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tracked.evicted() => return,
            () = tokio::time::sleep(deadline) => return,
            answered = first_rx => if answered.is_ok() {
                connection.as_mut().graceful_shutdown();
            },
        }
        tokio::select! {
            _ = tokio::time::timeout_at(limit, connection) => {}
            () = tracked.evicted() => {}
        }
    });
}

/// Resolves when a connection must end: `false` when it has had no request
/// in flight for `idle_timeout` (closed gracefully: an idle keep-alive
/// connection, or one that never sent a request), `true` when HTTP/2 streams
/// are open but nothing was written for [`MAX_WAIT`](crate::endpoints::MAX_WAIT)
/// plus `idle_timeout` (a client granting no window; closed at once).
///
/// One lazy timer per connection: requests only store the time they end
/// (and, on HTTP/2, start), and the timer, when it fires, sleeps again until
/// the idle time could lapse. (hyper's `header_read_timeout` did the HTTP/1.1 part with a
/// timer armed and cancelled per request; a head that is slow once it has
/// begun is [`FirstBytesDeadline`]'s.)
async fn lapsed(tracked: &Tracked, idle_timeout: Duration) -> bool {
    let stuck_after = crate::endpoints::MAX_WAIT + idle_timeout;
    loop {
        let idle = tracked.idle_for();
        let silent = tracked.silent_for();
        if tracked.h2.load(std::sync::atomic::Ordering::Relaxed) && !tracked.is_idle() && silent >= stuck_after {
            return true;
        }
        if tracked.is_idle() && idle >= idle_timeout {
            return false;
        }
        let wait =
            if tracked.is_idle() { idle_timeout.saturating_sub(idle) } else { stuck_after.saturating_sub(silent) };
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

/// Connection tasks still running, for the graceful shutdown.
#[derive(Debug, Clone, Default)]
struct OpenConnections(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

struct OpenGuard(OpenConnections);

impl OpenConnections {
    fn enter(&self) -> OpenGuard {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.0 .0.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0 .0 .0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0 .0 .1.notify_waiters();
        }
    }
}

/// Counts a connection's requests in flight until each response body has
/// been written (what eviction and the HTTP/2 idle deadline go by).
#[derive(Clone)]
struct Tracking<S> {
    inner: S,
    tracked: Arc<Tracked>,
}

impl<S, B> Service<http::Request<B>> for Tracking<S>
where
    S: Service<http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = Some(self.tracked.begin());
        TrackedFuture { inner: self.inner.call(request), guard }
    }
}

pin_project_lite::pin_project! {
    /// A response future whose body, once there, holds the request's guard.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<crate::connections::RequestGuard>,
    }
}

impl<F> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        std::task::Poll::Ready(Ok(response.map(|body| Body::new(crate::connections::HoldUntilDone::new(body, guard)))))
    }
}

/// How long an idle HTTP/2 connection told GOAWAY has to close its side.
const IDLE_GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// How long a connection over the session limit has to send its request head.
const OVER_LIMIT_HEAD_DEADLINE: Duration = Duration::from_secs(2);

/// How long, after the listener closes, idle kept-alive connections stay open
/// so a request already on its way is answered (with `Connection: close`).
const CLOSING_LINGER: Duration = Duration::from_secs(1);

/// Deadlines on what a client sends before it is answered, which no HTTP
/// timeout of hyper's covers well:
///
/// - the first bytes (enough to tell HTTP/1.1 from the HTTP/2 preface) must
///   arrive within the connection timeout: until the protocol is known no
///   HTTP-level timeout applies, so a silent connection would otherwise hold
///   its session for ever;
/// - every HTTP/1.1 request head must be complete within the head timeout of
///   its first byte, so a slow head cannot pin a session for the whole
///   connection timeout (idle keep-alive time is bounded by the
///   connection timeout, in `lapsed`).
///
/// The head's end is found by scanning the bytes read for an empty line; the
/// next head starts with the first byte read after a final response began
/// (a `1xx` does not count). A head that arrives in one read (the common
/// case) arms no timer. After the HTTP/2 preface, reads pass straight through.
///
/// And on what the client does not take: a write its socket accepts no
/// byte of for the write timeout ends the connection (a slow reader).
struct FirstBytesDeadline {
    stream: tokio::net::TcpStream,
    /// Armed for the first bytes, then for each head that spans reads.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    head_timeout: Duration,
    write_timeout: Duration,
    /// Armed while a write waits for the client's socket (made on first need).
    write_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    write_waiting: bool,
    tracked: Arc<Tracked>,
    seen: usize,
    head: Head,
    /// The part of a rewritten read that did not fit the caller's buffer.
    spill: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Nothing of the next head read yet (the timer, if armed, is the idle one).
    Expected { idle_timer: bool },
    /// Part of a head read; `tail` holds whether the bytes so far end in
    /// `\n` (1) or `\n\r` (2).
    Reading { tail: u8 },
    /// The head is complete; the next one starts after the response.
    Complete,
    /// HTTP/2: framing, not heads.
    Off,
}

/// Bytes after which HTTP/1.1 and HTTP/2 (whose preface is this long) are told apart.
const PREFACE_BYTES: usize = 24;
const H2_PREFACE: &[u8; PREFACE_BYTES] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl FirstBytesDeadline {
    fn new(stream: tokio::net::TcpStream, settings: &ServerSettings, tracked: Arc<Tracked>) -> Self {
        Self {
            stream,
            timer: Box::pin(tokio::time::sleep(settings.connection_timeout)),
            head_timeout: settings.head_timeout,
            write_timeout: settings.write_timeout,
            write_timer: None,
            write_waiting: false,
            tracked,
            seen: 0,
            head: Head::Expected { idle_timer: true },
            spill: Vec::new(),
        }
    }

    /// Follows a write: progress disarms the write deadline, a write the
    /// socket does not take arms it, and one that waited too long fails.
    fn write_polled<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<io::Result<T>>,
    ) -> std::task::Poll<io::Result<T>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.write_waiting = false;
            // Only HTTP/2's stuck-stream rule reads when the socket last took
            // bytes (HTTP/1.1 has the write deadline above): no clock read per write.
            if self.tracked.h2.load(std::sync::atomic::Ordering::Relaxed) {
                self.tracked.wrote();
            }
            return polled;
        }
        let timeout = self.write_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = self.write_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.write_waiting {
            self.write_waiting = true;
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.tracked.slow_readers.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no byte of the response within the write timeout",
            )));
        }
        Poll::Pending
    }

    /// Follows the head through `bytes`, just read.
    fn saw(&mut self, bytes: &[u8]) {
        if self.seen < PREFACE_BYTES {
            let start = self.seen;
            self.seen += bytes.len();
            let n = (PREFACE_BYTES - start).min(bytes.len());
            if bytes[..n] == H2_PREFACE[start..start + n] {
                if self.seen >= PREFACE_BYTES {
                    self.head = Head::Off;
                    self.tracked.h2.store(true, std::sync::atomic::Ordering::Relaxed);
                } else if !matches!(self.head, Head::Reading { .. }) {
                    // Part of the HTTP/2 preface: it, too, must be complete in time.
                    self.timer.as_mut().reset(tokio::time::Instant::now() + self.head_timeout);
                    self.head = Head::Reading { tail: 0 };
                }
                return;
            }
        }
        let tail = match self.head {
            Head::Off | Head::Complete => return,
            Head::Expected { .. } => 0,
            Head::Reading { tail } => tail,
        };
        match head_end(tail, bytes) {
            Ok(()) => self.head = Head::Complete,
            Err(tail) => {
                if !matches!(self.head, Head::Reading { .. }) {
                    let deadline = tokio::time::Instant::now() + self.head_timeout;
                    self.timer.as_mut().reset(deadline);
                }
                self.head = Head::Reading { tail };
            }
        }
    }

    /// A write starting with a final status line begins a response: what
    /// is read next is the next head.
    fn wrote(&mut self, first: &[u8]) {
        if self.head == Head::Complete && first.starts_with(b"HTTP/1.") && first.get(9).is_some_and(|d| *d != b'1') {
            self.head = Head::Expected { idle_timer: false };
        }
    }
}

/// `Ok` when `bytes` (after a head so far ending as `tail` says) complete a
/// head: an empty line, `\n\n` or `\n\r\n`. Otherwise the new tail: 1 when
/// the bytes so far end in `\n`, 2 in `\n\r`, else 0. Jumps from line break
/// to line break (memchr), so a head costs a few instructions per line.
fn head_end(tail: u8, bytes: &[u8]) -> Result<(), u8> {
    match (tail, bytes) {
        (1 | 2, [b'\n', ..]) | (1, [b'\r', b'\n', ..]) => return Ok(()),
        (1, [b'\r']) => return Err(2),
        (_, []) => return Err(tail),
        _ => {}
    }
    for i in memchr::memchr_iter(b'\n', bytes) {
        match &bytes[i + 1..] {
            [b'\n', ..] | [b'\r', b'\n', ..] => return Ok(()),
            _ => {}
        }
    }
    Err(match bytes {
        [.., b'\n'] => 1,
        [.., b'\n', b'\r'] => 2,
        _ => 0,
    })
}

/// What users type in a query and `http::Uri` refuses (it answers 400 with
/// an empty body): `<`, `>` and `"`, as in `?wait_for_nodes=>=3`. Browsers
/// and curl send them raw; percent-encoded they mean the same to every
/// query parser, ours and the sidecar's upstream's.
const QUERY_ESCAPES: [(u8, &[u8; 3]); 3] = [(b'<', b"%3C"), (b'>', b"%3E"), (b'"', b"%22")];

/// `bytes` (the start of an HTTP/1 request head) with the request line's
/// query percent-encoded where `http::Uri` would refuse it; `None` when
/// nothing needs it or the request line is not all there.
fn escape_query_of_request_line(bytes: &[u8]) -> Option<Vec<u8>> {
    let line_end = memchr::memchr(b'\n', bytes)?;
    let line = bytes[..line_end].strip_suffix(b"\r").unwrap_or(&bytes[..line_end]);
    let version_at = memchr::memrchr(b' ', line)?;
    if !line[version_at + 1..].starts_with(b"HTTP/1.") {
        return None;
    }
    let query_at = memchr::memchr(b'?', &line[..version_at])?;
    let query = &line[query_at..version_at];
    if !query.iter().any(|b| QUERY_ESCAPES.iter().any(|(raw, _)| raw == b)) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(&bytes[..query_at]);
    for &b in query {
        match QUERY_ESCAPES.iter().find(|(raw, _)| *raw == b) {
            Some((_, escaped)) => out.extend_from_slice(*escaped),
            None => out.push(b),
        }
    }
    out.extend_from_slice(&bytes[version_at..]);
    Some(out)
}

impl tokio::io::AsyncRead for FirstBytesDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        if !self.spill.is_empty() {
            let n = self.spill.len().min(buf.remaining());
            buf.put_slice(&self.spill[..n]);
            self.spill.drain(..n);
            return Poll::Ready(Ok(()));
        }
        // hyper-util reads the first bytes of a connection into a buffer of
        // the HTTP/2 preface's size, to tell the protocols apart: too short
        // to hold a request line. Look at the line first, without taking it,
        // and take it rewritten when its query needs it.
        if self.seen == 0 && buf.remaining() < 256 {
            let mut peeked = [0u8; 2048];
            let mut view = tokio::io::ReadBuf::new(&mut peeked);
            if let Poll::Ready(Ok(_)) = self.stream.poll_peek(cx, &mut view) {
                let line_end = memchr::memchr(b'\n', view.filled());
                if let Some(rewritten) = line_end.and_then(|end| escape_query_of_request_line(&view.filled()[..=end])) {
                    let take = line_end.unwrap_or_default() + 1;
                    let mut taken = vec![0u8; take];
                    let mut into = tokio::io::ReadBuf::new(&mut taken);
                    // The peeked bytes are there: this read returns them.
                    if let Poll::Ready(Ok(())) = std::pin::Pin::new(&mut self.stream).poll_read(cx, &mut into) {
                        let n = into.filled().len();
                        if n == take {
                            self.saw(&taken);
                            self.spill = rewritten;
                            let n = self.spill.len().min(buf.remaining());
                            buf.put_slice(&self.spill[..n]);
                            self.spill.drain(..n);
                            return Poll::Ready(Ok(()));
                        }
                        // Fewer bytes than peeked (cannot happen on a TCP
                        // stream): pass them on as they are.
                        self.saw(&taken[..n]);
                        self.spill.extend_from_slice(&taken[..n]);
                        let m = self.spill.len().min(buf.remaining());
                        buf.put_slice(&self.spill[..m]);
                        self.spill.drain(..m);
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let this = &mut *self;
                let starts_head = matches!(this.head, Head::Expected { .. });
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.saw(read);
                    if starts_head {
                        if let Some(rewritten) = escape_query_of_request_line(read) {
                            buf.set_filled(before);
                            let n = rewritten.len().min(buf.remaining());
                            buf.put_slice(&rewritten[..n]);
                            this.spill.extend_from_slice(&rewritten[n..]);
                        }
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let armed = matches!(self.head, Head::Reading { .. } | Head::Expected { idle_timer: true });
                if armed && self.timer.as_mut().poll(cx).is_ready() {
                    let message = if matches!(self.head, Head::Reading { .. }) {
                        "request head not complete within the head timeout"
                    } else {
                        "no request within the connection timeout"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)));
                }
                Poll::Pending
            }
        }
    }
}

impl tokio::io::AsyncWrite for FirstBytesDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.wrote(buf);
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        self.write_polled(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.wrote(first);
        }
        let polled = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.write_polled(cx, polled)
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

#[cfg(test)]
mod tests {
    use super::{escape_query_of_request_line, head_end};
    use proptest::prelude::*;

    #[test]
    fn what_users_type_in_a_query_is_percent_encoded_and_nothing_else_is_touched() {
        let escaped = |raw: &[u8]| escape_query_of_request_line(raw).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            escaped(b"GET /clusterz?wait_for_nodes=>=3&q=\"a<b\" HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("GET /clusterz?wait_for_nodes=%3E=3&q=%22a%3Cb%22 HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        // Already valid, a path (not a query), no whole line, HTTP/2: as they were.
        assert_eq!(escaped(b"GET /clusterz?wait_for_nodes=%3E%3D3 HTTP/1.1\r\n"), None);
        assert_eq!(escaped(b"GET /a>b HTTP/1.1\r\n"), None);
        assert_eq!(escaped(b"GET /clusterz?x=>"), None);
        assert_eq!(escaped(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        // The body after the head is left alone.
        assert_eq!(
            escaped(b"POST /?a=> HTTP/1.1\r\nContent-Length: 1\r\n\r\n>").as_deref(),
            Some("POST /?a=%3E HTTP/1.1\r\nContent-Length: 1\r\n\r\n>")
        );
    }

    /// The rule, one byte at a time: what [`head_end`] must agree with.
    fn head_end_bytewise(mut tail: u8, bytes: &[u8]) -> Result<(), u8> {
        for &byte in bytes {
            tail = match (tail, byte) {
                (1 | 2, b'\n') => return Ok(()),
                (1, b'\r') => 2,
                (_, b'\n') => 1,
                _ => 0,
            };
        }
        Err(tail)
    }

    /// Feeds `bytes` in the given pieces; the index of the piece that completes the head.
    fn feed(f: fn(u8, &[u8]) -> Result<(), u8>, bytes: &[u8], cuts: &[usize]) -> Option<usize> {
        let mut tail = 0;
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        for (piece, end) in ends.into_iter().enumerate() {
            match f(tail, &bytes[start..end.max(start)]) {
                Ok(()) => return Some(piece),
                Err(t) => tail = t,
            }
            start = end.max(start);
        }
        None
    }

    #[test]
    fn a_head_ends_at_its_empty_line_across_reads() {
        assert_eq!(head_end(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(()));
        assert_eq!(head_end(0, b"GET / HTTP/1.1\nHost: x\n\n"), Ok(()));
        let tail = head_end(0, b"GET / HTTP/1.1\r\nHost: x\r").unwrap_err();
        let tail = head_end(tail, b"\n").unwrap_err();
        assert_eq!(tail, 1);
        let tail = head_end(tail, b"\r").unwrap_err();
        assert_eq!(head_end(tail, b"\n"), Ok(()));
        assert!(head_end(0, b"GET / HTTP/1.1\r\nHost: x\r\nX: y").is_err());
    }

    proptest! {
        #[test]
        fn the_fast_scan_agrees_with_the_bytewise_rule(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..64),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            prop_assert_eq!(feed(head_end, &bytes, &cuts), feed(head_end_bytewise, &bytes, &cuts));
        }
    }
}
