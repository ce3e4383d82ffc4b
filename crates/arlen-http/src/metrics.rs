//! Request and cluster metrics, exposed by `/metrics` (CONTRACT §3.3).
//!
//! Request metrics live in a long-lived registry updated on every request.
//! Cluster gauges are rendered at scrape time from the same snapshot that
//! feeds the response's headers, so the two never disagree.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arlen_cluster::{MemberState, QuorumStatus, Snapshot};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Map, Value};

/// The metrics library behind `/metrics`, for the application's own
/// metrics ([`Metrics::register`]) at the version the runtime uses.
pub use prometheus_client;

/// Name reported in `checks.metrics_registry.source`.
pub const REGISTRY_SOURCE: &str = "prometheus_client";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git_sha: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// A counter read from a function at scrape time (for counters kept
/// elsewhere, such as gossip traffic).
struct FnCounter {
    name: &'static str,
    help: &'static str,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for FnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnCounter").field("name", &self.name).finish()
    }
}

impl prometheus_client::collector::Collector for FnCounter {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let counter = prometheus_client::metrics::counter::ConstCounter::new((self.read)());
        let metric_encoder = encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?;
        counter.encode(metric_encoder)
    }
}

/// A counter family with one label, read from a function at scrape time.
struct LabeledFnCounter {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Vec<&'static str>,
    read: Box<dyn Fn(&str) -> u64 + Send + Sync>,
}

impl std::fmt::Debug for LabeledFnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabeledFnCounter").field("name", &self.name).finish()
    }
}

