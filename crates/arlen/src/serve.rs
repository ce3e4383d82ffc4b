//! `arlen serve`: one node, from start to a drained stop.
//!
//! Start: configuration (exit 2 on error, nothing bound) → logging → runtime
//! → HTTP listener → membership source → `started`.
//! SIGHUP: reload the configuration files; apply what can change at run time.
//! SIGTERM/SIGINT: drain — `/readyz` fails, peers are told, the node keeps
//! serving for `shutdown.drainDelaySeconds` (a second signal skips it), then
//! stops accepting, finishes in-flight requests within
//! `shutdown.gracefulTimeoutSeconds`, leaves the cluster and exits 0.

use std::process::ExitCode;

use arlen_config::{Config, LoadOptions, Loaded, ProcessEnvironment};
use arlen_http::{Runtime, ServerSettings};
use axum::routing::get;
use axum::Router;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::ServeArgs;
use crate::config_cmd::{load_options, load_or_report};

/// Keys whose new value only takes effect after a restart.
const RESTART_KEYS: &[&str] = &[
    "host",
    "port",
    "logFormat",
    "logLevel",
    "listenBacklog",
    "connectionTimeoutSeconds",
    "enableReusePort",
    "http.titleCaseHeaders",
    "requestLimits.maxRequestLineBytes",
    "requestLimits.maxHeaderBytes",
    "requestLimits.maxBodyBytes",
    "runtimeLimits.maxConcurrentHTTPSessions",
    "cluster.enabled",
    "cluster.name",
    "cluster.nodeID",
    "cluster.membership.source",
    "cluster.gossip.listen",
    "cluster.gossip.advertise",
    "cluster.gossip.seeds",
    "cluster.gossip.intervalMs",
    "cluster.gossip.probeTimeoutMs",
    "cluster.gossip.suspicionTimeoutMs",
    "cluster.gossip.maxMembers",
    "cluster.gossip.deadMemberTtlSeconds",
    "cluster.gossip.allowUnauthenticated",
    "cluster.faultInjection.enabled",
];

pub fn run(args: ServeArgs) -> ExitCode {
    let mut options = load_options(&args.location);
    options.host = args.host;
    options.port = args.port;
    // Configuration first: on error nothing is bound and the exit status is 2.
    let loaded = match load_or_report(&options) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    crate::logging::init(&loaded.config);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(serve(options, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("arlen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo application: `GET /` names the node, so there is live traffic to
/// sample headers from.
fn demo_app(config: &Config) -> Router {
    let greeting = format!("arlen node {} (cluster {})\n", config.cluster.node_id, config.cluster.name);
    Router::new().route("/", get(move || async move { greeting }))
}

/// The signals `serve` reacts to, installed before anything else so an early
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

async fn serve(options: LoadOptions, loaded: Loaded) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let config = loaded.config.clone();
    let runtime = Runtime::new(&config);
    let listener = arlen_http::bind(&config)
        .map_err(|error| anyhow::anyhow!("cannot listen on {}:{}: {error}", config.host, config.port))?;
    let address = listener.local_addr()?;
    tracing::info!("listening on http://{address}");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(arlen_http::serve(
        listener,
        runtime.wrap(demo_app(&config)),
        runtime.clone(),
        ServerSettings::from_config(&config),
        async {
            let _ = stop_rx.await;
        },
    ));
    let membership = arlen_membership::start(&config, runtime.publisher()).await?;
    if let Some(traffic) = membership.gossip_traffic() {
        register_gossip_metrics(&runtime, &traffic);
    }
    if let Some(stats) = membership.etcd_stats() {
        runtime.metrics().register_labeled_counter_fn(
            "aln_etcd_rejected_records",
            "keys under the etcd member prefix that were not counted, by reason",
            "reason",
            arlen_membership::RecordRejection::ALL.iter().map(|reason| reason.label()).collect(),
            move |label| {
                arlen_membership::RecordRejection::ALL
                    .iter()
                    .find(|r| r.label() == label)
                    .map_or(0, |r| stats.rejected(*r))
            },
        );
    }
    crate::ops::enable_fault_endpoint(&config, &runtime, &membership);
    runtime.publisher().mark_started();
    tracing::info!(node = %config.cluster.node_id, source = membership.name(), "started");

    let mut current = loaded.clone();
    let signal = loop {
        tokio::select! {
            received = signals.next() => match received {
                Received::Reload => {
                    current = reload(&options, &loaded, current, &runtime);
                    membership.reload(&current.config).await;
                }
                Received::Stop(name) => break name,
            },
            // A membership source that cannot be kept running: exit non-zero so
            // that the process supervisor (systemd, Kubernetes) restarts the node.
            reason = membership.failed() => anyhow::bail!("membership failed for good: {reason}"),
        }
    };

    let shutdown = current.config.shutdown;
    runtime.publisher().mark_draining();
    membership.announce_draining().await;
    tracing::info!(
        signal,
        drain_delay_seconds = shutdown.drain_delay.as_secs(),
        "draining: /readyz answers 503 and the node keeps serving until the drain delay ends (a second signal skips it)"
    );
    tokio::select! {
        () = tokio::time::sleep(shutdown.drain_delay) => {}
        second = signals.next_stop() => tracing::info!(signal = second, "second signal: skipping the rest of the drain delay"),
    }
    let _ = stop_tx.send(());
    server.await??;
    membership.leave().await;
    tracing::info!("stopped");
    Ok(())
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
    let needs_restart: Vec<&str> = RESTART_KEYS
        .iter()
        .copied()
        .filter(|key| started.setting(key).map(|s| &s.value) != next.setting(key).map(|s| &s.value))
        .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "these changes need a restart to take effect; the running values stay");
    }
    runtime.apply_settings(&next.config);
    if started.config.cluster.membership.source == arlen_config::MembershipSource::StaticConfig {
        runtime.publisher().set_membership(arlen_membership::static_view(&next.config, std::time::SystemTime::now()));
    }
    tracing::info!("configuration reloaded");
    next
}

fn register_gossip_metrics(runtime: &Runtime, traffic: &std::sync::Arc<arlen_membership::GossipTraffic>) {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = runtime.metrics();
    let t = traffic.clone();
    metrics.register_counter_fn("aln_gossip_sent_bytes", "gossip bytes sent", move || t.bytes_sent.load(Relaxed));
    let t = traffic.clone();
    metrics.register_counter_fn("aln_gossip_received_bytes", "gossip bytes received", move || {
        t.bytes_received.load(Relaxed)
    });
    let t = traffic.clone();
    metrics
        .register_counter_fn("aln_gossip_sent_messages", "gossip messages sent", move || t.messages_sent.load(Relaxed));
    let t = traffic.clone();
    metrics.register_counter_fn("aln_gossip_received_messages", "gossip messages received", move || {
        t.messages_received.load(Relaxed)
    });
    let t = traffic.clone();
    metrics.register_labeled_counter_fn(
        "aln_gossip_rejected_datagrams",
        "gossip datagrams dropped before they could change anything, by reason",
        "reason",
        arlen_membership::Rejection::ALL.iter().map(|reason| reason.label()).collect(),
        move |label| arlen_membership::Rejection::ALL.iter().find(|r| r.label() == label).map_or(0, |r| t.rejected(*r)),
    );
}
