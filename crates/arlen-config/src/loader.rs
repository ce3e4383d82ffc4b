//! The loader: every source of every key through the registry, each value
//! parsed and validated where its key is declared, all errors collected, then
//! the typed [`Config`] built.

use super::*;

/// Resolves the environment name: `--env`, else `ARLEN_ENV`/`MOJOOBJC_ENV`,
/// else `development`. It must match `[A-Za-z0-9_-]+`.
#[allow(clippy::result_large_err)] // an error path, taken once per load
pub fn resolve_env_name(flag: Option<&str>, env: &dyn Environment) -> Result<(String, Source), ConfigError> {
    let (value, source) = match (flag, lookup_variable(env, "ENV")) {
        (Some(flag), _) => (flag.to_owned(), Source::Flag("--env")),
        (None, Some(found)) => (found.value, Source::Variable(found.name)),
        (None, None) => return Ok((DEFAULT_ENV.to_owned(), Source::Default)),
    };
    let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok((value, source));
    }
    let error = ConfigError::new(format!("environment name {value:?} must match [A-Za-z0-9_-]+"));
    Err(match source {
        Source::Flag(flag) => error.for_flag(flag),
        Source::Variable(name) => error.for_variable(name),
        _ => error,
    })
}

/// Loads the configuration. On error, every problem found is returned.
pub fn load(options: &LoadOptions, env: &dyn Environment) -> Result<Loaded, ConfigErrors> {
    Loader::new(options, env).run()
}

struct Loader<'a> {
    options: &'a LoadOptions,
    env: &'a dyn Environment,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    legacy_warned: BTreeSet<String>,
}

/// A raw value found for a key, before parsing.
enum Raw {
    Text(String),
    Json(Value),
}

impl<'a> Loader<'a> {
    fn new(options: &'a LoadOptions, env: &'a dyn Environment) -> Self {
        Self { options, env, errors: Vec::new(), warnings: Vec::new(), legacy_warned: BTreeSet::new() }
    }

    fn run(mut self) -> Result<Loaded, ConfigErrors> {
        let env_name = match resolve_env_name(self.options.env_name.as_deref(), self.env) {
            Ok((name, source)) => {
                if let Source::Variable(var) = &source {
                    self.note_legacy(var, "ENV");
                }
                Some(name)
            }
            Err(error) => {
                self.errors.push(error);
                None
            }
        };
        let root = &self.options.app_root;
        let app_layer = files::load_layer(root, "config", "app", &mut self.errors);
        let env_layer =
            env_name.as_deref().and_then(|name| files::load_layer(root, "config/environments", name, &mut self.errors));
        // Highest precedence first.
        let layers: Vec<&FileLayer> = [env_layer.as_ref(), app_layer.as_ref()].into_iter().flatten().collect();
        for layer in &layers {
            self.warn_about_typos(layer);
        }
        self.warn_about_retired_keys(&layers);
        self.warn_about_unknown_variables();

        let mut settings: Vec<Setting> = KEYS.iter().map(|spec| self.resolve_explicit(spec, &layers)).collect();
        self.apply_computed_defaults(&mut settings, env_name.as_deref().unwrap_or(DEFAULT_ENV));
        self.apply_second_pass_defaults(&mut settings);
        self.check_cross_key_rules(&settings);
        let gossip_keys = self.resolve_gossip_keys(&settings, env_name.as_deref().unwrap_or(DEFAULT_ENV));

        if !self.errors.is_empty() {
            return Err(ConfigErrors { errors: self.errors, hints: self.warnings });
        }
        let mut tree = Map::new();
        for layer in layers.iter().rev() {
            files::merge(&mut tree, &layer.root);
        }
        for setting in &settings {
            set_dotted(&mut tree, setting.spec.key, setting.value.to_json());
        }
        let config =
            build_config(&settings, env_name.unwrap_or_else(|| DEFAULT_ENV.to_owned()), root.clone(), gossip_keys)
                .map_err(|error| ConfigErrors { errors: vec![error], hints: self.warnings.clone() })?;
        Ok(Loaded { config, settings, tree, warnings: self.warnings })
    }

    fn note_legacy(&mut self, variable: &str, suffix: &str) {
        if variable.starts_with(environment::LEGACY_PREFIX) && self.legacy_warned.insert(variable.to_owned()) {
            self.warnings
                .push(format!("{variable} is a legacy variable name; use {}{suffix} instead", environment::PREFIX));
        }
    }

    /// A retired key that is still set draws a warning naming its replacement.
    fn warn_about_retired_keys(&mut self, layers: &[&FileLayer]) {
        for retired in registry::RETIRED {
            let mut places: Vec<String> = layers
                .iter()
                .filter(|layer| layer.get(retired.key).is_some())
                .map(|layer| match layer.positions.get(retired.key) {
                    Some(p) => format!("{}:{}:{}", layer.display.display(), p.line, p.column),
                    None => layer.display.display().to_string(),
                })
                .collect();
            if let Some(found) = lookup_variable(self.env, retired.env) {
                places.push(format!("variable {}", found.name));
            }
            for place in places {
                self.warnings.push(format!("{place}: {} is no longer used; {}", retired.key, retired.replacement));
            }
        }
    }

