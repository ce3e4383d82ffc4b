//! Test helpers shared by the real-process and wire tests.
//!
//! - [`RawResponse`]: HTTP/1.1 responses read as bytes, so header names keep
//!   the exact capitalisation that went over the wire (client libraries
//!   normalise them).
//! - [`free_port`]: a loopback port that no server and no other test process holds.
//! - [`poll_until`]: wait for a condition with a deadline, never a fixed sleep.
//! - [`ArlenProcess`]: the built `arlen` binary as a child process, killed on drop.

#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names exactly as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as sent, for error messages.
    pub head: String,
}

impl RawResponse {
    /// Parses a complete response (head and body up to EOF or Content-Length).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no end of head in {:?}", String::from_utf8_lossy(bytes)))?;
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
            .collect();
        let mut body = bytes[split + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        if let Some(length) = length {
            body.truncate(length);
        }
        Ok(Self { status, headers, body, head })
    }

    /// A header's value, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True when a header with exactly this spelling was sent.
    pub fn has_exact_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body's data: chunked framing undone when the response was chunked.
    pub fn decoded_body(&self) -> Vec<u8> {
        let chunked = self.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if !chunked {
            return self.body.clone();
        }
        let (mut rest, mut data) = (&self.body[..], Vec::new());
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else { break };
            if size == 0 || rest.len() < line_end + 2 + size {
                break;
            }
            data.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = rest.get(line_end + 2 + size + 2..).unwrap_or_default();
        }
        data
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as one of the documents nodes serve (`arlen_wire::documents`).
    pub fn document<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not the document expected ({e}): {}", self.text()))
    }
}

/// A `GET`-style request text with `Connection: close`.
pub fn request_text(method: &str, target: &str, extra_headers: &[(&str, &str)]) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in extra_headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// Sends raw bytes and reads the whole response (the request should ask for
/// `Connection: close`). Blocking; for real-process tests.
pub fn send_raw(address: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(request)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    RawResponse::parse(&bytes).map_err(std::io::Error::other)
}

/// `send_raw` with a request built by [`request_text`].
pub fn get(address: SocketAddr, target: &str, headers: &[(&str, &str)]) -> std::io::Result<RawResponse> {
    send_raw(address, request_text("GET", target, headers).as_bytes())
}

/// The async twin of [`send_raw`], for in-process servers on a tokio runtime.
pub async fn send_raw_async(address: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .map_err(|_| std::io::Error::other("response not complete within 20 s"))??;
    RawResponse::parse(&bytes).map_err(std::io::Error::other)
}

/// The async twin of [`get`].
pub async fn get_async(address: SocketAddr, target: &str, headers: &[(&str, &str)]) -> std::io::Result<RawResponse> {
    send_raw_async(address, request_text("GET", target, headers).as_bytes()).await
}

/// A loopback port, free for TCP and UDP, that no other test process holds.
///
/// Tests run in parallel processes and start servers some time after choosing
/// their ports, so "free a moment ago" is not enough: with ports from
/// `bind(0)`, two tests could pick the same one, or an outgoing connection
/// could take it first, and a test would then talk to somebody else's server.
/// So ports come from below the kernel's ephemeral range
/// (neither `bind(0)` nor `connect` hands those out) and claimed with a file
/// lock that this process holds until it exits.
pub fn free_port() -> u16 {
    free_port_range(1)
}

/// The first of `count` consecutive ports claimed as in [`free_port`] (for
/// commands that take a base port).
pub fn free_port_range(count: u16) -> u16 {
    claimed_ports::claim(count).unwrap_or_else(|e| panic!("claim {count} loopback port(s): {e}"))
}

mod claimed_ports {
    //! Cross-process port claims: one lock file per port under the system
    //! temporary directory, locked (`flock`) for the life of the claiming
    //! process, so a crashed test leaves nothing behind.

    use std::fs::{File, OpenOptions};
    use std::net::{TcpListener, UdpSocket};
    use std::ops::Range;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// Locks held by this process.
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

    /// Ports handed out: the 12 000 below the ephemeral range (Linux default
    /// 32768–60999, read from procfs when available).
    pub fn range() -> Range<u16> {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let end = ephemeral_low.min(32768);
        end.saturating_sub(12_000).max(1024)..end
    }

