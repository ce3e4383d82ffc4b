//! Loader tests: every rule of CONTRACT §1, driven through `MapEnvironment`.

use super::*;
use std::fs;

struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn file(self, relative: &str, text: &str) -> Self {
        let path = self.dir.path().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn options(&self) -> LoadOptions {
        LoadOptions::new(self.dir.path())
    }

    fn load(&self, vars: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
        self.load_with(self.options(), vars)
    }

    fn load_with(&self, options: LoadOptions, vars: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
        let env = MapEnvironment::new(vars.iter().copied()).with_hostname("Box-7");
        load(&options, &env)
    }
}

#[test]
fn defaults_match_the_contract_table() {
    let loaded = App::new().load(&[]).unwrap();
    let c = &loaded.config;
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 3000));
    assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "debug"));
    assert_eq!(c.listen_backlog, 128);
    assert_eq!(c.connection_timeout, Duration::from_secs(30));
    assert!(!c.enable_reuse_port);
    assert_eq!(
        c.request_limits,
        RequestLimits { max_request_line_bytes: 4096, max_header_bytes: 32768, max_body_bytes: 1_048_576 }
    );
    assert_eq!(c.max_concurrent_http_sessions, 256);
    assert!(!c.session.enabled && c.session.secret.is_empty());
    assert_eq!(
        c.observability,
        ObservabilityConfig {
            health_details_enabled: true,
            readiness_requires_startup: false,
            readiness_requires_cluster_quorum: false,
            metrics_enabled: true,
            legacy_metric_names: false,
            trace_propagation_enabled: true,
            response_identity_headers_enabled: true,
            keep_incoming_request_id: false,
            access_log: None,
            ops_token: String::new(),
            details_access: DetailsAccess::Public,
            details_token: String::new(),
        }
    );
    assert_eq!((c.head_timeout, c.admin_listen.as_deref()), (Duration::from_secs(5), None));
    assert_eq!(
        c.cluster,
        ClusterConfig {
            enabled: false,
            name: "default".into(),
            node_id: "box-7".into(),
            zone: None,
            expected_nodes: 1,
            observed_nodes: 1,
            emit_headers: false,
            fault_injection_enabled: false,
            quorum_policy: QuorumPolicySetting::All,
            expected_zones: 0,
            quorum_loss_grace: Duration::ZERO,
            quorum_recovery_stable: Duration::ZERO,
            membership: MembershipConfig {
                source: MembershipSource::StaticConfig,
                gossip: GossipConfig {
                    listen: "127.0.0.1:3000".into(),
                    advertise: "127.0.0.1:3000".into(),
                    seeds: Vec::new(),
                    interval: Duration::from_millis(50),
                    probe_timeout: Duration::from_millis(20),
                    suspicion_timeout: Duration::from_millis(200),
                    dead_member_ttl: Duration::from_secs(60),
                    max_members: 1024,
                    max_joins_per_minute: 60,
                    keys: GossipKeys::default(),
                    keys_file: None,
                    allow_unauthenticated: false,
                    unsealed_traffic: UnsealedTrafficSetting::Refuse,
                },
                etcd: EtcdConfig {
                    endpoints: Vec::new(),
                    ca_file: None,
                    cert_file: None,
                    key_file: None,
                    prefix: "/arlen/clusters/default/members/".into(),
                    lease_ttl: Duration::from_secs(3),
                    username: String::new(),
                    password: String::new(),
                },
            },
        }
    );
    assert_eq!(c.proxy, None, "no upstream: not a sidecar");
    assert_eq!(c.shutdown.graceful_timeout, Duration::from_secs(10));
    assert_eq!(c.shutdown.drain_delay, Duration::ZERO, "no drain delay in development");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn details_are_restricted_outside_development_and_the_admin_listener_is_checked() {
    let loaded = App::new().load(&[("ARLEN_ENV", "production"), ("ARLEN_ADMIN_LISTEN", "127.0.0.1:9901")]).unwrap();
    assert_eq!(loaded.config.observability.details_access, DetailsAccess::Restricted);
    assert_eq!(loaded.config.admin_listen.as_deref(), Some("127.0.0.1:9901"));
    let errors =
        App::new().load(&[("ARLEN_ADMIN_LISTEN", "9901"), ("ARLEN_DETAILS_TOKEN", "short")]).unwrap_err().to_string();
    assert!(errors.contains("variable ARLEN_ADMIN_LISTEN (key admin.listen): expected host:port"), "{errors}");
    assert!(errors.contains("variable ARLEN_DETAILS_TOKEN (key observability.detailsToken): the details token must be at least 32 characters"), "{errors}");
    assert!(!errors.contains("short"), "a secret is never printed: {errors}");
}

