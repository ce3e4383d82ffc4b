//! An ordinary axum application that runs as an Arlen node: its own routes
//! get the `X-Arlen-Cluster-*` headers, `/healthz`, `/livez`, `/readyz`,
//! `/clusterz` and `/metrics` are answered by the runtime, and SIGTERM drains
//! it (out of rotation, requests in flight finish, the cluster is told).
//!
//! It also uses what a real application needs from the node: a readiness
//! check on its own dependency (a TCP service at `APP_DATABASE_ADDR`, when
//! set: while it does not answer, the node is out of rotation), a metric of
//! its own in `/metrics`, a handler that reads the cluster view, and hooks
//! around the drain.
//!
//! ```sh
//! cd examples/axum-app
//! ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_OBSERVED_NODES=2 cargo run
//! curl -i http://127.0.0.1:3000/hello
//! curl http://127.0.0.1:3000/peers
//! ```

use std::process::ExitCode;
use std::time::Duration;

use arlen_node::checks::Check;
use arlen_node::prometheus_client::metrics::counter::Counter;
use arlen_node::NodeHandle;
use axum::extract::State;
use axum::routing::get;
use axum::Router;

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    hellos: Counter,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Configuration: config/app.<ext>, config/environments/<env>.<ext> under
    // $ARLEN_APP_ROOT (else .), then ARLEN_* variables. Errors: all of them, exit 2.
    let app_root = std::env::var("ARLEN_APP_ROOT").unwrap_or_else(|_| ".".to_owned());
    let mut node = match arlen_node::Node::load(arlen_node::LoadOptions::new(app_root)) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    // Logs, and spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the
    // `otlp` feature): every request's span continues the caller's trace.
    if let Err(error) = node.init_logging() {
        eprintln!("{error}");
        return ExitCode::from(2);
    }

    // A readiness check on a dependency of ours: while the database does not
    // accept connections, /readyz answers 503 and the load balancer stops
    // sending us traffic (our /livez stays 200: restarting would not help).
    if let Ok(address) = std::env::var("APP_DATABASE_ADDR") {
        let check = Check::readiness("database", move || {
            let address = address.clone();
            async move {
                match tokio::net::TcpStream::connect(&address).await {
                    Ok(_) => Ok(format!("{address} accepts connections")),
                    Err(error) => Err(format!("{address}: {error}")),
                }
            }
        })
        .expect("a valid check name")
        .interval(Duration::from_millis(200))
        .timeout(Duration::from_millis(500));
        node = node.with_check(check);
    }

    // A metric of ours, in the same /metrics as the runtime's.
    let handle = node.handle();
    let hellos = Counter::default();
    handle.metrics().register("app_hello_requests", "requests to /hello", hellos.clone());

    let node = node
        .before_drain(|| async { tracing::info!("app: stopping background work before the drain") })
        .after_leave(|| async { tracing::info!("app: left the cluster; buffers flushed") });

    // Your application: Arlen answers the reserved endpoints first and puts
    // the cluster, identity and trace headers on every response.
    let app = Router::new()
        .route(
            "/hello",
            get(|State(state): State<AppState>| async move {
                state.hellos.inc();
                "hello from my app\n"
            }),
        )
        // The cluster as this node sees it, without an HTTP call to itself.
        .route(
            "/peers",
            get(|State(state): State<AppState>| async move {
                let view = state.node.view();
                let members: Vec<String> = view.members.iter().map(|(id, state)| format!("{id}={state}")).collect();
                format!(
                    "{} sees {} of {} nodes ({}); ready: {}; members: {}\n",
                    view.node_id,
                    view.observed_nodes,
                    view.expected_nodes,
                    view.status,
                    view.ready,
                    members.join(" ")
                )
            }),
        )
        .with_state(AppState { node: handle, hellos });

    // Serves until SIGTERM/SIGINT, then drains and leaves, as `arlen serve` does.
    match node.run(app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