    fn lock_dir() -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join("arlen-test-ports");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Claims `count` consecutive ports, each free for TCP and UDP on
    /// 127.0.0.1 right now; returns the first.
    pub fn claim(count: u16) -> std::io::Result<u16> {
        let range = range();
        let span = range.len() as u32;
        if count == 0 || u32::from(count) > span {
            return Err(std::io::Error::other(format!("cannot claim {count} ports in {range:?}")));
        }
        let dir = lock_dir()?;
        let candidates = span - u32::from(count) + 1;
        let offset = random_u32() % candidates;
        for step in 0..candidates {
            let base = range.start + ((offset + step) % candidates) as u16;
            if let Some(locks) = try_claim(&dir, base, count)? {
                HELD.lock().unwrap_or_else(|e| e.into_inner()).extend(locks);
                return Ok(base);
            }
        }
        Err(std::io::Error::other(format!("no {count} consecutive free ports in {range:?}")))
    }

    fn try_claim(dir: &std::path::Path, base: u16, count: u16) -> std::io::Result<Option<Vec<File>>> {
        let mut locks = Vec::with_capacity(usize::from(count));
        for port in base..base + count {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let free = TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
            if !free {
                return Ok(None);
            }
            locks.push(file);
        }
        Ok(Some(locks))
    }

    /// A random start so parallel processes rarely contend for one lock.
    fn random_u32() -> u32 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish() as u32
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_claimed_port_is_never_handed_out_again() {
            let base = claim(3).unwrap();
            assert!(range().contains(&base) && range().contains(&(base + 2)));
            let dir = lock_dir().unwrap();
            for port in base..base + 3 {
                // A second open file description conflicts with the held lock,
                // as another process's would.
                assert!(try_claim(&dir, port, 1).unwrap().is_none(), "port {port} claimed twice");
            }
            let more: Vec<u16> = (0..20).map(|_| claim(1).unwrap()).collect();
            let mut distinct = more.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), more.len(), "{more:?}");
            assert!(more.iter().all(|p| !(base..base + 3).contains(p)));
        }
    }
}

/// Calls `check` until it returns `Some` or `timeout` passes; panics with
/// `what` on timeout. Polls every 20 ms.
pub fn poll_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_until_explained(what, timeout, check, String::new)
}

/// [`poll_until`] that adds `explain()` (say, each node's view and log) to
/// the panic message on timeout, so a failure in CI can be diagnosed from its
/// output alone.
pub fn poll_until_explained<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one response from a kept-alive connection (needs Content-Length).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return RawResponse::parse(&bytes[..end + 4 + length]).map_err(std::io::Error::other);
            }
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", bytes.len()),
            ));
        }
        bytes.extend_from_slice(&buffer[..read]);
    }
}

/// What the client saw while the node drained.
#[derive(Debug, Default)]
pub struct Tally {
    pub complete: usize,
    pub while_not_ready: usize,
    pub with_connection_close: usize,
    pub failed: Vec<String>,
    pub refused: bool,
}

/// Sends `GET <path>` on kept-alive connections (reconnecting when asked to
/// close) and checks `/readyz` every few requests, until the listener
/// refuses: what a client sees of a node's drain. Requests that fail are in
/// [`Tally::failed`].
pub fn keep_sending(address: SocketAddr, path: &str, limit: Duration) -> Tally {
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut connection: Option<TcpStream> = None;
    let mut not_ready_seen = false;
    for sent in 0..200_000usize {
        assert!(started.elapsed() < limit, "the node never stopped accepting: {tally:?}");
        let stream = match connection.as_mut() {
            Some(stream) => stream,
            None => match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    connection.insert(stream)
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tally.refused = true;
                    return tally;
                }
                Err(error) => panic!("connect failed: {error}"),
            },
        };
        let target = if sent % 5 == 0 { "/readyz" } else { path };
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let outcome = stream.write_all(request.as_bytes()).and_then(|()| read_response(stream));
        match outcome {
            Ok(response) => {
                tally.complete += 1;
                if target == "/readyz" && response.status == 503 {
                    not_ready_seen = true;
                }
                if target == path && not_ready_seen {
                    assert_eq!(response.status, 200);
                    assert_eq!(response.header("X-Arlen-Draining"), Some("1"), "{}", response.head);
                    tally.while_not_ready += 1;
                }
                if response.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    tally.with_connection_close += 1;
                    connection = None;
                }
            }
            Err(error) => {
                tally.failed.push(format!("request {sent} to {target}: {error}"));
                connection = None;
            }
        }
    }
    tally
}

