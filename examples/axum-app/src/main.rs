//! An ordinary axum application that runs as an Arlen node: its own routes
//! get the `X-Arlen-Cluster-*` headers, `/healthz`, `/livez`, `/readyz`,
//! `/clusterz` and `/metrics` are answered by the runtime, and SIGTERM drains
//! it (out of rotation, requests in flight finish, the cluster is told).
//!
//! ```sh
//! cd examples/axum-app
//! ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_OBSERVED_NODES=2 cargo run
//! curl -i http://127.0.0.1:3000/hello
//! ```

use std::process::ExitCode;

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> ExitCode {
    // Configuration: config/app.<ext>, config/environments/<env>.<ext> under
    // $ARLEN_APP_ROOT (else .), then ARLEN_* variables. Errors: all of them, exit 2.
    let app_root = std::env::var("ARLEN_APP_ROOT").unwrap_or_else(|_| ".".to_owned());
    let node = match arlen_node::Node::load(arlen_node::LoadOptions::new(app_root)) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    node.init_logging();

    // Your application: Arlen answers the reserved endpoints first and puts
    // the cluster, identity and trace headers on every response.
    let app = Router::new().route("/hello", get(|| async { "hello from my app\n" }));

    // Serves until SIGTERM/SIGINT, then drains and leaves, as `arlen serve` does.
    match node.run(app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
