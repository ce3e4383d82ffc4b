//! Arlen configuration: layered files, variables and flags, resolved through
//! one key registry into a typed [`Config`] with per-value provenance.
//!
//! Precedence, highest first (CONTRACT §1.1): flags of `arlen serve`,
//! `ARLEN_<NAME>` (else `MOJOOBJC_<NAME>`), `config/environments/<env>.<ext>`,
//! `config/app.<ext>`, built-in defaults, then dependent defaults and
//! clamping. Every error of a load is collected and returned together.
//!
//! This crate reads files and variables; it opens no sockets.

#![forbid(unsafe_code)]

pub mod build;
mod checks;
mod environment;
mod error;
mod files;
mod gossip_keys;
mod registry;
mod value;

mod loader;
mod model;

pub use loader::{load, resolve_env_name};
pub use model::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use checks::{check_name_problem, parse_checks, CheckTarget, ConfiguredCheck, RESERVED_CHECK_NAMES};
pub use environment::{lookup_variable, Environment, MapEnvironment, ProcessEnvironment};
pub use error::{ConfigError, ConfigErrors, Position};
use files::FileLayer;
pub use gossip_keys::GossipKeys;
pub use registry::{closest as closest_key, find as find_key, reference_markdown, Key, KeySpec, Kind, Reload, KEYS};

/// The shortest operations token accepted.
pub const MIN_OPS_TOKEN_CHARS: usize = 32;

/// The longest `cluster.zone`, in bytes.
pub const MAX_ZONE_BYTES: usize = 64;

/// Why `zone` cannot name a zone, if it cannot: empty (no zone), or 1 to
/// [`MAX_ZONE_BYTES`] of `A-Z a-z 0-9 . _ -` (it appears in headers, metric
/// labels and etcd records as it is).
pub fn zone_problem(zone: &str) -> Option<String> {
    let shaped = zone.len() <= MAX_ZONE_BYTES
        && zone.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    (!shaped)
        .then(|| format!("zone {zone:?}: use 1 to {MAX_ZONE_BYTES} of A-Z, a-z, 0-9, `.`, `_` and `-`, or nothing"))
}

/// The inline gossip keys (a secret).
pub const GOSSIP_KEYS_KEY: Key = Key::ClusterGossipKeys;
/// The gossip keys file.
pub const GOSSIP_KEYS_FILE_KEY: Key = Key::ClusterGossipKeysFile;

/// The environment name used when none is given.
pub const DEFAULT_ENV: &str = "development";

/// What the caller (usually `arlen serve` or `arlen config`) supplies.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directory holding `config/`.
    pub app_root: PathBuf,
    /// `--env`, if given (beats `ARLEN_ENV`).
    pub env_name: Option<String>,
    /// `--host`, if given.
    pub host: Option<String>,
    /// `--port`, if given (parsed with the same rules as every other value).
    pub port: Option<String>,
    /// `--upstream`, if given.
    pub upstream: Option<String>,
}

impl LoadOptions {
    pub fn new(app_root: impl Into<PathBuf>) -> Self {
        Self { app_root: app_root.into(), ..Self::default() }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A default computed from another value or the machine.
    ComputedDefault(&'static str),
    File {
        path: PathBuf,
        position: Option<Position>,
    },
    Variable(String),
    Flag(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::ComputedDefault(how) => write!(f, "default ({how})"),
            Source::File { path, position: Some(p) } => write!(f, "file {}:{}:{}", path.display(), p.line, p.column),
            Source::File { path, position: None } => write!(f, "file {}", path.display()),
            Source::Variable(name) => write!(f, "variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A resolved value of a registered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    Bool(bool),
    Integer(i64),
    Text(String),
    List(Vec<String>),
    /// One of a `Kind::OneOf` key's words, and its position in the list.
    Word {
        word: &'static str,
        index: usize,
    },
    /// `cluster.quorumPolicy`, parsed once.
    Policy(QuorumPolicySetting),
}

impl Typed {
    fn to_json(&self) -> Value {
        match self {
            Typed::Bool(b) => Value::Bool(*b),
            Typed::Integer(i) => Value::from(*i),
            Typed::Text(t) => Value::String(t.clone()),
            Typed::List(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
            Typed::Word { word, .. } => Value::String((*word).to_owned()),
            Typed::Policy(policy) => Value::String(policy.name()),
        }
    }
}

/// One registered key with its effective value and where it came from.
#[derive(Debug, Clone)]
pub struct Setting {
    pub spec: &'static KeySpec,
    pub value: Typed,
    pub source: Source,
}

impl Setting {
    /// The value as it may be shown to people: secrets are masked.
    pub fn display_value(&self) -> String {
        match (&self.spec.kind, &self.value) {
            (Kind::Secret, Typed::Text(t)) if t.is_empty() => "(not configured)".to_owned(),
            // How many keys, never the keys.
            (Kind::Secret, Typed::Text(t)) if self.spec.id == GOSSIP_KEYS_KEY => {
                format!("({} configured)", t.split(',').filter(|k| !k.trim().is_empty()).count())
            }
            (Kind::Secret, _) => "(configured)".to_owned(),
            (_, Typed::Bool(true)) => "YES".to_owned(),
            (_, Typed::Bool(false)) => "NO".to_owned(),
            (_, Typed::Integer(i)) => i.to_string(),
            (_, Typed::Text(t)) => t.clone(),
            (_, Typed::List(items)) if items.is_empty() => "(none)".to_owned(),
            (_, Typed::List(items)) => items.join(","),
            (_, Typed::Word { word, .. }) => (*word).to_owned(),
            (_, Typed::Policy(policy)) => policy.name(),
        }
    }
}

/// The result of a successful load.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Every registered key, in registry order.
    pub settings: Vec<Setting>,
    /// The merged configuration tree with effective values of registered keys,
    /// for applications that keep their own settings in the same files.
    pub tree: Map<String, Value>,
    /// Warnings to log once logging is set up (legacy names, clamping, typos).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// The setting of a key named by its dotted name (`arlen config`, tests).
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.spec.key == key)
    }

    /// The setting of a key.
    pub fn setting_of(&self, key: Key) -> &Setting {
        &self.settings[key as usize]
    }
}

impl Config {
    /// Loads from a directory and a map of variables; convenient for tests and
    /// for applications that build their configuration in code.
    pub fn from_map(app_root: &Path, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env = MapEnvironment::new(vars.iter().copied()).with_hostname("test-host");
        load(&LoadOptions::new(app_root), &env).map(|loaded| loaded.config)
    }
}

#[cfg(test)]
mod tests;