/// The sidecar tests' upstream application: a Python HTTP server
/// (`crates/arlen/tests/support/upstream.py`) as a child process, killed on drop.
pub struct PythonUpstream {
    child: Child,
    pub port: u16,
}

impl PythonUpstream {
    /// Starts `script PORT NAME` with python3 and waits until it listens.
    pub fn start(script: &Path, port: u16, name: &str) -> Self {
        let child = Command::new("python3")
            .arg(script)
            .args([port.to_string(), name.to_owned()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the test upstream (./scripts/test installs it)");
        let upstream = Self { child, port };
        poll_until(&format!("the upstream on {port} to listen"), Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `arlen` process. Killed (SIGKILL) on drop if still running.
pub struct ArlenProcess {
    child: Child,
    pub port: u16,
    stderr_path: PathBuf,
    _log_dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop (enough for log files).
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "arlen-test-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            ));
            std::fs::create_dir_all(&path).expect("create log dir");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl ArlenProcess {
    /// Starts `binary serve --port <free port>` with the given variables
    /// (on top of a clean environment that keeps only PATH and HOME).
    pub fn serve(binary: &Path, app_root: &Path, vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let port_text = port.to_string();
        Self::spawn(binary, &["serve", "--port", &port_text, "--app-root", &app_root.display().to_string()], vars, port)
    }

    /// Starts the binary with arbitrary arguments; `port` is where it will listen.
    pub fn spawn(binary: &Path, args: &[&str], vars: &[(&str, &str)], port: u16) -> Self {
        let log_dir = tempdir::Dir::new();
        let stderr_path = log_dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let mut command = Command::new(binary);
        command.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        for keep in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        command.env("ARLEN_LOG_FORMAT", "text").env("ARLEN_LOG_LEVEL", "info");
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command.spawn().expect("start arlen");
        Self { child, port, stderr_path, _log_dir: log_dir }
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The node's `/clusterz`, typed; `None` while it does not answer one.
    pub fn cluster_document(&self) -> Option<arlen_wire::documents::ClusterDocument> {
        cluster_document(self.address())
    }

    /// A few lines for a failure message: pid, port, the node's `/clusterz`
    /// members (or why it could not be read) and the end of its log.
    pub fn describe(&self) -> String {
        let members = match get(self.address(), "/clusterz", &[]) {
            Ok(response) => match serde_json::from_slice::<arlen_wire::documents::ClusterDocument>(&response.body) {
                Ok(doc) => {
                    let members: Vec<String> = doc
                        .cluster
                        .members
                        .iter()
                        .map(|m| {
                            format!(
                                "{}@{} {}",
                                m.node_id,
                                m.generation.map_or("?".to_owned(), |g| g.to_string()),
                                m.state
                            )
                        })
                        .collect();
                    format!(
                        "status {} observed {}/{} source {} ({}) members [{}]",
                        doc.cluster.quorum.status,
                        doc.cluster.observed_nodes,
                        doc.cluster.expected_nodes,
                        doc.coordination.membership_source,
                        doc.coordination.source_health.detail,
                        members.join(", ")
                    )
                }
                Err(_) => format!("/clusterz answered {}: {}", response.status, response.text()),
            },
            Err(e) => format!("/clusterz unreachable: {e}"),
        };
        let log = self.stderr();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- pid {} port {}: {members}\n{}\n", self.child.id(), self.port, tail.join("\n"))
    }

    /// Waits until `/livez` answers 200.
    pub fn wait_live(&mut self) -> &mut Self {
        let address = self.address();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("arlen exited early with {status}; stderr:\n{}", self.stderr());
            }
            if get(address, "/livez", &[]).is_ok_and(|r| r.status == 200) {
                return self;
            }
            assert!(Instant::now() < deadline, "arlen did not answer /livez within 20 s; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET a path on this node.
    pub fn get(&self, target: &str) -> RawResponse {
        get(self.address(), target, &[]).unwrap_or_else(|e| panic!("GET {target}: {e}; stderr:\n{}", self.stderr()))
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        poll_until("arlen to exit", timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for ArlenProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A real etcd cluster of `etcd` processes on loopback, for tests. Each member
/// has its own data directory, so a stopped member can be started again.
/// Killed on drop.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    tls: Option<EtcdTls>,
    _dir: tempdir::Dir,
}

/// Certificates for an etcd that serves clients over TLS and checks their
/// certificates (`--client-cert-auth`): PEM files the test made.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
}

struct EtcdMember {
    name: String,
    client_port: u16,
    /// Plain-HTTP `/health` (and metrics), so health checks need no client certificate.
    metrics_port: u16,
    peer_port: u16,
    data_dir: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster is healthy.
    pub fn start(size: usize) -> Self {
        Self::start_with(size, None)
    }

    /// Like [`EtcdCluster::start`], with clients served over TLS only.
    pub fn start_tls(size: usize, tls: EtcdTls) -> Self {
        Self::start_with(size, Some(tls))
    }

    fn start_with(size: usize, tls: Option<EtcdTls>) -> Self {
        let dir = tempdir::Dir::new();
        let members: Vec<EtcdMember> = (0..size)
            .map(|i| EtcdMember {
                name: format!("etcd{i}"),
                client_port: free_port(),
                metrics_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("etcd{i}.data")),
                log: dir.path().join(format!("etcd{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = Self { members, tls, _dir: dir };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let initial_cluster = self.initial_cluster();
        let member = &mut self.members[index];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&member.log).expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let metrics_url = format!("http://127.0.0.1:{}", member.metrics_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert_file)
                .arg("--key-file")
                .arg(&tls.server_key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name, "--data-dir"])
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-metrics-urls", &metrics_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "arlen-test"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start etcd ({error}); install Debian's etcd-server (./scripts/test does)")
            });
        member.child = Some(child);
    }

    /// Client URLs of every member, comma-separated.
    pub fn endpoints(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members.iter().map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port)).collect::<Vec<_>>().join(",")
    }

    /// The plain-HTTP address of member `index`'s health and metrics listener.
    pub fn metrics_address(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[index].metrics_port))
    }

    /// The client address of member `index` (for etcd's JSON gateway, `/v3/...`).
    pub fn client_address(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[index].client_port))
    }

    /// Waits until every running member reports `{"health":"true"}`.
    pub fn wait_healthy(&self, timeout: Duration) {
        poll_until("etcd to be healthy", timeout, || {
            self.members
                .iter()
                .filter(|m| m.child.is_some())
                .all(|m| {
                    get(SocketAddr::from(([127, 0, 0, 1], m.metrics_port)), "/health", &[])
                        .is_ok_and(|r| r.text().contains("\"health\":\"true\""))
                })
                .then_some(())
        });
    }

    /// Stops one member (SIGKILL, as a crash would).
    pub fn stop_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped member again with its data.
    pub fn start_member(&mut self, index: usize) {
        assert!(self.members[index].child.is_none(), "member {index} is running");
        self.spawn(index, "existing");
    }

    /// What the members logged, for failure messages.
    pub fn logs(&self) -> String {
        self.members.iter().map(|m| std::fs::read_to_string(&m.log).unwrap_or_default()).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.stop_member(index);
        }
    }
}

/// The `/clusterz` document of the node at `address`, typed (the one reading
/// the nodes and the tools share); `None` when it does not answer one.
pub fn cluster_document(address: SocketAddr) -> Option<arlen_wire::documents::ClusterDocument> {
    let response = get(address, "/clusterz", &[]).ok()?;
    serde_json::from_slice(&response.body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_header_names_and_content_length() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nX-Arlen-Cluster: a\r\nContent-Length: 4\r\n\r\nbodyEXTRA";
        let response = RawResponse::parse(raw).unwrap();
        assert_eq!(response.status, 503);
        assert!(response.has_exact_header("X-Arlen-Cluster"));
        assert!(!response.has_exact_header("x-arlen-cluster"));
        assert_eq!(response.header("x-arlen-cluster"), Some("a"));
        assert_eq!(response.body, b"body");
    }
}