    /// Reads the gossip keys (inline or from the keys file) and applies the
    /// secure-by-default rule: outside development and test, gossip needs
    /// keys unless `cluster.gossip.allowUnauthenticated` says otherwise.
    fn resolve_gossip_keys(&mut self, settings: &[Setting], env_name: &str) -> GossipKeys {
        let get = |key: Key| &settings[key as usize];
        let text_of = |setting: &Setting| match &setting.value {
            Typed::Text(t) => t.clone(),
            _ => String::new(),
        };
        let inline = get(GOSSIP_KEYS_KEY);
        let file = get(GOSSIP_KEYS_FILE_KEY);
        let (inline_text, file_text) = (text_of(inline), text_of(file));
        let keys = match (inline_text.is_empty(), file_text.is_empty()) {
            (false, false) => {
                self.errors.push(located_error(
                    format!("set either {GOSSIP_KEYS_KEY} or {GOSSIP_KEYS_FILE_KEY}, not both"),
                    inline.spec,
                    &inline.source,
                ));
                GossipKeys::default()
            }
            (false, true) => GossipKeys::parse_list(&inline_text).unwrap_or_else(|(position, error)| {
                self.errors.push(located_error(format!("key {position} {error}"), inline.spec, &inline.source));
                GossipKeys::default()
            }),
            (true, false) => {
                let path = gossip_keys::resolve_keys_file(&self.options.app_root, &file_text);
                GossipKeys::read_file(&path).unwrap_or_else(|(line, error)| {
                    let message = match line {
                        Some(line) => format!("{}:{line}: the key on this line {error}", path.display()),
                        None => error,
                    };
                    self.errors.push(located_error(message, file.spec, &file.source));
                    GossipKeys::default()
                })
            }
            (true, true) => GossipKeys::default(),
        };
        let uses_gossip = source_of(&get(Key::ClusterMembershipSource).value) == Some(MembershipSource::Gossip);
        let allowed = get(Key::ClusterGossipAllowUnauthenticated).value == Typed::Bool(true);
        let relaxed_env = matches!(env_name, "development" | "test");
        let failed_already = self
            .errors
            .iter()
            .any(|e| [GOSSIP_KEYS_KEY, GOSSIP_KEYS_FILE_KEY].iter().any(|k| e.key.as_deref() == Some(k.name())));
        if uses_gossip && keys.is_empty() && !allowed && !relaxed_env && !failed_already {
            self.errors.push(
                ConfigError::new(format!(
                    "gossip in the {env_name} environment needs keys, so that nobody who can send a datagram decides what this node reports: \
                     make one with `arlen gossip keygen` and set it in {} (or one a line in the file named by {GOSSIP_KEYS_FILE_KEY}); \
                     to run gossip unauthenticated anyway, set cluster.gossip.allowUnauthenticated = YES",
                    inline.spec.variable()
                ))
                .for_key(GOSSIP_KEYS_KEY.name()),
            );
        }
        keys
    }

    /// An `ARLEN_*` (or `MOJOOBJC_*`) variable that names no key is most
    /// likely a misspelling: it would be ignored in silence.
    fn warn_about_unknown_variables(&mut self) {
        let mut names = self.env.names();
        names.sort();
        for name in names {
            let Some(suffix) =
                name.strip_prefix(environment::PREFIX).or_else(|| name.strip_prefix(environment::LEGACY_PREFIX))
            else {
                continue;
            };
            if registry::is_known_variable(suffix) {
                continue;
            }
            let prefix = &name[..name.len() - suffix.len()];
            match registry::closest_variable(suffix) {
                Some(spec) => self.warnings.push(format!(
                    "variable {name} is not a configuration variable and is ignored; did you mean {prefix}{}?",
                    spec.env
                )),
                None => self.warnings.push(format!(
                    "variable {name} is not a configuration variable and is ignored (the README's reference table lists them)"
                )),
            }
        }
    }

    fn warn_about_typos(&mut self, layer: &FileLayer) {
        for key in layer.leaf_keys() {
            if registry::find(&key).is_some() || registry::RETIRED.iter().any(|r| r.key == key) {
                continue;
            }
            if let Some(spec) = registry::closest(&key) {
                let at = layer.positions.get(&key).map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default();
                self.warnings.push(format!(
                    "{}{at}: unknown key {key}; did you mean {}?",
                    layer.display.display(),
                    spec.key
                ));
            }
        }
    }

