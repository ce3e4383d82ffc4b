//! An ordinary axum application that mounts the Arlen runtime: its own routes
//! get the `X-Arlen-Cluster-*` headers, and `/healthz`, `/livez`, `/readyz`,
//! `/clusterz` and `/metrics` are answered by the runtime.
//!
//! ```sh
//! ARLEN_CLUSTER_ENABLED=1 ARLEN_CLUSTER_EXPECTED_NODES=3 ARLEN_CLUSTER_OBSERVED_NODES=2 \
//!   cargo run -p arlen-example-axum-app
//! curl -i http://127.0.0.1:3000/hello
//! ```

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Configuration: config/app.<ext>, config/environments/<env>.<ext>, ARLEN_* variables.
    let env = arlen_config::ProcessEnvironment;
    let app_root = arlen_config::lookup_variable(&env, "APP_ROOT").map_or_else(|| ".".to_owned(), |found| found.value);
    let options = arlen_config::LoadOptions::new(app_root);
    let loaded = arlen_config::load(&options, &env).unwrap_or_else(|errors| {
        eprintln!("{errors}");
        std::process::exit(2);
    });
    let config = loaded.config;

    // 2. The runtime and a membership source publishing into it.
    let runtime = arlen_http::Runtime::new(&config);
    let membership = arlen_membership::start(&config, runtime.publisher()).await?;

    // 3. Your application, wrapped: reserved endpoints first, headers on everything.
    let app = Router::new().route("/hello", get(|| async { "hello from my app\n" }));
    let listener = arlen_http::bind(&config)?;
    println!("listening on http://{}", listener.local_addr()?);
    runtime.publisher().mark_started();
    let settings = arlen_http::ServerSettings::from_config(&config);
    arlen_http::serve(listener, runtime.wrap(app), runtime.clone(), settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    membership.leave().await;
    Ok(())
}
