//! A node's lifecycle as a library: what `arlen serve` does, around any axum
//! `Router`.
//!
//! Start: configuration (errors collected, nothing bound) → logging (optional,
//! [`Node::init_logging`]) → the runtime → the HTTP listener (HTTP/1.1 and
//! h2c) → the membership source → `started`.
//! SIGHUP: reload the configuration files and apply what can change at run
//! time (readiness settings, static membership, gossip keys); a file that does
//! not load is rejected and the running configuration kept.
//! SIGTERM/SIGINT: drain — `/readyz` fails, peers are told (`draining`), the
//! node keeps serving for `shutdown.drainDelaySeconds` (a second signal skips
//! it), then stops accepting, finishes in-flight requests within
//! `shutdown.gracefulTimeoutSeconds`, leaves the cluster and returns.
//! A membership source that fails for good ends [`Node::run`] with an error,
//! so the process can exit non-zero and its supervisor restart it.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let node = match arlen_node::Node::load(arlen_node::LoadOptions::new(".")) {
//!         Ok(node) => node,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             return std::process::ExitCode::from(2);
//!         }
//!     };
//!     if let Err(error) = node.init_logging() {
//!         eprintln!("{error}");
//!         return std::process::ExitCode::from(2);
//!     }
//!     let app = Router::new().route("/", get(|| async { "hello\n" }));
//!     match node.run(app).await {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```

#![forbid(unsafe_code)]

mod logging;
mod ops;
mod systemd;
mod telemetry;

use std::future::Future;
use std::time::Duration;

use arlen_config::ProcessEnvironment;
pub use arlen_config::{Config, ConfigErrors, LoadOptions, Loaded};
/// The application's own checks ([`Node::with_check`]).
pub use arlen_http::checks;
/// The metric types for [`NodeHandle::metrics`], at the version the runtime uses.
pub use arlen_http::metrics::prometheus_client;
use arlen_http::{Runtime, ServerSettings};
use arlen_membership::RunningSource;
pub use telemetry::TelemetryError;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What [`Node::run`] serves: an axum [`Router`](axum::Router), or any cloneable tower
/// service of axum requests that answers every request (its errors are
/// `Infallible`).
pub trait Application:
    tower::Service<
        axum::http::Request<axum::body::Body>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Application for S where
    S: tower::Service<
            axum::http::Request<axum::body::Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Why a node could not start, or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration does not load; every problem is listed.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Membership(#[from] arlen_membership::MembershipError),
    /// The membership source could not be kept running.
    #[error("membership failed for good: {0}")]
    MembershipFailed(String),
    /// The upstream health check stopped (sidecar mode).
    #[error("the upstream health check stopped: {0}")]
    UpstreamCheckStopped(String),
    /// One of the application's checks stopped running (its task ended).
    #[error("the check {0} stopped running: {1}")]
    CheckStopped(String, String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
    /// One of the runtime's background tasks panicked.
    #[error("{0}")]
    RuntimeTaskStopped(String),
    /// An OpenTelemetry variable asks for what cannot be done.
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
}

/// One node, configured and ready to run an application.
#[derive(Debug)]
pub struct Node {
    options: LoadOptions,
    loaded: Loaded,
    runtime: Runtime,
    checks: Vec<arlen_http::checks::Check>,
    hooks: Hooks,
    telemetry: telemetry::Telemetry,
}

/// Code of the application's, run at a point of the node's life.
type Hook = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

#[derive(Default)]
struct Hooks {
    before_drain: Vec<Hook>,
    after_leave: Vec<Hook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("before_drain", &self.before_drain.len())
            .field("after_leave", &self.after_leave.len())
            .finish()
    }
}

async fn run_hooks(hooks: Vec<Hook>, when: &str) {
    for (i, hook) in hooks.into_iter().enumerate() {
        // A hook that panics is logged, not fatal: the drain goes on.
        if futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(hook())).await.is_err() {
            tracing::error!(hook = i, when, "an application hook panicked");
        }
    }
}

/// The node as the application's code sees it while it runs: the current
/// snapshot and a summary of the cluster view, membership events, and the
/// metrics registry of `/metrics`. Cheap to clone; put it in your router's
/// state or an extension.
///
/// ```no_run
/// use axum::{extract::State, routing::get, Router};
///
/// # async fn demo() -> Result<(), arlen_node::NodeError> {
/// let node = arlen_node::Node::load(arlen_node::LoadOptions::new("."))?;
/// let handle = node.handle();
/// let app = Router::new()
///     .route("/peers", get(|State(handle): State<arlen_node::NodeHandle>| async move {
///         let view = handle.view();
///         format!("{} of {} nodes, {}\n", view.observed_nodes, view.expected_nodes, view.status)
///     }))
///     .with_state(handle);
/// node.run(app).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NodeHandle {
    runtime: Runtime,
}

