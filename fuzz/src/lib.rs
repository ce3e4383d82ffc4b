//! What the fuzz targets share: a node's runtime on a paused clock.

use std::sync::OnceLock;

use arlen_config::{Config, LoadOptions, MapEnvironment};

/// The default configuration (no files, no variables).
pub fn default_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        arlen_config::load(&LoadOptions::new("/nonexistent"), &MapEnvironment::default())
            .expect("the default configuration loads")
            .config
    })
}

/// A current-thread runtime whose clock is paused: a `/clusterz` wait or a
/// header timeout completes at once instead of stalling the fuzzer.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("tokio runtime")
}

/// Splits `data` at each `0xff` byte (never part of UTF-8 text).
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0xff).collect()
}