#[test]
fn production_defaults_follow_the_environment_name() {
    let loaded = App::new().load(&[("ARLEN_ENV", "production")]).unwrap();
    assert_eq!(loaded.config.env, "production");
    assert_eq!((loaded.config.log_format, loaded.config.log_level.as_str()), (LogFormat::Json, "info"));
    assert_eq!(loaded.config.shutdown.drain_delay, Duration::from_secs(5));
    let test_env = App::new().load(&[("ARLEN_ENV", "test")]).unwrap();
    assert_eq!(test_env.config.shutdown.drain_delay, Duration::ZERO);
}

#[test]
fn quorum_policy_and_hysteresis_keys() {
    let config = App::new()
        .load(&[
            ("ARLEN_CLUSTER_QUORUM_POLICY", " Majority "),
            ("ARLEN_CLUSTER_QUORUM_LOSS_GRACE_MS", "1500"),
            ("MOJOOBJC_CLUSTER_QUORUM_RECOVERY_STABLE_MS", "250"),
        ])
        .unwrap()
        .config;
    assert_eq!(config.cluster.quorum_policy, QuorumPolicySetting::Majority);
    assert_eq!(config.cluster.quorum_loss_grace, Duration::from_millis(1500));
    assert_eq!(config.cluster.quorum_recovery_stable, Duration::from_millis(250));
    let config = App::new().load(&[("ARLEN_CLUSTER_QUORUM_POLICY", "2")]).unwrap().config;
    assert_eq!(config.cluster.quorum_policy, QuorumPolicySetting::AtLeast(2));
    for bad in ["0", "-1", "most", "2.5"] {
        let errors = App::new().load(&[("ARLEN_CLUSTER_QUORUM_POLICY", bad)]).unwrap_err();
        assert!(
            errors.errors[0].to_string().starts_with("variable ARLEN_CLUSTER_QUORUM_POLICY (key cluster.quorumPolicy): expected all, majority, zones or a positive integer"),
            "{bad}: {}",
            errors.errors[0]
        );
    }
}