/// What a handler usually wants to know about the cluster, at one moment
/// (one snapshot: the same the response's headers are made from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: String,
    pub status: arlen_cluster::QuorumStatus,
    pub observed_nodes: u32,
    pub expected_nodes: u32,
    /// Quorum as readiness uses it (after hysteresis).
    pub quorum_met: bool,
    /// `/readyz` would answer 200 now.
    pub ready: bool,
    pub draining: bool,
    /// Members the source knows, with their state (this node included).
    pub members: Vec<(String, arlen_cluster::MemberState)>,
}

impl NodeHandle {
    /// The current immutable snapshot (never waits on membership IO).
    ///
    /// ```no_run
    /// # fn demo(handle: arlen_node::NodeHandle) {
    /// let snapshot = handle.snapshot();
    /// for member in &snapshot.membership.members {
    ///     println!("{} is {:?}", member.node_id, member.state);
    /// }
    /// # }
    /// ```
    pub fn snapshot(&self) -> std::sync::Arc<arlen_cluster::Snapshot> {
        self.runtime.snapshot()
    }

    /// The cluster as this node sees it now.
    ///
    /// ```no_run
    /// # fn demo(handle: arlen_node::NodeHandle) {
    /// let view = handle.view();
    /// if !view.quorum_met {
    ///     // e.g. refuse writes that need the whole cluster
    /// }
    /// # }
    /// ```
    pub fn view(&self) -> ClusterView {
        let snapshot = self.runtime.snapshot();
        let now = self.runtime.reader().now().monotonic;
        let readiness = snapshot.readiness_at(now);
        ClusterView {
            node_id: snapshot.identity.node_id.clone(),
            status: snapshot.quorum.status,
            observed_nodes: snapshot.quorum.observed_nodes,
            expected_nodes: snapshot.quorum.expected_nodes,
            quorum_met: snapshot.gate.met_at(now),
            ready: readiness.ready,
            draining: snapshot.lifecycle.draining,
            members: snapshot.membership.members.iter().map(|m| (m.node_id.clone(), m.state)).collect(),
        }
    }

    /// Membership, quorum, readiness and accusation events as they happen
    /// (the `/clusterz/events` stream, in-process).
    ///
    /// ```no_run
    /// # async fn demo(handle: arlen_node::NodeHandle) {
    /// let mut events = handle.subscribe();
    /// while let Some(event) = events.next().await {
    ///     tracing::info!(kind = ?event.kind, status = ?event.status, "cluster changed");
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> arlen_http::endpoints::EventSubscription {
        self.runtime.subscribe_events()
    }

    /// The registry behind `/metrics`: register the application's metrics
    /// here and they are exposed beside the runtime's, in both formats.
    ///
    /// ```no_run
    /// use arlen_node::prometheus_client::metrics::counter::Counter;
    /// # fn demo(handle: arlen_node::NodeHandle) {
    /// let orders: Counter = Counter::default();
    /// handle.metrics().register("shop_orders", "orders taken", orders.clone());
    /// orders.inc(); // /metrics: shop_orders_total 1
    /// # }
    /// ```
    pub fn metrics(&self) -> &arlen_http::metrics::Metrics {
        self.runtime.metrics()
    }
}

impl Node {
    /// Loads the configuration from `options` (files under its app root) and
    /// the process's `ARLEN_*` variables. Nothing is bound yet.
    pub fn load(options: LoadOptions) -> Result<Self, NodeError> {
        let loaded = arlen_config::load(&options, &ProcessEnvironment)?;
        Ok(Self::from_loaded(options, loaded))
    }

    /// A node from a configuration loaded already (`options` is where a
    /// SIGHUP reloads it from).
    pub fn from_loaded(options: LoadOptions, loaded: Loaded) -> Self {
        let runtime = Runtime::new(&loaded.config);
        Self {
            options,
            loaded,
            runtime,
            checks: Vec::new(),
            hooks: Hooks::default(),
            telemetry: telemetry::Telemetry::default(),
        }
    }

