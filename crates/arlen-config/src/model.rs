//! The typed configuration a load produces: what the rest of Arlen reads.

use super::*;

/// An enum a `Kind::OneOf` key takes. The registry lists its [`Words::WORDS`],
/// the loader stores the position of the word it read, and the typed
/// configuration takes `ALL[position]`: no string is matched twice, and no
/// default arm hides a value a new variant forgot.
pub trait Words: Copy + 'static {
    /// Every value, in the order of [`Words::WORDS`].
    const ALL: &'static [Self];
    /// How each value is written (`ALL[i]` is `WORDS[i]`).
    const WORDS: &'static [&'static str];
}

/// Implements [`Words`] from one table of variants and words.
macro_rules! words {
    ($name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl Words for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            const WORDS: &'static [&'static str] = &[$($word),+];
        }

        impl $name {
            /// How this value is written in configuration.
            pub fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }
    };
}

words!(LogFormat { Text => "text", Json => "json" });
words!(DetailsAccess { Public => "public", Restricted => "restricted" });
words!(MembershipSource { StaticConfig => "static_config", Gossip => "gossip", Etcd => "etcd" });
words!(UnsealedTrafficSetting { Refuse => "refuse", Accept => "accept", Send => "send" });

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The typed configuration every other crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub env: String,
    pub app_root: PathBuf,
    pub host: String,
    pub port: u16,
    pub log_format: LogFormat,
    /// One of `debug`, `info`, `warn`, `error`.
    pub log_level: String,
    pub listen_backlog: u32,
    pub connection_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub head_timeout: Duration,
    /// A write the client's socket does not take for this long cuts the connection.
    pub write_timeout: Duration,
    /// `admin.listen`: the admin listener's `host:port`, if any.
    pub admin_listen: Option<String>,
    pub enable_reuse_port: bool,
    /// HTTP/1.1 response header names in title case (`http.titleCaseHeaders`).
    pub title_case_headers: bool,
    pub request_limits: RequestLimits,
    pub max_concurrent_http_sessions: usize,
    pub session: SessionConfig,
    pub observability: ObservabilityConfig,
    pub cluster: ClusterConfig,
    pub shutdown: ShutdownConfig,
    /// Sidecar mode: `Some` when `proxy.upstream` is set.
    pub proxy: Option<ProxyConfig>,
    pub checks: ChecksConfig,
}

/// The application's own checks, configured (`checks.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksConfig {
    pub readiness: Vec<crate::ConfiguredCheck>,
    pub liveness: Vec<crate::ConfiguredCheck>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Sidecar mode: where non-reserved requests go, and how the upstream is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://host:port`.
    pub upstream: String,
    /// Empty: a TCP connect is the health check.
    pub health_path: String,
    /// Proxies in front of the sidecar whose forwarding headers are extended
    /// (everyone else's are replaced).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// An upgraded tunnel with no byte either way for this long is closed
    /// (`connectionTimeoutSeconds`).
    pub tunnel_idle_timeout: Duration,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_request_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub enabled: bool,
    /// Never printed; `Debug` masks it.
    pub secret: String,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("enabled", &self.enabled)
            .field("secret_configured", &!self.secret.is_empty())
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ObservabilityConfig {
    pub health_details_enabled: bool,
    pub readiness_requires_startup: bool,
    pub readiness_requires_cluster_quorum: bool,
    pub metrics_enabled: bool,
    /// `/metrics` also under the `aln_` names of the release before.
    pub legacy_metric_names: bool,
    pub trace_propagation_enabled: bool,
    pub response_identity_headers_enabled: bool,
    /// Keep a well-formed incoming `X-Request-Id`.
    pub keep_incoming_request_id: bool,
    /// One structured line per request, for this share of them (percent).
    pub access_log: Option<u8>,
    /// Bearer token of the operations endpoints; empty means they do not exist.
    pub ops_token: String,
    /// Member details for everyone, or only for the admin listener and the details token.
    pub details_access: DetailsAccess,
    /// Bearer token that shows member details when access is restricted; empty: none.
    pub details_token: String,
}

/// Who sees member details (`observability.detailsAccess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailsAccess {
    Public,
    Restricted,
}

