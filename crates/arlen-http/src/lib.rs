//! Arlen's HTTP layer on axum/tower: the reserved operability endpoints
//! (`/healthz`, `/livez`, `/readyz`, `/clusterz`, `/metrics`), the
//! `X-Arlen-Cluster-*`, identity and trace headers on every response, request
//! limits, metrics, and a server that writes the headers in the contract's
//! exact spelling (the cluster headers as pre-rendered lines) with graceful
//! shutdown.
//!
//! **Architecture invariant:** request handling never waits on membership IO.
//! Each request reads the current immutable snapshot once, and that one
//! snapshot feeds the body, the status and the headers of its response.
//! `/livez` and `/healthz` never look at cluster state.
//!
//! Mounting it in an axum application:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! let config = arlen_config::Config::from_map(std::path::Path::new("."), &[("ARLEN_CLUSTER_ENABLED", "1")]).unwrap();
//! let runtime = arlen_http::Runtime::new(&config);
//! let app = Router::new().route("/hello", get(|| async { "hello\n" }));
//! let listener = arlen_http::bind(&config)?;
//! runtime.publisher().mark_started();
//! arlen_http::serve(listener, runtime.wrap(app), runtime.clone(), arlen_http::ServerSettings::from_config(&config), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod checks;
pub mod connections;
pub use arlen_wire::documents;
pub mod endpoints;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod permits;
mod process_metrics;
mod runtime;
mod server;
pub mod trace;

pub use runtime::{
    node_identity, runtime_settings, AdminApp, BusyApp, Listener, Runtime, RuntimeLayer, RuntimeService,
    X_ARLEN_BACKPRESSURE_REASON,
};
pub use server::{bind, bind_address, bind_admin, serve, PeerAddr, ServerSettings, ADMIN_SESSIONS};
