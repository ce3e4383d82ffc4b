//! [`Runtime`]: the per-node state the HTTP layer reads, and the service
//! that wraps an application with the reserved endpoints and headers.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use arlen_cluster::{
    snapshot_channel, Clock, GateWindows, MembershipView, NodeIdentity, QuorumPolicy, RuntimeSettings, Snapshot,
    SnapshotPublisher, SnapshotReader, Timestamp,
};
use arlen_config::{Config, QuorumPolicySetting, RequestLimits};
use axum::body::Body;
use axum::response::Response;
use futures_util::FutureExt as _;
use http::header::{CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, StatusCode, Version};
use tower::{Layer, Service, ServiceExt as _};

use crate::endpoints::{self, plain};
use crate::metrics::Metrics;
use crate::trace::RequestIds;

/// Header naming why a request was turned away under load.
pub const X_ARLEN_BACKPRESSURE_REASON: HeaderName = HeaderName::from_static(arlen_wire::headers::BACKPRESSURE_REASON);

/// Set (with the cluster headers) while the node drains; never by the application.
const X_ARLEN_DRAINING: HeaderName = HeaderName::from_static(arlen_wire::headers::DRAINING);

/// The process's clock: monotonic time since the runtime was created, and wall time.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp { monotonic: self.origin.elapsed(), wall: SystemTime::now() }
    }
}

/// The settings of a configuration that may change while the node runs.
pub fn runtime_settings(config: &Config) -> RuntimeSettings {
    let o = &config.observability;
    let c = &config.cluster;
    RuntimeSettings {
        expected_nodes: c.expected_nodes,
        quorum_policy: match c.quorum_policy {
            QuorumPolicySetting::All => QuorumPolicy::All,
            QuorumPolicySetting::Majority => QuorumPolicy::Majority,
            QuorumPolicySetting::AtLeast(n) => QuorumPolicy::AtLeast(n),
            QuorumPolicySetting::Zones => QuorumPolicy::Zones(c.expected_zones),
        },
        gate_windows: GateWindows { loss_grace: c.quorum_loss_grace, recovery_stable: c.quorum_recovery_stable },
        emit_headers: config.cluster.emit_headers,
        health_details_enabled: o.health_details_enabled,
        readiness_requires_startup: o.readiness_requires_startup,
        readiness_requires_cluster_quorum: o.readiness_requires_cluster_quorum,
        metrics_enabled: o.metrics_enabled,
        legacy_metric_names: o.legacy_metric_names,
        trace_propagation_enabled: o.trace_propagation_enabled,
        response_identity_headers_enabled: o.response_identity_headers_enabled,
        keep_incoming_request_id: o.keep_incoming_request_id,
        access_log: o.access_log,
        session_enabled: config.session.enabled,
        session_secret_configured: !config.session.secret.is_empty(),
    }
}

/// This process's identity in the cluster.
pub fn node_identity(config: &Config) -> NodeIdentity {
    NodeIdentity {
        cluster_enabled: config.cluster.enabled,
        cluster_name: config.cluster.name.clone(),
        node_id: config.cluster.node_id.clone(),
        worker_pid: std::process::id(),
    }
}

/// State shared by every request of one node.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The background tasks were started ([`Runtime::start`]).
    tasks: std::sync::OnceLock<()>,
    /// Set when one of them panicked: what and why ([`Runtime::task_failed`]).
    task_failure: tokio::sync::watch::Sender<Option<String>>,
    pub(crate) reader: SnapshotReader,
    pub(crate) metrics: Metrics,
    /// The listener has closed: every response asks the client to close.
    closing: std::sync::atomic::AtomicBool,
    /// Operations endpoints, when enabled.
    ops: std::sync::OnceLock<crate::ops::Ops>,
    /// `/_arlen/stop-permits`, when an operations token is set.
    permits: std::sync::OnceLock<crate::permits::PermitsEndpoint>,
    limits: RequestLimits,
    started_at: Instant,
    /// When the last application request arrived, in ms since `started_at`
    /// (0: none yet): the adaptive drain waits for it to go quiet.
    last_application_request: std::sync::atomic::AtomicU64,
    /// Hand each application request its [`RequestIds`] (in its extensions),
    /// for an inner service that propagates them (the sidecar).
    expose_ids: bool,
    /// `/clusterz` waits in progress are bounded.
    waits: Arc<tokio::sync::Semaphore>,
    /// `/clusterz/events`: history and subscribers.
    events: Arc<crate::endpoints::Events>,
    /// An admin listener is configured: the operations endpoints exist only there.
    admin_listener: bool,
    /// Member details for every requester (`observability.detailsAccess = public`).
    public_details: bool,
    /// Digest of `observability.detailsToken`, when set.
    details_token: Option<[u8; 32]>,
}

