//! The registry of every configuration key Arlen understands.
//!
//! One table, [`KEYS`], ties each dotted key to its environment variable, its
//! kind, default and range rule. The loader, `arlen config`, the README's
//! reference table and the typo warnings are all driven from it, so adding a
//! key is one entry here plus a field in [`crate::Config`].

use crate::Words as _;
use std::fmt::Write as _;

/// What to do with an integer outside its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Use the nearest bound and log a warning (the contract's normalisation).
    Clamp,
    /// Reject the value.
    Error,
}

/// The type and validation rule of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer {
        min: i64,
        max: i64,
        out_of_range: OutOfRange,
    },
    /// Free text, trimmed.
    Text,
    /// Text that is never printed (only "configured" or "not configured").
    Secret,
    /// One of a fixed set of words (matched case-insensitively, stored lower-case).
    OneOf(&'static [&'static str]),
    /// `host:port` (IPv6 hosts in brackets), port 1..65535.
    Address,
    /// A list of `host:port`: comma-separated text, or a list in a file.
    AddressList,
    /// `all`, `majority`, or a positive integer.
    QuorumPolicy,
    /// A list of `http://` or `https://` URLs: comma-separated text, or a list in a file.
    UrlList,
    /// One `http://host:port` URL, or empty.
    HttpUrl,
    /// A list of IP addresses or CIDR ranges (`10.0.0.0/8`, `::1`).
    NetworkList,
}

impl Kind {
    /// The words of a `OneOf` kind; none for any other.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Kind::OneOf(words) => words,
            Kind::Bool
            | Kind::Integer { .. }
            | Kind::Text
            | Kind::Secret
            | Kind::Address
            | Kind::AddressList
            | Kind::QuorumPolicy
            | Kind::UrlList
            | Kind::HttpUrl
            | Kind::NetworkList => &[],
        }
    }
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    Bool(bool),
    Integer(i64),
    Text(&'static str),
    /// Computed by the loader after overrides; the text says from what.
    Computed(&'static str),
}

/// Whether a new value takes effect on SIGHUP or only after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP applies it (readiness and quorum settings, static membership,
    /// gossip keys, the drain delay, ...).
    Live,
    /// Read once at start (listeners, identity, the membership source, ...):
    /// a change on SIGHUP is logged as needing a restart.
    Restart,
}

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub id: Key,
    /// camelCase dotted path, the same in every file format.
    pub key: &'static str,
    /// Variable suffix: the key is read from `ARLEN_<env>` and `MOJOOBJC_<env>`.
    pub env: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// What SIGHUP does with a new value.
    pub reload: Reload,
    /// One line for the reference table.
    pub doc: &'static str,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Key {
    /// The key's spec in [`KEYS`].
    pub fn spec(self) -> &'static KeySpec {
        &KEYS[self as usize]
    }

    /// The dotted name (`cluster.gossip.keys`).
    pub fn name(self) -> &'static str {
        self.spec().key
    }

    /// The variable that sets it (`ARLEN_CLUSTER_GOSSIP_KEYS`).
    pub fn variable(self) -> String {
        self.spec().variable()
    }
}

impl KeySpec {
    pub fn variable(&self) -> String {
        format!("{}{}", crate::environment::PREFIX, self.env)
    }

    pub fn legacy_variable(&self) -> String {
        format!("{}{}", crate::environment::LEGACY_PREFIX, self.env)
    }

    /// The rule column of the reference table.
    pub fn rule(&self) -> String {
        match self.kind {
            Kind::Bool => "boolean (YES/NO, true/false, yes/no, on/off, 1/0)".to_owned(),
            Kind::Integer { min, max, out_of_range } => {
                let verb = match out_of_range {
                    OutOfRange::Clamp => "clamped to",
                    OutOfRange::Error => "must be",
                };
                if max == i64::MAX {
                    format!("integer, {verb} ≥ {min}")
                } else {
                    format!("integer, {verb} {min}..{max}")
                }
            }
            Kind::Text => "text, trimmed".to_owned(),
            Kind::Secret => "secret: never printed".to_owned(),
            Kind::OneOf(words) => format!("one of {}", words.join(", ")),
            Kind::Address => "`host:port`".to_owned(),
            Kind::AddressList => "comma-separated `host:port` list".to_owned(),
            Kind::QuorumPolicy => "`all`, `majority`, `zones` or a positive integer".to_owned(),
            Kind::UrlList => "comma-separated `http(s)://host:port` list".to_owned(),
            Kind::HttpUrl => "`http://host:port`, or empty".to_owned(),
            Kind::NetworkList => "comma-separated IP addresses or CIDR ranges".to_owned(),
        }
    }