    /// The highest-precedence explicit value of a key, parsed; the plain
    /// default when none is set (computed defaults come later).
    fn resolve_explicit(&mut self, spec: &'static KeySpec, layers: &[&FileLayer]) -> Setting {
        let flag = match spec.id {
            Key::Host => self.options.host.clone().map(|v| ("--host", v)),
            Key::Port => self.options.port.clone().map(|v| ("--port", v)),
            Key::ProxyUpstream => self.options.upstream.clone().map(|v| ("--upstream", v)),
            _ => None,
        };
        let (raw, source) = if let Some((flag, value)) = flag {
            (Raw::Text(value), Source::Flag(flag))
        } else if let Some(found) = lookup_variable(self.env, spec.env) {
            self.note_legacy(&found.name, spec.env);
            (Raw::Text(found.value), Source::Variable(found.name))
        } else if let Some((layer, value)) = layers.iter().find_map(|l| l.get(spec.key).map(|v| (l, v))) {
            let position = layer.positions.get(spec.key).copied();
            (Raw::Json(value.clone()), Source::File { path: layer.display.clone(), position })
        } else {
            return Setting { spec, value: plain_default(spec), source: Source::Default };
        };
        match self.parse_value(spec, raw, &source) {
            Ok(value) => Setting { spec, value, source },
            Err(message) => {
                self.errors.push(located_error(message, spec, &source));
                Setting { spec, value: plain_default(spec), source: Source::Default }
            }
        }
    }

