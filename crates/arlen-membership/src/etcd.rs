//! `etcd`: members register under a lease in etcd and watch each other.
//!
//! Each node writes `<prefix><node id>` with a JSON value (`node_id`,
//! `generation`, `http_url`, `started_utc`, `state`) under its own lease and
//! keeps the lease alive. A full read of the prefix followed by a watch from
//! the next revision gives the member list without missing an event; any
//! watch gap ends the session and the next one reads everything again.
//!
//! A node that cannot reach a quorum of etcd (no keep-alive answered) for
//! longer than the lease TTL can vouch for nobody, itself included: it reports
//! `observed_nodes = 0` (`partitioned`) and an unhealthy source, and keeps
//! trying; when etcd answers again it re-registers (keeping its lease if
//! etcd still has it) and recovers without a restart. A second live process
//! with the same node id finds the key held by another generation and is
//! refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use arlen_cluster::{Member, MemberState, MembershipView, SnapshotPublisher, SourceHealth};
use arlen_config::Config;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::supervise::{Failures, Progress, Supervisor};
use crate::MembershipError;

/// Source name on the wire.
pub const ETCD_NAME: &str = "etcd";

/// How long members that left or died stay listed (as `left` / `dead`).
const GONE_MEMBER_TTL: Duration = Duration::from_secs(60);

/// Largest registration value read (a real one is about 200 bytes).
const MAX_RECORD_BYTES: usize = 4096;

/// Why a key under the prefix is not counted as a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordRejection {
    /// Written without a lease: it would never expire, so it proves nothing.
    NoLease,
    /// Not an Arlen registration (or larger than a registration can be).
    Malformed,
    /// The value's node id is not the key's.
    WrongNodeId,
    /// A `state` other than `alive`, `draining` or `left`.
    UnknownState,
}

impl RecordRejection {
    pub const ALL: [RecordRejection; 4] = [
        RecordRejection::NoLease,
        RecordRejection::Malformed,
        RecordRejection::WrongNodeId,
        RecordRejection::UnknownState,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RecordRejection::NoLease => "no_lease",
            RecordRejection::Malformed => "malformed",
            RecordRejection::WrongNodeId => "wrong_node_id",
            RecordRejection::UnknownState => "unknown_state",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Registrations the etcd source refused, by reason.
#[derive(Debug, Default)]
pub struct EtcdStats {
    rejected: [std::sync::atomic::AtomicU64; RecordRejection::ALL.len()],
}

impl EtcdStats {
    pub fn rejected(&self, reason: RecordRejection) -> u64 {
        self.rejected[reason.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, reason: RecordRejection) {
        self.rejected[reason.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What each node stores under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) node_id: String,
    generation: u64,
    http_url: String,
    started_utc: String,
    state: String,
    /// The member's software version; absent in records of releases before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    software: Option<String>,
    /// The member's `cluster.zone`; absent when it has none (and in records
    /// of releases before zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
}

/// Settings resolved from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    pub username: String,
    pub password: String,
    /// PEM material for `https://` endpoints, read at start.
    pub tls: Option<TlsMaterial>,
    pub node_id: String,
    pub generation: u64,
    pub http_url: String,
    pub zone: Option<String>,
}

/// The CA bundle, and the client certificate and key when etcd checks clients.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

impl TlsMaterial {
    fn read(config: &arlen_config::EtcdConfig) -> Result<Option<Self>, MembershipError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| MembershipError::Start {
                source_name: ETCD_NAME,
                detail: format!("cannot read {}: {error}", path.display()),
            })
        };
        let Some(ca) = &config.ca_file else { return Ok(None) };
        let identity = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(Some(Self { ca: read(ca)?, identity }))
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        tls
    }
}

impl EtcdSettings {
    pub(crate) fn from_config(config: &Config) -> Result<Self, MembershipError> {
        let etcd = &config.cluster.membership.etcd;
        Ok(Self {
            endpoints: etcd.endpoints.clone(),
            prefix: etcd.prefix.clone(),
            lease_ttl: etcd.lease_ttl,
            username: etcd.username.clone(),
            password: etcd.password.clone(),
            tls: TlsMaterial::read(etcd)?,
            node_id: config.cluster.node_id.clone(),
            zone: config.cluster.zone.clone(),
            generation: crate::new_generation(),
            http_url: crate::node_url(&http_host(&config.host, &etcd.endpoints), config.port),
        })
    }

