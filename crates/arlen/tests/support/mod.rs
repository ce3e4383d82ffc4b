//! What the real-process tests share (each test file is its own crate and
//! includes this module: not every helper is used by every file).
#![allow(dead_code)]

pub mod netlab;

use std::path::Path;

/// The Python application of the sidecar tests (`tests/support/upstream.py`).
pub fn upstream_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/upstream.py")
}

/// A sidecar (`arlen serve --upstream`) of cluster `shop`, node `sidecar-1`,
/// one node expected, with `extra` variables; live when returned.
pub fn sidecar(upstream: &str, extra: &[(&str, &str)]) -> arlen_testkit::ArlenProcess {
    let port = arlen_testkit::free_port();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", "shop"),
        ("ARLEN_CLUSTER_NODE_ID", "sidecar-1"),
        ("ARLEN_CLUSTER_EXPECTED_NODES", "1"),
    ];
    vars.extend_from_slice(extra);
    let mut node = arlen_testkit::ArlenProcess::spawn(
        binary(),
        &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent", "--upstream", upstream],
        &vars,
        port,
    );
    node.wait_live();
    node
}

/// Node `index` (named `<cluster>-<index+1>`) of a gossip cluster on
/// loopback `ports` (each node's HTTP and gossip port; all are seeds),
/// readiness following quorum, with `extra` variables; live when returned.
pub fn gossip_node(cluster: &str, index: usize, ports: &[u16], extra: &[(&str, &str)]) -> arlen_testkit::ArlenProcess {
    let port = ports[index];
    let seeds = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let node_id = format!("{cluster}-{}", index + 1);
    let expected = ports.len().to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("ARLEN_CLUSTER_ENABLED", "1"),
        ("ARLEN_CLUSTER_NAME", cluster),
        ("ARLEN_CLUSTER_NODE_ID", &node_id),
        ("ARLEN_CLUSTER_EXPECTED_NODES", &expected),
        ("ARLEN_CLUSTER_MEMBERSHIP_SOURCE", "gossip"),
        ("ARLEN_CLUSTER_GOSSIP_SEEDS", &seeds),
        ("ARLEN_READINESS_REQUIRES_CLUSTER_QUORUM", "1"),
    ];
    vars.extend_from_slice(extra);
    let mut node = arlen_testkit::ArlenProcess::spawn(
        binary(),
        &["serve", "--port", &port.to_string(), "--app-root", "/nonexistent"],
        &vars,
        port,
    );
    node.wait_live();
    node
}

/// The `arlen` binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_arlen"))
}

/// A memory figure of a process from `/proc/<pid>/status`, in KiB
/// (`VmRSS`: now; `VmHWM`: the peak).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Reads `stream` until the peer closes it (EOF or reset) or `wait` ends:
/// the bytes read, or `None` when it was still open.
pub fn read_until_closed(stream: &mut std::net::TcpStream, wait: std::time::Duration) -> Option<usize> {
    use std::io::Read as _;
    let until = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    stream.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
    while std::time::Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(total),
        }
    }
    None
}

/// A `/clusterz` long-poll on `address` for a state that will not come (99
/// nodes, 60 s): a request that stays in flight.
pub fn long_poll(address: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(b"GET /clusterz?wait_for_nodes=%3E%3D99&timeout=60s HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream
}

/// Takes every one of the `sessions` sessions of `node`'s service listener
/// with long-polls, and returns them once the listener turns `GET /` away
/// with 503 `http_session_limit`.
///
/// A connection with a request in flight is never evicted, so once every
/// long-poll's request has begun (counted on the admin listener `admin`,
/// whose connections are not the service listener's sessions) nothing frees
/// a session. Only then does this knock: a knock at full sessions would evict
/// a long-poll whose head the node had not read yet. A knock answered 200
/// found a session still held by a closing connection; one more long-poll
/// takes it.
pub fn hold_every_session(
    node: &arlen_testkit::ArlenProcess,
    admin: std::net::SocketAddr,
    sessions: usize,
) -> Vec<std::net::TcpStream> {
    let address = node.address();
    let mut polls: Vec<_> = (0..sessions).map(|_| long_poll(address)).collect();
    arlen_testkit::poll_until_explained(
        "every session held by a long-poll",
        std::time::Duration::from_secs(10),
        || {
            let metrics = arlen_testkit::get(admin, "/metrics", &[]).ok()?.text();
            let active = arlen_http::metrics::sample_value(&metrics, "arlen_http_requests_active")?;
            if active < (polls.len() + 1) as f64 {
                return None;
            }
            let knock = arlen_testkit::get(address, "/", &[]).ok()?;
            if knock.status == 503 && knock.header("X-Arlen-Backpressure-Reason") == Some("http_session_limit") {
                return Some(());
            }
            polls.push(long_poll(address));
            None
        },
        || node.describe(),
    );
    polls
}