/// Which listener a service answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The service port: the application and the reserved endpoints.
    Service,
    /// The admin listener (`admin.listen`): the reserved endpoints, member
    /// details and the operations endpoints; no application.
    Admin,
}

/// The runtime of one node: its snapshot cell, metrics and request limits.
///
/// ```no_run
/// # async fn demo(config: arlen_config::Config) {
/// use axum::{routing::get, Router};
/// let runtime = arlen_http::Runtime::new(&config);
/// let app: Router = Router::new().route("/hello", get(|| async { "hi" }));
/// let service = runtime.wrap(app); // reserved endpoints + headers on every response
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    publisher: SnapshotPublisher,
}

impl Runtime {
    /// A runtime whose membership is not reported yet (nothing observed) until a
    /// membership source publishes through [`Runtime::publisher`]. It spawns
    /// nothing: [`Runtime::start`] starts its background tasks
    /// ([`crate::serve`] calls it).
    pub fn new(config: &Config) -> Self {
        let (publisher, reader) = snapshot_channel(
            node_identity(config),
            runtime_settings(config),
            MembershipView::uninitialised("unstarted"),
            Arc::new(SystemClock::new()),
        );
        let events = Arc::new(crate::endpoints::Events::new());
        let shared = Shared {
            tasks: std::sync::OnceLock::new(),
            reader,
            metrics: Metrics::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            ops: std::sync::OnceLock::new(),
            permits: std::sync::OnceLock::new(),
            limits: config.request_limits,
            task_failure: tokio::sync::watch::channel(None).0,
            started_at: Instant::now(),
            last_application_request: std::sync::atomic::AtomicU64::new(0),
            expose_ids: config.proxy.is_some(),
            waits: Arc::new(tokio::sync::Semaphore::new(crate::endpoints::MAX_CONCURRENT_WAITS)),
            events,
            admin_listener: config.admin_listen.is_some(),
            public_details: config.observability.details_access == arlen_config::DetailsAccess::Public,
            details_token: Some(&config.observability.details_token)
                .filter(|token| !token.is_empty())
                .map(|token| crate::ops::digest(token.as_bytes())),
        };
        Self { shared: Arc::new(shared), publisher }
    }