    fn key(&self) -> String {
        format!("{}{}", self.prefix, self.node_id)
    }

    fn connect_options(&self, endpoint: &str) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(self.lease_ttl.max(Duration::from_secs(2)))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
        if !self.username.is_empty() {
            options = options.with_user(self.username.clone(), self.password.clone());
        }
        // TLS options are for https:// endpoints only (etcd-client refuses them on http://).
        if let (true, Some(tls)) = (endpoint.starts_with("https://"), &self.tls) {
            options = options.with_tls(tls.options());
        }
        options
    }
}

/// Stop permits in etcd: one document beside the member prefix (not under
/// it, so no member reader sees it), written in a transaction that compares
/// its revision with the one read — whichever node is asked, no two grants
/// come from the same reading.
pub(crate) struct EtcdPermits {
    settings: EtcdSettings,
    client: tokio::sync::Mutex<Option<Client>>,
}

/// The permits document is small; a larger value is refused before it is parsed.
const MAX_PERMITS_DOCUMENT: usize = 256 * 1024;

impl EtcdPermits {
    fn key(&self) -> String {
        format!("{}.stop-permits", self.settings.prefix.trim_end_matches('/'))
    }

    async fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let mut last = String::new();
        for endpoint in &self.settings.endpoints {
            match Client::connect([endpoint.clone()], Some(self.settings.connect_options(endpoint))).await {
                Ok(client) => {
                    *slot = Some(client.clone());
                    return Ok(client);
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(format!("cannot connect to etcd: {last}"))
    }

    /// Drops the client after an error: the next call connects afresh.
    async fn forget(&self) {
        *self.client.lock().await = None;
    }
}

impl arlen_cluster::permits::PermitStore for EtcdPermits {
    fn guarantee(&self) -> &'static str {
        "an etcd transaction: whichever node is asked, no two permits are granted from the same reading"
    }

    fn read(&self) -> arlen_cluster::permits::StoreFuture<'_, (Vec<arlen_cluster::permits::StopPermit>, u64)> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let answer = match client.get(self.key(), None).await {
                Ok(answer) => answer,
                Err(error) => {
                    self.forget().await;
                    return Err(format!("etcd: {error}"));
                }
            };
            let Some(kv) = answer.kvs().first() else { return Ok((Vec::new(), 0)) };
            if kv.value().len() > MAX_PERMITS_DOCUMENT {
                return Err(format!("the permits document in etcd is {} bytes, over the bound", kv.value().len()));
            }
            let permits = serde_json::from_slice(kv.value())
                .map_err(|error| format!("the permits document {} in etcd does not parse: {error}", self.key()))?;
            Ok((permits, u64::try_from(kv.mod_revision()).unwrap_or(0)))
        })
    }

    fn write(
        &self,
        version: u64,
        permits: Vec<arlen_cluster::permits::StopPermit>,
    ) -> arlen_cluster::permits::StoreFuture<'_, bool> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let body = serde_json::to_vec(&permits).map_err(|error| error.to_string())?;
            let revision = i64::try_from(version).unwrap_or(i64::MAX);
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::mod_revision(self.key(), etcd_client::CompareOp::Equal, revision)])
                .and_then([etcd_client::TxnOp::put(self.key(), body, None)]);
            match client.txn(txn).await {
                Ok(answer) => Ok(answer.succeeded()),
                Err(error) => {
                    self.forget().await;
                    Err(format!("etcd: {error}"))
                }
            }
        })
    }
}

enum Command {
    Drain(oneshot::Sender<()>),
    Leave(oneshot::Sender<()>),
}