    fn parse_value(&mut self, spec: &'static KeySpec, raw: Raw, source: &Source) -> Result<Typed, String> {
        // Lists take a JSON array as well as comma-separated text.
        if let Some(parse_item) = list_item(spec.kind) {
            return parse_list(raw, parse_item);
        }
        let text = match raw {
            Raw::Text(text) => text,
            Raw::Json(Value::String(text)) => text,
            Raw::Json(Value::Bool(b)) if spec.kind == Kind::Bool => return Ok(Typed::Bool(b)),
            Raw::Json(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Raw::Json(Value::Bool(b)) if matches!(spec.kind, Kind::Text | Kind::Secret) => b.to_string(),
            Raw::Json(Value::Number(n)) if matches!(spec.kind, Kind::Text | Kind::Secret) => n.to_string(),
            Raw::Json(other) => {
                return Err(format!("expected {}, found {}", expected_name(spec.kind), json_kind(&other)));
            }
        };
        match spec.kind {
            Kind::Bool => value::parse_bool(&text).map(Typed::Bool),
            Kind::Integer { min, max, out_of_range } => {
                let n = value::parse_integer(&text)?;
                if (min..=max).contains(&n) {
                    return Ok(Typed::Integer(n));
                }
                let range = if max == i64::MAX { format!("≥ {min}") } else { format!("{min}..{max}") };
                match out_of_range {
                    registry::OutOfRange::Error => Err(format!("{n} is out of range (must be {range})")),
                    registry::OutOfRange::Clamp => {
                        let clamped = n.clamp(min, max);
                        self.warnings.push(format!(
                            "{} = {n} from {source} is out of range ({range}); using {clamped}",
                            spec.key
                        ));
                        Ok(Typed::Integer(clamped))
                    }
                }
            }
            Kind::Text | Kind::Secret => Ok(Typed::Text(text.trim().to_owned())),
            Kind::Address => value::parse_address(&text).map(Typed::Text),
            Kind::HttpUrl if text.trim().is_empty() => Ok(Typed::Text(String::new())),
            Kind::HttpUrl => value::parse_http_url(&text).map(Typed::Text),
            Kind::QuorumPolicy => QuorumPolicySetting::parse(&text).map(Typed::Policy),
            Kind::AddressList => parse_list(Raw::Text(text), value::parse_address),
            Kind::UrlList => parse_list(Raw::Text(text), value::parse_url),
            Kind::NetworkList => parse_list(Raw::Text(text), value::parse_network),
            Kind::OneOf(words) => {
                let lower = text.trim().to_ascii_lowercase();
                word_in(words, &lower).ok_or_else(|| format!("expected one of {}, got {text:?}", words.join(", ")))
            }
        }
    }

    /// Defaults that depend on keys computed in the first pass.
    fn apply_second_pass_defaults(&mut self, settings: &mut [Setting]) {
        let listen = settings.iter().find(|s| s.spec.id == Key::ClusterGossipListen).map(|s| s.value.clone());
        for setting in settings.iter_mut() {
            if setting.spec.id == Key::ClusterGossipAdvertise && setting.source == Source::Default {
                setting.value = listen.clone().unwrap_or(Typed::Text(String::new()));
                setting.source = Source::ComputedDefault(Key::ClusterGossipListen.name());
            }
        }
    }

    /// Rules that span keys; run after every default is known.
    fn check_cross_key_rules(&mut self, settings: &[Setting]) {
        let get = |key: Key| settings.iter().find(|s| s.spec.id == key);
        let uses_etcd =
            get(Key::ClusterMembershipSource).and_then(|s| source_of(&s.value)) == Some(MembershipSource::Etcd);
        if let Some(endpoints) = get(Key::ClusterEtcdEndpoints).filter(|_| uses_etcd) {
            if endpoints.value == Typed::List(Vec::new())
                && !self.errors.iter().any(|e| e.key.as_deref() == Some(Key::ClusterEtcdEndpoints.name()))
            {
                self.errors.push(
                    ConfigError::new(format!(
                        "required when cluster.membership.source is etcd; set {} to the etcd client URLs",
                        endpoints.spec.variable()
                    ))
                    .for_key(Key::ClusterEtcdEndpoints.name()),
                );
            }
        }
        if uses_etcd {
            self.check_etcd_tls(settings);
        }
        for (key, guards) in
            [(Key::ObservabilityOpsToken, "fault injection"), (Key::ObservabilityDetailsToken, "member details")]
        {
            let Some(token) = get(key) else { continue };
            if matches!(&token.value, Typed::Text(t) if !t.is_empty() && t.chars().count() < MIN_OPS_TOKEN_CHARS) {
                let what = if key == Key::ObservabilityOpsToken { "operations" } else { "details" };
                self.errors.push(located_error(
                    format!(
                        "the {what} token must be at least {MIN_OPS_TOKEN_CHARS} characters (it guards {guards}); make one with `openssl rand -hex 32`"
                    ),
                    token.spec,
                    &token.source,
                ));
            }
        }
        if let Some(policy) =
            get(Key::ClusterQuorumPolicy).filter(|p| p.value == Typed::Policy(QuorumPolicySetting::Zones))
        {
            let no_count = matches!(get(Key::ClusterExpectedZones).map(|z| &z.value), Some(Typed::Integer(0)) | None);
            let no_zone = !matches!(get(Key::ClusterZone).map(|z| &z.value), Some(Typed::Text(z)) if !z.is_empty());
            for (key, missing, what) in [
                (Key::ClusterExpectedZones, no_count, "how many zones the cluster spans"),
                (Key::ClusterZone, no_zone, "the zone this node runs in"),
            ] {
                if missing {
                    let message = format!(
                        "quorumPolicy `zones` counts zones: set {} ({}) to {what}",
                        key.spec().variable(),
                        key.name()
                    );
                    self.errors.push(located_error(message, policy.spec, &policy.source));
                }
            }
        }
        if let Some(zone) = get(Key::ClusterZone) {
            if let Typed::Text(name) = &zone.value {
                if let Some(problem) = crate::zone_problem(name) {
                    self.errors.push(located_error(problem, zone.spec, &zone.source));
                }
            }
        }
        if let Some(admin) = get(Key::AdminListen) {
            if let Typed::Text(address) = &admin.value {
                if !address.is_empty() {
                    if let Err(message) = value::parse_address(address) {
                        self.errors.push(located_error(message, admin.spec, &admin.source));
                    }
                }
            }
        }
        let has_upstream = get(Key::ProxyUpstream).is_some_and(|u| !matches!(&u.value, Typed::Text(t) if t.is_empty()));
        for key in [Key::ChecksReadiness, Key::ChecksLiveness] {
            let Some(setting) = get(key) else { continue };
            let Typed::Text(raw) = &setting.value else { continue };
            let (checks, mut problems) = crate::checks::parse_each(raw);
            if !has_upstream {
                problems.extend(checks.iter().filter(|c| matches!(c.target, crate::CheckTarget::UpstreamPath(_))).map(
                    |c| {
                        format!(
                            "{}: a /path target is a GET on proxy.upstream, which is not set; use an http:// URL",
                            c.name
                        )
                    },
                ));
            }
            for problem in problems {
                self.errors.push(located_error(problem, setting.spec, &setting.source));
            }
        }
        if let Some(path) = get(Key::ProxyHealthPath) {
            if matches!(&path.value, Typed::Text(p) if !p.is_empty() && !p.starts_with('/')) {
                self.errors.push(located_error(
                    "a health path starts with `/` (for example /health)".to_owned(),
                    path.spec,
                    &path.source,
                ));
            }
        }
        let uses_gossip =
            get(Key::ClusterMembershipSource).and_then(|s| source_of(&s.value)) == Some(MembershipSource::Gossip);
        // An advertise address derived from a value that already failed would
        // only repeat that error.
        let inputs_failed = self.errors.iter().any(|e| {
            e.key.as_deref().and_then(registry::find).is_some_and(|spec| {
                matches!(spec.id, Key::Host | Key::Port | Key::ClusterGossipListen | Key::ClusterGossipAdvertise)
            })
        });
        if !uses_gossip || inputs_failed {
            return;
        }
        if let Some(advertise) = get(Key::ClusterGossipAdvertise) {
            if let Typed::Text(address) = &advertise.value {
                if value::is_unspecified_address(address) {
                    self.errors.push(located_error(
                        format!(
                            "{address} is not an address peers can reach; set cluster.gossip.advertise ({}) to this node's reachable address",
                            advertise.spec.variable()
                        ),
                        advertise.spec,
                        &advertise.source,
                    ));
                }
            }
        }
    }

    /// `https://` endpoints need a CA bundle; a client certificate comes with
    /// its key; every file named must be readable now (not at the first
    /// connection attempt).
    fn check_etcd_tls(&mut self, settings: &[Setting]) {
        let get = |key: Key| &settings[key as usize];
        let text_of = |setting: &Setting| match &setting.value {
            Typed::Text(t) => t.clone(),
            _ => String::new(),
        };
        let https = matches!(&get(Key::ClusterEtcdEndpoints).value, Typed::List(urls) if urls.iter().any(|u| u.starts_with("https://")));
        let ca = get(Key::ClusterEtcdCaFile);
        let (cert, key) = (get(Key::ClusterEtcdCertFile), get(Key::ClusterEtcdKeyFile));
        if https && text_of(ca).is_empty() {
            self.errors.push(
                ConfigError::new(format!(
                    "required when cluster.etcd.endpoints has https:// URLs: set {} to the PEM bundle of the CA that signed etcd's server certificate",
                    ca.spec.variable()
                ))
                .for_key(ca.spec.key),
            );
        }
        if text_of(cert).is_empty() != text_of(key).is_empty() {
            let (set, missing) = if text_of(cert).is_empty() { (key, cert) } else { (cert, key) };
            self.errors.push(located_error(
                format!(
                    "{} is set, so {} must be too (a client certificate goes with its key)",
                    set.spec.key, missing.spec.key
                ),
                set.spec,
                &set.source,
            ));
        }
        for setting in [ca, cert, key] {
            let named = text_of(setting);
            if named.is_empty() {
                continue;
            }
            let path = gossip_keys::resolve_keys_file(&self.options.app_root, &named);
            if let Err(error) = std::fs::metadata(&path).and_then(|_| std::fs::File::open(&path)) {
                self.errors.push(located_error(
                    format!("cannot read {}: {error}", path.display()),
                    setting.spec,
                    &setting.source,
                ));
            }
        }
    }

    fn apply_computed_defaults(&mut self, settings: &mut [Setting], env_name: &str) {
        let development = env_name == DEFAULT_ENV;
        let value_of =
            |settings: &[Setting], key: Key| settings.iter().find(|s| s.spec.id == key).map(|s| s.value.clone());
        let expected = value_of(settings, Key::ClusterExpectedNodes);
        let enabled = value_of(settings, Key::ClusterEnabled);
        let http_address = match (value_of(settings, Key::Host), value_of(settings, Key::Port)) {
            (Some(Typed::Text(host)), Some(Typed::Integer(port))) => value::join_host_port(&host, port),
            _ => String::new(),
        };
        let cluster_name = match value_of(settings, Key::ClusterName) {
            Some(Typed::Text(name)) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => "default".to_owned(),
        };
        let hostname = self.env.hostname().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty());
        for setting in settings.iter_mut() {
            let is_default = setting.source == Source::Default;
            match setting.spec.id {
                Key::LogFormat if is_default => {
                    let format = if development { LogFormat::Text } else { LogFormat::Json };
                    setting.value = word_of(format);
                    setting.source = Source::ComputedDefault("from the environment name");
                }
                Key::LogLevel if is_default => {
                    let level = if development { "debug" } else { "info" };
                    setting.value = word_in(setting.spec.kind.words(), level).unwrap_or(Typed::Text(level.to_owned()));
                    setting.source = Source::ComputedDefault("from the environment name");
                }
                Key::ClusterObservedNodes if is_default => {
                    setting.value = expected.clone().unwrap_or(Typed::Integer(1));
                    setting.source = Source::ComputedDefault(Key::ClusterExpectedNodes.name());
                }
                Key::ClusterEmitHeaders if is_default => {
                    setting.value = enabled.clone().unwrap_or(Typed::Bool(false));
                    setting.source = Source::ComputedDefault(Key::ClusterEnabled.name());
                }
                Key::ClusterName if setting.value == Typed::Text(String::new()) => {
                    setting.value = Typed::Text("default".to_owned());
                    setting.source = Source::ComputedDefault("empty name means default");
                }
                Key::ClusterEtcdPrefix if is_default => {
                    setting.value = Typed::Text(format!("/arlen/clusters/{cluster_name}/members/"));
                    setting.source = Source::ComputedDefault("from cluster.name");
                }
                Key::ObservabilityDetailsAccess if is_default => {
                    let open = matches!(env_name, "development" | "test");
                    setting.value = word_of(if open { DetailsAccess::Public } else { DetailsAccess::Restricted });
                    setting.source = Source::ComputedDefault("from the environment name");
                }
                Key::ShutdownDrainDelaySeconds if is_default => {
                    let quick = matches!(env_name, "development" | "test");
                    setting.value = Typed::Integer(if quick { 0 } else { 5 });
                    setting.source = Source::ComputedDefault("from the environment name");
                }
                Key::ClusterGossipListen if is_default => {
                    setting.value = Typed::Text(http_address.clone());
                    setting.source = Source::ComputedDefault("host:port of the HTTP listener");
                }
                Key::ClusterNodeID if is_default || setting.value == Typed::Text(String::new()) => match &hostname {
                    Some(host) => {
                        setting.value = Typed::Text(host.clone());
                        setting.source = Source::ComputedDefault("host name");
                    }
                    None => {
                        setting.value = Typed::Text("node".to_owned());
                        setting.source = Source::ComputedDefault("no host name known");
                    }
                },
                _ => {}
            }
        }
    }
}

