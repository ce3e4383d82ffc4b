//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Arlen: cluster-aware health, readiness and status for HTTP services.
///
/// Start with `arlen serve` to run one node, then try
/// `curl -i http://127.0.0.1:3000/readyz`. Configuration comes from
/// `config/app.{plist,toml,json}`, `config/environments/<env>.<ext>` and
/// `ARLEN_*` variables; `arlen config` shows the result and where each value
/// came from.
#[derive(Debug, Parser)]
#[command(name = "arlen", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node: the reserved endpoints (/healthz, /livez, /readyz,
    /// /clusterz, /metrics), cluster headers on every response, and a demo
    /// route at `/`.
    ///
    /// Stops gracefully on SIGTERM or Ctrl-C: stops accepting, lets requests in
    /// flight finish (shutdown.gracefulTimeoutSeconds), exits 0. Exits 2 on a
    /// configuration error, before binding any socket.
    Serve(ServeArgs),
    /// Print the effective configuration, each value with its source
    /// (default, file with line, variable or flag). Secrets are masked.
    /// Exits 2 and lists every error when the configuration is invalid.
    Config(ConfigArgs),
}

/// Where the configuration lives.
#[derive(Debug, Args)]
pub struct Location {
    /// Environment name; selects config/environments/<env>.<ext>
    /// [default: $ARLEN_ENV, else development]
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Directory that holds config/ [default: $ARLEN_APP_ROOT, else the current directory]
    #[arg(long, value_name = "DIR")]
    pub app_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (beats `host` in files and $ARLEN_HOST)
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Port to listen on, 1-65535 (beats `port` in files and $ARLEN_PORT)
    #[arg(long, value_name = "P")]
    pub port: Option<String>,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub location: Location,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}