/// The host of this node's URL in its record. A listener on every interface
/// (`0.0.0.0`, as in a pod) is reached at the address this host uses
/// towards etcd, which is the one peers and triage can reach (the pod IP):
/// found by connecting a UDP socket, which sends nothing.
fn http_host(host: &str, endpoints: &[String]) -> String {
    use std::net::ToSocketAddrs as _;
    if !host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return host.to_owned();
    }
    let local = endpoints.iter().find_map(|url| {
        let authority = url.split("://").nth(1)?.split('/').next()?;
        let remote = authority.to_socket_addrs().ok()?.next()?;
        let bind = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = std::net::UdpSocket::bind(bind).ok()?;
        socket.connect(remote).ok()?;
        socket.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
    });
    local.map_or_else(|| host.to_owned(), |ip| ip.to_string())
}

/// A running etcd source.
pub(crate) struct EtcdSource {
    permits: std::sync::Arc<EtcdPermits>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    fatal: watch::Receiver<Option<String>>,
    stats: std::sync::Arc<EtcdStats>,
}

/// How often a node retries its key while another generation's lease runs out.
const REGISTER_RETRY: Duration = Duration::from_millis(200);

/// How the first attempt to register ended.
enum FirstOutcome {
    Registered,
    Duplicate(String),
}

impl EtcdSource {
    pub(crate) async fn start(config: &Config, publisher: SnapshotPublisher) -> Result<Self, MembershipError> {
        let settings = EtcdSettings::from_config(config)?;
        let (commands, commands_rx) = mpsc::channel(4);
        let (first_tx, first_rx) = oneshot::channel();
        let (fatal_tx, fatal) = watch::channel(None);
        let stats = std::sync::Arc::new(EtcdStats::default());
        let task = tokio::spawn(supervise(settings.clone(), publisher, stats.clone(), commands_rx, first_tx, fatal_tx));
        // Wait for the first registration (which may wait out a crashed
        // predecessor's lease: TTL + 1 s), but never block start-up on an
        // unreachable etcd: then the node starts `partitioned` and keeps trying.
        let wait = settings.lease_ttl * 2 + Duration::from_secs(1);
        match tokio::time::timeout(wait, first_rx).await {
            Ok(Ok(FirstOutcome::Registered)) => {}
            Ok(Ok(FirstOutcome::Duplicate(detail))) => {
                task.abort();
                return Err(MembershipError::Start { source_name: ETCD_NAME, detail });
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(endpoints = ?settings.endpoints, "etcd did not answer during start-up; starting partitioned and retrying");
            }
        }
        tracing::info!(endpoints = ?settings.endpoints, key = %settings.key(), generation = settings.generation, "etcd membership started");
        let permits = std::sync::Arc::new(EtcdPermits { settings, client: tokio::sync::Mutex::new(None) });
        Ok(Self { permits, commands, task, fatal, stats })
    }
}

#[async_trait::async_trait]
impl crate::Source for EtcdSource {
    fn name(&self) -> &'static str {
        ETCD_NAME
    }

    fn counters(&self) -> Vec<crate::SourceCounter> {
        let stats = self.stats.clone();
        vec![crate::SourceCounter::by_reason(
            "arlen_etcd_rejected_records",
            "keys under the etcd member prefix that were not counted, by reason",
            &RecordRejection::ALL,
            RecordRejection::label,
            move |reason| stats.rejected(reason),
        )]
    }

    fn permit_store(&self) -> Option<std::sync::Arc<dyn arlen_cluster::permits::PermitStore>> {
        Some(self.permits.clone())
    }

    /// Resolves with the reason when the etcd task cannot be kept running.
    async fn failed(&self) -> String {
        crate::supervise::gave_up(&self.fatal).await
    }

    /// Marks this node `draining` in its registration.
    async fn announce_draining(&self) {
        crate::supervise::ask(&self.commands, Command::Drain, Duration::from_secs(2)).await;
    }

    /// Marks this node `left` and revokes its lease, so peers see it go at once.
    async fn leave(self: Box<Self>) {
        crate::supervise::ask(&self.commands, Command::Leave, Duration::from_secs(3)).await;
        self.task.abort();
        tracing::info!("left etcd membership");
    }
}

/// What a session follows once registered.
struct Following {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    keepalive: LeaseKeepAliveStream,
    watch: WatchStream,
}

/// A session that ended on an etcd error.
fn session_failed(what: &str, error: etcd_client::Error) -> SessionEnd {
    SessionEnd::Failed(format!("{what}: {error}"))
}