    pub fn default_text(&self) -> String {
        match self.default {
            Default::Bool(true) => "YES".to_owned(),
            Default::Bool(false) => "NO".to_owned(),
            Default::Integer(n) => n.to_string(),
            Default::Text("") => "(empty)".to_owned(),
            Default::Text(text) => text.to_owned(),
            Default::Computed(how) => how.to_owned(),
        }
    }
}

const AT_LEAST_0: Kind = Kind::Integer { min: 0, max: i64::MAX, out_of_range: OutOfRange::Clamp };
const AT_LEAST_1: Kind = Kind::Integer { min: 1, max: i64::MAX, out_of_range: OutOfRange::Clamp };

/// The key table: generates [`Key`] (one variant per key, in table order)
/// and [`KEYS`] (the specs, indexed by `Key as usize`), so a key's name is
/// written once, here.
macro_rules! registry {
    ($( key!($id:ident, $reload:ident, $key:literal, $env:literal, $kind:expr, $default:expr, $doc:literal $(,)?) ),* $(,)?) => {
        /// A configuration key, by id: the loader and the binaries name keys
        /// with these, never with string literals.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Key {
            $($id),*
        }

        /// Every key, in reference-table order (`KEYS[key as usize].id == key`).
        pub const KEYS: &[KeySpec] = &[
            $(KeySpec { id: Key::$id, key: $key, env: $env, kind: $kind, default: $default, reload: Reload::$reload, doc: $doc }),*
        ];
    };
}

