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

thread_local! {
    static RUNTIME: (tokio::runtime::Runtime, arlen_http::Runtime) = {
        let tokio = paused_runtime();
        let runtime = {
            let _guard = tokio.enter();
            arlen_http::Runtime::new(default_config())
        };
        (tokio, runtime)
    };
}

/// Runs `f` with this thread's paused tokio runtime and a node runtime made
/// inside it from the default configuration.
pub fn with_node<T>(f: impl FnOnce(&tokio::runtime::Runtime, &arlen_http::Runtime) -> T) -> T {
    RUNTIME.with(|(tokio, runtime)| f(tokio, runtime))
}