/// Who is listed in which state: what a membership change changes.
type MembershipSignature = Vec<(String, u64, MemberState)>;

/// A member that left or died recently, still listed.
struct Gone {
    member: Member,
    since: Instant,
}

/// Runs the etcd task; when it panics or stops making progress, reports
/// `partitioned` and starts it again (a fresh session: the lease is taken
/// over or granted anew), and gives up after too many failures.
async fn supervise(
    settings: EtcdSettings,
    publisher: SnapshotPublisher,
    stats: std::sync::Arc<EtcdStats>,
    mut commands: mpsc::Receiver<Command>,
    first: oneshot::Sender<FirstOutcome>,
    fatal: watch::Sender<Option<String>>,
) {
    let mut first = Some(first);
    let mut supervisor =
        Supervisor { source: ETCD_NAME, task: "etcd task", publisher, failures: Failures::default(), fatal };
    // Every etcd call has a deadline of at most the lease TTL (2 s at least);
    // a loop that has not published for twice that is stuck.
    let stall_limit = settings.lease_ttl.max(Duration::from_secs(2)) * 2 + Duration::from_secs(1);
    loop {
        let progress = Progress::default();
        let mut runner = Runner::new(settings.clone(), supervisor.publisher.clone(), &progress, stats.clone());
        runner.publish();
        let reason = match supervisor.attempt(&progress, stall_limit, runner.run(&mut commands, first.take())).await {
            Ok(()) => return,
            Err(reason) => reason,
        };
        if !supervisor.failed(&reason).await {
            return;
        }
    }
}

/// The source's state and the loop that keeps it current.
struct Runner<'p> {
    progress: &'p Progress,
    stats: std::sync::Arc<EtcdStats>,
    /// Keys already reported as refused (each is logged once until it changes).
    reported: BTreeMap<String, RecordRejection>,
    settings: EtcdSettings,
    publisher: SnapshotPublisher,
    client: Option<Client>,
    /// The endpoint the current client talks to; a failed session moves to the
    /// next one, so one dead etcd member never holds a node back.
    endpoint: usize,
    lease: Option<i64>,
    /// Registered members by node id, as last read.
    members: BTreeMap<String, Registration>,
    gone: Vec<Gone>,
    /// Last answered keep-alive: proof that etcd (a quorum of it) hears us.
    last_contact: Option<Instant>,
    registered: bool,
    own_state: &'static str,
    problem: Option<String>,
    last_change: Option<SystemTime>,
    last_published: Option<(u32, MembershipSignature)>,
}

enum SessionEnd {
    Left,
    Failed(String),
}

impl<'p> Runner<'p> {
    fn new(
        settings: EtcdSettings,
        publisher: SnapshotPublisher,
        progress: &'p Progress,
        stats: std::sync::Arc<EtcdStats>,
    ) -> Self {
        Self {
            progress,
            stats,
            reported: BTreeMap::new(),
            settings,
            publisher,
            client: None,
            endpoint: 0,
            lease: None,
            members: BTreeMap::new(),
            gone: Vec::new(),
            last_contact: None,
            registered: false,
            own_state: "alive",
            problem: Some("connecting to etcd".to_owned()),
            last_change: None,
            last_published: None,
        }
    }

