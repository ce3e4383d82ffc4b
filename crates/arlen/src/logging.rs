//! Log set-up from `logFormat` and `logLevel`.

use arlen_config::{Config, LogFormat};
use tracing_subscriber::filter::LevelFilter;

pub fn init(config: &Config) {
    let level = match config.log_level.as_str() {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // Our crates log at the configured level; dependencies only from warn up.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse_lossy(format!("arlen={level},arlen_http={level},arlen_membership={level},arlen_config={level}"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