impl std::fmt::Debug for ObservabilityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservabilityConfig")
            .field("health_details_enabled", &self.health_details_enabled)
            .field("readiness_requires_startup", &self.readiness_requires_startup)
            .field("readiness_requires_cluster_quorum", &self.readiness_requires_cluster_quorum)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("trace_propagation_enabled", &self.trace_propagation_enabled)
            .field("response_identity_headers_enabled", &self.response_identity_headers_enabled)
            .field("keep_incoming_request_id", &self.keep_incoming_request_id)
            .field("access_log", &self.access_log)
            .field("ops_token_configured", &!self.ops_token.is_empty())
            .field("details_access", &self.details_access)
            .field("details_token_configured", &!self.details_token.is_empty())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub enabled: bool,
    pub name: String,
    pub node_id: String,
    /// `cluster.zone`: the failure domain, when set.
    pub zone: Option<String>,
    /// Clamped to ≥ 1.
    pub expected_nodes: u32,
    /// Clamped to ≥ 0; may exceed `expected_nodes`.
    pub observed_nodes: u32,
    pub emit_headers: bool,
    pub membership: MembershipConfig,
    /// Install the fault-injection wrapper around the gossip transport.
    pub fault_injection_enabled: bool,
    pub quorum_policy: QuorumPolicySetting,
    /// `cluster.expectedZones` (0: not set).
    pub expected_zones: u32,
    pub quorum_loss_grace: Duration,
    pub quorum_recovery_stable: Duration,
}

/// `cluster.quorumPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumPolicySetting {
    All,
    Majority,
    AtLeast(u32),
    /// A majority of the nodes, in a majority of `cluster.expectedZones`.
    Zones,
}

impl QuorumPolicySetting {
    /// Parses `all`, `majority`, `zones` (any case) or a positive integer.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim().to_ascii_lowercase();
        match text.as_str() {
            "all" => Ok(Self::All),
            "majority" => Ok(Self::Majority),
            "zones" => Ok(Self::Zones),
            _ => match value::parse_integer(&text) {
                Ok(n) if n >= 1 => u32::try_from(n).map(Self::AtLeast).map_err(|_| format!("{n} is too large")),
                _ => Err(format!("expected all, majority, zones or a positive integer, got {raw:?}")),
            },
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::All => "all".to_owned(),
            Self::Majority => "majority".to_owned(),
            Self::AtLeast(n) => n.to_string(),
            Self::Zones => "zones".to_owned(),
        }
    }
}

/// Which membership source observes the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipSource {
    StaticConfig,
    Gossip,
    Etcd,
}

impl MembershipSource {
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    pub source: MembershipSource,
    pub gossip: GossipConfig,
    pub etcd: EtcdConfig,
}

/// Settings of the `etcd` membership source.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// TLS for `https://` endpoints: the CA bundle, and a client certificate
    /// and key when etcd checks clients (paths, resolved against the app root).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Members register at `<prefix><node id>`.
    pub prefix: String,
    pub lease_ttl: Duration,
    pub username: String,
    /// Never printed; `Debug` masks it.
    pub password: String,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("username", &self.username)
            .field("password_configured", &!self.password.is_empty())
            .finish()
    }
}

/// `cluster.gossip.unsealedTraffic`: what happens to unsealed datagrams
/// while keys are set (the switch for turning sealing on in a running cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealedTrafficSetting {
    /// Send sealed, accept only sealed.
    Refuse,
    /// Send sealed, accept both.
    Accept,
    /// Send unsealed, accept both.
    Send,
}

/// Settings of the `gossip` membership source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// `host:port` the UDP socket binds.
    pub listen: String,
    /// `host:port` peers reach this node at.
    pub advertise: String,
    /// `host:port` of peers to join through.
    pub seeds: Vec<String>,
    /// SWIM probe period and gossip round.
    pub interval: std::time::Duration,
    /// How long a probe waits for a direct answer.
    pub probe_timeout: std::time::Duration,
    /// How long a suspected member has to refute.
    pub suspicion_timeout: std::time::Duration,
    pub dead_member_ttl: std::time::Duration,
    pub max_members: usize,
    /// Joins a minute beyond a burst of `expectedNodes` (`cluster.gossip.maxJoinsPerMinute`).
    pub max_joins_per_minute: u32,
    /// From `cluster.gossip.keys` or `cluster.gossip.keysFile`; never printed.
    pub keys: GossipKeys,
    /// `cluster.gossip.keysFile`, resolved, when set (re-read on reload).
    pub keys_file: Option<PathBuf>,
    pub allow_unauthenticated: bool,
    pub unsealed_traffic: UnsealedTrafficSetting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    pub graceful_timeout: Duration,
    /// How long a draining node keeps serving (out of rotation) before it
    /// stops accepting connections.
    pub drain_delay: Duration,
    /// Above zero, the drain ends once no application request has arrived
    /// for this long (`drain_delay` is then the shortest drain, `drain_max`
    /// the longest).
    pub drain_quiet: Duration,
    pub drain_max: Duration,
}