#[test]
fn precedence_flag_over_variable_over_env_file_over_app_file() {
    let app = App::new()
        .file(
            "config/app.toml",
            "host = \"10.0.0.1\"\nport = 4000\n[cluster]\nname = \"from-app\"\nexpectedNodes = 5\n",
        )
        .file("config/environments/development.json", r#"{"port": 5000, "cluster": {"name": "from-env-file"}}"#);
    let loaded = app.load(&[("ARLEN_PORT", "6000")]).unwrap();
    assert_eq!(loaded.config.host, "10.0.0.1");
    assert_eq!(loaded.config.port, 6000);
    assert_eq!(loaded.config.cluster.name, "from-env-file");
    assert_eq!(loaded.config.cluster.expected_nodes, 5);
    assert_eq!(loaded.setting("port").unwrap().source, Source::Variable("ARLEN_PORT".into()));
    assert_eq!(loaded.setting("cluster.name").unwrap().source.to_string(), "file config/environments/development.json");
    assert_eq!(loaded.setting("cluster.expectedNodes").unwrap().source.to_string(), "file config/app.toml:5:17");
    assert_eq!(loaded.setting("host").unwrap().source.to_string(), "file config/app.toml:1:8");

    let options = LoadOptions { port: Some("7000".into()), host: Some("0.0.0.0".into()), ..app.options() };
    let loaded = app.load_with(options, &[("ARLEN_PORT", "6000")]).unwrap();
    assert_eq!((loaded.config.host.as_str(), loaded.config.port), ("0.0.0.0", 7000));
    assert_eq!(loaded.setting("port").unwrap().source, Source::Flag("--port"));
}

#[test]
fn plist_files_use_the_original_format() {
    let app = App::new().file(
        "config/app.plist",
        "{\n  port = 3100;\n  cluster = {\n    enabled = YES;\n    name = alpha;\n    expectedNodes = 3;\n  };\n  myApp = { greeting = hello; };\n}\n",
    );
    let loaded = app.load(&[]).unwrap();
    assert_eq!(loaded.config.port, 3100);
    assert!(loaded.config.cluster.enabled && loaded.config.cluster.emit_headers);
    assert_eq!(loaded.config.cluster.name, "alpha");
    assert_eq!(loaded.config.cluster.observed_nodes, 3);
    assert_eq!(loaded.tree["myApp"]["greeting"], "hello", "unknown keys are kept for the application");
}

#[test]
fn files_deep_merge_across_formats() {
    let app = App::new()
        .file("config/app.json", r#"{"cluster": {"enabled": true, "name": "a"}, "myApp": {"items": [1, 2], "x": 1}}"#)
        .file("config/environments/staging.plist", "{ cluster = { name = b; }; myApp = { items = (3); }; }");
    let loaded = app.load(&[("ARLEN_ENV", "staging")]).unwrap();
    assert!(loaded.config.cluster.enabled);
    assert_eq!(loaded.config.cluster.name, "b");
    assert_eq!(loaded.tree["myApp"], serde_json::json!({"items": [3], "x": 1}));
}

#[test]
fn legacy_variables_fill_in_and_warn_once_per_name() {
    let loaded = App::new()
        .load(&[
            ("MOJOOBJC_CLUSTER_ENABLED", "1"),
            ("ARLEN_CLUSTER_NAME", ""),
            ("MOJOOBJC_CLUSTER_NAME", "legacy"),
            ("MOJOOBJC_ENV", "test"),
        ])
        .unwrap();
    assert!(loaded.config.cluster.enabled);
    assert_eq!(loaded.config.cluster.name, "legacy", "an empty ARLEN_ value counts as unset");
    assert_eq!(loaded.config.env, "test");
    let mut warnings = loaded.warnings.clone();
    warnings.sort();
    assert_eq!(
        warnings,
        vec![
            "MOJOOBJC_CLUSTER_ENABLED is a legacy variable name; use ARLEN_CLUSTER_ENABLED instead",
            "MOJOOBJC_CLUSTER_NAME is a legacy variable name; use ARLEN_CLUSTER_NAME instead",
            "MOJOOBJC_ENV is a legacy variable name; use ARLEN_ENV instead",
        ]
    );
}

#[test]
fn dependent_defaults_are_computed_after_overrides() {
    let loaded = App::new()
        .file("config/app.toml", "[cluster]\nexpectedNodes = 2\n")
        .load(&[("ARLEN_CLUSTER_EXPECTED_NODES", "5"), ("ARLEN_CLUSTER_ENABLED", "yes")])
        .unwrap();
    assert_eq!(loaded.config.cluster.observed_nodes, 5);
    assert!(loaded.config.cluster.emit_headers);
    assert_eq!(loaded.setting("cluster.emitHeaders").unwrap().source, Source::ComputedDefault("cluster.enabled"));
}

#[test]
fn explicit_emit_headers_off_beats_the_dependent_default() {
    let config =
        App::new().load(&[("ARLEN_CLUSTER_ENABLED", "1"), ("ARLEN_CLUSTER_EMIT_HEADERS", "0")]).unwrap().config;
    assert!(config.cluster.enabled);
    assert!(!config.cluster.emit_headers);
}

#[test]
fn out_of_range_values_are_clamped_with_a_warning() {
    let loaded =
        App::new().load(&[("ARLEN_CLUSTER_EXPECTED_NODES", "0"), ("ARLEN_CLUSTER_OBSERVED_NODES", "-4")]).unwrap();
    assert_eq!(loaded.config.cluster.expected_nodes, 1);
    assert_eq!(loaded.config.cluster.observed_nodes, 0);
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("cluster.expectedNodes = 0 from variable ARLEN_CLUSTER_EXPECTED_NODES"),
        "{:?}",
        loaded.warnings
    );
    assert!(loaded.warnings[0].ends_with("using 1"));
    assert!(loaded.warnings[1].ends_with("using 0"));
}

#[test]
fn observed_nodes_default_uses_the_clamped_expected_value() {
    let config = App::new().load(&[("ARLEN_CLUSTER_EXPECTED_NODES", "-2")]).unwrap().config;
    assert_eq!((config.cluster.expected_nodes, config.cluster.observed_nodes), (1, 1));
}

#[test]
fn three_bad_variables_are_all_reported() {
    let errors = App::new()
        .load(&[("ARLEN_PORT", "abc"), ("ARLEN_CLUSTER_ENABLED", "maybe"), ("ARLEN_CLUSTER_EXPECTED_NODES", "12abc")])
        .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "variable ARLEN_PORT (key port): expected a decimal integer, got \"abc\"",
            "variable ARLEN_CLUSTER_ENABLED (key cluster.enabled): expected a boolean (YES/NO, true/false, yes/no, on/off, 1/0), got \"maybe\"",
            "variable ARLEN_CLUSTER_EXPECTED_NODES (key cluster.expectedNodes): expected a decimal integer, got \"12abc\"",
        ]
    );
}

#[test]
fn bad_file_values_name_file_line_and_column() {
    let errors = App::new()
        .file("config/app.toml", "port = 70000\n[cluster]\nenabled = \"perhaps\"\nexpectedNodes = [1]\n")
        .load(&[])
        .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "config/app.toml:1:8: key port: 70000 is out of range (must be 1..65535)",
            "config/app.toml:3:11: key cluster.enabled: expected a boolean (YES/NO, true/false, yes/no, on/off, 1/0), got \"perhaps\"",
            "config/app.toml:4:17: key cluster.expectedNodes: expected an integer, found a list",
        ]
    );
}

#[test]
fn bad_flag_is_named() {
    let app = App::new();
    let options = LoadOptions { port: Some("0".into()), ..app.options() };
    let errors = app.load_with(options, &[]).unwrap_err();
    assert_eq!(errors.errors[0].to_string(), "flag --port: 0 is out of range (must be 1..65535)");
}