    /// Starts the runtime's background tasks on the current tokio runtime,
    /// once (later calls do nothing): publishing hysteresis transitions when
    /// they fall due, and turning snapshots into `/clusterz/events`.
    /// [`crate::serve`] calls it; an application serving [`Runtime::wrap`] with
    /// a server of its own calls it before serving.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(&self) {
        self.shared.tasks.get_or_init(|| {
            let reader = self.shared.reader.clone();
            let failure = &self.shared.task_failure;
            supervise("hysteresis", apply_due_transitions(self.publisher.clone(), reader.clone()), failure.clone());
            supervise("events", self.shared.events.clone().run(reader), failure.clone());
        });
    }

    /// Resolves when one of the runtime's background tasks has panicked
    /// (what and why): pending quorum and check transitions would no longer
    /// be published, so whoever runs the node should stop it (`arlen-node`
    /// ends `Node::run` with an error). Pending forever otherwise.
    pub async fn task_failed(&self) -> String {
        let mut failure = self.shared.task_failure.subscribe();
        let reason = match failure.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Enables `/_arlen/faults` for requests bearing `token` (once; later calls
    /// are ignored). Without this the path is the application's.
    pub fn enable_fault_endpoint(&self, token: String, control: Arc<dyn crate::ops::FaultControl>) {
        let _ = self.shared.ops.set(crate::ops::Ops::new(token, control));
    }

    /// Enables `/_arlen/stop-permits` for requests bearing `token` (once;
    /// later calls are ignored), its permits kept in `store`. With
    /// `single_granter` (a store in this process's memory) only the
    /// lowest-named member alive grants; the others answer 421 naming it.
    pub fn enable_stop_permits(
        &self,
        token: &str,
        store: Arc<dyn arlen_cluster::permits::PermitStore>,
        single_granter: bool,
    ) {
        let _ = self.shared.permits.set(crate::permits::PermitsEndpoint::new(token, store, single_granter));
    }

    /// From now on every response carries `Connection: close`.
    pub fn set_closing(&self) {
        self.shared.closing.store(true, std::sync::atomic::Ordering::Release);
        self.shared.events.close();
    }

    /// Applies the run-time settings of a reloaded configuration.
    pub fn apply_settings(&self, config: &Config) {
        self.publisher.set_settings(runtime_settings(config));
    }

    /// How long since the last request the application (or the sidecar's
    /// upstream) was asked to answer — probes and the runtime's own
    /// endpoints do not count; since the start when there was none.
    pub fn quiet_for(&self) -> Duration {
        let shared = &self.shared;
        let last = Duration::from_millis(shared.last_application_request.load(std::sync::atomic::Ordering::Relaxed));
        shared.started_at.elapsed().saturating_sub(last)
    }

    /// Where membership sources and the lifecycle publish.
    pub fn publisher(&self) -> SnapshotPublisher {
        self.publisher.clone()
    }

    /// A reader of the current snapshot.
    pub fn reader(&self) -> SnapshotReader {
        self.shared.reader.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.reader.current()
    }

    /// The node's metrics (to register counters kept elsewhere).
    /// Runs one of the application's own checks (see [`crate::checks`]):
    /// registered in the snapshot at once (a readiness check fails until its
    /// first run), then run on a task of its own until the handle is
    /// aborted.
    pub fn add_check(&self, check: crate::checks::Check) -> tokio::task::JoinHandle<()> {
        check.spawn(self.publisher())
    }

    /// Membership, quorum and readiness events, as `/clusterz/events`
    /// streams them (needs [`Runtime::start`]).
    pub fn subscribe_events(&self) -> crate::endpoints::EventSubscription {
        self.shared.events.subscription()
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// A tower layer that adds the runtime to a service.
    pub fn layer(&self) -> RuntimeLayer {
        RuntimeLayer { shared: self.shared.clone() }
    }

    /// What the admin listener serves: the reserved endpoints (with member
    /// details) and the operations endpoints; any other path is 404.
    pub fn admin_service(&self) -> RuntimeService<AdminApp> {
        RuntimeService { inner: AdminApp, shared: self.shared.clone(), listener: Listener::Admin }
    }

    /// Wraps an application (usually an axum `Router`).
    pub fn wrap<S>(&self, inner: S) -> RuntimeService<S> {
        self.layer().layer(inner)
    }

    /// What a connection over `maxConcurrentHTTPSessions` is served by: the
    /// reserved endpoints answer by their own rules (a probe is never turned
    /// away because the application's traffic holds every session), anything
    /// else gets 503 with `Retry-After: 1` and the reason.
    pub fn busy_service(&self, listener: Listener) -> RuntimeService<BusyApp> {
        RuntimeService { inner: BusyApp, shared: self.shared.clone(), listener }
    }
}

/// The admin listener's application: nothing but 404.
#[derive(Debug, Clone, Copy)]
pub struct AdminApp;

impl Service<Request<Body>> for AdminApp {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Body>) -> Self::Future {
        std::future::ready(Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /healthz, /livez, /readyz, /clusterz, /metrics and /_arlen/\n",
        )))
    }
}

