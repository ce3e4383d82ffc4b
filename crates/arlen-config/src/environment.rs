//! Where configuration variables come from.
//!
//! Code reads variables only through [`Environment`], implemented for the real
//! process environment and for a map (tests). Nothing here, or anywhere in
//! Arlen, mutates the process environment.

use std::collections::HashMap;

/// Current variable prefix.
pub const PREFIX: &str = "ARLEN_";
/// Legacy prefix of the original framework, read when the current variable is
/// unset or empty.
pub const LEGACY_PREFIX: &str = "MOJOOBJC_";

/// A read-only view of environment variables and the host name.
pub trait Environment {
    /// The raw value of `name`, if set (empty values are returned as they are).
    fn var(&self, name: &str) -> Option<String>;

    /// The machine's host name, used for the default `cluster.nodeID`.
    fn hostname(&self) -> Option<String>;

    /// Every variable name set (to warn about misspelled `ARLEN_*` ones);
    /// empty when the environment cannot list them.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
    }

    fn hostname(&self) -> Option<String> {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|name| name.trim().to_owned())
            .find(|name| !name.is_empty())
            .or_else(|| self.var("HOSTNAME").filter(|name| !name.trim().is_empty()))
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()).collect()
    }
}

/// A fixed set of variables, for tests and embedding.
///
/// ```
/// use arlen_config::{Environment, MapEnvironment};
/// let env = MapEnvironment::new([("ARLEN_PORT", "8080")]).with_hostname("box-1");
/// assert_eq!(env.var("ARLEN_PORT").as_deref(), Some("8080"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct MapEnvironment {
    vars: HashMap<String, String>,
    hostname: Option<String>,
}

impl MapEnvironment {
    pub fn new<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), hostname: None }
    }

    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }
}

impl Environment for MapEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }

    fn names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }
}

/// A variable value found for a suffix, and the name it was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVariable {
    pub name: String,
    pub value: String,
    /// True when the value came from the `MOJOOBJC_` twin.
    pub legacy: bool,
}

/// Reads `ARLEN_<suffix>`, falling back to `MOJOOBJC_<suffix>` when the
/// current name is unset or empty. An empty legacy value also counts as unset.
pub fn lookup_variable(env: &dyn Environment, suffix: &str) -> Option<FoundVariable> {
    let current = format!("{PREFIX}{suffix}");
    if let Some(value) = env.var(&current).filter(|v| !v.is_empty()) {
        return Some(FoundVariable { name: current, value, legacy: false });
    }
    let legacy = format!("{LEGACY_PREFIX}{suffix}");
    env.var(&legacy).filter(|v| !v.is_empty()).map(|value| FoundVariable { name: legacy, value, legacy: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_current_variable_falls_back_to_legacy() {
        let env = MapEnvironment::new([("ARLEN_PORT", ""), ("MOJOOBJC_PORT", "9000")]);
        let found = lookup_variable(&env, "PORT").unwrap();
        assert_eq!(found.name, "MOJOOBJC_PORT");
        assert_eq!(found.value, "9000");
        assert!(found.legacy);
    }

    #[test]
    fn current_variable_wins_over_legacy() {
        let env = MapEnvironment::new([("ARLEN_PORT", "8000"), ("MOJOOBJC_PORT", "9000")]);
        let found = lookup_variable(&env, "PORT").unwrap();
        assert_eq!((found.name.as_str(), found.legacy), ("ARLEN_PORT", false));
    }

    #[test]
    fn empty_everywhere_is_unset() {
        let env = MapEnvironment::new([("ARLEN_PORT", ""), ("MOJOOBJC_PORT", "")]);
        assert_eq!(lookup_variable(&env, "PORT"), None);
    }
}
