//! Log set-up from `logFormat` and `logLevel`, or `RUST_LOG` when it is set
//! (the usual Rust directives, `arlen_membership=debug,hyper=info`; it takes
//! precedence over `logLevel`, as in every tracing-based program).

use arlen_config::{Config, LogFormat};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::telemetry::{Telemetry, TelemetryError};

/// Installs the log subscriber (and, with the `otlp` feature and the
/// standard variables set, the span exporter: see [`crate::telemetry`]).
pub(crate) fn init(config: &Config, telemetry: &Telemetry) -> Result<(), TelemetryError> {
    let level = match config.log_level.as_str() {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // Our crates log at the configured level; dependencies (foca, hyper,
    // etcd-client, ...) from warn up — at most our level — so an attack on
    // the gossip port or a failing etcd connection always leaves a trace.
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, from_rust_log) = choose_filter(rust_log.as_deref(), level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    #[cfg(feature = "otlp")]
    let spans = telemetry.start(config)?.map(|tracer| {
        // The same spans as the log lines, and every request's span whatever
        // the log level: it is what the headers name.
        let (filter, _) = choose_filter(rust_log.as_deref(), level);
        let filter = filter.add_directive("arlen::request=info".parse().expect("a valid directive"));
        arlen_http::otel::layer(tracer).with_filter(filter)
    });
    #[cfg(not(feature = "otlp"))]
    let spans: Option<tracing_subscriber::layer::Identity> = {
        telemetry.warn_if_requested();
        None
    };
    let exporting = spans.is_some();
    // No `Option` layer when there is nothing to export: a `None` layer
    // answers `Interest::always()` for every callsite, which makes every
    // disabled span (the request's, at `warn`) be created per request.
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    match spans {
        Some(spans) => registry.with(spans).init(),
        None => registry.init(),
    }
    match from_rust_log {
        Ok(Some(directives)) => {
            tracing::info!(%directives, "log filter from RUST_LOG (it takes precedence over logLevel)")
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "RUST_LOG ignored: not a log filter; logLevel applies"),
    }
    if exporting {
        tracing::info!("exporting spans over OTLP (OTEL_* variables)");
    }
    Ok(())
}

/// `RUST_LOG` when it is set and parses (and which), else the filter of
/// `level`; a `RUST_LOG` that does not parse is reported, not fatal.
fn choose_filter(
    rust_log: Option<&str>,
    level: LevelFilter,
) -> (tracing_subscriber::EnvFilter, Result<Option<String>, String>) {
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (dependency_filter(level), Ok(None)),
        Some(directives) => match tracing_subscriber::EnvFilter::builder().parse(directives) {
            Ok(filter) => (filter, Ok(Some(directives.to_owned()))),
            Err(error) => (dependency_filter(level), Err(format!("{directives:?}: {error}"))),
        },
    }
}

/// The filter: every target at `warn` (or `level`, when stricter), Arlen's
/// own crates at `level`.
fn dependency_filter(level: LevelFilter) -> tracing_subscriber::EnvFilter {
    let dependencies = level.min(LevelFilter::WARN);
    // The default directive only applies to an empty filter: name it.
    // The access log is its own switch (observability.accessLog): its lines
    // are written whatever the level.
    tracing_subscriber::EnvFilter::builder().parse_lossy(format!(
        "{dependencies},arlen={level},arlen_http={level},arlen_membership={level},arlen_config={level},arlen_cluster={level},arlen::access=info"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_takes_precedence_and_a_bad_one_is_reported() {
        let (filter, source) = choose_filter(Some("arlen_membership=trace,foca=debug"), LevelFilter::INFO);
        assert_eq!(source, Ok(Some("arlen_membership=trace,foca=debug".to_owned())));
        assert!(filter.to_string().contains("foca=debug"), "{filter}");
        let (filter, source) = choose_filter(Some("  "), LevelFilter::INFO);
        assert_eq!(source, Ok(None));
        assert!(filter.to_string().contains("arlen=info"), "{filter}");
        let (filter, source) = choose_filter(Some("arlen=loud"), LevelFilter::DEBUG);
        assert!(source.is_err_and(|e| e.contains("arlen=loud")));
        assert!(filter.to_string().contains("arlen=debug"), "{filter}");
    }

    #[test]
    fn dependencies_log_from_warn_up() {
        let filter = dependency_filter(LevelFilter::DEBUG).to_string();
        assert!(filter.contains("arlen_membership=debug"), "{filter}");
        assert!(filter.contains("warn"), "{filter}");
        let strict = dependency_filter(LevelFilter::ERROR).to_string();
        assert!(strict.contains("error") && !strict.contains("warn"), "{strict}");
        assert!(strict.contains("arlen::access=info"), "the access log is its own switch: {strict}");
    }
}