/// The application of an over-limit connection: 503 for everything.
#[derive(Debug, Clone, Copy)]
pub struct BusyApp;

impl Service<Request<Body>> for BusyApp {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "server busy: too many open connections\n");
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(X_ARLEN_BACKPRESSURE_REASON, HeaderValue::from_static("http_session_limit"));
        if request.version() < Version::HTTP_2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        std::future::ready(Ok(response))
    }
}

/// Publishes a refresh when a pending hysteresis transition falls due, so the
/// snapshot (and its metrics and waiters) catch up with the clock. Readers do
/// not depend on it: they judge the gate at their own time.
async fn apply_due_transitions(publisher: SnapshotPublisher, mut reader: SnapshotReader) {
    loop {
        let snapshot = reader.current_and_mark_seen();
        // The earliest due transition: quorum's gate, or an application check's.
        let due = snapshot
            .gate
            .pending
            .into_iter()
            .chain(snapshot.checks.0.iter().filter_map(|c| c.gate.pending))
            .map(|p| p.effective_at.monotonic)
            .min();
        match due {
            Some(effective_at) => {
                let wait = effective_at.saturating_sub(reader.now().monotonic);
                tokio::select! {
                    () = tokio::time::sleep(wait) => publisher.refresh(),
                    alive = reader.changed() => if !alive { return },
                }
            }
            None => {
                if !reader.changed().await {
                    return;
                }
            }
        }
    }
}

impl Shared {
    /// Adds cluster, identity and trace headers, and records metrics. The
    /// cluster headers replace any the application set, so each goes out once.
    fn finish(
        &self,
        response: &mut Response,
        snapshot: &Snapshot,
        ids: &RequestIds,
        started: Instant,
        version: Version,
        served: Served,
    ) {
        let headers = response.headers_mut();
        if let Some(cluster_headers) = &snapshot.headers {
            // Room for the cluster and four identity/trace headers in one allocation.
            headers.reserve(11);
            // Only an application that set X-Arlen-* itself needs replacing
            // (a scan of a few names, cheaper than a lookup per header).
            let spoofed = headers.keys().any(|name| name.as_str().starts_with("x-arlen-"));
            for (name, value) in cluster_headers.iter() {
                if spoofed {
                    headers.insert(name.clone(), value.clone());
                } else {
                    headers.append(name.clone(), value.clone());
                }
            }
            if spoofed && !snapshot.lifecycle.draining {
                headers.remove(X_ARLEN_DRAINING);
            }
        }
        ids.apply(headers);
        // HTTP/2 has no `Connection` header: a closing server sends GOAWAY instead.
        if version < Version::HTTP_2 && self.closing.load(std::sync::atomic::Ordering::Acquire) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let elapsed = (served == Served::Application).then(|| started.elapsed());
        self.metrics.finish(response.status().as_u16(), elapsed);
    }