impl prometheus_client::collector::Collector for LabeledFnCounter {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let metric_type = prometheus_client::metrics::MetricType::Counter;
        let mut family = encoder.encode_descriptor(self.name, self.help, None, metric_type)?;
        for value in &self.values {
            let counter = prometheus_client::metrics::counter::ConstCounter::new((self.read)(value));
            let labels = [(self.label, *value)];
            counter.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The node's request metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Metrics registered after start-up (by membership sources).
    late: std::sync::RwLock<Registry>,
    requests: Counter,
    active: Gauge,
    responses: Family<StatusLabels, Counter>,
    /// Each status code's counter, looked up once (the family takes a lock
    /// and a hash per lookup; this is an index and an atomic add).
    by_status: Box<[std::sync::OnceLock<Counter>]>,
    duration: Histogram,
    connections: crate::connections::ConnectionCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements the active-requests gauge when the request is done.
#[derive(Debug)]
pub struct ActiveRequest<'a> {
    gauge: &'a Gauge,
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let active = Gauge::default();
        let responses = Family::<StatusLabels, Counter>::default();
        let duration =
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register("arlen_http_requests", "HTTP requests received", requests.clone());
        registry.register("arlen_http_requests_active", "HTTP requests being handled now", active.clone());
        registry.register("arlen_http_responses", "HTTP responses sent, by status code", responses.clone());
        registry.register(
            "arlen_http_request_duration_seconds",
            "time from request to response head, of requests the application answered (probes, /clusterz and /metrics are not timed)",
            duration.clone(),
        );
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: arlen_config::build::VERSION,
                git_sha: arlen_config::build::GIT_SHA,
            })
            .set(1);
        registry.register("arlen_build_info", "the runtime's version and the commit it was built from", build);
        let connections = crate::connections::ConnectionCounters::default();
        registry.register(
            "arlen_http_connections_evicted",
            "idle connections closed to make room for a newcomer (sessions or descriptors were all taken)",
            connections.evictions.clone(),
        );
        registry.register(
            "arlen_http_connections_refused",
            "connections closed at once: no descriptor left, not even in the probes' reserve",
            connections.refusals.clone(),
        );
        registry.register(
            "arlen_http_slow_readers_cut",
            "connections cut because the client took no byte of a response within requestLimits.writeTimeoutMs",
            connections.slow_readers.clone(),
        );
        let by_status = (0..600).map(|_| std::sync::OnceLock::new()).collect();
        Self {
            registry,
            late: std::sync::RwLock::new(Registry::default()),
            requests,
            active,
            responses,
            by_status,
            duration,
            connections,
        }
    }

    /// The counters a listener's connection registry counts into.
    pub(crate) fn connection_counters(&self) -> crate::connections::ConnectionCounters {
        self.connections.clone()
    }

    /// Adds one of the application's metrics to `/metrics` (both formats,
    /// beside the runtime's; a counter is named without `_total`, which the
    /// exposition adds). Name it with your own prefix (`shop_orders`): the
    /// `arlen_` and `process_` families are the runtime's.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    /// let metrics = arlen_http::metrics::Metrics::new();
    /// let orders = Counter::<u64>::default();
    /// metrics.register("shop_orders", "orders placed", orders.clone());
    /// orders.inc();
    /// ```
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        let mut late = self.late.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        late.register(name, help, metric);
    }

    /// Adds a collector of the application's (metrics computed at scrape time).
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        let mut late = self.late.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        late.register_collector(collector);
    }

    /// Adds a counter whose value `read` returns at each scrape. `name` is
    /// given without the `_total` suffix.
    pub fn register_counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let mut late = self.late.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        late.register_collector(Box::new(FnCounter { name, help, read: Box::new(read) }));
    }

    /// Registers a counter family with one label whose values are known up
    /// front (`values`), each read by `read(value)` at scrape time.
    pub fn register_labeled_counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: Vec<&'static str>,
        read: impl Fn(&str) -> u64 + Send + Sync + 'static,
    ) {
        let mut late = self.late.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        late.register_collector(Box::new(LabeledFnCounter { name, help, label, values, read: Box::new(read) }));
    }

    /// Counts a request in; the guard counts it out of the active gauge.
    pub fn begin(&self) -> ActiveRequest<'_> {
        self.requests.inc();
        self.active.inc();
        ActiveRequest { gauge: &self.active }
    }

    /// Records a response; `elapsed`, when given, goes into the request
    /// histogram (the application's answers, not the runtime's own).
    pub fn finish(&self, status: u16, elapsed: Option<Duration>) {
        match self.by_status.get(usize::from(status)) {
            Some(slot) => slot.get_or_init(|| self.responses.get_or_create(&StatusLabels { status }).clone()).inc(),
            None => self.responses.get_or_create(&StatusLabels { status }).inc(),
        };
        if let Some(elapsed) = elapsed {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Requests being handled right now.
    pub fn active_requests(&self) -> i64 {
        self.active.get()
    }

    /// Request metrics plus the snapshot's cluster gauges, in `format`.
    /// `now` is the snapshot cell's monotonic reading at the scrape: the
    /// readiness reported is the one `/readyz` would answer at that instant.
    /// With `legacy_names` every `arlen_` family is also exposed under its
    /// name before the rename (`aln_`), for one release.
    pub fn render(&self, format: Exposition, legacy_names: bool, snapshot: &Snapshot, now: Duration) -> String {
        let mut out = String::with_capacity(6144);
        encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        {
            let late = self.late.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            encode_registry(&mut out, &late).expect("writing to a String cannot fail");
        }
        encode_registry(&mut out, &cluster_registry(snapshot, now)).expect("writing to a String cannot fail");
        if legacy_names {
            out = with_legacy_names(&out);
        }
        match format {
            Exposition::OpenMetrics => {
                encode_eof(&mut out).expect("writing to a String cannot fail");
                out
            }
            Exposition::Classic => classic_text(&out),
        }
    }

    /// The OpenMetrics exposition (what tests and tools parse).
    pub fn render_text(&self, snapshot: &Snapshot, now: Duration) -> String {
        self.render(Exposition::OpenMetrics, false, snapshot, now)
    }

    /// The same samples as [`Metrics::render_text`], as JSON.
    pub fn render_json(&self, snapshot: &Snapshot, now: Duration) -> Value {
        text_to_json(&self.render_text(snapshot, now))
    }
}

/// The exposition formats of `/metrics`: OpenMetrics for a scraper that
/// asks for it (Prometheus does), the classic text format (0.0.4) for
/// anyone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// From an `Accept` header: OpenMetrics only when it is asked for.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let asks = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks {
            Self::OpenMetrics
        } else {
            Self::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text (without `# EOF`) turned into the classic format: a
/// counter's family is named by its `_total` sample, an info family is a
/// gauge named `…_info`, and there are no `# UNIT` lines.
fn classic_text(open_metrics: &str) -> String {
    let mut kinds = std::collections::HashMap::new();
    for line in open_metrics.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let family_name = |name: &str| -> String {
        match kinds.get(name).map(String::as_str) {
            Some("counter") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", family_name(name)));
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            let kind = if kind == "info" { "gauge" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", family_name(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Appends, after the exposition, every `arlen_` family (but
/// `arlen_build_info`, which never had another name) again under its old
/// `aln_` name.
fn with_legacy_names(text: &str) -> String {
    let mut legacy = String::new();
    let mut copying = false;
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        if line.starts_with("# HELP ") {
            copying = name.starts_with("arlen_") && !name.starts_with("arlen_build_info ");
        }
        if copying {
            let renamed = match line.strip_prefix('#') {
                Some(_) => line.replacen(" arlen_", " aln_", 1),
                None => line.replacen("arlen_", "aln_", 1),
            };
            legacy.push_str(&renamed);
            legacy.push('\n');
        }
    }
    let mut out = String::with_capacity(text.len() + legacy.len());
    out.push_str(text);
    out.push_str(&legacy);
    out
}

fn cluster_registry(snapshot: &Snapshot, now: Duration) -> Registry {
    let mut registry = Registry::default();
    let gauge = |value: i64| {
        let g: Gauge = Gauge::default();
        g.set(value);
        g
    };
    let quorum = &snapshot.quorum;
    registry.register(
        "arlen_cluster_enabled",
        "1 when cluster mode is on",
        gauge(i64::from(snapshot.identity.cluster_enabled)),
    );
    registry.register(
        "arlen_cluster_observed_nodes",
        "nodes observed by the membership source",
        gauge(i64::from(quorum.observed_nodes)),
    );
    registry.register(
        "arlen_cluster_expected_nodes",
        "nodes the cluster should have (clamped to at least 1)",
        gauge(i64::from(quorum.expected_nodes)),
    );
    registry.register("arlen_cluster_quorum_met", "1 when quorum is met", gauge(i64::from(quorum.met)));
    let status = Family::<StatusNameLabels, Gauge>::default();
    for &candidate in QuorumStatus::ALL {
        status
            .get_or_create(&StatusNameLabels { status: candidate.as_str() })
            .set(i64::from(candidate == quorum.status));
    }
    registry.register("arlen_cluster_status", "1 for the current quorum status", status);
    registry.register(
        "arlen_cluster_ready",
        "1 when /readyz answers 200",
        gauge(i64::from(snapshot.readiness_at(now).ready)),
    );
    if let Some(upstream) = &snapshot.upstream {
        registry.register(
            "arlen_upstream_up",
            "1 when the upstream answers its health check",
            gauge(i64::from(upstream.ok)),
        );
    }
    let source = Family::<SourceLabels, Gauge>::default();
    source
        .get_or_create(&SourceLabels { source: snapshot.membership.source })
        .set(i64::from(snapshot.membership.health.ok));
    registry.register(
        "arlen_membership_source_up",
        "1 while the membership source can vouch for what it reports (gossip hears its peers, etcd answers)",
        source,
    );
    if !snapshot.checks.0.is_empty() {
        let checks = Family::<CheckLabels, Gauge>::default();
        for check in &snapshot.checks.0 {
            let labels = CheckLabels { check: check.name.clone(), kind: check.kind.as_str() };
            checks.get_or_create(&labels).set(i64::from(check.healthy_at(now)));
        }
        registry.register(
            "arlen_check_up",
            "1 while the application's own check passes (after hysteresis), by check and kind (readiness, liveness)",
            checks,
        );
    }
    let generation: Gauge<u64, AtomicU64> = Gauge::default();
    generation.set(snapshot.generation);
    registry.register(
        "arlen_cluster_snapshot_generation",
        "generation of the snapshot this scrape was computed from",
        generation,
    );
    let members = Family::<StateLabels, Gauge>::default();
    for &state in MemberState::ALL {
        let count = snapshot.membership.members.iter().filter(|m| m.state == state).count();
        members.get_or_create(&StateLabels { state: state.as_str() }).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register("arlen_cluster_members", "known members by state", members);
    let counter = |value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        c
    };
    registry.register(
        "arlen_cluster_status_transitions",
        "quorum status changes since start",
        counter(snapshot.status_transitions),
    );
    registry.register(
        "arlen_cluster_membership_changes",
        "membership changes since start",
        counter(snapshot.membership_changes),
    );
    registry.register(
        "arlen_cluster_duplicate_node_ids",
        "node ids claimed by more than one live process",
        gauge(i64::try_from(snapshot.membership.duplicate_node_ids.len()).unwrap_or(i64::MAX)),
    );
    registry
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusNameLabels {
    status: &'static str,
}

/// Turns exposition text into `{"metrics": [{"name", "type", "help", "samples": [...]}]}`.
fn text_to_json(text: &str) -> Value {
    let mut families: Vec<Map<String, Value>> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let mut family = Map::new();
            family.insert("name".into(), json!(name));
            family.insert("help".into(), json!(help.trim_end_matches('.')));
            family.insert("type".into(), json!("unknown"));
            family.insert("samples".into(), json!([]));
            families.push(family);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some(family), Some((_, kind))) = (families.last_mut(), rest.split_once(' ')) {
                family.insert("type".into(), json!(kind));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            if let (Some(family), Some(sample)) = (families.last_mut(), parse_sample(line)) {
                if let Some(Value::Array(samples)) = family.get_mut("samples") {
                    samples.push(sample);
                }
            }
        }
    }
    json!({ "metrics": families })
}

fn parse_sample(line: &str) -> Option<Value> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut label_map = Map::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (key, quoted) = pair.split_once('=')?;
        label_map.insert(key.to_owned(), json!(quoted.trim_matches('"')));
    }
    let mut sample = Map::new();
    sample.insert("name".into(), json!(name));
    sample.insert("labels".into(), Value::Object(label_map));
    sample.insert("value".into(), json!(value));
    Some(Value::Object(sample))
}

/// For tests and tools: the value of one sample in exposition text.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arlen_cluster::{
        snapshot_channel, Clock, GateWindows, MembershipView, NodeIdentity, RuntimeSettings, Timestamp,
    };

    use super::*;

    /// A clock the test moves by hand.
    #[derive(Debug, Default)]
    struct Hand(Mutex<Duration>);

    impl Clock for Hand {
        fn now(&self) -> Timestamp {
            let monotonic = *self.0.lock().unwrap();
            Timestamp { monotonic, wall: std::time::SystemTime::UNIX_EPOCH + monotonic }
        }
    }

    /// The gauge is the readiness `/readyz` answers at the scrape's instant,
    /// not as of the gate's last transition.
    #[test]
    fn the_ready_gauge_is_readiness_at_the_scrape() {
        let clock = Arc::new(Hand::default());
        let settings = RuntimeSettings {
            readiness_requires_cluster_quorum: true,
            gate_windows: GateWindows { loss_grace: Duration::from_millis(1000), recovery_stable: Duration::ZERO },
            ..RuntimeSettings::contract_defaults(3)
        };
        let identity =
            NodeIdentity { cluster_enabled: true, cluster_name: "alpha".into(), node_id: "a".into(), worker_pid: 1 };
        let (publisher, reader) =
            snapshot_channel(identity, settings, MembershipView::counted("static_config", 3), clock.clone());
        publisher.set_membership(MembershipView::counted("static_config", 1));
        let metrics = Metrics::new();
        let ready = |metrics: &Metrics| {
            sample_value(&metrics.render_text(&reader.current(), reader.now().monotonic), "arlen_cluster_ready")
        };
        assert_eq!(ready(&metrics), Some(1.0), "inside the grace");
        *clock.0.lock().unwrap() += Duration::from_millis(1500);
        assert!(reader.current().gate.met, "no publish since: the stored gate still says met");
        assert_eq!(ready(&metrics), Some(0.0), "past the grace, as /readyz would answer");
    }
}