/// Parses one item of a list.
type ParseItem = fn(&str) -> Result<String, String>;

fn parse_list(raw: Raw, parse_item: ParseItem) -> Result<Typed, String> {
    let items: Vec<String> = match raw {
        Raw::Text(text) | Raw::Json(Value::String(text)) => {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        Raw::Json(Value::Array(values)) => values
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("expected a list of `host:port` text, found {}", json_kind(&other))),
            })
            .collect::<Result<_, _>>()?,
        Raw::Json(other) => return Err(format!("expected a list of `host:port`, found {}", json_kind(&other))),
    };
    items.iter().map(|item| parse_item(item)).collect::<Result<Vec<_>, _>>().map(Typed::List)
}

/// The item parser of a list kind; `None` for a single value. Exhaustive:
/// a new kind must say which it is.
fn list_item(kind: Kind) -> Option<ParseItem> {
    match kind {
        Kind::AddressList => Some(value::parse_address),
        Kind::UrlList => Some(value::parse_url),
        Kind::NetworkList => Some(value::parse_network),
        Kind::Bool
        | Kind::Integer { .. }
        | Kind::Text
        | Kind::Secret
        | Kind::OneOf(_)
        | Kind::Address
        | Kind::QuorumPolicy
        | Kind::HttpUrl => None,
    }
}