    /// Adds one of the application's own checks ([`arlen_http::checks::Check`]):
    /// it runs from the start until the node stops, and its verdict gates
    /// `/readyz` (or `/livez`) like the runtime's own.
    ///
    /// ```no_run
    /// use arlen_http::checks::Check;
    /// # fn demo(node: arlen_node::Node) -> Result<arlen_node::Node, arlen_http::checks::CheckError> {
    /// let node = node.with_check(Check::readiness("database", || async {
    ///     // a real query on your pool; Err takes this node out of rotation
    ///     Ok::<_, String>("SELECT 1 answered")
    /// })?);
    /// # Ok(node) }
    /// ```
    pub fn with_check(mut self, check: arlen_http::checks::Check) -> Self {
        self.checks.push(check);
        self
    }

    /// Runs `hook` when a stop signal arrives, before the node leaves
    /// rotation (stop taking background work, say). The drain waits for it.
    ///
    /// ```no_run
    /// # fn demo(node: arlen_node::Node, queue: std::sync::Arc<std::sync::atomic::AtomicBool>) -> arlen_node::Node {
    /// // Stop taking jobs from the queue while requests still drain.
    /// node.before_drain(move || async move { queue.store(false, std::sync::atomic::Ordering::Relaxed) })
    /// # }
    /// ```
    pub fn before_drain<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.before_drain.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Runs `hook` after the node has finished its requests and left the
    /// cluster (flush what is buffered, close pools).
    ///
    /// ```no_run
    /// # fn demo(node: arlen_node::Node) -> arlen_node::Node {
    /// node.after_leave(|| async { tracing::info!("left the cluster; flushing") })
    /// # }
    /// ```
    pub fn after_leave<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.after_leave.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// The node as the application's handlers see it ([`NodeHandle`]).
    pub fn handle(&self) -> NodeHandle {
        NodeHandle { runtime: self.runtime.clone() }
    }

    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// Warnings of the load (legacy names, clamped values, typos).
    pub fn warnings(&self) -> &[String] {
        &self.loaded.warnings
    }