    async fn run(mut self, commands: &mut mpsc::Receiver<Command>, mut first: Option<oneshot::Sender<FirstOutcome>>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(commands, &mut first).await {
                SessionEnd::Left => return,
                SessionEnd::Failed(reason) => {
                    let endpoint = &self.settings.endpoints[self.endpoint % self.settings.endpoints.len()];
                    tracing::warn!(%endpoint, %reason, "etcd session ended; retrying on the next endpoint");
                    self.problem = Some(reason);
                    self.client = None;
                    self.endpoint = (self.endpoint + 1) % self.settings.endpoints.len();
                    if self.last_contact.is_some_and(|t| t.elapsed() < self.settings.lease_ttl) {
                        // We were in touch a moment ago: try the next member at once.
                        backoff = Duration::from_millis(20);
                    }
                    self.publish();
                }
            }
            // Retry soon, but watch the clock: past the TTL we can vouch for nobody.
            let retry_at = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(retry_at) => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => self.publish(),
                    command = commands.recv() => match command {
                        Some(Command::Drain(done)) => {
                            self.own_state = "draining";
                            let _ = done.send(());
                        }
                        // etcd is out of reach: the lease will lapse by itself.
                        Some(Command::Leave(done)) => {
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
        }
    }

    fn connect_options(&self, endpoint: &str) -> ConnectOptions {
        self.settings.connect_options(endpoint)
    }

    fn registration(&self) -> Registration {
        Registration {
            node_id: self.settings.node_id.clone(),
            generation: self.settings.generation,
            http_url: self.settings.http_url.clone(),
            started_utc: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            state: self.own_state.to_owned(),
            software: Some(arlen_config::build::software()),
            zone: self.settings.zone.clone(),
        }
    }

    /// One session with etcd, in its phases: connect, hold a lease, register,
    /// list and watch the members, then follow until something fails or the
    /// node leaves.
    async fn session(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        first: &mut Option<oneshot::Sender<FirstOutcome>>,
    ) -> SessionEnd {
        let mut client = match self.connect().await {
            Ok(client) => client,
            Err(end) => return end,
        };
        let (lease, mut keeper, keepalive) = match self.hold_lease(&mut client).await {
            Ok(held) => held,
            Err(end) => return end,
        };
        if let Err(end) = self.register_first(&mut client, lease, &mut keeper, first).await {
            return end;
        }
        let watch = match self.list_and_watch(&mut client).await {
            Ok(watch) => watch,
            Err(end) => return end,
        };
        self.follow(Following { client, lease, keeper, keepalive, watch }, commands).await
    }

    async fn connect(&mut self) -> Result<Client, SessionEnd> {
        if self.client.is_none() {
            let endpoint = self.settings.endpoints[self.endpoint % self.settings.endpoints.len()].clone();
            let options = self.connect_options(&endpoint);
            let client = Client::connect([endpoint], Some(options))
                .await
                .map_err(|error| session_failed("cannot connect to etcd", error))?;
            self.client = Some(client);
        }
        self.client.clone().ok_or_else(|| SessionEnd::Failed("no etcd client".to_owned()))
    }

    /// The lease this node registers under: kept if etcd still has it (it
    /// survives an etcd restart), else a new one; and its keep-alive.
    async fn hold_lease(
        &mut self,
        client: &mut Client,
    ) -> Result<(i64, LeaseKeeper, LeaseKeepAliveStream), SessionEnd> {
        let ttl_seconds = i64::try_from(self.settings.lease_ttl.as_secs()).unwrap_or(3);
        if let Some(lease) = self.lease {
            match client.lease_time_to_live(lease, None).await {
                Ok(answer) if answer.ttl() > 0 => {}
                Ok(_) => self.lease = None,
                Err(error) => return Err(session_failed("cannot check the lease", error)),
            }
        }
        let lease = match self.lease {
            Some(lease) => lease,
            None => {
                let granted = client
                    .lease_grant(ttl_seconds, None)
                    .await
                    .map_err(|error| session_failed("cannot obtain a lease", error))?;
                self.lease = Some(granted.id());
                granted.id()
            }
        };
        let (keeper, keepalive) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|error| session_failed("cannot keep the lease alive", error))?;
        self.last_contact = Some(Instant::now());
        Ok((lease, keeper, keepalive))
    }

    /// Registers, and tells start-up how the first attempt went (a duplicate
    /// node id ends the session).
    async fn register_first(
        &mut self,
        client: &mut Client,
        lease: i64,
        keeper: &mut LeaseKeeper,
        first: &mut Option<oneshot::Sender<FirstOutcome>>,
    ) -> Result<(), SessionEnd> {
        if self.register(client, lease, keeper).await? {
            self.registered = true;
            if let Some(first) = first.take() {
                let _ = first.send(FirstOutcome::Registered);
            }
        }
        if let (Some(problem), Some(first)) = (&self.problem, first.take()) {
            let _ = first.send(FirstOutcome::Duplicate(problem.clone()));
            return Err(SessionEnd::Left);
        }
        Ok(())
    }

