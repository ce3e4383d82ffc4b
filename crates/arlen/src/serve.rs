//! `arlen serve`: one node.

use std::process::ExitCode;

use arlen_config::Config;
use arlen_http::{Runtime, ServerSettings};
use axum::routing::get;
use axum::Router;

use crate::cli::ServeArgs;
use crate::config_cmd::{load_options, load_or_report};

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
    match runtime.block_on(serve(loaded.config)) {
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

async fn serve(config: Config) -> anyhow::Result<()> {
    // Install signal handlers before anything else, so an early SIGTERM is a
    // graceful stop rather than the default abrupt exit.
    let signals = ShutdownSignals::install()?;
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
    runtime.publisher().mark_started();
    tracing::info!(node = %config.cluster.node_id, source = membership.name(), "started");

    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    membership.leave().await;
    let _ = stop_tx.send(());
    server.await??;
    tracing::info!("stopped");
    Ok(())
}

struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
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
}