    /// Installs Arlen's log subscriber (`logFormat`, `logLevel`, or
    /// `RUST_LOG`; dependencies from `warn` up) and logs the load's warnings.
    /// With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, it also
    /// exports spans over OTLP (every request's span, whose ids the
    /// `traceparent` headers carry; the node flushes them when it stops):
    /// call it inside the tokio runtime. An `OTEL_*` variable that asks for
    /// what cannot be done is an error (exit 2, as for configuration).
    ///
    /// Skip it to keep your own subscriber; add a `tracing-opentelemetry`
    /// layer (the version [`arlen_http::otel`] re-exports) to it and the
    /// request spans are yours to export.
    pub fn init_logging(&self) -> Result<(), NodeError> {
        logging::init(&self.loaded.config, &self.telemetry)?;
        for warning in &self.loaded.warnings {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    /// Serves `app` with the reserved endpoints and headers until SIGTERM or
    /// SIGINT, then drains, leaves the cluster and returns.
    ///
    /// `app` is usually an axum [`Router`](axum::Router); any cloneable tower service of
    /// axum requests will do (the sidecar passes its proxy as it is: a
    /// router with only a fallback would route every request to it).
    pub async fn run<S>(self, app: S) -> Result<(), NodeError>
    where
        S: Application,
        S::Future: Send + 'static,
    {
        let telemetry = self.telemetry.clone();
        let mut signals = Signals::install().map_err(NodeError::Signals)?;
        let ended = self.run_inner(app, &mut signals).await;
        telemetry.shutdown().await;
        ended
    }

    /// A node's life in three phases: build (bind, before anything runs),
    /// spawn (serve, membership, start), then run until a stop signal and
    /// drain.
    async fn run_inner<S>(self, app: S, signals: &mut Signals) -> Result<(), NodeError>
    where
        S: Application,
        S::Future: Send + 'static,
    {
        let Node { options, loaded, runtime, checks, hooks, telemetry: _ } = self;
        if let Some(note) = rolling_restart_note(&loaded.config) {
            tracing::info!("{note}");
        }
        let built = Built::bind(&loaded.config, runtime)?;
        let mut running = built.spawn(&loaded.config, app, checks).await?;
        let (signal, current) = running.until_stopped(&options, &loaded, signals).await?;
        run_hooks(hooks.before_drain, "before_drain").await;
        running.drain_and_stop(signal, &current.config, signals.next_stop()).await?;
        run_hooks(hooks.after_leave, "after_leave").await;
        Ok(())
    }
}

/// What the quorum policy means for a rolling restart, when readiness
/// follows quorum.
pub fn rolling_restart_note(config: &Config) -> Option<String> {
    let cluster = &config.cluster;
    (cluster.enabled && config.observability.readiness_requires_cluster_quorum).then(|| {
        let settings = arlen_http::runtime_settings(config);
        let grace = u64::try_from(cluster.quorum_loss_grace.as_millis()).unwrap_or(u64::MAX);
        settings.quorum_policy.rolling_restart_note(cluster.expected_nodes, grace)
    })
}

/// Raises the descriptor limit and says what the budget is.
fn budget_descriptors() {
    match arlen_http::connections::raise_descriptor_limit() {
        Ok(limit) => {
            let budget = arlen_http::connections::Descriptors::global();
            tracing::info!(
                limit,
                reserve = budget.reserve(),
                "descriptor budget: application connections stop before the reserve, which answers probes and the admin listener"
            );
            if limit < 4096 {
                tracing::warn!(limit, "the descriptor limit is low for a server; raise LimitNOFILE (systemd) or the container's nofile ulimit");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read or raise the descriptor limit"),
    }
}

/// Phase one: the runtime and the bound listeners; nothing runs yet.
struct Built {
    runtime: Runtime,
    listener: tokio::net::TcpListener,
    admin_listener: Option<tokio::net::TcpListener>,
}

impl Built {
    fn bind(config: &Config, runtime: Runtime) -> Result<Self, NodeError> {
        budget_descriptors();
        let listener = arlen_http::bind(config)
            .map_err(|source| NodeError::Bind { address: format!("{}:{}", config.host, config.port), source })?;
        if let Ok(address) = listener.local_addr() {
            tracing::info!("listening on http://{address}");
        }
        let admin_listener = match arlen_http::bind_admin(config) {
            Some(Ok(admin)) => {
                if let Ok(address) = admin.local_addr() {
                    tracing::info!("admin listener on http://{address} (probes, /clusterz, /metrics, operations)");
                }
                Some(admin)
            }
            Some(Err(source)) => {
                let address = config.admin_listen.clone().unwrap_or_default();
                return Err(NodeError::Bind { address, source });
            }
            None => None,
        };
        Ok(Self { runtime, listener, admin_listener })
    }

    /// Phase two: serve, check the upstream, start membership, say started.
    async fn spawn<S>(
        self,
        config: &Config,
        app: S,
        mut checks: Vec<arlen_http::checks::Check>,
    ) -> Result<Running, NodeError>
    where
        S: Application,
        S::Future: Send + 'static,
    {
        let Built { runtime, listener, admin_listener } = self;
        let (admin_stop, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_server = admin_listener.map(|admin| {
            tokio::spawn(arlen_http::serve(
                admin,
                runtime.admin_service(),
                runtime.clone(),
                ServerSettings::admin(config),
                async {
                    let _ = admin_stop_rx.await;
                },
            ))
        });
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(arlen_http::serve(
            listener,
            runtime.wrap(app),
            runtime.clone(),
            ServerSettings::from_config(config),
            async {
                let _ = stop_rx.await;
            },
        ));
        // Sidecar: not ready until the upstream has answered its first check.
        let upstream_check = config.proxy.as_ref().map(|proxy| {
            runtime.publisher().set_upstream(arlen_proxy::unchecked(proxy));
            tokio::spawn(arlen_proxy::watch_upstream(proxy.clone(), runtime.publisher()))
        });
        // The application's checks (registered in code, and configured for
        // any language): each on a task of its own, noticed if it ends.
        checks
            .extend(arlen_proxy::configured_checks(&config.checks, config.proxy.as_ref().map(|p| p.upstream.as_str())));
        let checks: Vec<(String, tokio::task::JoinHandle<()>)> =
            checks.into_iter().map(|check| (check.name().to_owned(), runtime.add_check(check))).collect();
        let membership = arlen_membership::start(config, runtime.publisher()).await?;
        register_membership_metrics(&runtime, &membership);
        ops::enable_fault_endpoint(config, &runtime, &membership);
        ops::enable_stop_permits(config, &runtime, &membership);
        runtime.publisher().mark_started();
        tracing::info!(node = %config.cluster.node_id, source = membership.name(), "started");
        let notifier = systemd::Notifier::from_env();
        notifier.ready(&runtime.snapshot(), runtime.reader().now().monotonic);
        let notifications = tokio::spawn(notifier.run(runtime.reader()));
        Ok(Running {
            runtime,
            membership,
            server,
            stop,
            admin_server,
            admin_stop,
            upstream_check,
            checks,
            notifier,
            notifications,
        })
    }
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Phase three: everything running, until a stop signal; then the drain.
struct Running {
    runtime: Runtime,
    membership: RunningSource,
    server: ServerTask,
    stop: tokio::sync::oneshot::Sender<()>,
    admin_server: Option<ServerTask>,
    admin_stop: tokio::sync::oneshot::Sender<()>,
    upstream_check: Option<tokio::task::JoinHandle<()>>,
    /// The application's checks, by name.
    checks: Vec<(String, tokio::task::JoinHandle<()>)>,
    notifier: systemd::Notifier,
    notifications: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Serves, reloading on SIGHUP, until SIGTERM or SIGINT (the signal's
    /// name and the configuration then in force) — or fails when a part
    /// that must keep running stops.
    async fn until_stopped(
        &mut self,
        options: &LoadOptions,
        loaded: &Loaded,
        signals: &mut Signals,
    ) -> Result<(&'static str, Loaded), NodeError> {
        let mut current = loaded.clone();
        loop {
            tokio::select! {
                received = signals.next() => match received {
                    Received::Reload => {
                        current = reload(options, loaded, current, &self.runtime);
                        self.membership.reload(&current.config).await;
                    }
                    Received::Stop(name) => return Ok((name, current)),
                },
                reason = self.membership.failed() => return Err(NodeError::MembershipFailed(reason)),
                reason = self.runtime.task_failed() => return Err(NodeError::RuntimeTaskStopped(reason)),
                // A listener that stops before it is told to is a failure, not a quiet node.
                ended = &mut self.server => return Err(server_failure(ended)),
                ended = async { self.admin_server.as_mut().expect("guarded").await }, if self.admin_server.is_some() => {
                    return Err(server_failure(ended));
                }
                ended = async { self.upstream_check.as_mut().expect("guarded").await }, if self.upstream_check.is_some() => {
                    let reason = match ended {
                        Ok(()) => "it returned".to_owned(),
                        Err(join) => join.to_string(),
                    };
                    return Err(NodeError::UpstreamCheckStopped(reason));
                }
                (ended, index, _) = async { futures_util::future::select_all(self.checks.iter_mut().map(|(_, task)| task)).await }, if !self.checks.is_empty() => {
                    let reason = match ended {
                        Ok(()) => "it returned".to_owned(),
                        Err(join) => join.to_string(),
                    };
                    return Err(NodeError::CheckStopped(self.checks[index].0.clone(), reason));
                }
            }
        }
    }

    /// Out of rotation, the drain delay, stop accepting, in-flight requests
    /// finish, leave the cluster.
    async fn drain_and_stop(
        self,
        signal: &'static str,
        config: &Config,
        second_signal: impl Future<Output = &'static str>,
    ) -> Result<(), NodeError> {
        self.notifier.stopping();
        drain(signal, config, &self.runtime, &self.membership, second_signal).await;
        let _ = self.stop.send(());
        // The admin listener answers probes until the service port has finished.
        let served = self.server.await;
        let _ = self.admin_stop.send(());
        let admin_served = match self.admin_server {
            Some(admin) => admin.await,
            None => Ok(Ok(())),
        };
        for served in [served, admin_served] {
            if !matches!(served, Ok(Ok(()))) {
                return Err(server_failure(served));
            }
        }
        self.membership.leave().await;
        if let Some(check) = self.upstream_check {
            check.abort();
        }
        for (_, check) in self.checks {
            check.abort();
        }
        self.notifications.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// What a listener's task ending means: its error, its panic, or (before
/// the node asked it to stop) that it stopped serving.
fn server_failure(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> NodeError {
    NodeError::Server(match ended {
        Ok(Ok(())) => std::io::Error::other("the listener stopped serving"),
        Ok(Err(error)) => error,
        Err(join) => std::io::Error::other(join.to_string()),
    })
}

/// Out of rotation, tell peers, keep serving for the drain delay (until a
/// second signal).
async fn drain(
    signal: &'static str,
    config: &Config,
    runtime: &Runtime,
    membership: &RunningSource,
    second_signal: impl Future<Output = &'static str>,
) {
    let shutdown = config.shutdown;
    runtime.publisher().mark_draining();
    membership.announce_draining().await;
    let started = tokio::time::Instant::now();
    if shutdown.drain_quiet.is_zero() {
        tracing::info!(
            signal,
            drain_delay_seconds = shutdown.drain_delay.as_secs(),
            "draining: /readyz answers 503 and the node keeps serving until the drain delay ends (a second signal skips it)"
        );
    } else {
        tracing::info!(
            signal,
            quiet_ms = shutdown.drain_quiet.as_millis() as u64,
            min_seconds = shutdown.drain_delay.as_secs(),
            max_seconds = shutdown.drain_max.max(shutdown.drain_delay).as_secs(),
            "draining: /readyz answers 503 and the node keeps serving until no request has arrived for the quiet period (a second signal skips it)"
        );
    }
    tokio::select! {
        ended = drained(&shutdown, runtime) => {
            tracing::info!(drained_ms = started.elapsed().as_millis() as u64, "{ended}");
        }
        second = second_signal => tracing::info!(signal = second, "second signal: skipping the rest of the drain delay"),
    }
}

/// The drain's wait: the fixed delay, or (with `drainQuietPeriodMs`) until
/// no application request has arrived for the quiet period — load balancers
/// have seen `/readyz` fail and stopped sending — within the minimum
/// (`drainDelaySeconds`) and the maximum (`drainMaxDelaySeconds`). What
/// ended it.
async fn drained(shutdown: &arlen_config::ShutdownConfig, runtime: &Runtime) -> &'static str {
    if shutdown.drain_quiet.is_zero() {
        tokio::time::sleep(shutdown.drain_delay).await;
        return "drain delay over";
    }
    let started = tokio::time::Instant::now();
    let step = (shutdown.drain_quiet / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    loop {
        let elapsed = started.elapsed();
        if elapsed >= shutdown.drain_max.max(shutdown.drain_delay) {
            return "drain ended at its maximum (drainMaxDelaySeconds): requests were still arriving";
        }
        if elapsed >= shutdown.drain_delay && runtime.quiet_for() >= shutdown.drain_quiet {
            return "drain ended: no request for the quiet period (drainQuietPeriodMs)";
        }
        tokio::time::sleep(step).await;
    }
}

/// The signals a node reacts to, installed before anything else so an early
/// SIGTERM is a graceful stop rather than the default abrupt exit.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

enum Received {
    Stop(&'static str),
    Reload,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.terminate.recv() => Received::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Received::Stop("SIGINT"),
            _ = self.hangup.recv() => Received::Reload,
        }
    }

    /// The next SIGTERM or SIGINT (SIGHUP is ignored while stopping).
    async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Received::Stop(name) = self.next().await {
                return name;
            }
        }
    }
}

/// Reloads the configuration files. A configuration that does not load is
/// rejected with its errors logged, and the running one kept. `started` is the
/// configuration the node started with (what restart-only keys still run on).
fn reload(options: &LoadOptions, started: &Loaded, current: Loaded, runtime: &Runtime) -> Loaded {
    tracing::info!("SIGHUP: reloading configuration");
    let next = match arlen_config::load(options, &ProcessEnvironment) {
        Ok(next) => next,
        Err(errors) => {
            tracing::error!("configuration reload rejected, keeping the running configuration: {errors}");
            return current;
        }
    };
    for warning in &next.warnings {
        tracing::warn!("{warning}");
    }
    // What a reload applies is declared next to each key, in the registry.
    let needs_restart: Vec<&str> = arlen_config::KEYS
        .iter()
        .filter(|spec| spec.reload == arlen_config::Reload::Restart)
        .filter(|spec| started.setting_of(spec.id).value != next.setting_of(spec.id).value)
        .map(|spec| spec.key)
        .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these changes need a restart to take effect; the running values stay");
    }
    runtime.apply_settings(&next.config);
    tracing::info!("configuration reloaded");
    next
}

/// The membership source's own counters (named by the source) in `/metrics`.
fn register_membership_metrics(runtime: &Runtime, membership: &RunningSource) {
    let metrics = runtime.metrics();
    for counter in membership.counters() {
        match counter.read {
            arlen_membership::CounterRead::Plain(read) => metrics.register_counter_fn(counter.name, counter.help, read),
            arlen_membership::CounterRead::Labeled { label, values, read } => {
                metrics.register_labeled_counter_fn(counter.name, counter.help, label, values, read)
            }
        }
    }
}