    /// Lists the members and watches for changes from the listing's revision on.
    async fn list_and_watch(&mut self, client: &mut Client) -> Result<WatchStream, SessionEnd> {
        let listing = client
            .get(self.settings.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|error| session_failed("cannot read the members", error))?;
        let revision = listing.header().map_or(0, |h| h.revision());
        self.replace_members(listing.kvs());
        let watch_options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let watch = client
            .watch(self.settings.prefix.clone(), Some(watch_options))
            .await
            .map_err(|error| session_failed("cannot watch the members", error))?;
        if self.registered {
            self.problem = None;
        }
        self.publish();
        Ok(watch)
    }

    /// Keeps the lease, follows the watch and answers commands until
    /// something fails or the node leaves.
    async fn follow(&mut self, session: Following, commands: &mut mpsc::Receiver<Command>) -> SessionEnd {
        let Following { mut client, lease, mut keeper, mut keepalive, mut watch } = session;
        let mut renew = tokio::time::interval(self.settings.lease_ttl / 3);
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    if let Err(error) = keeper.keep_alive().await {
                        return session_failed("keep-alive failed", error);
                    }
                }
                answer = keepalive.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => self.last_contact = Some(Instant::now()),
                    Ok(Some(_)) => {
                        self.lease = None;
                        self.registered = false;
                        return SessionEnd::Failed("the lease expired in etcd".to_owned());
                    }
                    Ok(None) => return SessionEnd::Failed("keep-alive stream closed".to_owned()),
                    Err(error) => return session_failed("keep-alive stream failed", error),
                },
                event = watch.message() => match event {
                    Ok(Some(response)) => {
                        if response.canceled() || response.compact_revision() > 0 {
                            return SessionEnd::Failed(format!("watch canceled ({})", response.cancel_reason()));
                        }
                        for event in response.events() {
                            if let Some(kv) = event.kv() {
                                self.apply_event(event.event_type(), kv);
                            }
                        }
                        // Our own key vanished (lease expired while we were cut off): register again.
                        if self.registered && !self.members.contains_key(&self.settings.node_id) {
                            self.registered = false;
                            return SessionEnd::Failed("our registration disappeared".to_owned());
                        }
                        self.publish();
                    }
                    Ok(None) => return SessionEnd::Failed("watch stream closed".to_owned()),
                    Err(error) => return session_failed("watch failed", error),
                },
                _ = check.tick() => self.publish(),
                command = commands.recv() => match command {
                    Some(Command::Drain(done)) => {
                        self.own_state = "draining";
                        if self.registered {
                            let _ = self.put_own(&mut client, lease).await;
                        }
                        let _ = done.send(());
                    }
                    Some(Command::Leave(done)) => {
                        self.own_state = "left";
                        if self.registered {
                            let _ = self.put_own(&mut client, lease).await;
                        }
                        let _ = client.lease_revoke(lease).await;
                        let _ = done.send(());
                        return SessionEnd::Left;
                    }
                    None => return SessionEnd::Left,
                },
            }
        }
    }

    async fn put_own(&self, client: &mut Client, lease: i64) -> Result<(), etcd_client::Error> {
        let value = serde_json::to_string(&self.registration()).expect("registration serialises");
        client.put(self.settings.key(), value, Some(PutOptions::new().with_lease(lease))).await.map(|_| ())
    }

    /// Writes our key if nobody holds it, or if it is ours from an earlier
    /// lease. Another generation's registration is what a node restarted
    /// after a crash finds: its predecessor's lease expires within the TTL,
    /// so the key is tried again until then (and a second). `Ok(false)` when
    /// another process still holds it after that: a live duplicate (recorded
    /// as the problem).
    async fn register(
        &mut self,
        client: &mut Client,
        lease: i64,
        keeper: &mut LeaseKeeper,
    ) -> Result<bool, SessionEnd> {
        let key = self.settings.key();
        let value = serde_json::to_string(&self.registration()).expect("registration serialises");
        let patience = self.settings.lease_ttl + Duration::from_secs(1);
        let first_try = Instant::now();
        let mut waiting = false;
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)))])
                .or_else([TxnOp::get(key.clone(), None)]);
            let answer = client.txn(txn).await.map_err(|e| SessionEnd::Failed(format!("cannot register: {e}")))?;
            if answer.succeeded() {
                return Ok(true);
            }
            let existing = answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            let holder = existing.as_ref().and_then(|kv| serde_json::from_slice::<Registration>(kv.value()).ok());
            match holder {
                Some(holder) if holder.generation == self.settings.generation => {
                    // Ours, from a lease we lost: take it over with the current one.
                    self.put_own(client, lease)
                        .await
                        .map_err(|e| SessionEnd::Failed(format!("cannot register: {e}")))?;
                    return Ok(true);
                }
                Some(holder) if first_try.elapsed() < patience => {
                    if !std::mem::replace(&mut waiting, true) {
                        tracing::info!(
                            node_id = %self.settings.node_id,
                            holder_generation = holder.generation,
                            holder_url = %holder.http_url,
                            "node id already registered in etcd by another generation; waiting up to {patience:?} for its lease to expire (a restart after a crash)"
                        );
                    }
                    tokio::time::sleep(REGISTER_RETRY).await;
                    // Our own lease must outlive the wait (it is as long as
                    // the predecessor's, and granted later, but only just).
                    keeper.keep_alive().await.map_err(|e| SessionEnd::Failed(format!("keep-alive failed: {e}")))?;
                }
                Some(holder) => {
                    let detail = format!(
                        "node id {} is already registered in etcd at {key} by another live process (generation {}, {}; its lease was still kept alive after {} ms); refusing to register a second one",
                        self.settings.node_id,
                        holder.generation,
                        holder.http_url,
                        patience.as_millis()
                    );
                    tracing::error!("{detail}");
                    self.problem = Some(detail);
                    return Ok(false);
                }
                None => {
                    return Err(SessionEnd::Failed(format!("{key} holds a value that is not an Arlen registration")))
                }
            }
        }
    }

    fn replace_members(&mut self, kvs: &[KeyValue]) {
        let previous = std::mem::take(&mut self.members);
        for kv in kvs {
            if let Some(registration) = self.admit(kv) {
                self.members.insert(registration.node_id.clone(), registration);
            }
        }
        for (node_id, registration) in previous {
            if !self.members.contains_key(&node_id) {
                self.remember_gone(registration);
            }
        }
    }

    fn apply_event(&mut self, kind: EventType, kv: &KeyValue) {
        let node_id = kv.key_str().ok().and_then(|key| key.strip_prefix(&self.settings.prefix)).map(str::to_owned);
        let Some(node_id) = node_id else { return };
        match kind {
            EventType::Put => match self.admit(kv) {
                Some(registration) => {
                    self.gone.retain(|g| g.member.node_id != node_id);
                    self.members.insert(node_id, registration);
                }
                // A valid member overwritten with something that is not one no longer counts.
                None => {
                    self.members.remove(&node_id);
                }
            },
            EventType::Delete => {
                if let Some(registration) = self.members.remove(&node_id) {
                    self.remember_gone(registration);
                }
            }
        }
    }

    fn remember_gone(&mut self, registration: Registration) {
        let state = if registration.state == "left" { MemberState::Left } else { MemberState::Dead };
        self.gone.push(Gone { member: self.member(&registration, state), since: Instant::now() });
    }

    fn member(&self, registration: &Registration, state: MemberState) -> Member {
        Member {
            node_id: registration.node_id.clone(),
            generation: registration.generation,
            http_url: Some(registration.http_url.clone()),
            gossip_address: None,
            state,
            is_self: registration.node_id == self.settings.node_id
                && registration.generation == self.settings.generation,
            software: registration.software.clone(),
            zone: registration.zone.clone(),
        }
    }

    /// Publishes the current view (the cell ignores an unchanged one).
    fn publish(&mut self) {
        self.progress.beat();
        let in_contact = self.last_contact.is_some_and(|t| t.elapsed() <= self.settings.lease_ttl);
        self.gone.retain(|g| g.since.elapsed() < GONE_MEMBER_TTL);
        let mut members: Vec<Member> = self
            .members
            .values()
            .map(|r| {
                let state = match r.state.as_str() {
                    "draining" => MemberState::Draining,
                    "left" => MemberState::Left,
                    _ => MemberState::Alive,
                };
                self.member(r, state)
            })
            .collect();
        members.extend(self.gone.iter().map(|g| g.member.clone()));
        members.sort_by(|a, b| (&a.node_id, a.generation).cmp(&(&b.node_id, b.generation)));
        let alive = members.iter().filter(|m| m.state == MemberState::Alive).count();
        let observed_nodes = if in_contact { u32::try_from(alive).unwrap_or(u32::MAX) } else { 0 };
        let signature: MembershipSignature =
            members.iter().map(|m| (m.node_id.clone(), m.generation, m.state)).collect();
        if self.last_published.as_ref() != Some(&(observed_nodes, signature.clone())) {
            self.last_published = Some((observed_nodes, signature));
            self.last_change = Some(SystemTime::now());
        }
        let (ok, detail) = match (&self.problem, in_contact) {
            (problem, false) => (
                false,
                format!(
                    "no answer from etcd for more than the lease TTL ({} s): cannot vouch for any member{}",
                    self.settings.lease_ttl.as_secs(),
                    problem.as_ref().map(|p| format!("; last error: {p}")).unwrap_or_default()
                ),
            ),
            (Some(problem), true) if !self.registered => (false, problem.clone()),
            _ => (true, format!("registered at {}; {alive} alive of {} known", self.settings.key(), members.len())),
        };
        self.publisher.set_membership(MembershipView {
            source: ETCD_NAME,
            observed_nodes,
            members,
            health: SourceHealth { ok, detail, last_membership_change: self.last_change },
            duplicate_node_ids: Vec::new(),
            heard: None,
            fresh_for: None,
            accusations: Vec::new(),
            reachability: None,
        });
    }
}

