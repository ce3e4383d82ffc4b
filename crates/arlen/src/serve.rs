//! `arlen serve`: one node running the demo application. The lifecycle
//! (configuration, listener, membership, SIGHUP reload, SIGTERM drain and
//! leave) is `arlen_node::Node`; this page adds the demo route and the exit
//! codes (2: configuration, 1: a failure while running).

use std::process::ExitCode;

use arlen_config::Config;
use axum::routing::get;
use axum::Router;

use crate::cli::ServeArgs;
use crate::config_cmd::{load_options, load_or_report};

pub fn run(args: ServeArgs) -> ExitCode {
    let mut options = load_options(&args.location);
    options.host = args.host;
    options.port = args.port;
    options.upstream = args.upstream;
    // Configuration first: on error nothing is bound and the exit status is 2.
    let loaded = match load_or_report(&options) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let node = arlen_node::Node::from_loaded(options, loaded);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // Inside the runtime: the span exporter (OTEL_*) runs its exports on it.
    let entered = runtime.enter();
    if let Err(error) = node.init_logging() {
        shout!("arlen: {error}");
        return ExitCode::from(2);
    }
    drop(entered);
    // Sidecar mode forwards everything that is not a reserved endpoint.
    let app = match &node.config().proxy {
        Some(proxy) => arlen_proxy::Proxy::router(proxy),
        None => demo_app(node.config()),
    };
    match runtime.block_on(node.run(app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            shout!("arlen: {error}");
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