#[rustfmt::skip]
registry! {
    key!(Host, Restart, "host", "HOST", Kind::Text, Default::Text("127.0.0.1"), "address the HTTP listener binds"),
    key!(
        Port, Restart, "port",
        "PORT",
        Kind::Integer { min: 1, max: 65535, out_of_range: OutOfRange::Error },
        Default::Integer(3000),
        "HTTP listener port"
    ),
    key!(
        LogFormat, Restart, "logFormat",
        "LOG_FORMAT",
        Kind::OneOf(crate::LogFormat::WORDS),
        Default::Computed("`text` in development, else `json`"),
        "log line format"
    ),
    key!(
        LogLevel, Restart, "logLevel",
        "LOG_LEVEL",
        Kind::OneOf(&["debug", "info", "warn", "error"]),
        Default::Computed("`debug` in development, else `info`"),
        "lowest level logged"
    ),
    key!(ListenBacklog, Restart, "listenBacklog", "LISTEN_BACKLOG", AT_LEAST_1, Default::Integer(128), "listen(2) backlog of the HTTP socket"),
    key!(
        ConnectionTimeoutSeconds, Restart, "connectionTimeoutSeconds",
        "CONNECTION_TIMEOUT_SECONDS",
        AT_LEAST_1,
        Default::Integer(30),
        "a connection that sends no complete request head for this long is closed"
    ),
    key!(
        EnableReusePort, Restart, "enableReusePort",
        "ENABLE_REUSEPORT",
        Kind::Bool,
        Default::Bool(false),
        "set SO_REUSEPORT on the HTTP socket"
    ),
    key!(
        HttpTitleCaseHeaders, Restart, "http.titleCaseHeaders",
        "HTTP_TITLE_CASE_HEADERS",
        Kind::Bool,
        Default::Bool(true),
        "write HTTP/1.1 response header names in title case (`X-Arlen-Cluster-Status`, the contract's spelling); off: lower case. Names are case-insensitive; HTTP/2 is always lower case"
    ),
    key!(
        RequestLimitsMaxRequestLineBytes, Restart, "requestLimits.maxRequestLineBytes",
        "MAX_REQUEST_LINE_BYTES",
        AT_LEAST_1,
        Default::Integer(4096),
        "longer request lines get 414"
    ),
    key!(
        RequestLimitsMaxHeaderBytes, Restart, "requestLimits.maxHeaderBytes",
        "MAX_HEADER_BYTES",
        AT_LEAST_1,
        Default::Integer(32768),
        "larger request header sections get 431"
    ),
    key!(
        RequestLimitsMaxBodyBytes, Restart, "requestLimits.maxBodyBytes",
        "MAX_BODY_BYTES",
        AT_LEAST_1,
        Default::Integer(1_048_576),
        "larger request bodies get 413"
    ),
    key!(
        RequestLimitsHeadTimeoutMs, Restart, "requestLimits.headTimeoutMs",
        "HEAD_TIMEOUT_MS",
        Kind::Integer { min: 100, max: 60_000, out_of_range: OutOfRange::Clamp },
        Default::Integer(5000),
        "a request head must be complete this long after its first byte, or the connection is closed (slow heads cannot pin a session); idle keep-alive connections are bound by connectionTimeoutSeconds"
    ),
    key!(
        RequestLimitsWriteTimeoutMs, Restart, "requestLimits.writeTimeoutMs",
        "WRITE_TIMEOUT_MS",
        Kind::Integer { min: 100, max: 600_000, out_of_range: OutOfRange::Clamp },
        Default::Integer(10_000),
        "a response the client does not read for this long (its socket takes no byte) is cut and the connection closed, so slow readers cannot pin a session; upgraded tunnels (WebSocket through the sidecar) idle for connectionTimeoutSeconds are closed"
    ),
    key!(
        AdminListen, Restart, "admin.listen",
        "ADMIN_LISTEN",
        Kind::Text,
        Default::Text(""),
        "`host:port` of a second listener for the probes, /clusterz, /metrics and the operations endpoints, apart from application traffic (then the operations endpoints exist only there); empty: none"
    ),
    key!(
        RuntimeLimitsMaxConcurrentHTTPSessions, Restart, "runtimeLimits.maxConcurrentHTTPSessions",
        "MAX_HTTP_SESSIONS",
        AT_LEAST_1,
        Default::Integer(256),
        "open connections beyond this get one answer, their head within 2 s: the reserved endpoints by their own rules (probes are never starved), anything else 503 with `Retry-After: 1`"
    ),
    key!(
        SessionEnabled, Live, "session.enabled",
        "SESSION_ENABLED",
        Kind::Bool,
        Default::Bool(false),
        "sessions are on (reported by `/clusterz`)"
    ),
    key!(
        SessionSecret, Live, "session.secret",
        "SESSION_SECRET",
        Kind::Secret,
        Default::Text(""),
        "session signing secret; only whether it is configured is ever shown"
    ),
    key!(
        ObservabilityHealthDetailsEnabled, Live, "observability.healthDetailsEnabled",
        "HEALTH_DETAILS_ENABLED",
        Kind::Bool,
        Default::Bool(true),
        "probes may answer JSON when asked"
    ),
    key!(
        ObservabilityReadinessRequiresStartup, Live, "observability.readinessRequiresStartup",
        "READINESS_REQUIRES_STARTUP",
        Kind::Bool,
        Default::Bool(false),
        "`/readyz` is 503 until the node has started"
    ),
    key!(
        ObservabilityReadinessRequiresClusterQuorum, Live, "observability.readinessRequiresClusterQuorum",
        "READINESS_REQUIRES_CLUSTER_QUORUM",
        Kind::Bool,
        Default::Bool(false),
        "`/readyz` is 503 while quorum is not met"
    ),
    key!(ObservabilityMetricsEnabled, Live, "observability.metricsEnabled", "METRICS_ENABLED", Kind::Bool, Default::Bool(true), "`/metrics` has a body"),
    key!(ObservabilityLegacyMetricNames, Live, "observability.legacyMetricNames", "LEGACY_METRIC_NAMES", Kind::Bool, Default::Bool(false), "`/metrics` also exposes every `arlen_` family under its name before the rename (`aln_`), for dashboards and alerts not yet moved; removed in the next release"),
    key!(
        ObservabilityTracePropagationEnabled, Live, "observability.tracePropagationEnabled",
        "TRACE_PROPAGATION_ENABLED",
        Kind::Bool,
        Default::Bool(true),
        "`X-Trace-Id` and `traceparent` on responses"
    ),
    key!(
        ObservabilityResponseIdentityHeadersEnabled, Live, "observability.responseIdentityHeadersEnabled",
        "RESPONSE_IDENTITY_HEADERS_ENABLED",
        Kind::Bool,
        Default::Bool(true),
        "`X-Request-Id` and `X-Correlation-Id` on responses"
    ),
    key!(HttpKeepIncomingRequestId, Live, "http.keepIncomingRequestId", "HTTP_KEEP_INCOMING_REQUEST_ID", Kind::Bool, Default::Bool(false), "keep a well-formed incoming `X-Request-Id` (1 to 128 of `A-Z a-z 0-9 - _ . :`) instead of a fresh one: the id of the caller's log lines goes on in ours, the response and, from a sidecar, to the application"),
    key!(ObservabilityAccessLog, Live, "observability.accessLog", "ACCESS_LOG", Kind::Bool, Default::Bool(false), "one structured log line per request (target `arlen::access`: method, path, status, duration, bytes, upstream error, request id, trace id), written whatever `logLevel` (unless `RUST_LOG` says otherwise)"),
    key!(ObservabilityAccessLogSamplePercent, Live, "observability.accessLogSamplePercent", "ACCESS_LOG_SAMPLE_PERCENT", Kind::Integer { min: 1, max: 100, out_of_range: OutOfRange::Clamp }, Default::Integer(100), "the share of requests the access log writes (errors, 5xx, are always written)"),
    key!(ObservabilityDetailsAccess, Restart, "observability.detailsAccess", "DETAILS_ACCESS", Kind::OneOf(crate::DetailsAccess::WORDS), Default::Computed("`public` in development and test, else `restricted`"), "who sees member details (gossip addresses, URLs, generations in /clusterz; the upstream's address and source details in the readiness JSON): `public` everyone, `restricted` only the admin listener and requests bearing observability.detailsToken. The contract's fields are always there"),
    key!(ObservabilityDetailsToken, Restart, "observability.detailsToken", "DETAILS_TOKEN", Kind::Secret, Default::Text(""), "bearer token that shows member details on the service port when observability.detailsAccess is `restricted` (at least 32 characters)"),
    key!(ObservabilityOpsToken, Restart, "observability.opsToken", "OPS_TOKEN", Kind::Secret, Default::Text(""), "bearer token for operations endpoints (`/_arlen/stop-permits`, and `/_arlen/faults` with fault injection); unset means they do not exist"),
    key!(
        ClusterEnabled, Restart, "cluster.enabled",
        "CLUSTER_ENABLED",
        Kind::Bool,
        Default::Bool(false),
        "this node is part of a multi-node cluster"
    ),
    key!(ClusterName, Restart, "cluster.name", "CLUSTER_NAME", Kind::Text, Default::Text("default"), "cluster name; empty means `default`"),
    key!(
        ClusterNodeID, Restart, "cluster.nodeID",
        "CLUSTER_NODE_ID",
        Kind::Text,
        Default::Computed("host name, lower-cased (else `node`)"),
        "this node's id"
    ),
    key!(ClusterZone, Restart, "cluster.zone", "CLUSTER_ZONE", Kind::Text, Default::Text(""), "the failure domain this node runs in (an availability zone, a rack): 1 to 64 of `A-Z a-z 0-9 . _ -`; it travels in the node's gossip identity and etcd record, `/clusterz` shows each zone's failure tolerance, and the `zones` quorum policy counts it; empty means no zone"),
    key!(
        ClusterExpectedNodes, Live, "cluster.expectedNodes",
        "CLUSTER_EXPECTED_NODES",
        AT_LEAST_1,
        Default::Integer(1),
        "how many nodes the cluster should have"
    ),
    key!(
        ClusterObservedNodes, Live, "cluster.observedNodes",
        "CLUSTER_OBSERVED_NODES",
        AT_LEAST_0,
        Default::Computed("`cluster.expectedNodes`"),
        "nodes observed, for `static_config` membership; may exceed expected"
    ),
    key!(
        ClusterEmitHeaders, Live, "cluster.emitHeaders",
        "CLUSTER_EMIT_HEADERS",
        Kind::Bool,
        Default::Computed("`cluster.enabled`"),
        "`X-Arlen-Cluster-*` headers on every response (needs `cluster.enabled`)"
    ),
    key!(ClusterQuorumPolicy, Live, "cluster.quorumPolicy", "CLUSTER_QUORUM_POLICY", Kind::QuorumPolicy, Default::Text("all"), "when quorum is met: all expected nodes, a majority (⌊E/2⌋+1), at least N, or `zones`: a majority of the nodes with live members in a majority of cluster.expectedZones zones (each node sets cluster.zone)"),
    key!(ClusterExpectedZones, Live, "cluster.expectedZones", "CLUSTER_EXPECTED_ZONES", Kind::Integer { min: 0, max: 1000, out_of_range: OutOfRange::Error }, Default::Integer(0), "how many zones the cluster spans (required by quorumPolicy `zones`)"),
    key!(ClusterQuorumLossGraceMs, Live, "cluster.quorumLossGraceMs", "CLUSTER_QUORUM_LOSS_GRACE_MS", AT_LEAST_0, Default::Integer(0), "readiness stays ready until quorum has been lost this long"),
    key!(ClusterQuorumRecoveryStableMs, Live, "cluster.quorumRecoveryStableMs", "CLUSTER_QUORUM_RECOVERY_STABLE_MS", AT_LEAST_0, Default::Integer(0), "readiness returns only after quorum has held this long"),
    key!(ClusterMembershipSource, Restart, "cluster.membership.source", "CLUSTER_MEMBERSHIP_SOURCE", Kind::OneOf(crate::MembershipSource::WORDS), Default::Text("static_config"), "where observed nodes come from: configured (`static_config`), or live (`gossip`, `etcd`)"),
    key!(ClusterGossipListen, Restart, "cluster.gossip.listen", "CLUSTER_GOSSIP_LISTEN", Kind::Address, Default::Computed("`host:port` of the HTTP listener"), "UDP address gossip binds"),
    key!(ClusterGossipAdvertise, Restart, "cluster.gossip.advertise", "CLUSTER_GOSSIP_ADVERTISE", Kind::Address, Default::Computed("`cluster.gossip.listen`"), "gossip address peers use to reach this node (must not be 0.0.0.0)"),
    key!(ClusterGossipSeeds, Restart, "cluster.gossip.seeds", "CLUSTER_GOSSIP_SEEDS", Kind::AddressList, Default::Text(""), "peers to join through; names are re-resolved every minute"),
    key!(ClusterGossipIntervalMs, Restart, "cluster.gossip.intervalMs", "CLUSTER_GOSSIP_INTERVAL_MS", Kind::Integer { min: 10, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(50), "SWIM probe period: each node probes one member this often; also the gossip round (50 ms: kill -9 to every survivor's 503 in ~280 ms on 3 nodes; see BENCHMARKS.md for the trade-off)"),
    key!(ClusterGossipProbeTimeoutMs, Restart, "cluster.gossip.probeTimeoutMs", "CLUSTER_GOSSIP_PROBE_TIMEOUT_MS", Kind::Integer { min: 1, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(20), "how long a probe waits for a direct answer before asking other members to probe (kept below `intervalMs`)"),
    key!(ClusterGossipSuspicionTimeoutMs, Restart, "cluster.gossip.suspicionTimeoutMs", "CLUSTER_GOSSIP_SUSPICION_TIMEOUT_MS", Kind::Integer { min: 10, max: 600_000, out_of_range: OutOfRange::Clamp }, Default::Integer(200), "how long a suspected member has to refute before it is declared dead (replaces `phiThreshold`)"),
    key!(ClusterGossipMaxJoinsPerMinute, Restart, "cluster.gossip.maxJoinsPerMinute", "CLUSTER_GOSSIP_MAX_JOINS_PER_MINUTE", Kind::Integer { min: 1, max: 100_000, out_of_range: OutOfRange::Clamp }, Default::Integer(60), "members that may join beyond a burst of `expectedNodes`; faster joiners, and members beyond twice `expectedNodes`, are held back (not counted, not probed) until there is room"),
    key!(ClusterGossipMaxMembers, Restart, "cluster.gossip.maxMembers", "CLUSTER_GOSSIP_MAX_MEMBERS", Kind::Integer { min: 2, max: 65_535, out_of_range: OutOfRange::Clamp }, Default::Integer(1024), "members (alive, suspect and recently dead) a node keeps at most; datagrams that would add more are dropped and counted"),
    key!(ClusterGossipKeys, Live, "cluster.gossip.keys", "CLUSTER_GOSSIP_KEYS", Kind::Secret, Default::Text(""), "comma-separated base64 32-byte keys (`arlen gossip keygen`): the first seals every datagram, any opens; never printed"),
    key!(ClusterGossipKeysFile, Live, "cluster.gossip.keysFile", "CLUSTER_GOSSIP_KEYS_FILE", Kind::Text, Default::Text(""), "a file of gossip keys, one a line (first seals); re-read on SIGHUP; relative to the app root"),
    key!(ClusterGossipAllowUnauthenticated, Restart, "cluster.gossip.allowUnauthenticated", "CLUSTER_GOSSIP_ALLOW_UNAUTHENTICATED", Kind::Bool, Default::Bool(false), "outside development and test, gossip without keys is refused unless this is YES"),
    key!(ClusterGossipUnsealedTraffic, Live, "cluster.gossip.unsealedTraffic", "CLUSTER_GOSSIP_UNSEALED_TRAFFIC", Kind::OneOf(crate::UnsealedTrafficSetting::WORDS), Default::Text("refuse"), "with keys: `refuse` unsealed datagrams; `accept` them while sending sealed; or `send` unsealed while accepting both (for turning keys on in a running cluster; reloads on SIGHUP)"),
    key!(ClusterGossipDeadMemberTtlSeconds, Restart, "cluster.gossip.deadMemberTtlSeconds", "CLUSTER_GOSSIP_DEAD_MEMBER_TTL_SECONDS", Kind::Integer { min: 1, max: 86_400, out_of_range: OutOfRange::Clamp }, Default::Integer(60), "dead members are forgotten after this long"),
    key!(ClusterEtcdEndpoints, Restart, "cluster.etcd.endpoints", "CLUSTER_ETCD_ENDPOINTS", Kind::UrlList, Default::Text(""), "etcd client URLs, comma-separated; required when the source is `etcd`"),
    key!(ClusterEtcdPrefix, Restart, "cluster.etcd.prefix", "CLUSTER_ETCD_PREFIX", Kind::Text, Default::Computed("`/arlen/clusters/<cluster.name>/members/`"), "key prefix under which members register"),
    key!(ClusterEtcdLeaseTtlSeconds, Restart, "cluster.etcd.leaseTtlSeconds", "CLUSTER_ETCD_LEASE_TTL_SECONDS", Kind::Integer { min: 2, max: 3600, out_of_range: OutOfRange::Clamp }, Default::Integer(3), "registration lease; a crashed node disappears after it, and a node that cannot reach etcd this long reports `partitioned`"),
    key!(ClusterEtcdCaFile, Restart, "cluster.etcd.caFile", "CLUSTER_ETCD_CA_FILE", Kind::Text, Default::Text(""), "PEM bundle of the CA that signed etcd's server certificate; required with `https://` endpoints; relative to the app root"),
    key!(ClusterEtcdCertFile, Restart, "cluster.etcd.certFile", "CLUSTER_ETCD_CERT_FILE", Kind::Text, Default::Text(""), "PEM client certificate, for an etcd that checks clients (`--client-cert-auth`); with `keyFile`"),
    key!(ClusterEtcdKeyFile, Restart, "cluster.etcd.keyFile", "CLUSTER_ETCD_KEY_FILE", Kind::Text, Default::Text(""), "PEM private key of `certFile`; never printed, only its path"),
    key!(ClusterEtcdUsername, Restart, "cluster.etcd.username", "CLUSTER_ETCD_USERNAME", Kind::Text, Default::Text(""), "etcd user, when etcd has authentication on"),
    key!(ClusterEtcdPassword, Restart, "cluster.etcd.password", "CLUSTER_ETCD_PASSWORD", Kind::Secret, Default::Text(""), "etcd password; never printed"),
    key!(ClusterFaultInjectionEnabled, Restart, "cluster.faultInjection.enabled", "CLUSTER_FAULT_INJECTION_ENABLED", Kind::Bool, Default::Bool(false), "wrap the gossip transport in fault rules (drills); off costs nothing"),
    key!(ProxyUpstream, Restart, "proxy.upstream", "PROXY_UPSTREAM", Kind::HttpUrl, Default::Text(""), "sidecar mode (also `arlen serve --upstream URL`): every request that is not a reserved endpoint goes to this HTTP application"),
    key!(ProxyHealthPath, Restart, "proxy.healthPath", "PROXY_HEALTH_PATH", Kind::Text, Default::Text(""), "the upstream's health path (`/health`); `/readyz` fails while it does not answer 2xx. Empty: a TCP connect is the check"),
    key!(ProxyHealthIntervalMs, Restart, "proxy.healthIntervalMs", "PROXY_HEALTH_INTERVAL_MS", Kind::Integer { min: 50, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(500), "how often the upstream is checked"),
    key!(ProxyHealthTimeoutMs, Restart, "proxy.healthTimeoutMs", "PROXY_HEALTH_TIMEOUT_MS", Kind::Integer { min: 10, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(400), "a check that takes longer has failed"),
    key!(ProxyConnectTimeoutMs, Restart, "proxy.connectTimeoutMs", "PROXY_CONNECT_TIMEOUT_MS", Kind::Integer { min: 10, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(1000), "connecting to the upstream takes at most this long (then 502)"),
    key!(ProxyTrustedProxies, Restart, "proxy.trustedProxies", "PROXY_TRUSTED_PROXIES", Kind::NetworkList, Default::Text(""), "addresses or CIDR ranges of proxies in front of the sidecar whose `X-Forwarded-*` and `Forwarded` headers are extended; from anyone else they are replaced by the sidecar's own"),
    key!(ChecksReadiness, Restart, "checks.readiness", "CHECKS_READINESS", Kind::Text, Default::Text(""), "the application's own readiness checks, for any language: `name=target` pairs, comma-separated; a target `/path` is a GET on proxy.upstream, `http://host:port/path` a GET there (2xx is healthy), `exec:command` a command run with `sh -c` (exit 0 is healthy). `/readyz` fails while one fails (after the quorum hysteresis windows), and until each has passed once"),
    key!(ChecksLiveness, Restart, "checks.liveness", "CHECKS_LIVENESS", Kind::Text, Default::Text(""), "the same grammar, for `/livez`: a failing liveness check gets the container restarted — only for a state the process cannot leave by itself (a wedged worker), never for a dependency"),
    key!(ChecksIntervalMs, Restart, "checks.intervalMs", "CHECKS_INTERVAL_MS", Kind::Integer { min: 100, max: 600_000, out_of_range: OutOfRange::Clamp }, Default::Integer(1000), "how often each configured check runs"),
    key!(ChecksTimeoutMs, Restart, "checks.timeoutMs", "CHECKS_TIMEOUT_MS", Kind::Integer { min: 10, max: 60_000, out_of_range: OutOfRange::Clamp }, Default::Integer(800), "a run that takes longer has failed (a command is killed)"),
    key!(ProxyResponseTimeoutSeconds, Restart, "proxy.responseTimeoutSeconds", "PROXY_RESPONSE_TIMEOUT_SECONDS", Kind::Integer { min: 1, max: 3600, out_of_range: OutOfRange::Clamp }, Default::Integer(30), "the upstream's response head must arrive within this long (then 504); bodies stream without a limit"),
    key!(ShutdownDrainDelaySeconds, Live, "shutdown.drainDelaySeconds", "SHUTDOWN_DRAIN_DELAY_SECONDS", AT_LEAST_0, Default::Computed("0 in development and test, else 5"), "on SIGTERM/SIGINT, /readyz fails and the node keeps serving this long before it stops accepting"),
    key!(ShutdownDrainQuietPeriodMs, Live, "shutdown.drainQuietPeriodMs", "SHUTDOWN_DRAIN_QUIET_PERIOD_MS", Kind::Integer { min: 0, max: 600_000, out_of_range: OutOfRange::Clamp }, Default::Integer(0), "0: the drain lasts drainDelaySeconds; above 0 it ends once no application request has arrived for this long (probes do not count), at least drainDelaySeconds (then the minimum: load balancers must first see /readyz fail) and at most drainMaxDelaySeconds"),
    key!(ShutdownDrainMaxDelaySeconds, Live, "shutdown.drainMaxDelaySeconds", "SHUTDOWN_DRAIN_MAX_DELAY_SECONDS", Kind::Integer { min: 0, max: 3600, out_of_range: OutOfRange::Clamp }, Default::Integer(30), "the longest drain when drainQuietPeriodMs is on (requests still arriving then are served until the node stops accepting)"),
    key!(ShutdownGracefulTimeoutSeconds, Restart, "shutdown.gracefulTimeoutSeconds", "SHUTDOWN_GRACEFUL_TIMEOUT_SECONDS", AT_LEAST_0, Default::Integer(10), "then in-flight requests get this long to finish"),
}

/// A key Arlen no longer reads, and what replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredKey {
    pub key: &'static str,
    pub env: &'static str,
    pub replacement: &'static str,
}

/// Keys that are still recognised so that setting one draws a warning naming its replacement.
pub const RETIRED: &[RetiredKey] = &[RetiredKey {
    key: "cluster.gossip.phiThreshold",
    env: "CLUSTER_GOSSIP_PHI_THRESHOLD",
    replacement: "gossip is SWIM now (phi accrual is gone); set cluster.gossip.suspicionTimeoutMs and cluster.gossip.probeTimeoutMs instead",
}];

/// The key spec for a dotted key, if Arlen knows it.
pub fn find(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
}

/// The known key closest to an unknown one, when it is close enough to be a typo.
pub fn closest(unknown: &str) -> Option<&'static KeySpec> {
    let lower = unknown.to_ascii_lowercase();
    // A key more than two characters longer or shorter cannot be within two
    // edits: skip it before the quadratic distance (keeps big files fast).
    KEYS.iter()
        .filter(|spec| spec.key.len().abs_diff(lower.len()) <= 2)
        .map(|spec| (edit_distance(&lower, &spec.key.to_ascii_lowercase()), spec))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, spec)| spec)
}

/// Variables of the `ARLEN_` prefix that are not keys: the environment's
/// name, and the application root (`arlen serve --app-root`).
const OTHER_VARIABLES: &[&str] = &["ENV", "APP_ROOT"];

/// Whether `ARLEN_<suffix>` means something: a key's variable, a retired
/// key's (it draws its own warning), or one of [`OTHER_VARIABLES`].
pub fn is_known_variable(suffix: &str) -> bool {
    !suffix.is_empty()
        && (KEYS.iter().any(|spec| spec.env == suffix)
            || RETIRED.iter().any(|r| r.env == suffix)
            || OTHER_VARIABLES.contains(&suffix))
}

/// The key whose variable is within two edits of `suffix`, if any.
pub fn closest_variable(suffix: &str) -> Option<&'static KeySpec> {
    let upper = suffix.to_ascii_uppercase();
    KEYS.iter()
        .filter(|spec| !spec.env.is_empty() && spec.env.len().abs_diff(upper.len()) <= 2)
        .map(|spec| (edit_distance(&upper, spec.env), spec))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, spec)| spec)
}

/// Levenshtein distance, enough for typo hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The README's configuration reference, as a Markdown table.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| key | variable (legacy twin `MOJOOBJC_…`) | default | rule | on SIGHUP | meaning |\n|---|---|---|---|---|---|\n",
    );
    for spec in KEYS {
        let reload = match spec.reload {
            Reload::Live => "applied",
            Reload::Restart => "restart",
        };
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} | {reload} | {} |",
            spec.key,
            spec.variable(),
            spec.default_text(),
            spec.rule(),
            spec.doc
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_indexes_its_own_spec() {
        for (i, spec) in KEYS.iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{}", spec.key);
            assert_eq!(spec.id.name(), spec.key);
        }
    }

    #[test]
    fn keys_and_variables_are_unique() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.key, b.key);
                assert_ne!(a.env, b.env);
            }
        }
    }

    #[test]
    fn typo_finds_the_intended_key() {
        assert_eq!(closest("cluster.expectedNode").unwrap().key, "cluster.expectedNodes");
        assert_eq!(closest("cluster.nodeId").unwrap().key, "cluster.nodeID");
        assert!(closest("myApp.greeting").is_none());
    }
}