    /// A response for a request that breaks a configured limit, if it does.
    fn check_limits(&self, request: &Request<Body>) -> Option<Response> {
        let limits = &self.limits;
        // "METHOD SP request-target SP HTTP/1.1"
        let target_len = request.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
        let line_len = request.method().as_str().len() + 1 + target_len + 1 + 8;
        if line_len > limits.max_request_line_bytes {
            return Some(plain(StatusCode::URI_TOO_LONG, "request line too long\n"));
        }
        let header_bytes: usize =
            request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if header_bytes > limits.max_header_bytes {
            return Some(plain(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header fields too large\n"));
        }
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > limits.max_body_bytes as u64) {
            let mut response = plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            if request.version() < Version::HTTP_2 {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            return Some(response);
        }
        None
    }

    /// Whether this request may see member details.
    fn full_details(&self, listener: Listener, request: &Request<Body>) -> bool {
        listener == Listener::Admin
            || self.public_details
            || self.details_token.as_ref().is_some_and(|token| crate::ops::bears(request.headers(), token))
    }

    async fn handle<S>(self: Arc<Self>, request: Request<Body>, inner: S, listener: Listener) -> Response
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible> + Send,
        S::Future: Send,
    {
        let started = Instant::now();
        // One snapshot for body, status and headers of this response.
        let snapshot = self.reader.current();
        let mut ids = RequestIds::for_snapshot(request.headers(), &snapshot);
        // The request's span: every log line of this request (the
        // application's included) carries its request and trace ids, and an
        // OpenTelemetry layer exports it (`trace_id`, `span_id` and the
        // caller's `parent_span_id` are the W3C ids of the headers).
        // Every field is given at creation: a formatting layer formats a
        // span's fields when it is made and again at each `record` (the JSON
        // one re-parses them), so recording afterwards costs per request.
        let exporting = crate::otel::exporting();
        let parent = crate::trace::incoming_parent_id(request.headers());
        let request_id = ids.request_id().and_then(|id| id.to_str().ok());
        let span = if exporting {
            // Through `arlen_http::otel::layer`: a server span named by the method.
            tracing::info_span!(
                target: "arlen::request",
                "request",
                otel.name = request.method().as_str(),
                otel.kind = "server",
                method = request.method().as_str(),
                path = request.uri().path(),
                request_id,
                // The exported span's own, once it exists (below).
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                parent_span_id = parent,
            )
        } else {
            tracing::info_span!(
                target: "arlen::request",
                "request",
                method = request.method().as_str(),
                path = request.uri().path(),
                request_id,
                trace_id = ids.trace_id(),
                span_id = ids.span_id(),
                parent_span_id = parent,
            )
        };
        // With an OpenTelemetry layer (ours or the application's own), the
        // headers carry the exported span's ids.
        if !span.is_disabled() && (crate::otel::continue_trace(&span, request.headers(), &mut ids) || exporting) {
            span.record("trace_id", ids.trace_id());
            span.record("span_id", ids.span_id());
        }
        let access = snapshot
            .settings
            .access_log
            .map(|percent| (request.method().clone(), request.uri().path().to_owned(), percent));
        let response = tracing::Instrument::instrument(
            self.clone().handle_in_span(request, inner, listener, snapshot, &ids, started),
            span.clone(),
        )
        .await;
        if exporting {
            // To the exporter only: a formatting layer would pay for a field.
            crate::otel::finish(&span, response.status());
        }
        if let Some((method, path, percent)) = access {
            access_log(&method, &path, &response, &ids, started, percent);
        }
        response
    }

    async fn handle_in_span<S>(
        self: Arc<Self>,
        request: Request<Body>,
        inner: S,
        listener: Listener,
        snapshot: Arc<Snapshot>,
        ids: &RequestIds,
        started: Instant,
    ) -> Response
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible> + Send,
        S::Future: Send,
    {
        let version = request.version();
        let _active = self.metrics.begin();
        let mut served = Served::Runtime;
        let (mut response, snapshot) = if let Some(rejection) = self.check_limits(&request) {
            (rejection, snapshot)
        } else if let Some(permits) = self
            .permits
            .get()
            .filter(|_| listener == Listener::Admin || !self.admin_listener)
            .filter(|permits| permits.claims(&request))
        {
            (permits.answer(request, &snapshot).await, snapshot)
        } else if let Some(ops) = self
            .ops
            .get()
            .filter(|_| listener == Listener::Admin || !self.admin_listener)
            .filter(|ops| ops.claims(&request))
        {
            (ops.answer(request, self.limits.max_body_bytes).await, snapshot)
        } else if let Some(endpoint) = endpoints::match_reserved(request.uri().path()) {
            let full_details = self.full_details(listener, &request);
            let (parts, _body) = request.into_parts();
            let now = self.reader.now();
            let cx = endpoints::Context {
                metrics: &self.metrics,
                uptime_seconds: self.started_at.elapsed().as_secs(),
                now: now.wall,
                monotonic_now: now.monotonic,
                waits: &self.waits,
                full_details,
                events: &self.events,
            };
            let answered = endpoints::answer(endpoint, &parts, snapshot, &self.reader, &cx).await;
            (answered.response, answered.snapshot)
        } else {
            served = Served::Application;
            let arrived = u64::try_from(started.saturating_duration_since(self.started_at).as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            self.last_application_request.store(arrived, std::sync::atomic::Ordering::Relaxed);
            let max_body = self.limits.max_body_bytes;
            let mut request = request;
            if self.expose_ids {
                request.extensions_mut().insert(ids.clone());
            }
            // A body already at its end (most GETs) has nothing to limit.
            let request = if http_body::Body::is_end_stream(request.body()) {
                request
            } else {
                request.map(|body| Body::new(http_body_util::Limited::new(body, max_body)))
            };
            let response = match AssertUnwindSafe(inner.oneshot(request)).catch_unwind().await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_panic) => {
                    tracing::error!("request handler panicked; answering 500");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
                }
            };
            (response, snapshot)
        };
        self.finish(&mut response, &snapshot, ids, started, version, served);
        response
    }
}

/// One structured line for a finished request (target `arlen::access`), for
/// `percent` of the requests and every 5xx.
fn access_log(method: &http::Method, path: &str, response: &Response, ids: &RequestIds, started: Instant, percent: u8) {
    let status = response.status().as_u16();
    if status < 500 && percent < 100 && rand::random::<u8>() % 100 >= percent {
        return;
    }
    let bytes = http_body::Body::size_hint(response.body()).exact();
    let upstream_error = response.headers().get("x-arlen-upstream-error").and_then(|v| v.to_str().ok());
    let request_id = ids.request_id().and_then(|v| v.to_str().ok());
    // Outside the request's span: the line carries its ids itself, and a
    // formatter would otherwise copy (for JSON: re-parse) the span's fields
    // into every access line.
    tracing::info!(
        target: "arlen::access",
        parent: None,
        method = method.as_str(),
        path,
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        bytes,
        upstream_error,
        request_id,
        trace_id = ids.trace_id(),
        "request"
    );
}

/// Who answered a request: the application (or the sidecar's upstream), or
/// the runtime itself (a reserved endpoint, an operation, a limit). Only the
/// application's answers are timed in the request histogram: probes every
/// second would otherwise make up its bulk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Served {
    Application,
    Runtime,
}