/// `word` as one of `words`, with its position.
fn word_in(words: &'static [&'static str], word: &str) -> Option<Typed> {
    words.iter().position(|w| *w == word).map(|index| Typed::Word { word: words[index], index })
}

/// A key's value before anything is read: its declared default, in the
/// variant of its kind (a computed default starts as the kind's first value
/// and is replaced in the second pass).
pub(crate) fn plain_default(spec: &KeySpec) -> Typed {
    let declared = match spec.default {
        registry::Default::Bool(b) => return Typed::Bool(b),
        registry::Default::Integer(i) => return Typed::Integer(i),
        registry::Default::Text(text) => Some(text),
        registry::Default::Computed(_) => None,
    };
    match spec.kind {
        Kind::Bool => Typed::Bool(false),
        Kind::Integer { min, .. } => Typed::Integer(min),
        Kind::AddressList | Kind::UrlList | Kind::NetworkList => Typed::List(Vec::new()),
        Kind::OneOf(words) => {
            declared.and_then(|word| word_in(words, word)).unwrap_or(Typed::Word { word: words[0], index: 0 })
        }
        Kind::QuorumPolicy => Typed::Policy(
            declared.and_then(|text| QuorumPolicySetting::parse(text).ok()).unwrap_or(QuorumPolicySetting::All),
        ),
        Kind::Text | Kind::Secret | Kind::Address | Kind::HttpUrl => Typed::Text(declared.unwrap_or("").to_owned()),
    }
}

/// The value of an enum key.
fn word_of<T: Words + PartialEq>(value: T) -> Typed {
    let index = T::ALL.iter().position(|v| *v == value).unwrap_or(0);
    Typed::Word { word: T::WORDS[index], index }
}

/// The membership source a value names.
fn source_of(value: &Typed) -> Option<MembershipSource> {
    match value {
        Typed::Word { index, .. } => MembershipSource::ALL.get(*index).copied(),
        _ => None,
    }
}

fn located_error(message: String, spec: &KeySpec, source: &Source) -> ConfigError {
    let error = ConfigError::new(message).for_key(spec.key);
    match source {
        Source::Flag(flag) => error.for_flag(*flag),
        Source::Variable(name) => error.for_variable(name.clone()),
        Source::File { path, position } => error.in_file(path.clone(), *position),
        Source::Default | Source::ComputedDefault(_) => error,
    }
}

fn expected_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "a boolean",
        Kind::Integer { .. } => "an integer",
        Kind::Text | Kind::Secret | Kind::OneOf(_) => "text",
        Kind::Address => "`host:port`",
        Kind::QuorumPolicy => "a quorum policy",
        Kind::UrlList => "a list of URLs",
        Kind::HttpUrl => "an http:// URL",
        Kind::AddressList => "a list of `host:port`",
        Kind::NetworkList => "a list of IP addresses or CIDR ranges",
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a non-integer number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dictionary",
    }
}