#[test]
fn malformed_files_and_duplicate_layers_are_errors_reported_together() {
    let errors = App::new()
        .file("config/app.toml", "port = 1\n")
        .file("config/app.json", "{}")
        .file("config/environments/development.plist", "{\n  port = 1\n}")
        .load(&[("ARLEN_LISTEN_BACKLOG", "x")])
        .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("config/app.*: more than one file for this layer: config/app.toml, config/app.json"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("config/environments/development.plist:2:"), "{}", lines[1]);
    assert!(lines[2].starts_with("variable ARLEN_LISTEN_BACKLOG"), "{}", lines[2]);
}

#[test]
fn root_that_is_not_a_dictionary_is_an_error() {
    let errors = App::new().file("config/app.json", "[1]").load(&[]).unwrap_err();
    assert_eq!(errors.errors[0].to_string(), "config/app.json:1:1: the root must be a dictionary, found a list");
}

#[test]
fn environment_name_is_validated() {
    let errors = App::new().load(&[("ARLEN_ENV", "../../etc")]).unwrap_err();
    assert_eq!(
        errors.errors[0].to_string(),
        "variable ARLEN_ENV: environment name \"../../etc\" must match [A-Za-z0-9_-]+"
    );
    let app = App::new();
    let options = LoadOptions { env_name: Some("a b".into()), ..app.options() };
    assert!(app.load_with(options, &[]).unwrap_err().errors[0].to_string().starts_with("flag --env:"));
}

#[test]
fn near_miss_keys_draw_a_warning_and_are_kept() {
    let loaded = App::new().file("config/app.toml", "[cluster]\nexpectedNode = 3\n").load(&[]).unwrap();
    assert_eq!(
        loaded.warnings,
        vec!["config/app.toml:2:16: unknown key cluster.expectedNode; did you mean cluster.expectedNodes?"]
    );
    assert_eq!(loaded.tree["cluster"]["expectedNode"], 3);
    assert_eq!(loaded.config.cluster.expected_nodes, 1);
}

#[test]
fn names_are_trimmed_and_empty_means_default() {
    let config =
        App::new().load(&[("ARLEN_CLUSTER_NAME", "  "), ("ARLEN_CLUSTER_NODE_ID", "  node-a ")]).unwrap().config;
    assert_eq!(config.cluster.name, "default");
    assert_eq!(config.cluster.node_id, "node-a");
    let env = MapEnvironment::new([("ARLEN_CLUSTER_NODE_ID", " ")]);
    let loaded = load(&LoadOptions::new("/nonexistent"), &env).unwrap();
    assert_eq!(loaded.config.cluster.node_id, "node", "no host name known");
}

#[test]
fn secrets_are_masked_everywhere_they_are_shown() {
    let loaded = App::new().load(&[("ARLEN_SESSION_SECRET", "hunter2")]).unwrap();
    assert_eq!(loaded.config.session.secret, "hunter2");
    assert_eq!(loaded.setting("session.secret").unwrap().display_value(), "(configured)");
    assert!(!format!("{:?}", loaded.config).contains("hunter2"));
}