/// Runs `task` and reports its panic through `failure` (a task that returns
/// has ended normally: its snapshot publisher is gone with the runtime).
fn supervise(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
    failure: tokio::sync::watch::Sender<Option<String>>,
) {
    let running = tokio::spawn(task);
    tokio::spawn(async move {
        if let Err(ended) = running.await {
            if ended.is_panic() {
                let reason = format!("the runtime's {name} task panicked: {ended}");
                tracing::error!(task = name, "{reason}");
                failure.send_replace(Some(reason));
            }
        }
    });
}

/// See [`Runtime::layer`].
#[derive(Debug, Clone)]
pub struct RuntimeLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for RuntimeLayer {
    type Service = RuntimeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RuntimeService { inner, shared: self.shared.clone(), listener: Listener::Service }
    }
}

/// An application wrapped by the runtime: reserved endpoints first (they
/// cannot be shadowed), request limits, then the application; cluster,
/// identity and trace headers on every response, panics turned into 500.
#[derive(Debug, Clone)]
pub struct RuntimeService<S> {
    inner: S,
    shared: Arc<Shared>,
    listener: Listener,
}

impl<S> Service<Request<Body>> for RuntimeService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited per request (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        Box::pin(shared.handle(request, inner, self.listener).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_one_that_returns_is_not() {
        let (failure, mut seen) = tokio::sync::watch::channel(None);
        supervise("quiet", async {}, failure.clone());
        supervise("broken", async { panic!("boom") }, failure.clone());
        let reason = tokio::time::timeout(Duration::from_secs(5), seen.wait_for(Option::is_some))
            .await
            .expect("reported")
            .expect("the sender lives")
            .clone()
            .unwrap();
        assert!(reason.contains("broken task panicked") && reason.contains("boom"), "{reason}");
    }
}