fn set_dotted(tree: &mut Map<String, Value>, dotted: &str, value: Value) {
    let mut segments: Vec<&str> = dotted.split('.').collect();
    let last = segments.pop().expect("keys are never empty");
    let mut current = tree;
    for segment in segments {
        let entry = current.entry(segment.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry.as_object_mut().expect("just made an object");
    }
    current.insert(last.to_owned(), value);
}

/// A value read as the kind its key does not have: a bug in the registry or
/// the loader, reported as an error naming the key (never a panic, never a
/// quiet default).
fn mismatch(key: Key, wanted: &str, found: &Typed) -> ConfigError {
    ConfigError::new(format!("internal error: {} holds {found:?}, not {wanted}", key.name())).for_key(key.name())
}

#[allow(clippy::result_large_err)] // an error path that a correct registry never takes
fn build_config(
    settings: &[Setting],
    env: String,
    app_root: PathBuf,
    gossip_keys: GossipKeys,
) -> Result<Config, ConfigError> {
    let get = |key: Key| &settings[key as usize].value;
    let flag = |key: Key| match get(key) {
        Typed::Bool(b) => Ok(*b),
        other => Err(mismatch(key, "a boolean", other)),
    };
    let int = |key: Key| match get(key) {
        Typed::Integer(i) => Ok(*i),
        other => Err(mismatch(key, "an integer", other)),
    };
    let text = |key: Key| match get(key) {
        Typed::Text(t) => Ok(t.clone()),
        Typed::Word { word, .. } => Ok((*word).to_owned()),
        other => Err(mismatch(key, "text", other)),
    };
    let list = |key: Key| match get(key) {
        Typed::List(items) => Ok(items.clone()),
        other => Err(mismatch(key, "a list", other)),
    };
    let policy = |key: Key| match get(key) {
        Typed::Policy(policy) => Ok(*policy),
        other => Err(mismatch(key, "a quorum policy", other)),
    };
    fn word<T: Words>(settings: &[Setting], key: Key) -> Result<T, ConfigError> {
        match &settings[key as usize].value {
            Typed::Word { index, .. } => {
                T::ALL.get(*index).copied().ok_or_else(|| mismatch(key, "a word", &Typed::Integer(0)))
            }
            other => Err(mismatch(key, "one of its words", other)),
        }
    }
    let to_u32 = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let to_usize = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    let seconds = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
    let millis = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
    let path_of = |key: Key| -> Result<Option<PathBuf>, ConfigError> {
        Ok(Some(text(key)?)
            .filter(|path| !path.is_empty())
            .map(|path| gossip_keys::resolve_keys_file(&app_root, &path)))
    };
    let keys_file = path_of(GOSSIP_KEYS_FILE_KEY)?;
    let (ca_file, cert_file, key_file) =
        (path_of(Key::ClusterEtcdCaFile)?, path_of(Key::ClusterEtcdCertFile)?, path_of(Key::ClusterEtcdKeyFile)?);
    let port = int(Key::Port)?;
    Ok(Config {
        env,
        app_root,
        host: text(Key::Host)?,
        port: u16::try_from(port).map_err(|_| mismatch(Key::Port, "a port", &Typed::Integer(port)))?,
        log_format: word(settings, Key::LogFormat)?,
        log_level: text(Key::LogLevel)?,
        listen_backlog: to_u32(int(Key::ListenBacklog)?),
        connection_timeout: seconds(int(Key::ConnectionTimeoutSeconds)?),
        head_timeout: millis(int(Key::RequestLimitsHeadTimeoutMs)?),
        write_timeout: millis(int(Key::RequestLimitsWriteTimeoutMs)?),
        admin_listen: Some(text(Key::AdminListen)?).filter(|address| !address.is_empty()),
        enable_reuse_port: flag(Key::EnableReusePort)?,
        title_case_headers: flag(Key::HttpTitleCaseHeaders)?,
        request_limits: RequestLimits {
            max_request_line_bytes: to_usize(int(Key::RequestLimitsMaxRequestLineBytes)?),
            max_header_bytes: to_usize(int(Key::RequestLimitsMaxHeaderBytes)?),
            max_body_bytes: to_usize(int(Key::RequestLimitsMaxBodyBytes)?),
        },
        max_concurrent_http_sessions: to_usize(int(Key::RuntimeLimitsMaxConcurrentHTTPSessions)?),
        session: SessionConfig { enabled: flag(Key::SessionEnabled)?, secret: text(Key::SessionSecret)? },
        observability: ObservabilityConfig {
            health_details_enabled: flag(Key::ObservabilityHealthDetailsEnabled)?,
            readiness_requires_startup: flag(Key::ObservabilityReadinessRequiresStartup)?,
            readiness_requires_cluster_quorum: flag(Key::ObservabilityReadinessRequiresClusterQuorum)?,
            metrics_enabled: flag(Key::ObservabilityMetricsEnabled)?,
            legacy_metric_names: flag(Key::ObservabilityLegacyMetricNames)?,
            trace_propagation_enabled: flag(Key::ObservabilityTracePropagationEnabled)?,
            response_identity_headers_enabled: flag(Key::ObservabilityResponseIdentityHeadersEnabled)?,
            keep_incoming_request_id: flag(Key::HttpKeepIncomingRequestId)?,
            access_log: flag(Key::ObservabilityAccessLog)?
                .then(|| u8::try_from(int(Key::ObservabilityAccessLogSamplePercent).unwrap_or(100)).unwrap_or(100)),
            ops_token: text(Key::ObservabilityOpsToken)?,
            details_access: word(settings, Key::ObservabilityDetailsAccess)?,
            details_token: text(Key::ObservabilityDetailsToken)?,
        },
        cluster: ClusterConfig {
            enabled: flag(Key::ClusterEnabled)?,
            name: text(Key::ClusterName)?,
            node_id: text(Key::ClusterNodeID)?,
            zone: Some(text(Key::ClusterZone)?).filter(|zone| !zone.is_empty()),
            expected_nodes: to_u32(int(Key::ClusterExpectedNodes)?),
            observed_nodes: to_u32(int(Key::ClusterObservedNodes)?),
            emit_headers: flag(Key::ClusterEmitHeaders)?,
            fault_injection_enabled: flag(Key::ClusterFaultInjectionEnabled)?,
            quorum_policy: policy(Key::ClusterQuorumPolicy)?,
            expected_zones: to_u32(int(Key::ClusterExpectedZones)?),
            quorum_loss_grace: millis(int(Key::ClusterQuorumLossGraceMs)?),
            quorum_recovery_stable: millis(int(Key::ClusterQuorumRecoveryStableMs)?),
            membership: MembershipConfig {
                source: word(settings, Key::ClusterMembershipSource)?,
                etcd: EtcdConfig {
                    endpoints: list(Key::ClusterEtcdEndpoints)?,
                    ca_file,
                    cert_file,
                    key_file,
                    prefix: text(Key::ClusterEtcdPrefix)?,
                    lease_ttl: seconds(int(Key::ClusterEtcdLeaseTtlSeconds)?),
                    username: text(Key::ClusterEtcdUsername)?,
                    password: text(Key::ClusterEtcdPassword)?,
                },
                gossip: GossipConfig {
                    listen: text(Key::ClusterGossipListen)?,
                    advertise: text(Key::ClusterGossipAdvertise)?,
                    seeds: list(Key::ClusterGossipSeeds)?,
                    interval: millis(int(Key::ClusterGossipIntervalMs)?),
                    probe_timeout: millis(int(Key::ClusterGossipProbeTimeoutMs)?),
                    suspicion_timeout: millis(int(Key::ClusterGossipSuspicionTimeoutMs)?),
                    dead_member_ttl: seconds(int(Key::ClusterGossipDeadMemberTtlSeconds)?),
                    max_members: to_usize(int(Key::ClusterGossipMaxMembers)?),
                    max_joins_per_minute: u32::try_from(int(Key::ClusterGossipMaxJoinsPerMinute)?).unwrap_or(60),
                    keys: gossip_keys,
                    keys_file,
                    allow_unauthenticated: flag(Key::ClusterGossipAllowUnauthenticated)?,
                    unsealed_traffic: word(settings, Key::ClusterGossipUnsealedTraffic)?,
                },
            },
        },
        shutdown: ShutdownConfig {
            graceful_timeout: seconds(int(Key::ShutdownGracefulTimeoutSeconds)?),
            drain_delay: seconds(int(Key::ShutdownDrainDelaySeconds)?),
            drain_quiet: millis(int(Key::ShutdownDrainQuietPeriodMs)?),
            drain_max: seconds(int(Key::ShutdownDrainMaxDelaySeconds)?),
        },
        checks: ChecksConfig {
            readiness: crate::parse_checks(&text(Key::ChecksReadiness)?).unwrap_or_default(),
            liveness: crate::parse_checks(&text(Key::ChecksLiveness)?).unwrap_or_default(),
            interval: millis(int(Key::ChecksIntervalMs)?),
            timeout: millis(int(Key::ChecksTimeoutMs)?),
        },
        proxy: match text(Key::ProxyUpstream)? {
            upstream if upstream.is_empty() => None,
            upstream => Some(ProxyConfig {
                upstream,
                health_path: text(Key::ProxyHealthPath)?,
                tunnel_idle_timeout: seconds(int(Key::ConnectionTimeoutSeconds)?),
                trusted_proxies: list(Key::ProxyTrustedProxies)?.iter().filter_map(|net| net.parse().ok()).collect(),
                health_interval: millis(int(Key::ProxyHealthIntervalMs)?),
                health_timeout: millis(int(Key::ProxyHealthTimeoutMs)?),
                connect_timeout: millis(int(Key::ProxyConnectTimeoutMs)?),
                response_timeout: seconds(int(Key::ProxyResponseTimeoutSeconds)?),
            }),
        },
    })
}