/// Checks one key under the prefix: a member only when it is leased, names
/// the node of its key, and says a known state.
fn check_record(prefix: &str, kv: &KeyValue) -> Result<Registration, RecordRejection> {
    check_record_parts(prefix, kv.key(), kv.value(), kv.lease())
}

/// [`check_record`] on the parts of a key-value pair.
pub(crate) fn check_record_parts(
    prefix: &str,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<Registration, RecordRejection> {
    let key_node = std::str::from_utf8(key).ok().and_then(|key| key.strip_prefix(prefix)).unwrap_or_default();
    if value.len() > MAX_RECORD_BYTES {
        return Err(RecordRejection::Malformed);
    }
    let registration: Registration = serde_json::from_slice(value).map_err(|_| RecordRejection::Malformed)?;
    if lease == 0 {
        return Err(RecordRejection::NoLease);
    }
    if registration.node_id != key_node {
        return Err(RecordRejection::WrongNodeId);
    }
    if !matches!(registration.state.as_str(), "alive" | "draining" | "left") {
        return Err(RecordRejection::UnknownState);
    }
    if registration.zone.as_deref().is_some_and(|zone| zone.is_empty() || arlen_config::zone_problem(zone).is_some()) {
        return Err(RecordRejection::Malformed);
    }
    Ok(registration)
}

impl Runner<'_> {
    /// [`check_record`], counting and logging (once per key and reason) what it refuses.
    fn admit(&mut self, kv: &KeyValue) -> Option<Registration> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match check_record(&self.settings.prefix, kv) {
            Ok(registration) => {
                self.reported.remove(&key);
                Some(registration)
            }
            Err(reason) => {
                self.stats.count(reason);
                if self.reported.insert(key.clone(), reason) != Some(reason) {
                    tracing::warn!(key = %key.escape_debug(), reason = reason.label(), "etcd key under the member prefix is not counted");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http_host;

    #[test]
    fn a_node_on_every_interface_is_named_by_its_address_towards_etcd() {
        assert_eq!(http_host("0.0.0.0", &["http://127.0.0.1:2379".to_owned()]), "127.0.0.1");
        assert_eq!(http_host("0.0.0.0", &["http://localhost:2379/".to_owned()]), "127.0.0.1");
        assert_eq!(http_host("10.1.2.3", &["http://127.0.0.1:2379".to_owned()]), "10.1.2.3");
        // Nothing resolvable: the configured host, as before.
        assert_eq!(http_host("0.0.0.0", &["http://name.invalid:2379".to_owned()]), "0.0.0.0");
    }
}
