//! Log set-up from `logFormat` and `logLevel`.

use arlen_config::{Config, LogFormat};
use tracing_subscriber::filter::LevelFilter;

pub(crate) fn init(config: &Config) {
    let level = match config.log_level.as_str() {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // Our crates log at the configured level; dependencies (foca, hyper,
    // etcd-client, ...) from warn up — at most our level — so an attack on
    // the gossip port or a failing etcd connection always leaves a trace.
    let filter = dependency_filter(level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The filter: every target at `warn` (or `level`, when stricter), Arlen's
/// own crates at `level`.
fn dependency_filter(level: LevelFilter) -> tracing_subscriber::EnvFilter {
    let dependencies = level.min(LevelFilter::WARN);
    // The default directive only applies to an empty filter: name it.
    tracing_subscriber::EnvFilter::builder().parse_lossy(format!(
        "{dependencies},arlen={level},arlen_http={level},arlen_membership={level},arlen_config={level},arlen_cluster={level}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_log_from_warn_up() {
        let filter = dependency_filter(LevelFilter::DEBUG).to_string();
        assert!(filter.contains("arlen_membership=debug"), "{filter}");
        assert!(filter.contains("warn"), "{filter}");
        let strict = dependency_filter(LevelFilter::ERROR).to_string();
        assert!(strict.contains("error") && !strict.contains("warn"), "{strict}");
    }
}