#[test]
fn booleans_accept_every_contract_word_in_every_format() {
    for (ext, text) in [
        ("toml", "[cluster]\nenabled = true\n"),
        ("toml", "[cluster]\nenabled = \"YES\"\n"),
        ("json", r#"{"cluster": {"enabled": "on"}}"#),
        ("json", r#"{"cluster": {"enabled": 1}}"#),
        ("plist", "{ cluster = { enabled = Yes; }; }"),
    ] {
        let config = App::new().file(&format!("config/app.{ext}"), text).load(&[]).unwrap().config;
        assert!(config.cluster.enabled, "{ext}: {text}");
    }
}

#[test]
fn gossip_addresses_default_from_the_http_listener_after_overrides() {
    let app = App::new();
    let options = LoadOptions { port: Some("4100".into()), ..app.options() };
    let loaded = app
        .load_with(
            options,
            &[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "GOSSIP"), ("ARLEN_CLUSTER_GOSSIP_SEEDS", "a:1, b:2,[::1]:3")],
        )
        .unwrap();
    let gossip = &loaded.config.cluster.membership.gossip;
    assert_eq!(loaded.config.cluster.membership.source, MembershipSource::Gossip);
    assert_eq!((gossip.listen.as_str(), gossip.advertise.as_str()), ("127.0.0.1:4100", "127.0.0.1:4100"));
    assert_eq!(gossip.seeds, vec!["a:1", "b:2", "[::1]:3"]);
    assert_eq!(
        loaded.setting("cluster.gossip.advertise").unwrap().source,
        Source::ComputedDefault("cluster.gossip.listen")
    );
}

#[test]
fn gossip_seeds_may_be_a_list_in_a_file() {
    let loaded = App::new()
        .file("config/app.plist", "{ cluster = { gossip = { seeds = (\"h1:7946\", \"h2:7946\"); listen = \"0.0.0.0:7946\"; advertise = \"10.1.2.3:7946\"; }; }; }")
        .load(&[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip")])
        .unwrap();
    let gossip = &loaded.config.cluster.membership.gossip;
    assert_eq!(gossip.seeds, vec!["h1:7946", "h2:7946"]);
    assert_eq!(gossip.listen, "0.0.0.0:7946");
}

#[test]
fn gossip_needs_a_reachable_advertise_address_and_valid_addresses() {
    let errors = App::new()
        .load(&[
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
            ("ARLEN_HOST", "0.0.0.0"),
            ("ARLEN_CLUSTER_GOSSIP_SEEDS", "ok:1,nope"),
            ("ARLEN_CLUSTER_GOSSIP_LISTEN", "[::]:99999"),
        ])
        .unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("variable ARLEN_CLUSTER_GOSSIP_LISTEN (key cluster.gossip.listen): port"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("variable ARLEN_CLUSTER_GOSSIP_SEEDS (key cluster.gossip.seeds): expected host:port"),
        "{}",
        lines[1]
    );

    let errors =
        App::new().load(&[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"), ("ARLEN_HOST", "0.0.0.0")]).unwrap_err();
    assert_eq!(
        errors.errors[0].to_string(),
        "key cluster.gossip.advertise: 0.0.0.0:3000 is not an address peers can reach; set cluster.gossip.advertise (ARLEN_CLUSTER_GOSSIP_ADVERTISE) to this node's reachable address"
    );
    assert!(App::new().load(&[("ARLEN_HOST", "0.0.0.0")]).is_ok(), "static membership does not care");
}

#[test]
fn etcd_source_needs_endpoints_and_masks_the_password() {
    let errors = App::new().load(&[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd")]).unwrap_err();
    assert_eq!(
        errors.errors[0].to_string(),
        "key cluster.etcd.endpoints: required when cluster.membership.source is etcd; set ARLEN_CLUSTER_ETCD_ENDPOINTS to the etcd client URLs"
    );
    let loaded = App::new()
        .load(&[
            ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"),
            ("ARLEN_CLUSTER_NAME", "shop"),
            ("ARLEN_CLUSTER_ETCD_ENDPOINTS", "http://10.0.0.1:2379, http://etcd.example:2379/"),
            ("ARLEN_CLUSTER_ETCD_LEASE_TTL_SECONDS", "1"),
            ("ARLEN_CLUSTER_ETCD_PASSWORD", "pw-secret"),
        ])
        .unwrap();
    let etcd = &loaded.config.cluster.membership.etcd;
    assert_eq!(etcd.endpoints, vec!["http://10.0.0.1:2379", "http://etcd.example:2379"]);
    assert_eq!(etcd.prefix, "/arlen/clusters/shop/members/");
    assert_eq!(etcd.lease_ttl, Duration::from_secs(2), "clamped to etcd's minimum");
    assert!(loaded.warnings.iter().any(|w| w.contains("cluster.etcd.leaseTtlSeconds = 1")), "{:?}", loaded.warnings);
    assert_eq!(loaded.setting("cluster.etcd.password").unwrap().display_value(), "(configured)");
    assert!(!format!("{:?}", loaded.config).contains("pw-secret"));
    let errors = App::new()
        .load(&[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"), ("ARLEN_CLUSTER_ETCD_ENDPOINTS", "10.0.0.1:2379")])
        .unwrap_err();
    assert!(errors.errors[0].to_string().contains("expected an http:// or https:// URL"), "{}", errors.errors[0]);
    assert_eq!(errors.errors.len(), 1, "no second error about missing endpoints: {:?}", errors.errors);
}

const GOSSIP_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn gossip_outside_development_and_test_needs_keys_unless_explicitly_allowed() {
    let production = [("ARLEN_ENV", "production"), ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip")];
    let errors = App::new().load(&production).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let message = errors.errors[0].to_string();
    assert!(
        message.starts_with("key cluster.gossip.keys: gossip in the production environment needs keys"),
        "{message}"
    );
    assert!(message.contains("arlen gossip keygen") && message.contains("allowUnauthenticated = YES"), "{message}");

    let allowed = [production.as_slice(), &[("ARLEN_CLUSTER_GOSSIP_ALLOW_UNAUTHENTICATED", "YES")]].concat();
    assert!(App::new().load(&allowed).is_ok());
    let keyed = [production.as_slice(), &[("ARLEN_CLUSTER_GOSSIP_KEYS", GOSSIP_KEY)]].concat();
    let loaded = App::new().load(&keyed).unwrap();
    assert_eq!(loaded.config.cluster.membership.gossip.keys.len(), 1);
    for env in ["development", "test"] {
        assert!(App::new().load(&[("ARLEN_ENV", env), ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip")]).is_ok(), "{env}");
    }
    assert!(App::new().load(&[("ARLEN_ENV", "production")]).is_ok(), "static membership needs no gossip keys");
}

#[test]
fn gossip_keys_are_checked_without_ever_being_shown() {
    let bad = format!("{GOSSIP_KEY},dG9vIHNob3J0");
    let errors = App::new().load(&[("ARLEN_CLUSTER_GOSSIP_KEYS", bad.as_str())]).unwrap_err();
    let message = errors.to_string();
    assert!(
        message.contains(
            "variable ARLEN_CLUSTER_GOSSIP_KEYS (key cluster.gossip.keys): key 2 is not the base64 of 32 bytes"
        ),
        "{message}"
    );
    assert!(!message.contains("dG9vIHNob3J0") && !message.contains(GOSSIP_KEY), "{message}");

    let both = App::new()
        .file("keys", &format!("{GOSSIP_KEY}\n"))
        .load(&[("ARLEN_CLUSTER_GOSSIP_KEYS", GOSSIP_KEY), ("ARLEN_CLUSTER_GOSSIP_KEYS_FILE", "keys")])
        .unwrap_err();
    assert!(both.to_string().contains("set either cluster.gossip.keys or cluster.gossip.keysFile, not both"), "{both}");

    let app = App::new().file("secrets/gossip", &format!("# rotation: newest first\n{GOSSIP_KEY}\nnot-a-key\n"));
    let errors = app.load(&[("ARLEN_CLUSTER_GOSSIP_KEYS_FILE", "secrets/gossip")]).unwrap_err();
    let message = errors.to_string();
    assert!(message.contains("secrets/gossip:3: the key on this line is not the base64"), "{message}");
    assert!(!message.contains("not-a-key"), "{message}");

    let app = App::new().file("secrets/gossip", &format!("{GOSSIP_KEY}\n\n{GOSSIP_KEY}\n"));
    let loaded = app.load(&[("ARLEN_CLUSTER_GOSSIP_KEYS_FILE", "secrets/gossip")]).unwrap();
    let gossip = &loaded.config.cluster.membership.gossip;
    assert_eq!(gossip.keys.len(), 2);
    assert_eq!(gossip.keys_file.as_deref(), Some(app.dir.path().join("secrets/gossip").as_path()));
    assert!(!format!("{:?}", loaded.config).contains(GOSSIP_KEY));

    let inline = format!("{GOSSIP_KEY}, {GOSSIP_KEY}");
    let loaded = App::new().load(&[("ARLEN_CLUSTER_GOSSIP_KEYS", inline.as_str())]).unwrap();
    assert_eq!(loaded.setting("cluster.gossip.keys").unwrap().display_value(), "(2 configured)");
}

#[test]
fn the_retired_phi_threshold_names_its_replacement() {
    let loaded = App::new()
        .file("config/app.toml", "[cluster.gossip]\nphiThreshold = 8\n")
        .load(&[("ARLEN_CLUSTER_GOSSIP_PHI_THRESHOLD", "9")])
        .unwrap();
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    for warning in &loaded.warnings {
        assert!(warning.contains("cluster.gossip.phiThreshold is no longer used"), "{warning}");
        assert!(warning.contains("cluster.gossip.suspicionTimeoutMs"), "{warning}");
    }
    assert!(loaded.warnings[0].contains("app.toml:2:"), "{}", loaded.warnings[0]);
    assert!(loaded.warnings[1].contains("variable ARLEN_CLUSTER_GOSSIP_PHI_THRESHOLD"), "{}", loaded.warnings[1]);
}

#[test]
fn etcd_over_https_needs_a_ca_bundle_and_client_certificates_come_with_their_keys() {
    let etcd =
        [("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "etcd"), ("ARLEN_CLUSTER_ETCD_ENDPOINTS", "https://127.0.0.1:2379")];
    let errors = App::new().load(&etcd).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert!(
        errors.errors[0]
            .to_string()
            .starts_with("key cluster.etcd.caFile: required when cluster.etcd.endpoints has https://"),
        "{errors}"
    );

    let app = App::new().file("tls/ca.pem", "ca").file("tls/client.pem", "cert").file("tls/client.key", "key");
    let with_ca = [etcd.as_slice(), &[("ARLEN_CLUSTER_ETCD_CA_FILE", "tls/ca.pem")]].concat();
    let loaded = app.load(&with_ca).unwrap();
    assert_eq!(
        loaded.config.cluster.membership.etcd.ca_file.as_deref(),
        Some(app.dir.path().join("tls/ca.pem").as_path())
    );

    let half = [with_ca.as_slice(), &[("ARLEN_CLUSTER_ETCD_CERT_FILE", "tls/client.pem")]].concat();
    let errors = app.load(&half).unwrap_err();
    assert!(
        errors.to_string().contains("cluster.etcd.certFile is set, so cluster.etcd.keyFile must be too"),
        "{errors}"
    );
    let whole = [half.as_slice(), &[("ARLEN_CLUSTER_ETCD_KEY_FILE", "tls/client.key")]].concat();
    assert!(app.load(&whole).is_ok());

    let missing = [etcd.as_slice(), &[("ARLEN_CLUSTER_ETCD_CA_FILE", "nope.pem")]].concat();
    let errors = app.load(&missing).unwrap_err();
    assert!(
        errors.to_string().contains("variable ARLEN_CLUSTER_ETCD_CA_FILE (key cluster.etcd.caFile): cannot read"),
        "{errors}"
    );
}

#[test]
fn sidecar_mode_takes_an_http_upstream_from_a_key_or_the_flag() {
    let loaded = App::new()
        .load(&[("ARLEN_PROXY_UPSTREAM", "http://127.0.0.1:8080/"), ("ARLEN_PROXY_HEALTH_PATH", "/health")])
        .unwrap();
    let proxy = loaded.config.proxy.unwrap();
    assert_eq!((proxy.upstream.as_str(), proxy.health_path.as_str()), ("http://127.0.0.1:8080", "/health"));
    assert_eq!(proxy.health_interval, Duration::from_millis(500));
    let app = App::new();
    let options = LoadOptions { upstream: Some("http://localhost:9000".into()), ..app.options() };
    let loaded = app.load_with(options, &[("ARLEN_PROXY_UPSTREAM", "http://ignored:1")]).unwrap();
    assert_eq!(loaded.config.proxy.as_ref().unwrap().upstream, "http://localhost:9000", "the flag beats the variable");
    assert_eq!(loaded.setting("proxy.upstream").unwrap().source, Source::Flag("--upstream"));
    let errors = App::new()
        .load(&[("ARLEN_PROXY_UPSTREAM", "https://app:443"), ("ARLEN_PROXY_HEALTH_PATH", "health")])
        .unwrap_err();
    let message = errors.to_string();
    assert!(
        message.contains("variable ARLEN_PROXY_UPSTREAM (key proxy.upstream): the upstream is reached over plain HTTP"),
        "{message}"
    );
    assert!(
        message.contains("variable ARLEN_PROXY_HEALTH_PATH (key proxy.healthPath): a health path starts with `/`"),
        "{message}"
    );
}

#[test]
fn the_operations_token_has_a_minimum_strength_and_is_never_shown() {
    let errors = App::new().load(&[("ARLEN_OPS_TOKEN", "short-secret")]).unwrap_err();
    let message = errors.to_string();
    assert!(message.contains("variable ARLEN_OPS_TOKEN (key observability.opsToken): the operations token must be at least 32 characters"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
    let strong = "0123456789abcdef0123456789abcdef";
    let loaded = App::new().load(&[("ARLEN_OPS_TOKEN", strong)]).unwrap();
    assert_eq!(loaded.setting("observability.opsToken").unwrap().display_value(), "(configured)");
}

#[test]
fn deep_or_huge_files_are_refused_with_the_limit_and_never_overflow_the_stack() {
    let deep_plist = format!("{{ a = {}1{}; }}", "(".repeat(5000), ")".repeat(5000));
    let errors = App::new().file("config/app.plist", &deep_plist).load(&[]).unwrap_err();
    let message = errors.to_string();
    assert!(message.contains("config/app.plist:1:") && message.contains("nest deeper than 64 levels"), "{message}");
    let deep_json = format!("{{\"a\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(App::new().file("config/app.json", &deep_json).load(&[]).unwrap_err().to_string().contains("nest deeper"));
    let deep_toml = format!("a = {}1{}\n", "[".repeat(1000), "]".repeat(1000));
    assert!(App::new().file("config/app.toml", &deep_toml).load(&[]).unwrap_err().to_string().contains("nest deeper"));
    // Brackets inside strings and comments are text, not nesting.
    let quoted = format!("# {}\ntitle = \"{}\"\n", "[".repeat(100), "{".repeat(100));
    assert!(App::new().file("config/app.toml", &quoted).load(&[]).is_ok());
    let huge = format!("x = \"{}\"\n", "y".repeat(1_100_000));
    let message = App::new().file("config/app.toml", &huge).load(&[]).unwrap_err().to_string();
    assert!(message.contains("configuration files are at most 1048576 bytes"), "{message}");
}

#[test]
fn typo_hints_stay_fast_on_a_large_file_of_unknown_keys() {
    let mut text = String::new();
    // Just under the 1 MiB file limit: 18 000 unknown keys.
    for i in 0..18_000 {
        text.push_str(&format!("unknownKeyNumber{i}Quite{} = 1\n", "x".repeat(25)));
    }
    text.push_str("[cluster]\nexpectedNode = 3\n");
    let started = std::time::Instant::now();
    let loaded = App::new().file("config/app.toml", &text).load(&[]).unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.contains("did you mean cluster.expectedNodes")),
        "the typo is still found"
    );
    eprintln!("18 000 unknown keys loaded in {:?}", started.elapsed());
}

/// Every key's default is a value of its own kind — a declared word is one
/// of the key's words, a declared policy parses — so the typed configuration
/// never meets a value it cannot read.
#[test]
fn every_default_is_of_its_keys_kind() {
    for spec in KEYS {
        let value = crate::loader::plain_default(spec);
        let fits = match (spec.kind, &value) {
            (Kind::Bool, Typed::Bool(_)) | (Kind::Integer { .. }, Typed::Integer(_)) => true,
            (Kind::Text | Kind::Secret | Kind::Address | Kind::HttpUrl, Typed::Text(_)) => true,
            (Kind::AddressList | Kind::UrlList | Kind::NetworkList, Typed::List(_)) => true,
            (Kind::QuorumPolicy, Typed::Policy(_)) => true,
            (Kind::OneOf(words), Typed::Word { word, index }) => words[*index] == *word,
            _ => false,
        };
        assert!(fits, "{}: default {value:?} is not of kind {:?}", spec.key, spec.kind);
        if let (Kind::OneOf(words), registry::Default::Text(declared)) = (spec.kind, spec.default) {
            assert!(words.contains(&declared), "{}: default {declared:?} is not one of {words:?}", spec.key);
        }
    }
}

/// A source named in configuration is the source that runs: the words the
/// registry accepts are the enum's, in its order.
#[test]
fn enum_keys_read_back_as_the_variant_written() {
    use crate::Words;
    for (index, word) in MembershipSource::WORDS.iter().enumerate() {
        let loaded = Config::from_map(
            Path::new("/nonexistent"),
            &[("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", word), ("ARLEN_CLUSTER_ETCD_ENDPOINTS", "http://127.0.0.1:2379")],
        )
        .unwrap();
        assert_eq!(loaded.cluster.membership.source, MembershipSource::ALL[index]);
        assert_eq!(loaded.cluster.membership.source.word(), *word);
    }
    for (index, word) in UnsealedTrafficSetting::WORDS.iter().enumerate() {
        let loaded =
            Config::from_map(Path::new("/nonexistent"), &[("ARLEN_CLUSTER_GOSSIP_UNSEALED_TRAFFIC", word)]).unwrap();
        assert_eq!(loaded.cluster.membership.gossip.unsealed_traffic, UnsealedTrafficSetting::ALL[index]);
    }
}

#[test]
fn a_misspelled_variable_is_warned_with_the_one_meant_and_hints_survive_errors() {
    let loaded =
        App::new().load(&[("ARLEN_CLUSTER_EXPECTED_NODE", "3"), ("ARLEN_ENV", "test"), ("PATH", "/bin")]).unwrap();
    assert_eq!(
        loaded.warnings,
        vec!["variable ARLEN_CLUSTER_EXPECTED_NODE is not a configuration variable and is ignored; did you mean ARLEN_CLUSTER_EXPECTED_NODES?"]
    );
    let loaded = App::new().load(&[("MOJOOBJC_WHATEVER_THIS_IS", "1")]).unwrap();
    assert!(
        loaded.warnings[0].starts_with("variable MOJOOBJC_WHATEVER_THIS_IS is not a configuration variable"),
        "{:?}",
        loaded.warnings
    );

    // A typo in a file and an error elsewhere: both reported, the hint too.
    let app = App::new().file("config/app.toml", "[cluster]\nexpectedNode = 3\n");
    let errors = app.load(&[("ARLEN_PORT", "http")]).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(
        errors.hints,
        vec!["config/app.toml:2:16: unknown key cluster.expectedNode; did you mean cluster.expectedNodes?"]
    );
    assert!(errors.to_string().contains("\nhints:\n  - config/app.toml:2:16: unknown key"), "{errors}");
}

#[test]
fn zones_need_a_zone_and_a_zone_count_and_zone_names_are_checked() {
    let errors = App::new().load(&[("ARLEN_CLUSTER_QUORUM_POLICY", "zones")]).unwrap_err().to_string();
    assert!(errors.contains("variable ARLEN_CLUSTER_QUORUM_POLICY (key cluster.quorumPolicy): quorumPolicy `zones` counts zones: set ARLEN_CLUSTER_EXPECTED_ZONES"), "{errors}");
    assert!(errors.contains("set ARLEN_CLUSTER_ZONE (cluster.zone)"), "{errors}");
    let config = App::new()
        .load(&[
            ("ARLEN_CLUSTER_QUORUM_POLICY", "zones"),
            ("ARLEN_CLUSTER_EXPECTED_ZONES", "3"),
            ("ARLEN_CLUSTER_ZONE", "eu-west-1a"),
        ])
        .unwrap();
    assert_eq!(
        (
            config.config.cluster.quorum_policy,
            config.config.cluster.expected_zones,
            config.config.cluster.zone.as_deref()
        ),
        (QuorumPolicySetting::Zones, 3, Some("eu-west-1a"))
    );
    let errors = App::new().load(&[("ARLEN_CLUSTER_ZONE", "eu west")]).unwrap_err().to_string();
    assert!(errors.contains("variable ARLEN_CLUSTER_ZONE (key cluster.zone): zone \"eu west\""), "{errors}");
}
