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
    // Sidecar mode forwards everything that is not a reserved endpoint: the
    // proxy is the application itself (no router in between).
    let ran = match node.config().proxy.clone() {
        Some(proxy) => runtime.block_on(node.run(arlen_proxy::Proxy::new(&proxy))),
        None => {
            let app = demo_app(node.config());
            runtime.block_on(node.run(app))
        }
    };
    match ran {
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
    let greeting =
        axum::body::Bytes::from(format!("arlen node {} (cluster {})\n", config.cluster.node_id, config.cluster.name));
    Router::new().route(
        "/",
        get(move || {
            let greeting = greeting.clone();
            async move {
                // Room for the runtime's cluster, identity and trace headers
                // from the start (growing the map later copies it).
                let mut headers = axum::http::HeaderMap::with_capacity(16);
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                let mut response = axum::response::Response::new(axum::body::Body::from(greeting));
                *response.headers_mut() = headers;
                response
            }
        }),
    )
}
